"""The MIME walk: which parts make the text, which are attachments, the first invitation.

Pure: no I/O. One walk serves both ways a message is read: a whole message parsed by the
stdlib (`bridge.mail.message`) and a BODYSTRUCTURE with only some parts fetched
(`bridge.mail.partwise`). Each adapts its tree to `MimeNode`; a node whose body is not
fetched yet says so, and the walk notes what is missing instead of guessing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, Self, TypeVar

from bridge.mail import mime
from bridge.mail.htmltext import html_to_text
from bridge.mail.ical import parse_calendar

MAX_DEPTH = 30  # MIME nesting deeper than this is not followed (no real mail comes close)
FORWARDED = ("message/rfc822", "message/global")  # a message inside: listed as one attachment
TEXT_TYPES = ("text/plain", "text/html", "text/calendar")
_T = TypeVar("_T")


@dataclass(frozen=True)
class Body:
    """A part's body with its Content-Transfer-Encoding undone."""

    data: bytes = field(repr=False)
    complete: bool  # False: only a prefix of the part was fetched


@dataclass(frozen=True)
class MimeFields:
    """A part's Content-Disposition and Content-Type, decoded (RFC 2183, RFC 2045)."""

    disposition: str
    dparams: Mapping[str, str]
    cparams: Mapping[str, str]
    notes: tuple[str, ...]  # what decoding them noted

    @property
    def filename(self) -> str | None:
        """The raw file name: Content-Disposition's, else Content-Type's `name`."""
        return self.dparams.get("filename") or self.cparams.get("name")


class MimeNode(Protocol):
    """One part of a message as the walk sees it."""

    @property
    def content_type(self) -> str:
        """As declared, lower case."""

    @property
    def is_multipart(self) -> bool:
        """Whether it has parts to walk; a message/* part is a leaf."""

    @property
    def children(self) -> Sequence[Self]: ...

    @property
    def content_id(self) -> str | None: ...

    def fields(self) -> MimeFields: ...

    def body(self) -> Body | None:
        """The decoded body, or None if it is not fetched yet."""

    def attachment_data(self) -> bytes:
        """The bytes published as an attachment; b"" when they are fetched later."""

    def message_headers(self) -> dict[str, list[str]] | None:
        """A forwarded message's own header fields, or None if not fetched yet."""


@dataclass(frozen=True)
class FoundAttachment:
    """An attachment as the walk finds it, before the folder's rules are applied."""

    filename: str | None
    content_type: str
    inline: bool
    data: bytes
    subject: str | None = None
    size: int | None = None  # decoded size when `data` is not held (the part-wise fetch)


@dataclass(frozen=True)
class MessageContent:
    """What a walk found: text pieces in order, attachments, the first invitation."""

    texts: list[str]
    attachments: list[FoundAttachment]
    calendar: dict[str, Any] | None


_N = TypeVar("_N", bound=MimeNode)


@dataclass
class TextPiece(Generic[_N]):
    """A part that makes the text, and its text as far as it is known."""

    node: _N
    text: str | None  # None: not fetched yet
    truncated: bool = False  # from a prefix: the part has more
    whole: bool = False  # a prefix would not do


@dataclass(frozen=True)
class Missing(Generic[_N]):
    """Something the walk could not read yet: a part's whole body, or (`header`) the
    header of the message inside a message/* part."""

    node: _N
    header: bool


def mime_fields(headers: dict[str, list[str]]) -> MimeFields:
    """Content-Disposition and Content-Type decoded from a part's raw header fields."""
    notes: list[str] = []
    disposition, dparams = mime.header_params(headers, "content-disposition", notes)
    _, cparams = mime.header_params(headers, "content-type", notes)
    return MimeFields(disposition, dparams, cparams, tuple(notes))


def guard(notes: list[str], what: str, fn: Callable[[], _T], default: _T, note: str = "") -> _T:
    """`fn()`, or `default` with a note: bad mail never stops the bridge."""
    try:
        return fn()
    except Exception as exc:  # record and go on
        notes.append(f"{what}: {note or type(exc).__name__}")
        return default


def forwarded_filename(subject: str) -> str:
    """The file name of a forwarded message that has none: its subject, `.eml`."""
    return f"{subject.replace('/', '_').replace(chr(92), '_')[:200] or 'message'}.eml"


class MimeWalk(Generic[_N]):
    """Collects attachments (in MIME order), the first invitation, what is missing and
    notes while walking one tree."""

    def __init__(self, notes: list[str]) -> None:
        self.notes = notes
        self.attachments: list[tuple[_N, FoundAttachment]] = []
        self.calendar: dict[str, Any] | None = None
        self.missing: list[Missing[_N]] = []
        self._calendar_missing = False

    def walk(self, node: _N, depth: int = 0, *, related: bool = False) -> list[TextPiece[_N]]:
        """Walk `node`; return its text pieces, record attachments on the way."""
        if depth > MAX_DEPTH:
            self.notes.append("mime: nesting too deep")
            return []
        ctype = node.content_type
        if ctype in FORWARDED:
            guard(self.notes, ctype, lambda: self._forwarded(node, ctype), None)
            return []
        if not node.is_multipart:
            if ctype.startswith("multipart/"):  # no usable boundary: show what is there as text
                ctype = "text/plain"
            return guard(self.notes, ctype, lambda: self._leaf(node, ctype, related), [])
        children = node.children
        subtype = ctype.partition("/")[2]
        if subtype == "alternative":
            # Each child is walked once (its attachments count); text comes from the best
            # child that has any (or may have, once fetched): text/plain, else text/html,
            # else a nested multipart.
            texts = [self.walk(child, depth + 1) for child in children]
            order = sorted(range(len(children)), key=lambda i: -_alternative_rank(children[i]))
            return next((texts[i] for i in order if _may_have_text(texts[i])), [])
        if subtype == "related":
            root = _related_root(node)
            pieces: list[TextPiece[_N]] = []
            for i, child in enumerate(children):
                text = self.walk(child, depth + 1, related=i != root)
                pieces += text if i == root else []
            return pieces
        # mixed, signed (content first, signature after), report, digest, unknown kinds
        return [text for child in children for text in self.walk(child, depth + 1)]

    def _leaf(self, node: _N, ctype: str, related: bool) -> list[TextPiece[_N]]:
        fields = node.fields()
        self.notes.extend(fields.notes)
        raw_name = fields.filename
        in_body = fields.disposition != "attachment" and not raw_name and not related
        if ctype == "text/calendar" and self.calendar is None and not self._calendar_missing:
            self._read_calendar(node, fields.cparams)
        if in_body and ctype in TEXT_TYPES:
            return [] if ctype == "text/calendar" else [self._piece(node, ctype, fields.cparams)]
        inline = fields.disposition == "inline" or (
            related and ctype.startswith("image/") and node.content_id is not None
        )
        found = FoundAttachment(mime.sanitize_filename(raw_name), ctype, inline,
                                node.attachment_data())
        self.attachments.append((node, found))
        return []

    def _read_calendar(self, node: _N, cparams: Mapping[str, str]) -> None:
        body = node.body()
        if body is None or not body.complete:
            self.missing.append(Missing(node, header=False))
            self._calendar_missing = True
            return
        text = mime.part_text(body.data, cparams, self.notes, "text/calendar")
        self.calendar = guard(self.notes, "calendar", lambda: parse_calendar(text), None)

    def _piece(self, node: _N, ctype: str, cparams: Mapping[str, str]) -> TextPiece[_N]:
        body = node.body()
        if body is None:
            return TextPiece(node, None)
        if body.complete:
            text = mime.part_text(body.data, cparams, self.notes, ctype)
            return TextPiece(node, html_to_text(text) if ctype == "text/html" else text)
        # A prefix gives the text the whole part would, cut where that text is certain;
        # 8-bit text whose charset is guessed is UTF-8 only if the whole part is.
        if not body.data.isascii() and mime.declared_codec(cparams.get("charset")) is None:
            return TextPiece(node, None, whole=True)
        text = mime.part_text(body.data, cparams, self.notes, ctype)
        if ctype == "text/html":
            text = html_to_text(text[: text.rfind(">") + 1])
        else:  # the last word may be cut, its last character half decoded
            end = len(text)
            while end and not text[end - 1].isspace():
                end -= 1
            text = text[:end]
        return TextPiece(node, text, truncated=True)

    def _forwarded(self, node: _N, ctype: str) -> None:
        """A forwarded message: one attachment named after its own subject."""
        fields = node.fields()
        self.notes.extend(fields.notes)
        data = node.attachment_data()
        headers = node.message_headers()
        subject = ""
        if headers is None:
            self.missing.append(Missing(node, header=True))
        elif values := headers.get("subject"):
            subject = mime.header_text(values[0], self.notes, "subject")
        raw_name = fields.filename or forwarded_filename(subject)
        found = FoundAttachment(mime.sanitize_filename(raw_name), ctype,
                                fields.disposition == "inline", data, mime.scrub(subject))
        self.attachments.append((node, found))


def _may_have_text(pieces: Sequence[TextPiece[Any]]) -> bool:
    return any(p.text is None or p.truncated or p.text.strip() for p in pieces)


def _alternative_rank(node: MimeNode) -> int:
    return {"text/plain": 3, "text/html": 2}.get(node.content_type, 1 if node.is_multipart else 0)


def _related_root(node: MimeNode) -> int:
    """RFC 2387: the root is the child named by `start`, else the first."""
    start = node.fields().cparams.get("start", "").strip("<> ")
    for i, child in enumerate(node.children):
        if start and (child.content_id or "").strip().strip("<>") == start:
            return i
    return 0
