"""What a lost IMAP session means for the folder watcher's next one (a unit seam: the
rig tests in test_push.py and test_resilience.py prove the whole loop)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
from imapclient.exceptions import IMAPClientAbortError

from bridge.mailbox.watcher import BrokerUnavailable, FolderWatcher, await_acknowledgement
from bridge.mqtt.client import Publication
from bridge.util.backoff import Backoff


def watcher_after_a_healthy_session() -> FolderWatcher:
    watcher = FolderWatcher.__new__(FolderWatcher)
    watcher.account = SimpleNamespace(name="home")  # type: ignore[assignment]
    watcher.folder = SimpleNamespace(name="INBOX")  # type: ignore[assignment]
    watcher._stopping = threading.Event()
    watcher._session_ok = True
    return watcher


@pytest.mark.parametrize(
    ("text", "fresh"),
    [("BYE Session invalidated - AccessTokenExpired", True),
     ("BYE Token revoked", True),
     ("BYE Disconnected for inactivity", False),
     ("socket error: EOF", False)],
)
def test_a_bye_naming_the_token_makes_the_next_session_use_a_fresh_one(
    text: str, fresh: bool,
) -> None:
    backoff = Backoff()
    backoff.next_delay()
    assert watcher_after_a_healthy_session()._lost(IMAPClientAbortError(text), backoff) is fresh
    assert backoff.attempts == 0  # after a healthy session: reconnect at once


class _AckedAfterTimeout(Publication):
    """A publication whose PUBACK lands just after a wait for it timed out."""

    def wait(self, timeout: float | None = None) -> bool:
        if not self.done:
            self._complete(True)
            return False
        return super().wait(timeout)


def test_an_acknowledgement_just_after_a_wait_timed_out_is_not_a_refusal() -> None:
    await_acknowledgement(_AckedAfterTimeout(), threading.Event())


def test_a_refused_publication_or_a_stop_ends_the_wait() -> None:
    refused = Publication()
    refused._complete(False)
    with pytest.raises(BrokerUnavailable):
        await_acknowledgement(refused, threading.Event())
    stopped = threading.Event()
    stopped.set()
    with pytest.raises(BrokerUnavailable):
        await_acknowledgement(Publication(), stopped)
