"""`B/bridge/health`: uptime, memory, threads and per-account counters as retained JSON.

zigbee2mqtt's `bridge/health` idea: one small payload a dashboard or a monitor can watch.
Pure but for reading the process's own memory and thread count.
"""

from __future__ import annotations

import json
import os
import resource
import threading
import time
from collections.abc import Callable, Mapping

from bridge.mailbox.status import AccountStatus
from bridge.util.times import iso_now

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """The resident set size now (Linux), else the peak the kernel reports."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def health_payload(started: float, accounts: Mapping[str, AccountStatus], *,
                   now: Callable[[], float] = time.monotonic) -> bytes:
    """The JSON published on `B/bridge/health`; `started` is a `now()` reading."""
    per_account = {name: status.health() for name, status in accounts.items()}
    total = sum(status.messages_published for status in accounts.values())
    return json.dumps({
        "uptime": round(now() - started),
        "rss_bytes": rss_bytes(),
        "threads": threading.active_count(),
        "messages_published": total,
        "accounts": per_account,
        "updated": iso_now(),
    }).encode()


def sent_a_mail(reply: bytes) -> bool:
    """Whether a command's reply reports a mail sent: only a sending command that the
    server accepted is answered with a `message_id` (docs/sending.md)."""
    try:
        answer = json.loads(reply)
    except ValueError:
        return False
    return isinstance(answer, dict) and answer.get("status") == "ok" and "message_id" in answer
