"""Routes: which named rules a message summary matches, by sender address and subject.

Pure. A route lists address globs (fnmatch, case-insensitive: any one must match the
From address) and/or a regex searched in the decoded subject; with both, both must
match. The config checked the globs and regexes; callers build `Route`s from it.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Route:
    """One named rule, as configured (globs in lower case)."""

    name: str
    senders: tuple[str, ...] = ()
    subject: str | None = None


class Router:
    """The routes of one folder, compiled once."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self._routes = [
            (route.name,
             re.compile("|".join(fnmatch.translate(g) for g in route.senders), re.IGNORECASE)
             if route.senders else None,
             re.compile(route.subject) if route.subject is not None else None)
            for route in routes
        ]

    def __bool__(self) -> bool:
        return bool(self._routes)

    def match(self, address: str | None, subject: str | None) -> list[str]:
        """The names of the routes that a message from `address` about `subject` matches."""
        names = []
        for name, senders, pattern in self._routes:
            if senders is not None and not (address and senders.match(address)):
                continue
            if pattern is not None and not pattern.search(subject or ""):
                continue
            names.append(name)
        return names

    def match_summary(self, payload: Mapping[str, Any]) -> list[str]:
        """`match` for a summary payload (its `from.address` and `subject`)."""
        sender = payload.get("from") or {}
        return self.match(sender.get("address"), payload.get("subject"))
