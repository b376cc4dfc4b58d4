"""Pure message parsing: raw RFC 822 bytes -> the summary of CONTRACT §4 and its attachments.

No I/O happens here. `summarize` never raises: whatever fails is named in the summary's
``errors`` list and everything that could be read is still returned.

The message is parsed with the stdlib's compat32 policy, which keeps header values raw and
never raises on access; decoding (RFC 2047 / 2231, 8-bit headers, charsets) is done by
`bridge.mime`, HTML rendering by `bridge.htmltext`, invitations by `bridge.ical`.

TNEF (Outlook's ``winmail.dat``, application/ms-tnef): the only PyPI readers are pytnef
(last release 2006) and tnefparse (last release 2021-01); neither is clearly maintained, so a
TNEF part is listed and published as the single attachment it is, not unpacked.
"""

from __future__ import annotations

import email
import email.policy
import fnmatch
import functools
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.generator import BytesGenerator, Generator
from email.message import Message
from typing import Any, TypeVar

from bridge.config.model import FolderConfig
from bridge.mail import mime
from bridge.mail.htmltext import html_to_text
from bridge.mail.ical import parse_calendar

MAX_DEPTH = 30  # MIME nesting deeper than this is not followed (no real mail comes close)
MAX_ERRORS = 20  # hostile mail can make thousands of distinct notes; the first ones tell
_T = TypeVar("_T")
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
    """The JSON summary of CONTRACT §4 and the attachments it lists, in the same order."""

    payload: dict[str, Any]
    attachments: tuple[Attachment, ...]


def type_allowed(content_type: str, patterns: Sequence[str]) -> bool:
    """Whether `content_type` passes the folder's globs: `!pattern` denies and deny wins.

    A list of only denials allows everything else; an empty list allows nothing.
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


def skip_reason(folder: FolderConfig, *, content_type: str, size: int, inline: bool) -> str | None:
    """Why an attachment is not published (first rule that applies), or None if it is."""
    if not folder.attachments:
        return "disabled"
    if inline and not folder.inline_attachments:
        return "inline"
    if not type_allowed(content_type, folder.attachment_types):
        return "type"
    if size > folder.max_attachment_bytes:
        return "too_large"
    return None


@dataclass
class Found:
    """An attachment as a MIME walk finds it, before the folder's rules are applied."""

    filename: str | None
    content_type: str
    inline: bool
    data: bytes
    subject: str | None = None
    size: int | None = None  # decoded size when `data` is not held (the part-wise fetch)


@dataclass(frozen=True)
class Walked:
    """What a MIME walk yields: text pieces in order, attachments, the first invitation."""

    pieces: list[str]
    found: list[Found]
    calendar: dict[str, Any] | None


def guard(notes: list[str], what: str, fn: Callable[[], _T], default: _T, note: str = "") -> _T:
    """`fn()`, or `default` with a note: bad mail never stops the bridge."""
    try:
        return fn()
    except Exception as exc:  # record and go on
        notes.append(f"{what}: {note or type(exc).__name__}")
        return default


@dataclass
class _Walker:
    """Collects attachments (in MIME order), the first invitation and notes while walking."""

    notes: list[str]
    found: list[Found] = field(default_factory=list)
    calendar: dict[str, Any] | None = None

    def guard(self, what: str, fn: Callable[[], _T], default: _T, note: str = "") -> _T:
        return guard(self.notes, what, fn, default, note)

    def walk(self, part: Message, depth: int = 0, *, related: bool = False) -> list[str]:
        """Walk `part`; return its readable text pieces, record attachments on the way."""
        if depth > MAX_DEPTH:
            self.notes.append("mime: nesting too deep")
            return []
        ctype = self.guard("content-type", part.get_content_type, "application/octet-stream")
        maintype, _, subtype = ctype.partition("/")
        if maintype == "message":
            self.guard(ctype, lambda: self._add_message(part, ctype), None)
            return []
        if not part.is_multipart():
            if maintype == "multipart":  # no usable boundary: show what is there as text
                ctype = "text/plain"
            return self.guard(ctype, lambda: self._leaf(part, ctype, related), [])
        children = [c for c in part.get_payload() if isinstance(c, Message)]
        if subtype == "alternative":
            # Each child is walked once (its attachments count); text comes from the best
            # child that has any: text/plain, else text/html, else a nested multipart.
            texts = [self.walk(child, depth + 1) for child in children]
            order = sorted(range(len(children)), key=lambda i: -_alternative_rank(children[i]))
            return next((texts[i] for i in order if "".join(texts[i]).strip()), [])
        if subtype == "related":
            root = _related_root(part, children)
            pieces: list[str] = []
            for i, child in enumerate(children):
                text = self.walk(child, depth + 1, related=i != root)
                pieces += text if i == root else []
            return pieces
        # mixed, signed (content first, signature after), report, digest, unknown kinds
        return [text for child in children for text in self.walk(child, depth + 1)]

    def _leaf(self, part: Message, ctype: str, related: bool) -> list[str]:
        headers = _headers(part)
        disposition, dparams = mime.header_params(headers, "content-disposition", self.notes)
        _, cparams = mime.header_params(headers, "content-type", self.notes)
        raw_name = dparams.get("filename") or cparams.get("name")
        data = part.get_payload(decode=True)
        data = data if isinstance(data, bytes) else b""
        in_body = disposition != "attachment" and not raw_name and not related
        if ctype == "text/calendar" and self.calendar is None:
            text = mime.part_text(data, cparams, self.notes, ctype)
            self.calendar = self.guard("calendar", lambda: parse_calendar(text), None)
        if in_body and ctype in ("text/plain", "text/html", "text/calendar"):
            if ctype == "text/calendar":
                return []
            text = mime.part_text(data, cparams, self.notes, ctype)
            return [html_to_text(text) if ctype == "text/html" else text]
        inline = disposition == "inline" or (
            related and ctype.startswith("image/") and bool(headers.get("content-id"))
        )
        self.found.append(Found(mime.sanitize_filename(raw_name), ctype, inline, data))
        return []

    def _add_message(self, part: Message, ctype: str) -> None:
        """A nested message (a forwarded mail): one attachment carrying its own subject."""
        headers = _headers(part)
        disposition, dparams = mime.header_params(headers, "content-disposition", self.notes)
        _, cparams = mime.header_params(headers, "content-type", self.notes)
        payload = part.get_payload()
        inner = payload[0] if isinstance(payload, list) and payload else None
        forwarded = ctype in ("message/rfc822", "message/global")
        data: bytes
        if forwarded and isinstance(inner, Message):
            data = _flatten(inner)
        else:  # delivery-status and friends, or a body the parser kept as text
            decoded = None if isinstance(payload, list) else part.get_payload(decode=True)
            data = decoded if isinstance(decoded, bytes) else _body_of(part)
        subject = None
        if forwarded:
            inner_msg = inner if isinstance(inner, Message) else _parse(data)
            subject = _first(_headers(inner_msg), "subject", self.notes, "subject") or ""
        raw_name = dparams.get("filename") or cparams.get("name")
        if not raw_name and subject is not None:
            raw_name = forwarded_filename(subject)
        self.found.append(Found(
            mime.sanitize_filename(raw_name), ctype, disposition == "inline", data,
            mime.scrub(subject) if subject is not None else None,
        ))


def forwarded_filename(subject: str) -> str:
    """The file name of a forwarded message that has none: its subject, `.eml`."""
    return f"{subject.replace('/', '_').replace(chr(92), '_')[:200] or 'message'}.eml"


def _alternative_rank(part: Message) -> int:
    ctype = part.get_content_type()
    return {"text/plain": 3, "text/html": 2}.get(ctype, 1 if part.is_multipart() else 0)


def _related_root(part: Message, children: list[Message]) -> int:
    """RFC 2387: the root is the child named by `start`, else the first."""
    _, params = mime.header_params(_headers(part), "content-type", [])
    start = params.get("start", "").strip("<> ")
    for i, child in enumerate(children):
        if start and _headers(child).get("content-id", [""])[0].strip().strip("<>") == start:
            return i
    return 0


def _headers(part: Message) -> dict[str, list[str]]:
    """Raw header values by lower-case name, in order (8-bit bytes as surrogates)."""
    out: dict[str, list[str]] = {}
    for name, value in part.raw_items():
        out.setdefault(str(name).strip().lower(), []).append(str(value))
    return out


def _first(headers: dict[str, list[str]], name: str, notes: list[str], where: str) -> str | None:
    values = headers.get(name)
    return mime.header_text(values[0], notes, where) if values else None


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


def _parse(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def _parse_headers_email(raw: bytes) -> dict[str, list[str]]:
    """`parse_headers` by the stdlib's feedparser: the reference the fast path must equal."""
    return _headers(_parse(raw))


def _parse_headers_fast(raw: bytes) -> dict[str, list[str]] | None:
    """`parse_headers` for a plain header block, else None (the caller falls back).

    Plain: every line is a field ``name:value`` (name printable ASCII without space or
    colon, `email.feedparser.headerRE`) or a continuation (leading space or tab) of one,
    up to an empty line that ends the input, or the end of the input; no Content-Type
    (the feedparser reads the body by it). Lines are what the feedparser splits: at LF
    or CRLF (a lone CR also ends a line there: such input falls back), line endings
    kept; values as `Compat32.header_source_parse` makes them."""
    text = raw.decode("ascii", "surrogateescape")  # as `email.message_from_bytes`
    if "\r" in text and text.count("\r") != text.count("\r\n"):
        return None
    pieces = text.split("\n")
    last = pieces.pop()  # after the last LF: an unterminated last line, or nothing
    lines = [piece + "\n" for piece in pieces]
    if last:
        lines.append(last)
    out: dict[str, list[str]] = {}
    field: list[str] = []  # the source lines of the field being read
    for index, line in enumerate(lines):
        if line[0] in " \t":
            if not field:  # a continuation first: a defect the feedparser skips
                return None
            field.append(line)
            continue
        if line in ("\n", "\r\n"):  # the blank line that ends the block
            if index != len(lines) - 1:  # a body follows
                return None
            break
        colon = line.find(":")
        name = line[:colon]
        if colon <= 0 or not (name.isascii() and name.isprintable()) or " " in name:
            return None  # no field: the feedparser's body (or its "From " envelope line)
        if field and not _store_field(out, field):
            return None
        field = [line]
    if field and not _store_field(out, field):
        return None
    return out


def _store_field(out: dict[str, list[str]], lines: list[str]) -> bool:
    """Add a field's source lines to `out` as `Compat32.header_source_parse` and `_headers`
    do; False for a Content-Type, which the feedparser also acts on."""
    name, value = lines[0].split(":", 1)
    value = value.lstrip(" \t") + "".join(lines[1:])
    key = name.strip().lower()
    if key == "content-type":
        return False
    out.setdefault(key, []).append(value.rstrip("\r\n"))
    return True


def parse_headers(raw: bytes) -> dict[str, list[str]]:
    """Raw header values of a header block (e.g. a fetched HEADER.FIELDS) by name.

    A plain block is split directly (the feedparser was ~8 % of a backlog's CPU); anything
    else goes through the feedparser. Both give the same result (tests/test_fastpaths.py).
    """
    fast = _parse_headers_fast(raw)
    return fast if fast is not None else _parse_headers_email(raw)


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


def summarize(
    raw: bytes,
    *,
    account: str,
    folder: FolderConfig,
    folder_name: str,
    uid: int,
    uidvalidity: int,
    flags: Sequence[str | bytes],
    internaldate: datetime | None,
    size: int | None,
    attachment_topic_prefix: str,
    include_body: bool | None = None,
) -> Summary:
    """Summarize one message for MQTT; `include_body` (when given) overrides the folder's."""
    try:
        return _summarize(
            raw, account=account, folder=folder, folder_name=folder_name, uid=uid,
            uidvalidity=uidvalidity, flags=flags, internaldate=internaldate, size=size,
            attachment_topic_prefix=attachment_topic_prefix, include_body=include_body,
        )
    except Exception as exc:  # a bug of ours; the caller still gets a well-formed summary
        payload: dict[str, Any] = {
            "account": account, "folder": folder_name, "uid": uid, "uidvalidity": uidvalidity,
            "message_id": None, "date": None, "received": None, "from": None, "to": [],
            "cc": [], "reply_to": [], "subject": "", "flags": [], "seen": False,
            "flagged": False, "importance": "normal",
            "size": size if size is not None else len(raw), "preview": "",
            "has_attachments": False, "attachments": [],
            "errors": [f"summary: {type(exc).__name__}"],
        }
        return Summary(payload, ())


def _summarize(
    raw: bytes,
    *,
    size: int | None,
    **context: Any,
) -> Summary:
    notes: list[str] = []
    w = _Walker(notes)
    msg = w.guard("parse", lambda: _parse(bytes(raw)), None)
    headers: dict[str, list[str]] = {}
    if msg is not None:
        headers = w.guard("headers", lambda: _headers(msg), {})

    def walk() -> Walked:
        pieces: list[str] = []
        if msg is not None:
            pieces = w.guard("mime", lambda: w.walk(msg), [])
        return Walked(pieces, w.found, w.calendar)

    return assemble(headers, notes, walk, size=size if size is not None else len(raw), **context)


def assemble(
    headers: dict[str, list[str]],
    notes: list[str],
    walk: Callable[[], Walked],
    *,
    account: str,
    folder: FolderConfig,
    folder_name: str,
    uid: int,
    uidvalidity: int,
    flags: Sequence[str | bytes],
    internaldate: datetime | None,
    size: int,
    attachment_topic_prefix: str,
    include_body: bool | None,
) -> Summary:
    """The summary from a message's top-level headers and its MIME walk (called once, after
    the headers are read, so that notes keep their order); shared by `summarize` and the
    part-wise fetch, which walks BODYSTRUCTURE instead of a parsed message."""

    def text_header(name: str) -> str | None:
        return guard(notes, name, lambda: _first(headers, name, notes, name), None)

    def address_header(name: str) -> list[mime.Address]:
        values = headers.get(name, [])
        return guard(notes, name, lambda: mime.addresses(values, notes, name), [])

    date = None
    raw_date = mime.unfold(headers.get("date", [""])[0]).strip()
    if raw_date:
        date = guard(notes, "date", lambda: mime.iso_date(raw_date), None, "unparseable")
    received = None
    if internaldate is not None:
        received = guard(notes, "received", lambda: mime.iso_datetime(internaldate), None)
    senders = address_header("from")
    flag_list: list[str] = guard(notes, "flags", lambda: _flag_list(flags), [])
    lowered = {f.lower() for f in flag_list}
    walked = walk()
    text = "\n\n".join(p.strip() for p in walked.pieces if p.strip())

    attachments: list[Attachment] = []
    for index, found in enumerate(walked.found):
        size_ = len(found.data) if found.size is None else found.size
        reason = skip_reason(folder, content_type=found.content_type, size=size_,
                             inline=found.inline)
        attachments.append(Attachment(
            index=index, filename=found.filename, content_type=found.content_type,
            size=size_, inline=found.inline, data=found.data if reason is None else b"",
            topic=f"{attachment_topic_prefix}/{uid}/{index}" if reason is None else None,
            skipped=reason, subject=found.subject,
        ))

    payload: dict[str, Any] = {
        "account": account,
        "folder": folder_name,
        "uid": uid,
        "uidvalidity": uidvalidity,
        "message_id": text_header("message-id") or None,
        "date": date,
        "received": received,
        "from": senders[0] if senders else None,
        "to": address_header("to"),
        "cc": address_header("cc"),
        "reply_to": address_header("reply-to"),
        "subject": text_header("subject") or "",
        "flags": flag_list,
        "seen": "\\seen" in lowered,
        "flagged": "\\flagged" in lowered,
        "importance": guard(notes, "importance", lambda: mime.importance(headers),
                            "normal"),
        "size": size,
        "preview": _preview(text, folder.preview_chars),
        # Like Outlook's paperclip: inline images (signature logos) do not count.
        "has_attachments": any(not a.inline for a in attachments),
        "attachments": [_entry(a) for a in attachments],
    }
    if folder.include_body if include_body is None else include_body:
        payload["body"] = text
    if walked.calendar is not None:
        payload["calendar"] = walked.calendar
    if notes:
        unique = list(dict.fromkeys(notes))
        payload["errors"] = unique[:MAX_ERRORS] + (
            [f"... and {len(unique) - MAX_ERRORS} more"] if len(unique) > MAX_ERRORS else []
        )
    return Summary(mime.scrub_tree(payload), tuple(attachments))


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
