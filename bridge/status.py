"""The retained `B/A/status` of one account, shared by its workers."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime


def iso_now() -> str:
    """Current time as ISO 8601 UTC with offset, seconds precision."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def iso_ts(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).replace(microsecond=0).isoformat()


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

    def payload(self) -> bytes:
        with self._lock:
            return json.dumps(
                {
                    "connected": all(self._connected.values()),
                    "auth": self.auth,
                    "last_error": self.last_error,
                    "last_sync": self.last_sync,
                    "token_expires": self.token_expires,
                }
            ).encode()

    def _changed(self) -> None:
        self._publish(self.payload())

    def connected(self, worker: str, token_expires: float | None = None) -> None:
        with self._lock:
            changed = not self._connected[worker] or self.auth != "ok" or bool(self.last_error)
            self._connected[worker] = True
            self.auth = "ok"
            self.last_error = None
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
            self.last_error = error
        self._changed()

    def synced(self) -> None:
        with self._lock:
            self.last_sync = iso_now()
