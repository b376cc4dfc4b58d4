"""The MIME walk done on a BODYSTRUCTURE with only the parts fetched so far.

Pure: no I/O. A `PartWalk` adapts a `bridge.mail.structure.Part` tree and the chunks
fetched so far to `bridge.mail.walk`, and says which parts it still needs (`needs`): the
text parts that make the preview (a prefix is enough when it already holds
`preview_chars` characters), the whole text with `include_body`, the first invitation, a
forwarded message's header. The fetcher fetches them and walks again until nothing is
missing; then `texts`, `leaves` and `calendar` are what the whole-message walk would have
found, and `bridge.mail.message.assemble` turns them into the same summary.

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

from bridge.mail import transfer_encoding as transfer
from bridge.mail.headers import parse_headers
from bridge.mail.message import collapse
from bridge.mail.structure import Part
from bridge.mail.walk import (
    Body,
    FoundAttachment,
    MimeFields,
    MimeWalk,
    TextPiece,
    guard,
    mime_fields,
)

PREVIEW_BYTES = {"text/plain": 4096, "text/html": 32768}  # first fetch of a text part


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
    found: FoundAttachment
    declared_size: str | None  # Content-Disposition's size parameter, if any

    @property
    def bounds(self) -> transfer.SizeBounds:
        return transfer.size_bounds(self.part.encoding, self.part.size, self.declared_size)


def subject_section(part: Part) -> str:
    """The section holding the Subject of the message inside a message/* part."""
    return f"{part.section}.HEADER.FIELDS (SUBJECT)"


@dataclass(frozen=True)
class _FetchedPart:
    """A `Part` with the chunks fetched so far, as `bridge.mail.walk` reads a tree."""

    part: Part
    fetched: Mapping[str, Chunk]

    @property
    def content_type(self) -> str:
        return self.part.content_type

    @property
    def is_multipart(self) -> bool:
        return self.part.is_multipart

    @property
    def children(self) -> tuple[_FetchedPart, ...]:
        return tuple(_FetchedPart(child, self.fetched) for child in self.part.children)

    @property
    def content_id(self) -> str | None:
        return self.part.content_id

    def fields(self) -> MimeFields:
        return _fields(self.part)

    def body(self) -> Body | None:
        chunk = self.fetched.get(self.part.section)
        if chunk is None:
            return None
        if chunk.complete:
            return Body(transfer.decode(self.part.encoding, chunk.data), True)
        return Body(transfer.decode_prefix(self.part.encoding, chunk.data), False)

    def attachment_data(self) -> bytes:
        return b""  # attachments are fetched when they are published

    def message_headers(self) -> dict[str, list[str]] | None:
        chunk = self.fetched.get(subject_section(self.part))
        return None if chunk is None else parse_headers(chunk.data)


class PartWalk:
    """One walk over `root` with the chunks fetched so far."""

    def __init__(
        self, root: Part, fetched: Mapping[str, Chunk], *, preview_chars: int,
        include_body: bool,
    ) -> None:
        self._limit = preview_chars
        self._include_body = include_body
        self.notes: list[str] = []
        self._needs: dict[str, Request] = {}
        walk = MimeWalk[_FetchedPart](self.notes)
        empty: list[TextPiece[_FetchedPart]] = []
        pieces = guard(self.notes, "mime", lambda: walk.walk(_FetchedPart(root, fetched)), empty)
        self.leaves = [Leaf(node.part, found, _fields(node.part).dparams.get("size"))
                       for node, found in walk.attachments]
        self.calendar: dict[str, Any] | None = walk.calendar
        for missing in walk.missing:
            if missing.header:
                section = subject_section(missing.node.part)
                self._needs[section] = Request(section)
            else:
                self._need(missing.node.part, whole=True)
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

    def _resolve(self, pieces: list[TextPiece[_FetchedPart]]) -> list[str]:
        """Request what the preview (or body) still needs; return the texts for the summary."""
        known: list[str] = []
        blocked = False  # an earlier piece is not known yet: later prefixes cannot be judged
        for piece in pieces:
            if piece.text is None:
                self._need(piece.node.part, whole=piece.whole)
                blocked = True
                continue
            if self._include_body:
                if piece.truncated:
                    self._need(piece.node.part, whole=True)
                continue
            if blocked:
                continue
            known.append(piece.text)
            joined = "\n\n".join(t.strip() for t in known if t.strip())
            enough = len(collapse(joined, self._limit)) > self._limit
            if piece.truncated and not enough:
                self._need(piece.node.part, whole=True)
                blocked = True
            elif enough:
                break
        return [p.text or "" for p in pieces]


def _fields(part: Part) -> MimeFields:
    return _mime_fields(Part("", part.maintype, part.subtype, part.params,
                             disposition=part.disposition,
                             disposition_params=part.disposition_params))


@functools.lru_cache(maxsize=1024)
def _mime_fields(part: Part) -> MimeFields:
    """A part's Content-Disposition and Content-Type decoded, once: a message is walked
    again after each fetch, and the same fields recur across messages (text/plain;
    charset=utf-8). Called (by `_fields`) with only the fields that make those headers."""
    return mime_fields(part.headers())
