"""Fresh installs from a clone of this repository, the two ways docs/setup.md describes."""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.bridgeproc import ROOT

# Debian's interpreter, as a service install uses it: the one on PATH may live under /root
# (pyenv), which the service's user cannot reach.
SYSTEM_PYTHON = "/usr/bin/python3"
# what pip needs to find the package registry's mirrors on this machine, nothing else
PIP_ENV = ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CERT",
           "PIP_DEFAULT_TIMEOUT", "PIP_DISABLE_PIP_VERSION_CHECK", "HTTPS_PROXY", "https_proxy")


@dataclass(frozen=True)
class FreshInstall:
    """A clone in `base` (0755) and a venv in `base`/opt with `pip install <clone>`."""

    base: Path
    clone: Path
    program: Path


def clean_env(**extra: str) -> dict[str, str]:
    """A minimal environment, as a new login or systemd gives, plus pip's settings."""
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    env.update({k: os.environ[k] for k in PIP_ENV if k in os.environ})
    env.update(extra)
    return env


def clone_repository() -> tuple[Path, Path]:
    """(base, clone): the committed tree of this repository in a fresh directory."""
    base = Path(tempfile.mkdtemp(prefix="o2m-fresh-"))
    base.chmod(0o755)  # unprivileged users must reach what is installed here
    clone = base / "outlook2mqtt"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    return base, clone


def service_install() -> FreshInstall:
    """docs/setup.md's system install: a venv, `pip install <checkout>`, runtime only."""
    base, clone = clone_repository()
    venv = base / "opt"
    env = clean_env(HOME=str(base))
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(venv)], check=True, timeout=120, env=env)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(clone)], check=True,
                   timeout=600, env=env, cwd=base)
    return FreshInstall(base, clone, venv / "bin" / "outlook2mqtt")
