"""The retained `B/A/status` of one account, shared by its workers."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from bridge.util.times import iso_now, iso_ts


class AccountStatus:
    """Connection and auth state of an account's workers; publishes on every change."""

    def __init__(self, workers: list[str], publish: Callable[[bytes], None]) -> None:
        self._publish = publish
        self._lock = threading.Lock()
        self._connected = dict.fromkeys(workers, False)
        self.auth = "unknown"
        self.last_error: str | None = None
        self.last_sync: str | None = None
        self.token_expires: str | None = None
        # while auth is "login_required" and a `login` is waiting for the person:
        # verification_uri, user_code and expires (ISO 8601)
        self.login: dict[str, str] | None = None
        # for B/bridge/health: counted while the bridge runs; the latest error is kept
        # after recovery (last_error is cleared), which is what a health check looks for
        self._counts = {"messages_published": 0, "commands": 0, "sent": 0}
        self._latest_error: str | None = None

    def payload(self) -> bytes:
        with self._lock:
            data = {
                "connected": all(self._connected.values()),
                "auth": self.auth,
                "last_error": self.last_error,
                "last_sync": self.last_sync,
                "token_expires": self.token_expires,
            }
            if self.auth == "login_required" and self.login:
                data |= self.login
            return json.dumps(data).encode()

    def _changed(self) -> None:
        self._publish(self.payload())

    def connected(self, worker: str, token_expires: float | None = None) -> None:
        with self._lock:
            changed = not self._connected[worker] or self.auth != "ok" or bool(self.last_error)
            self._connected[worker] = True
            self.auth = "ok"
            self.last_error = None
            self.login = None
            if token_expires is not None:
                expires = iso_ts(token_expires)
                changed = changed or expires != self.token_expires
                self.token_expires = expires
        if changed:
            self._changed()

    def failed(self, worker: str, error: str, *, auth: bool) -> None:
        with self._lock:
            self._connected[worker] = False
            if auth:
                self.auth = "error"
            self.last_error = self._latest_error = error
        self._changed()

    def login_required(self, worker: str | None, error: str,
                       login: dict[str, str] | None = None) -> None:
        """A delegated account has no usable sign-in; `login` is the pending device-code
        sign-in (verification_uri, user_code, expires), when one is in progress."""
        with self._lock:
            changed = (self.auth != "login_required" or self.last_error != error
                       or login != self.login)
            if worker is not None:
                changed = changed or self._connected[worker]
                self._connected[worker] = False
            self.auth = "login_required"
            self.last_error = self._latest_error = error
            self.login = login
        if changed:  # every folder of the account reports it: publish once
            self._changed()

    def synced(self) -> None:
        with self._lock:
            self.last_sync = iso_now()

    def published(self) -> None:
        """A message summary went out."""
        self._count("messages_published")

    def commanded(self) -> None:
        """A command was answered."""
        self._count("commands")

    def sent_mail(self) -> None:
        """A sending command's mail was accepted by the server."""
        self._count("sent")

    @property
    def messages_published(self) -> int:
        with self._lock:
            return self._counts["messages_published"]

    def _count(self, what: str) -> None:
        with self._lock:
            self._counts[what] += 1

    def health(self) -> dict[str, object]:
        """This account's part of `B/bridge/health`."""
        with self._lock:
            return {"connected": all(self._connected.values()), **self._counts,
                    "last_error": self._latest_error}
