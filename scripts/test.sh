#!/usr/bin/env bash
# The whole test suite, from a fresh clone: set-up, then ruff, mypy and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/mypy
# Three workers, each with its own servers, a file at a time (module-scoped rigs stay
# whole), files with slow tests first (tests/conftest.py). `-n 0` runs in one process.
exec .venv/bin/pytest -n 3 --dist loadfile --no-loadscope-reorder "$@"
