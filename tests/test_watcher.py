"""The folder watcher's IDLE loop against a scripted IMAP client (a unit seam: the rig
tests prove the real thing; these pin down server replies the rig cannot produce)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from imapclient.exceptions import IMAPClientAbortError

from bridge.mailbox.watcher import FolderWatcher, _is_change


class ScriptedIdle:
    """Answers idle_check from a script, then stays quiet."""

    def __init__(self, script: list[list[Any]]) -> None:
        self.script = list(script)
        self.done = 0

    def idle(self) -> None:
        pass

    def idle_check(self, timeout: float) -> list[Any]:
        return self.script.pop(0) if self.script else []

    def idle_done(self) -> None:
        self.done += 1


def idle_only_watcher() -> FolderWatcher:
    watcher = FolderWatcher.__new__(FolderWatcher)
    watcher._stopping = threading.Event()
    watcher._wake = threading.Event()
    return watcher


def test_token_expiry_bye_during_idle_ends_the_session() -> None:
    client = ScriptedIdle([[(b"BYE", b"Session invalidated - AccessTokenExpired")]])
    with pytest.raises(IMAPClientAbortError, match="AccessTokenExpired"):
        idle_only_watcher()._idle(client, until=float("inf"))  # type: ignore[arg-type]


def test_new_mail_during_idle_ends_idle_with_done() -> None:
    client = ScriptedIdle([[(b"OK", b"Still here")], [(5, b"EXISTS")]])
    idle_only_watcher()._idle(client, until=float("inf"))  # type: ignore[arg-type]
    assert client.done == 1 and client.script == []


def test_silent_eof_during_idle_is_a_lost_connection_not_a_busy_loop() -> None:
    class Eof(ScriptedIdle):
        def idle_check(self, timeout: float) -> list[Any]:
            return []  # what imapclient returns at once on EOF

    with pytest.raises(IMAPClientAbortError, match="closed"):
        idle_only_watcher()._idle(Eof([]), until=float("inf"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("response", "change"),
    [((3, b"EXISTS"), True), ((2, b"EXPUNGE"), True),
     ((1, b"FETCH", (b"FLAGS", (b"\\Seen",))), True), ((b"OK", b"Still here"), False),
     ((1, b"RECENT"), True), (b"garbage", False)],
)
def test_which_idle_responses_trigger_a_sync(response: Any, change: bool) -> None:
    assert _is_change(response) is change
