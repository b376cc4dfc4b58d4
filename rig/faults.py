"""Token faults as Exchange deals them, which the rig's servers alone are kinder about.

Dovecot checks a token once, at login, and keeps the session whatever happens to the
token later; Exchange ends a session whose token expired or was invalidated (`BYE
Session invalidated - AccessTokenExpired`). `SessionReaper` closes the gap: with the
identity stand-in's `refuse_after` set (tokens refused that many seconds after issue,
whatever their `exp` claims), it kicks the mailbox's sessions once each of the app's
tokens reaches its refusal or expiry time.
"""

from __future__ import annotations

import threading
import time
from typing import Self

from rig.dovecot import Dovecot
from rig.idp import IdentityPlatform


class SessionReaper:
    """Kicks `mailbox`'s IMAP sessions whenever a token of `client_id` stops being good."""

    def __init__(self, idp: IdentityPlatform, dovecot: Dovecot, mailbox: str,
                 client_id: str) -> None:
        self._idp = idp
        self._dovecot = dovecot
        self._mailbox = mailbox
        self._client_id = client_id
        self._reaped: set[str] = set()
        self._stop = threading.Event()
        self.kicks = 0

    def __enter__(self) -> Self:
        threading.Thread(target=self._run, name="session-reaper", daemon=True).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            now = time.time()
            due = [uti for uti, ends in self._token_ends() if ends <= now
                   and uti not in self._reaped]
            if due:
                self._reaped.update(due)
                self._dovecot.kick(self._mailbox)
                self.kicks += 1

    def _token_ends(self) -> list[tuple[str, float]]:
        with self._idp.lock:
            issued = [c for c in self._idp.issued if c["appid"] == self._client_id]
        return [(c["uti"], self._idp.good_until(c)) for c in issued]
