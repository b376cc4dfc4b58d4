"""Per-folder positions in `state_dir`: the last published UID per UIDVALIDITY.

The files hold no secret. Each write goes to a temporary file that is fsynced and
renamed over the old one, so a crash leaves either the old or the new position.
Deleting a file is safe: the folder goes back to "first start".
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from bridge.util.files import write_atomic

_LOGGER = logging.getLogger(__name__)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class Position:
    """Where publishing stands in one folder."""

    uidvalidity: int
    last_uid: int


class StateStore:
    """Positions of every folder of every account, one small JSON file per folder."""

    def __init__(self, state_dir: Path) -> None:
        self._dir = state_dir
        # One lock per file: a thousand folders saving at once must not queue behind one
        # another's fsync.
        self._locks: dict[Path, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def _path(self, account: str, folder: str) -> Path:
        # Folder names may contain '/', spaces and non-ASCII: keep them readable but safe.
        return self._dir / "positions" / account / (_UNSAFE.sub("_", folder) + ".json")

    def load(self, account: str, folder: str) -> Position | None:
        """The stored position, or None on first start (or after the file was deleted)."""
        path = self._path(account, folder)
        try:
            raw = json.loads(path.read_text("utf-8"))
            return Position(int(raw["uidvalidity"]), int(raw["last_uid"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            _LOGGER.warning("ignoring unreadable position file %s (%s): starting afresh", path, exc)
            return None

    def save(self, account: str, folder: str, position: Position) -> None:
        """Record the position atomically."""
        data = {
            "folder": folder,
            "uidvalidity": position.uidvalidity,
            "last_uid": position.last_uid,
        }
        path = self._path(account, folder)
        with self._locks_lock:
            lock = self._locks.setdefault(path, threading.Lock())
        with lock:
            write_atomic(path, json.dumps(data).encode())
