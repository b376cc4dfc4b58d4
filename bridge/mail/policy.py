"""What a summary is built for: the run's options, the attachment rules, the type filter.

Pure data and rules, no I/O. The caller builds `SummaryOptions` once per folder run (from
its `FolderConfig`); everything in `bridge.mail` reads the options, never the config.
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class AttachmentRules:
    """Which attachments a folder publishes (`[[accounts.folders]]`)."""

    publish: bool = True  # `attachments`
    inline: bool = False  # `inline_attachments`
    types: tuple[str, ...] = ("*/*",)  # `attachment_types`: globs, `!` denies
    max_bytes: int = 10_000_000  # `max_attachment_bytes`, decoded size


@dataclass(frozen=True)
class SummaryOptions:
    """Everything a summary needs besides the message: where it comes from, where its
    attachments go, and what it includes. The same for every message of a folder run."""

    account: str
    folder: str  # the folder's name as the server lists it
    uidvalidity: int
    attachment_topic_prefix: str  # an attachment's topic is `<prefix>/<uid>/<index>`
    attachments: AttachmentRules = AttachmentRules()
    preview_chars: int = 280
    include_body: bool = False


def type_allowed(content_type: str, patterns: Sequence[str]) -> bool:
    """Whether `content_type` passes the folder's globs: `!pattern` denies and deny wins.

    A list of only denials allows everything else. An empty list allows nothing: the list
    names the types published (the config loader rejects an empty one and points to
    ``attachments = false``).
    """
    return _type_allowed(content_type.lower(), tuple(patterns))


@functools.lru_cache(maxsize=1024)  # a folder has few patterns and sees few types
def _type_allowed(ctype: str, patterns: tuple[str, ...]) -> bool:
    allow = [p.lower() for p in patterns if not p.startswith("!")]
    deny = [p[1:].lower() for p in patterns if p.startswith("!")]
    if any(fnmatch.fnmatchcase(ctype, p) for p in deny):
        return False
    if not allow:
        return bool(deny)
    return any(fnmatch.fnmatchcase(ctype, p) for p in allow)


def skip_reason(rules: AttachmentRules, *, content_type: str, size: int,
                inline: bool) -> str | None:
    """Why an attachment is not published (first rule that applies), or None if it is."""
    if not rules.publish:
        return "disabled"
    if inline and not rules.inline:
        return "inline"
    if not type_allowed(content_type, rules.types):
        return "type"
    if size > rules.max_bytes:
        return "too_large"
    return None
