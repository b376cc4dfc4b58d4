"""The MIME walk of `bridge.message`, done on a BODYSTRUCTURE with only the parts fetched.

Pure: no I/O. A `PartWalk` runs over a `bodystructure.Part` tree and whatever parts have
been fetched so far, and says which parts it still needs (`needs`): the text parts that
make the preview (a prefix is enough when it already holds `preview_chars` characters),
the whole text with `include_body`, the first invitation. The fetcher fetches them and
walks again until nothing is missing; then `texts`, `leaves` and `calendar` are what the
whole-message walk would have found, and `bridge.message.assemble` turns them into the
same summary.

A prefix gives the same preview as the whole part because it is cut where the decoded
text is certain: after whole base64 quanta / quoted-printable lines, then at the last
white space (plain text) or the last tag end (HTML). Where a prefix cannot be decoded
as the whole part would be (8-bit text whose charset is guessed: it is UTF-8 only if the
whole part is), the whole part is fetched.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.imap.bodystructure import FORWARDED, Part
from bridge.mail import mime
from bridge.mail import transfer_encoding as transfer
from bridge.mail.htmltext import html_to_text
from bridge.mail.ical import parse_calendar
from bridge.mail.message import MAX_DEPTH, Found, collapse, forwarded_filename, guard, parse_headers

PREVIEW_BYTES = {"text/plain": 4096, "text/html": 32768}  # first fetch of a text part
_TEXT_TYPES = ("text/plain", "text/html", "text/calendar")


@dataclass(frozen=True)
class Chunk:
    """Bytes fetched for one section, as sent (transfer-encoded)."""

    data: bytes = field(repr=False)
    complete: bool  # the whole part, not a prefix


@dataclass(frozen=True)
class Request:
    """One part to fetch: `length` bytes from `offset`, or all of it (`length` None)."""

    section: str
    length: int | None = None
    offset: int = 0

    @property
    def item(self) -> str:
        """The FETCH item; BODY.PEEK never sets \\Seen (RFC 3501 §6.4.5)."""
        partial = f"<{self.offset}.{self.length}>" if self.length is not None else ""
        return f"BODY.PEEK[{self.section}]{partial}"

    @property
    def key(self) -> bytes:
        """The key of the FETCH response item (RFC 3501 §7.4.2: `BODY[1]<0>`)."""
        partial = f"<{self.offset}>" if self.length is not None else ""
        return f"BODY[{self.section}]{partial}".encode()


@dataclass(frozen=True)
class Leaf:
    """An attachment as the walk finds it: its part and what the summary lists."""

    part: Part
    found: Found
    declared_size: str | None  # Content-Disposition's size parameter, if any

    @property
    def bounds(self) -> transfer.SizeBounds:
        return transfer.size_bounds(self.part.encoding, self.part.size, self.declared_size)


@dataclass
class _Piece:
    part: Part
    text: str | None  # None: not fetched yet
    truncated: bool = False
    whole: bool = False  # a prefix would not do


class PartWalk:
    """One walk over `root` with the chunks fetched so far."""

    def __init__(
        self, root: Part, fetched: Mapping[str, Chunk], *, preview_chars: int,
        include_body: bool,
    ) -> None:
        self._fetched = fetched
        self._limit = preview_chars
        self._include_body = include_body
        self.notes: list[str] = []
        self.leaves: list[Leaf] = []
        self.calendar: dict[str, Any] | None = None
        self._calendar_pending = False
        self._needs: dict[str, Request] = {}
        empty: list[_Piece] = []
        pieces = guard(self.notes, "mime", lambda: self._walk(root, 0), empty)
        self.texts = self._resolve(pieces)

    @property
    def needs(self) -> list[Request]:
        """Parts to fetch before the summary is certain; empty when it is."""
        return list(self._needs.values())

    def _need(self, part: Part, *, whole: bool) -> None:
        # A prefix even of a short part: the server sends what there is, and the same items
        # for every message let one FETCH serve many.
        length = None if whole or self._include_body else PREVIEW_BYTES.get(part.content_type)
        if part.section not in self._needs or length is None:
            self._needs[part.section] = Request(part.section, length)

    # -- the walk: bridge.message._Walker, step for step ----------------------------------

    def _walk(self, part: Part, depth: int, *, related: bool = False) -> list[_Piece]:
        if depth > MAX_DEPTH:
            self.notes.append("mime: nesting too deep")
            return []
        ctype = part.content_type
        if ctype in FORWARDED:
            guard(self.notes, ctype, lambda: self._forwarded(part, ctype), None)
            return []
        if not part.is_multipart:
            return guard(self.notes, ctype, lambda: self._leaf(part, ctype, related), [])
        children = part.children
        if part.subtype == "alternative":
            texts = [self._walk(child, depth + 1) for child in children]
            order = sorted(range(len(children)), key=lambda i: -_alternative_rank(children[i]))
            for i in order:
                if any(p.text is None or p.truncated or p.text.strip() for p in texts[i]):
                    return texts[i]  # has text, or may have: decided once it is fetched
            return []
        if part.subtype == "related":
            root = _related_root(part)
            pieces: list[_Piece] = []
            for i, child in enumerate(children):
                text = self._walk(child, depth + 1, related=i != root)
                pieces += text if i == root else []
            return pieces
        return [text for child in children for text in self._walk(child, depth + 1)]

    def _leaf(self, part: Part, ctype: str, related: bool) -> list[_Piece]:
        fields = _fields(part)
        self.notes.extend(fields.notes)
        disposition, dparams, cparams = fields.disposition, fields.dparams, fields.cparams
        raw_name = dparams.get("filename") or cparams.get("name")
        in_body = disposition != "attachment" and not raw_name and not related
        if ctype == "text/calendar" and self.calendar is None and not self._calendar_pending:
            chunk = self._fetched.get(part.section)
            if chunk is not None and chunk.complete:
                text = self._decode(part, chunk.data, cparams, ctype)
                self.calendar = guard(self.notes, "calendar", lambda: parse_calendar(text), None)
            else:
                self._need(part, whole=True)
                self._calendar_pending = True
        if in_body and ctype in _TEXT_TYPES:
            return [] if ctype == "text/calendar" else [self._piece(part, ctype, cparams)]
        inline = disposition == "inline" or (
            related and ctype.startswith("image/") and part.content_id is not None
        )
        found = Found(mime.sanitize_filename(raw_name), ctype, inline, b"")
        self.leaves.append(Leaf(part, found, dparams.get("size")))
        return []

    def _forwarded(self, part: Part, ctype: str) -> None:
        """A forwarded message, as `bridge.message` lists it: one attachment named after its
        own subject, which comes from its header (fetched); its bytes are the part's."""
        fields = _fields(part)
        self.notes.extend(fields.notes)
        section = f"{part.section}.HEADER.FIELDS (SUBJECT)"
        chunk = self._fetched.get(section)
        if chunk is None:
            self._needs[section] = Request(section)
            subject = ""
        else:
            values = parse_headers(chunk.data).get("subject")
            subject = mime.header_text(values[0], self.notes, "subject") if values else ""
        raw_name = (fields.dparams.get("filename") or fields.cparams.get("name")
                    or forwarded_filename(subject))
        found = Found(mime.sanitize_filename(raw_name), ctype, fields.disposition == "inline",
                      b"", mime.scrub(subject))
        self.leaves.append(Leaf(part, found, fields.dparams.get("size")))

    def _piece(self, part: Part, ctype: str, cparams: Mapping[str, str]) -> _Piece:
        chunk = self._fetched.get(part.section)
        if chunk is None:
            return _Piece(part, None)
        if chunk.complete:
            text = self._decode(part, chunk.data, cparams, ctype)
            return _Piece(part, html_to_text(text) if ctype == "text/html" else text)
        data = transfer.decode_prefix(part.encoding, chunk.data)
        if not data.isascii() and mime.declared_codec(cparams.get("charset")) is None:
            return _Piece(part, None, whole=True)  # guessed charset: only the whole tells
        text = mime.part_text(data, cparams, self.notes, ctype)
        if ctype == "text/html":
            text = html_to_text(text[: text.rfind(">") + 1])
        else:  # the last word may be cut, its last character half decoded
            end = len(text)
            while end and not text[end - 1].isspace():
                end -= 1
            text = text[:end]
        return _Piece(part, text, truncated=True)

    def _decode(self, part: Part, raw: bytes, cparams: Mapping[str, str], ctype: str) -> str:
        return mime.part_text(transfer.decode(part.encoding, raw), cparams, self.notes, ctype)

    # -- what is still missing ----------------------------------------------------------

    def _resolve(self, pieces: list[_Piece]) -> list[str]:
        """Request what the preview (or body) still needs; return the texts for the summary."""
        known: list[str] = []
        blocked = False  # an earlier piece is not known yet: later prefixes cannot be judged
        for piece in pieces:
            if piece.text is None:
                self._need(piece.part, whole=piece.whole)
                blocked = True
                continue
            if self._include_body:
                if piece.truncated:
                    self._need(piece.part, whole=True)
                continue
            if blocked:
                continue
            known.append(piece.text)
            joined = "\n\n".join(t.strip() for t in known if t.strip())
            enough = len(collapse(joined, self._limit)) > self._limit
            if piece.truncated and not enough:
                self._need(piece.part, whole=True)
                blocked = True
            elif enough:
                break
        return [p.text or "" for p in pieces]


@dataclass(frozen=True)
class _MimeFields:
    disposition: str
    dparams: Mapping[str, str]
    cparams: Mapping[str, str]
    notes: tuple[str, ...]  # what decoding them noted


def _fields(part: Part) -> _MimeFields:
    return _mime_fields(Part("", part.maintype, part.subtype, part.params,
                             disposition=part.disposition,
                             disposition_params=part.disposition_params))


@functools.lru_cache(maxsize=1024)
def _mime_fields(part: Part) -> _MimeFields:
    """A leaf's Content-Disposition and Content-Type decoded, once: a message is walked
    again after each fetch, and the same fields recur across messages (text/plain;
    charset=utf-8). Called (by `_fields`) with only the fields that make those headers."""
    headers = part.headers()
    notes: list[str] = []
    disposition, dparams = mime.header_params(headers, "content-disposition", notes)
    _, cparams = mime.header_params(headers, "content-type", notes)
    return _MimeFields(disposition, dparams, cparams, tuple(notes))


def _alternative_rank(part: Part) -> int:
    return {"text/plain": 3, "text/html": 2}.get(part.content_type, 1 if part.is_multipart else 0)


def _related_root(part: Part) -> int:
    """RFC 2387: the root is the child named by `start`, else the first."""
    _, params = mime.header_params(part.headers(), "content-type", [])
    start = params.get("start", "").strip("<> ")
    for i, child in enumerate(part.children):
        if start and (child.content_id or "").strip().strip("<>") == start:
            return i
    return 0
