"""The IDLE wait against a scripted IMAP client (a unit seam: the rig tests prove the
real thing; these pin down server replies the rig cannot produce).

The scripted client's socket is one end of a socketpair: the script writes a byte to
the other end for each response it has, so the select() in the IDLE wait wakes as on a real
connection, and closing the other end plays the server closing the connection."""

from __future__ import annotations

import socket
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
from imapclient.exceptions import IMAPClientAbortError

from bridge.imap.idle import idle, is_change, take_news
from bridge.util.wakeup import Wakeup


class ScriptedIdle:
    """Answers idle_check from a script, one response list per byte on the socket."""

    def __init__(self, script: list[list[Any]]) -> None:
        self.script = list(script)
        self.done = 0
        self.server, self.sock = socket.socketpair()
        self._imap = SimpleNamespace(file=SimpleNamespace(peek=lambda _n: b""))

    def socket(self) -> socket.socket:
        return self.sock

    def idle(self) -> None:
        if self.script:
            self.server.send(b"x")

    def idle_check(self, timeout: float) -> list[Any]:
        try:
            if not self.sock.recv(1):
                return []  # what imapclient returns on EOF
        except OSError:
            return []
        if not self.script:
            return []
        responses = self.script.pop(0)
        if self.script:
            self.server.send(b"x")
        return responses

    def idle_done(self) -> tuple[bytes, list[Any]]:
        self.done += 1
        return b"Idle terminated", []


def idle_until(client: ScriptedIdle, until: float, wake: Wakeup | None = None) -> None:
    idle(client, wake or Wakeup(), threading.Event(), until=until)  # type: ignore[arg-type]


def test_token_expiry_bye_during_idle_ends_the_session() -> None:
    client = ScriptedIdle([[(b"BYE", b"Session invalidated - AccessTokenExpired")]])
    with pytest.raises(IMAPClientAbortError, match="AccessTokenExpired"):
        idle_until(client, float("inf"))


def test_new_mail_during_idle_ends_idle_with_done() -> None:
    client = ScriptedIdle([[(b"OK", b"Still here")], [(5, b"EXISTS")]])
    idle_until(client, float("inf"))
    assert client.done == 1 and client.script == []


def test_silent_eof_during_idle_is_a_lost_connection_not_a_busy_loop() -> None:
    client = ScriptedIdle([])
    client.server.close()  # the socket reads as EOF from now on
    with pytest.raises(IMAPClientAbortError, match="closed"):
        idle_until(client, float("inf"))


def test_a_sync_request_ends_idle_at_once() -> None:
    wake, client = Wakeup(), ScriptedIdle([])
    threading.Timer(0.2, wake.set).start()
    started = time.monotonic()
    idle_until(client, float("inf"), wake)
    assert client.done == 1
    # woken, not by IDLE's check (60 s) or the renewal (never, here)
    assert time.monotonic() - started < 30


def test_idle_is_ended_and_restarted_so_a_dead_connection_is_noticed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DONE is sent every CHECK_INTERVAL: a server that no longer answers it
    times the socket out instead of sitting in IDLE until renewal."""
    monkeypatch.setattr("bridge.imap.idle.CHECK_INTERVAL", 0.1)
    client = ScriptedIdle([])
    idle_until(client, time.monotonic() + 2)  # 20 checks; a busy machine may do fewer
    assert client.done >= 4


def test_take_news_counts_reports_stashed_in_any_answer() -> None:
    """EXISTS stashed from a SEARCH answer counts when the count moved; an EXPUNGE always."""
    stash: dict[str, list[Any]] = {}
    client = SimpleNamespace(_imap=SimpleNamespace(untagged_responses=stash))
    stash["EXISTS"] = [b"3"]
    # SELECT's own count: nothing new
    assert take_news(client, 3) is False  # type: ignore[arg-type]
    stash.update(EXISTS=[b"3", b"4"], RECENT=[b"1"])
    assert take_news(client, 3) is True
    assert stash == {}  # forgotten once seen
    stash["EXPUNGE"] = [b"2"]
    assert take_news(client, 4) is True


@pytest.mark.parametrize(
    ("response", "change"),
    [((3, b"EXISTS"), True), ((2, b"EXPUNGE"), True),
     ((1, b"FETCH", (b"FLAGS", (b"\\Seen",))), True), ((b"OK", b"Still here"), False),
     ((1, b"RECENT"), True), (b"garbage", False)],
)
def test_which_idle_responses_trigger_a_sync(response: Any, change: bool) -> None:
    assert is_change(response) is change
