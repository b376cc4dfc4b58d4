"""Exchange Online's throttling answers, recognised in the text of an IMAP response.

Pure: imports nothing of the bridge. Exchange sheds load per mailbox with a tagged
`NO [THROTTLED] ...` (at login or to any command), sometimes with `Suggested Backoff Time:
N milliseconds`, and ends sessions with `* BYE ... Server Unavailable. 15`.
"""

from __future__ import annotations

import re

# Without a suggestion: long enough for the mailbox's load to drain, short enough that
# mail is late by seconds, not minutes. Repeats back off further (the workers' Backoff).
THROTTLED_WAIT = 10.0
UNAVAILABLE_WAIT = 10.0
_SUGGESTED = re.compile(r"suggested\s+backoff\s+time:\s*(\d+)\s*(milliseconds|ms)", re.IGNORECASE)


def throttle_delay(text: str) -> float | None:
    """Seconds to keep away from the mailbox when `text` is a throttling answer, else None."""
    lowered = text.lower()
    if "[throttled]" in lowered or "request is throttled" in lowered:
        suggested = _SUGGESTED.search(text)
        return int(suggested.group(1)) / 1000 if suggested else THROTTLED_WAIT
    if "server unavailable" in lowered:
        return UNAVAILABLE_WAIT
    return None
