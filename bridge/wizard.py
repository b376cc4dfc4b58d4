"""`outlook2mqtt init`: the set-up wizard that writes a valid config."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any


def add_init_parser(subparsers: Any, *, parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Add the `init` subcommand (not built yet)."""
    del subparsers, parents
