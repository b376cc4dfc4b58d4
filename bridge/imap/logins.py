"""Logging in for the workers: one shared TLS context per verification setting, a bounded
number of sign-ins at once, and each account's throttling kept to that account.

A thousand accounts starting together would otherwise ask the identity platform for a
thousand tokens and the IMAP server for a thousand logins in the same instant, and each
connection would load the system's CA store into a TLS context of its own.
May import `bridge.auth.tokens`, `bridge.config`, `bridge.errors`, `bridge.imap`.
"""

from __future__ import annotations

import random
import ssl
import threading
import time
from pathlib import Path

import imapclient

from bridge.auth.tokens import Provider, Token
from bridge.config.model import AccountConfig
from bridge.errors import AuthError, ImapThrottled
from bridge.imap import connection as imap

# Sign-ins under way at once (token, TCP, TLS, XOAUTH2): enough to keep a server 40 ms
# away busy, few enough that the threads do not crowd each other out of the GIL.
CONCURRENCY = 16
# A worker's first sign-in waits up to this long, so a start does not arrive in lockstep.
START_JITTER = 1.0
# A throttled account comes back within +-20 % of the time it was asked to keep away.
HOLD_JITTER = 0.2


class Logins:
    """Opens logged-in IMAP connections; thread-safe, one for the whole bridge."""

    def __init__(self, *, concurrency: int = CONCURRENCY, start_jitter: float = START_JITTER,
                 rng: random.Random | None = None) -> None:
        self._free = concurrency  # sign-in slots not taken
        # Notified when a slot is released, and by `wake` when the bridge stops.
        self._turns = threading.Condition(threading.Lock())
        self._start_jitter = start_jitter
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not a secret)
        self._contexts: dict[Path | None, ssl.SSLContext] = {}
        self._holds: dict[str, float] = {}  # account name -> monotonic time it may return
        self._started: set[str] = set()
        self._lock = threading.Lock()

    def context(self, account: AccountConfig) -> ssl.SSLContext:
        """The TLS context for the account's verification settings (its `ca_file`)."""
        with self._lock:
            context = self._contexts.get(account.ca_file)
            if context is None:
                context = self._contexts[account.ca_file] = imap.ssl_context(account)
            return context

    def hold(self, account: str, seconds: float) -> None:
        """Keep every sign-in of `account` back for about `seconds`."""
        seconds *= 1 + self._rng.uniform(-HOLD_JITTER, HOLD_JITTER)
        with self._lock:
            until = time.monotonic() + seconds
            self._holds[account] = max(until, self._holds.get(account, 0.0))

    def held_for(self, account: str) -> float:
        """Seconds until `account` may sign in again (0 when it may now)."""
        with self._lock:
            return max(0.0, self._holds.get(account, 0.0) - time.monotonic())

    def open(self, account: AccountConfig, provider: Provider, stop: threading.Event, *,
             force_token: bool = False) -> tuple[imapclient.IMAPClient, Token] | None:
        """A token and a logged-in connection, or None when `stop` was set meanwhile.
        Raises what the provider and `imap.connect` raise; a throttling answer holds the
        account back for the time the server or the identity platform asked for."""
        if not self._wait_turn(account.name, stop):
            return None
        try:
            token = provider.get_token(force=force_token)
            return imap.connect(account, token, context=self.context(account)), token
        except ImapThrottled as exc:
            self.hold(account.name, exc.retry_after)
            raise
        except AuthError as exc:
            if exc.retry_after is not None:
                self.hold(account.name, exc.retry_after)
            raise
        finally:
            self._release_slot()

    def wake(self) -> None:
        """Wake every sign-in waiting for a slot to look at its stop event again: call
        it after setting that event."""
        with self._turns:
            self._turns.notify_all()

    def _wait_turn(self, account: str, stop: threading.Event) -> bool:
        """Wait out the account's hold and the start jitter, then take a slot."""
        with self._lock:
            first = account not in self._started
            self._started.add(account)
        delay = max(self._rng.uniform(0, self._start_jitter) if first else 0.0,
                    self.held_for(account))
        if stop.is_set() or (delay > 0 and stop.wait(delay)):
            return False
        with self._turns:
            self._turns.wait_for(lambda: self._free > 0 or stop.is_set())
            if stop.is_set():
                if self._free > 0:  # the notify of a release may have been this one's
                    self._turns.notify()
                return False
            self._free -= 1
            return True

    def _release_slot(self) -> None:
        with self._turns:
            self._free += 1
            self._turns.notify()  # one waiter: a slot serves one sign-in
