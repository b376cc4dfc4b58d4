"""How many examples a property test runs: a third of its thorough count by default, all
of it with HYPOTHESIS_PROFILE=thorough (after changing a parser, before a release)."""

from __future__ import annotations

import os

THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"


def examples(thorough: int) -> int:
    """The test's max_examples in the profile the environment selects."""
    return thorough if THOROUGH else max(30, thorough // 3)
