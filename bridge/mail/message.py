"""Pure message parsing: raw RFC 822 bytes -> the published summary and its attachments.

No I/O happens here. `summarize` never raises: whatever fails is named in the summary's
``errors`` list and everything that could be read is still returned.

The message is parsed with the stdlib's compat32 policy, which keeps header values raw and
never raises on access; decoding (RFC 2047 / 2231, 8-bit headers, charsets) is done by
`bridge.mail.mime`, the MIME walk by `bridge.mail.walk`, HTML rendering by
`bridge.mail.htmltext`, invitations by `bridge.mail.ical`. `assemble` also serves the
part-wise fetch (`bridge.mail.partwise`), which walks a BODYSTRUCTURE instead.

TNEF (Outlook's ``winmail.dat``, application/ms-tnef) is listed and published as the
single attachment it is, not unpacked: no maintained reader of it exists.
"""

from __future__ import annotations

import email.policy
import functools
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.generator import BytesGenerator, Generator
from email.message import Message
from typing import Any

from bridge.mail import mime
from bridge.mail.headers import first_text, parse_message, raw_headers
from bridge.mail.policy import SummaryOptions, skip_reason
from bridge.mail.walk import (
    FORWARDED,
    Body,
    FoundAttachment,
    MessageContent,
    MimeFields,
    MimeWalk,
    TextPiece,
    guard,
    mime_fields,
)

MAX_ERRORS = 20  # hostile mail can make thousands of distinct notes; the first ones tell
_CRLF = email.policy.compat32.clone(linesep="\r\n")


@dataclass(frozen=True)
class Attachment:
    """One attachment of a message, and whether (and where) it will be published."""

    index: int  # position in the attachment list, from 0, MIME order
    filename: str | None  # sanitized for display: no path parts, no control characters
    content_type: str
    size: int  # decoded size in bytes
    inline: bool
    data: bytes = field(repr=False)  # decoded payload; b"" unless it will be published
    topic: str | None  # attachment topic if it will be published, else None
    skipped: str | None  # None, "too_large", "disabled", "inline" or "type"
    subject: str | None = None  # a forwarded message's (message/rfc822) own subject


@dataclass(frozen=True)
class Summary:
    """The JSON summary as published and the attachments it lists, in the same order."""

    payload: dict[str, Any]
    attachments: tuple[Attachment, ...]


@dataclass(frozen=True)
class StoredMessage:
    """What the server says of one message besides its content."""

    uid: int
    flags: Sequence[str | bytes] = ()
    internaldate: datetime | None = None
    size: int | None = None  # RFC822.SIZE; None: the length of the bytes summarized


class _MessagePart:
    """A part of a message parsed by the stdlib, as `bridge.mail.walk` reads a tree."""

    def __init__(self, part: Message, notes: list[str]) -> None:
        self._part = part
        self._notes = notes
        self._headers = raw_headers(part)
        self.content_type = guard(notes, "content-type", part.get_content_type,
                                  "application/octet-stream")
        self.is_multipart = not self.content_type.startswith("message/") and part.is_multipart()
        ids = self._headers.get("content-id")
        self.content_id = ids[0] if ids else None

    @functools.cached_property
    def children(self) -> list[_MessagePart]:
        payload = self._part.get_payload()
        return [_MessagePart(c, self._notes) for c in payload if isinstance(c, Message)]

    def fields(self) -> MimeFields:
        return mime_fields(self._headers)

    def body(self) -> Body:
        data = self._part.get_payload(decode=True)
        return Body(data if isinstance(data, bytes) else b"", True)

    def attachment_data(self) -> bytes:
        if not self.content_type.startswith("message/"):
            return self.body().data
        inner = self._inner()
        if self.content_type in FORWARDED and inner is not None:
            return _flatten(inner)
        # delivery-status and friends, or a body the parser kept as text
        payload = self._part.get_payload()
        decoded = None if isinstance(payload, list) else self._part.get_payload(decode=True)
        return decoded if isinstance(decoded, bytes) else _body_of(self._part)

    def message_headers(self) -> dict[str, list[str]]:
        inner = self._inner()
        return raw_headers(inner if inner is not None else parse_message(self.attachment_data()))

    def _inner(self) -> Message | None:
        payload = self._part.get_payload()
        inner = payload[0] if isinstance(payload, list) and payload else None
        return inner if isinstance(inner, Message) else None


def _flatten(msg: Message) -> bytes:
    """A parsed message back as bytes; raw 8-bit bytes survive (surrogateescape)."""
    try:
        out = io.BytesIO()
        BytesGenerator(out, mangle_from_=False, policy=_CRLF).flatten(msg)
        return out.getvalue()
    except UnicodeError:  # mangled 8-bit headers trip the binary generator; text is lenient
        text = io.StringIO()
        Generator(text, mangle_from_=False, policy=_CRLF).flatten(msg)
        return text.getvalue().encode("utf-8", "surrogateescape")


def _body_of(part: Message) -> bytes:
    """A part serialized without its own header block."""
    return _flatten(part).partition(b"\r\n\r\n")[2]


def collapse(text: str, limit: int | None = None) -> str:
    """The text a preview is cut from: invisible padding dropped, white space collapsed.

    With `limit`, possibly only a prefix of that: one longer than `limit` characters (all
    of it if it is not that long). The collapse of a prefix of `text` is a prefix of the
    collapse of `text`, so a preview cut from it is the same; a 40 KB text is not
    collapsed whole for a 200-character preview."""
    if limit is not None:
        head = max(2 * limit, 256)
        while head < len(text):
            collapsed = collapse(text[:head])
            if len(collapsed) > limit:
                return collapsed
            head *= 4
    return " ".join(mime.ZERO_WIDTH.sub("", text).split())


def _preview(text: str, limit: int) -> str:
    """White space collapsed, cut to at most `limit` characters (code points, never bytes)."""
    limit = max(limit, 0)
    return collapse(text, limit)[:limit].rstrip()


def _flag_list(flags: Sequence[str | bytes] | None) -> list[str]:
    return [f.decode("utf-8", "replace") if isinstance(f, bytes) else str(f) for f in flags or ()]




def summarize(raw: bytes, options: SummaryOptions, stored: StoredMessage) -> Summary:
    """Summarize one whole message for MQTT."""
    size = stored.size if stored.size is not None else len(raw)
    try:
        return _summarize(raw, options, stored, size)
    except Exception as exc:  # a bug of ours; the caller still gets a well-formed summary
        payload: dict[str, Any] = {
            **_origin(options, stored.uid),
            "message_id": None, "date": None, "received": None, "from": None, "to": [],
            "cc": [], "reply_to": [], "subject": "", "flags": [], "seen": False,
            "flagged": False, "importance": "normal", "size": size, "preview": "",
            "has_attachments": False, "attachments": [],
            "errors": [f"summary: {type(exc).__name__}"],
        }
        return Summary(payload, ())


def _summarize(raw: bytes, options: SummaryOptions, stored: StoredMessage,
               size: int) -> Summary:
    notes: list[str] = []
    msg = guard(notes, "parse", lambda: parse_message(bytes(raw)), None)
    headers: dict[str, list[str]] = {}
    if msg is not None:
        headers = guard(notes, "headers", lambda: raw_headers(msg), {})

    def walk() -> MessageContent:
        walker = MimeWalk[_MessagePart](notes)
        pieces: list[TextPiece[_MessagePart]] = []
        if msg is not None:
            pieces = guard(notes, "mime", lambda: walker.walk(_MessagePart(msg, notes)), [])
        return MessageContent([p.text or "" for p in pieces],
                              [found for _, found in walker.attachments], walker.calendar)

    return assemble(headers, notes, walk, options, stored, size)


def assemble(
    headers: dict[str, list[str]],
    notes: list[str],
    walk: Callable[[], MessageContent],
    options: SummaryOptions,
    stored: StoredMessage,
    size: int,
) -> Summary:
    """The summary from a message's top-level headers and its MIME walk (called once, after
    the headers are read, so that notes keep their order); shared by `summarize` and the
    part-wise fetch, which walks BODYSTRUCTURE instead of a parsed message."""
    date = _date(headers, notes)
    received = None
    if (internaldate := stored.internaldate) is not None:
        received = guard(notes, "received", lambda: mime.iso_datetime(internaldate), None)
    senders = _address_header(headers, "from", notes)
    flag_list: list[str] = guard(notes, "flags", lambda: _flag_list(stored.flags), [])
    lowered = {f.lower() for f in flag_list}
    content = walk()
    text = "\n\n".join(p.strip() for p in content.texts if p.strip())
    attachments = _attachments(content.attachments, options, stored.uid)
    payload: dict[str, Any] = {
        **_origin(options, stored.uid),
        "message_id": _text_header(headers, "message-id", notes) or None,
        "date": date,
        "received": received,
        "from": senders[0] if senders else None,
        "to": _address_header(headers, "to", notes),
        "cc": _address_header(headers, "cc", notes),
        "reply_to": _address_header(headers, "reply-to", notes),
        "subject": _text_header(headers, "subject", notes) or "",
        "flags": flag_list,
        "seen": "\\seen" in lowered,
        "flagged": "\\flagged" in lowered,
        "importance": guard(notes, "importance", lambda: mime.importance(headers), "normal"),
        "size": size,
        "preview": _preview(text, options.preview_chars),
        # Like Outlook's paperclip: inline images (signature logos) do not count.
        "has_attachments": any(not a.inline for a in attachments),
        "attachments": [_entry(a) for a in attachments],
    }
    _add_optional(payload, options, text, content.calendar, notes)
    return Summary(mime.scrub_tree(payload), tuple(attachments))


def _origin(options: SummaryOptions, uid: int) -> dict[str, Any]:
    """The keys that say which message a summary is of, first in every payload."""
    return {"account": options.account, "folder": options.folder, "uid": uid,
            "uidvalidity": options.uidvalidity}


def _text_header(headers: dict[str, list[str]], name: str, notes: list[str]) -> str | None:
    return guard(notes, name, lambda: first_text(headers, name, notes, name), None)


def _address_header(headers: dict[str, list[str]], name: str,
                    notes: list[str]) -> list[mime.Address]:
    values = headers.get(name, [])
    return guard(notes, name, lambda: mime.addresses(values, notes, name), [])


def _date(headers: dict[str, list[str]], notes: list[str]) -> str | None:
    raw_date = mime.unfold(headers.get("date", [""])[0]).strip()
    if not raw_date:
        return None
    return guard(notes, "date", lambda: mime.iso_date(raw_date), None, "unparseable")


def _attachments(found: list[FoundAttachment], options: SummaryOptions,
                 uid: int) -> list[Attachment]:
    """The attachments as listed: the folder's rules applied, topics for those published."""
    attachments: list[Attachment] = []
    for index, item in enumerate(found):
        size = len(item.data) if item.size is None else item.size
        reason = skip_reason(options.attachments, content_type=item.content_type, size=size,
                             inline=item.inline)
        attachments.append(Attachment(
            index=index, filename=item.filename, content_type=item.content_type,
            size=size, inline=item.inline, data=item.data if reason is None else b"",
            topic=f"{options.attachment_topic_prefix}/{uid}/{index}" if reason is None
            else None,
            skipped=reason, subject=item.subject,
        ))
    return attachments


def _add_optional(payload: dict[str, Any], options: SummaryOptions, text: str,
                  calendar: dict[str, Any] | None, notes: list[str]) -> None:
    """The keys a payload has only sometimes: body, calendar, errors."""
    if options.include_body:
        payload["body"] = text
    if calendar is not None:
        payload["calendar"] = calendar
    if notes:
        unique = list(dict.fromkeys(notes))
        payload["errors"] = unique[:MAX_ERRORS] + (
            [f"... and {len(unique) - MAX_ERRORS} more"] if len(unique) > MAX_ERRORS else []
        )


def _entry(a: Attachment) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "index": a.index, "filename": a.filename, "content_type": a.content_type,
        "size": a.size, "inline": a.inline, "topic": a.topic,
    }
    if a.skipped is not None:
        entry["skipped"] = a.skipped
    if a.subject is not None:
        entry["subject"] = a.subject
    return entry
