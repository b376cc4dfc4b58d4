"""Helpers for running the command line in-process and for seeing every issued token."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from bridge.cli import main as cli
from rig.idp import IdentityPlatform


def main(*argv: str) -> int:
    """`outlook2mqtt ARGV` in this process; the root logger is put back afterwards
    (cli.main installs its own handler, which would swallow pytest's log capture)."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        return cli.main(list(argv))
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


@contextmanager
def recording_tokens(idp: IdentityPlatform, monkeypatch: pytest.MonkeyPatch) -> Iterator[
        list[str]]:
    """Every access token the stand-in issues while active, as the raw JWT strings."""
    issued: list[str] = []
    original = idp._issue

    def issue(*args: Any, **kwargs: Any) -> str:
        token = original(*args, **kwargs)
        issued.append(token)
        return token

    with monkeypatch.context() as patch:
        patch.setattr(idp, "_issue", issue)
        yield issued
