"""The IMAP round trips of the part-wise fetch: metadata, text parts, attachments.

One FETCH per batch of UIDs brings flags, dates, sizes, BODYSTRUCTURE and the header
fields the summary reads. Per window of messages (bounded by the bytes fetched ahead),
one FETCH per distinct list of parts brings what `bridge.mail.partwise` asks for (text
prefixes, whole texts, the first invitation) plus a message's attachments when they are
small; messages of the same shape share a FETCH. A big attachment is fetched on its own
in `CHUNK` pieces (RFC 3501 §6.4.5 partial fetch) and decoded as it comes. Messages whose
structure `bridge.imap.bodystructure` rejects are fetched whole (`BODY.PEEK[]`), the small
ones together; so are messages with message/* parts inside (forwarded mail, bounce
reports) up to `WHOLE_MAX` (above it, such a part is an attachment like any other: a
forwarded message's subject from its header, the bytes in pieces, or skipped as too large,
so that memory stays bounded). Every item is a BODY.PEEK: fetching never sets \\Seen.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import imapclient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from bridge.imap import bodystructure
from bridge.imap.fetchparse import fetch as imap_fetch
from bridge.mail import transfer_encoding as transfer
from bridge.mail.headers import parse_headers
from bridge.mail.partwise import Chunk, Leaf, PartWalk, Request
from bridge.mail.policy import AttachmentRules, SummaryOptions, skip_reason
from bridge.mail.structure import Part

_LOGGER = logging.getLogger(__name__)

WINDOW_BYTES = 8 << 20  # text parts and small attachments fetched ahead for a window
BIG_PART = 1 << 20  # a message's attachments up to this size come with its text; a part
# this large is fetched on its own, in CHUNK pieces
CHUNK = 4 << 20
WHOLE_MAX = 8 << 20  # a message with a forwarded one inside is fetched whole up to this size
MAX_ROUNDS = 4  # text rounds: prefix, whole part, then the HTML alternative of an empty text
HEADER_FIELDS = (
    "MESSAGE-ID", "DATE", "FROM", "TO", "CC", "REPLY-TO", "SUBJECT", "IMPORTANCE",
    "X-PRIORITY", "PRIORITY", "X-MSMAIL-PRIORITY",
)
META_ITEMS = [b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE", b"BODYSTRUCTURE",
              f"BODY.PEEK[HEADER.FIELDS ({' '.join(HEADER_FIELDS)})]".encode()]
WHOLE_ITEMS = [b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE", b"BODY.PEEK[]"]


@dataclass
class MessageInFlight:
    """One message between its metadata FETCH and its publication."""

    uid: int
    meta: dict[bytes, Any] | None  # None: expunged meanwhile
    root: Part | None = None
    headers: dict[str, list[str]] = field(default_factory=dict)
    fetched: dict[str, Chunk] = field(default_factory=dict)
    walk: PartWalk | None = None  # None: fetch and summarise it whole
    raw: bytes | None = None  # the whole message, when fetched ahead

    def complete(self, section: str) -> bool:
        chunk = self.fetched.get(section)
        return chunk is not None and chunk.complete


def wanted(rules: AttachmentRules, leaf: Leaf) -> bool:
    """Whether an attachment may be published, so must be fetched (its decoded size, known
    once fetched, decides); a part certainly too large is never fetched."""
    return skip_reason(rules, content_type=leaf.found.content_type, size=leaf.bounds.lower,
                       inline=leaf.found.inline) is None


class PartMissing(Exception):
    """The server did not send a part asked for; the message is then fetched whole."""


class Cancelled(Exception):
    """The fetcher was asked to stop (its consumer is gone)."""


class PartFetcher:
    """Fetches what the summaries of one folder's messages need, in few FETCH commands.

    Two threads may share one: the read-ahead thread fetching the next window and the
    publisher fetching a big attachment. Each FETCH holds `_lock` for its whole round
    trip, so commands never interleave on the connection."""

    def __init__(self, options: SummaryOptions, *, log_name: str) -> None:
        self.options = options
        self.log_name = log_name  # the folder, as the log names it
        self.round_trips = 0  # FETCH commands sent
        self.stop = threading.Event()  # set: every further fetch raises Cancelled
        self._lock = threading.Lock()

    def fetch(self, client: imapclient.IMAPClient, uids: Sequence[int],
              items: Sequence[bytes | str]) -> dict[int, dict[bytes, Any]]:
        with self._lock:
            if self.stop.is_set():
                raise Cancelled
            self.round_trips += 1
            return imap_fetch(client, uids, items)

    def metadata(self, client: imapclient.IMAPClient,
                 batch: Sequence[int]) -> list[MessageInFlight]:
        try:
            response = self.fetch(client, batch, META_ITEMS)
        except IMAPClientAbortError:
            raise
        except IMAPClientError as exc:  # NO/BAD or an unparseable BODYSTRUCTURE: go whole
            _LOGGER.warning("%s: metadata FETCH failed (%s); fetching messages whole",
                            self.log_name, exc)
            return [MessageInFlight(uid, {}) for uid in batch]
        messages = [MessageInFlight(uid, response.get(uid)) for uid in batch]
        for message in messages:
            if message.meta is not None:
                self._plan(message, message.meta)
        return messages

    def _plan(self, message: MessageInFlight, meta: dict[bytes, Any]) -> None:
        header = next((v for k, v in meta.items() if k.startswith(b"BODY[HEADER")), None)
        try:
            # A message with message/* parts inside is fetched whole, so that its summary is
            # the whole-message one, unless that would hold too much in memory: then such a
            # part is an attachment.
            too_big_whole = int(meta.get(b"RFC822.SIZE") or 0) > WHOLE_MAX
            message.root = bodystructure.parse(meta.get(b"BODYSTRUCTURE"),
                                               message_leaves=too_big_whole)
            message.headers = parse_headers(header if isinstance(header, bytes) else b"")
            message.walk = self._walk(message)
        except bodystructure.Unsupported as exc:
            _LOGGER.debug("UID %d: %s; fetching it whole", message.uid, exc)
        except Exception:  # a bug of ours must not lose the message: the whole path works
            _LOGGER.exception("UID %d: cannot plan a part-wise fetch", message.uid)
            message.walk = None

    def _walk(self, message: MessageInFlight) -> PartWalk:
        if message.root is None:
            raise bodystructure.Unsupported("no structure")
        return PartWalk(message.root, message.fetched,
                        preview_chars=self.options.preview_chars,
                        include_body=self.options.include_body)

    def windows(self, messages: list[MessageInFlight]) -> Iterator[list[MessageInFlight]]:
        """Consecutive messages whose parts fetched ahead stay under WINDOW_BYTES."""
        window: list[MessageInFlight] = []
        size = 0
        for message in messages:
            estimate = sum(r.length or _part_size(message, r.section)
                           for r in self._first_requests(message))
            if window and size + estimate > WINDOW_BYTES:
                yield window
                window, size = [], 0
            window.append(message)
            size += estimate
        if window:
            yield window

    def _first_requests(self, message: MessageInFlight) -> list[Request]:
        """The first round for `message`: the walk's needs and, if small, the attachments
        that will be published."""
        if message.walk is None:
            return []
        requests = {r.section: r for r in message.walk.needs}
        rules = self.options.attachments
        parts = [leaf.part for leaf in message.walk.leaves if wanted(rules, leaf)]
        if sum(part.size for part in parts) <= BIG_PART:
            requests.update((part.section, Request(part.section)) for part in parts)
        return list(requests.values())

    def fetch_window(self, client: imapclient.IMAPClient, window: list[MessageInFlight]) -> None:
        """Fetch what the window's summaries need, one FETCH per distinct list of parts,
        until every walk is certain; then the small messages that go whole, together."""
        needs: dict[int, list[Request]] = {}
        for round_ in range(MAX_ROUNDS + 1):
            fetched, needs = needs, {}
            for message in window:
                if message.walk is None or (round_ and message.uid not in fetched):
                    continue  # whole, or settled: nothing new to walk
                if round_:
                    message.walk = self._walk(message)
                requests = self._first_requests(message) if round_ == 0 else message.walk.needs
                if requests:
                    needs[message.uid] = sorted(requests, key=lambda r: r.section)
            if not needs or round_ == MAX_ROUNDS:
                break
            self._fetch_grouped(client, window, needs)
        for message in window:  # still unsure after every round: fetch it whole
            if message.walk is not None and message.walk.needs:
                _LOGGER.debug("UID %d: parts still missing; fetching it whole", message.uid)
                message.walk = None
        self._fetch_small_wholes(client, window)

    def _fetch_grouped(self, client: imapclient.IMAPClient, window: list[MessageInFlight],
                       needs: dict[int, list[Request]]) -> None:
        by_uid = {m.uid: m for m in window}
        groups: dict[tuple[Request, ...], list[int]] = {}
        for uid, requests in needs.items():
            groups.setdefault(tuple(requests), []).append(uid)
        for group, uids in groups.items():
            response = self.fetch(client, uids, [r.item for r in group])
            for uid in uids:
                message = by_uid[uid]
                data = response.get(uid)
                if data is None:  # expunged meanwhile
                    message.meta = message.walk = None
                    continue
                for request in group:
                    chunk = chunk_in_response(data, request)
                    if chunk is not None:  # else asked again next round, or fetched whole
                        message.fetched[request.section] = chunk

    def _fetch_small_wholes(self, client: imapclient.IMAPClient,
                            window: list[MessageInFlight]) -> None:
        small = [m for m in window if m.meta is not None and m.walk is None
                 and 0 < int(m.meta.get(b"RFC822.SIZE") or 0) <= BIG_PART]
        if small:
            response = self.fetch(client, [m.uid for m in small], WHOLE_ITEMS)
            for message in small:
                message.meta = response.get(message.uid)
                if message.meta is not None:
                    message.raw = _bytes(message.meta.get(b"BODY[]"))

    def whole(self, client: imapclient.IMAPClient, message: MessageInFlight) -> bool:
        """Fetch `message` whole if not yet done; False if it is gone."""
        if message.raw is None:
            message.meta = self.fetch(client, [message.uid], WHOLE_ITEMS).get(message.uid)
            if message.meta is None:
                return False
            message.raw = _bytes(message.meta.get(b"BODY[]"))
        return True

    def attachment(self, client: imapclient.IMAPClient, message: MessageInFlight,
                   part: Part) -> bytes | None:
        """The decoded attachment (None if the message is gone). A small one not fetched
        yet comes with the next small ones of the message; a big one alone, in pieces."""
        leaves = message.walk.leaves if message.walk is not None else []
        if part.size < BIG_PART and not message.complete(part.section):
            start = next(i for i, leaf in enumerate(leaves) if leaf.part == part)
            rules = self.options.attachments
            later = [leaf.part for leaf in leaves[start:] if wanted(rules, leaf)]
            if not self._fetch_small(client, message, later):
                return None
        chunk = message.fetched.pop(part.section, None)
        if chunk is not None and chunk.complete:
            return transfer.decode(part.encoding, chunk.data)
        decoder = transfer.Decoder(part.encoding)
        offset = 0
        while True:  # partial fetches (RFC 3501 §6.4.5 <origin.octets>) until a short one
            request = Request(part.section, CHUNK, offset)
            data = self.fetch(client, [message.uid], [request.item]).get(message.uid)
            if data is None:
                return None
            piece = chunk_in_response(data, request)
            if piece is None:
                raise PartMissing(f"UID {message.uid}: no {request.item} in the response")
            decoder.feed(piece.data)
            offset += len(piece.data)
            if piece.complete:
                return decoder.finish()

    def _fetch_small(self, client: imapclient.IMAPClient, message: MessageInFlight,
                     parts: list[Part]) -> bool:
        """One FETCH for the small parts among `parts` not fetched yet, up to WINDOW_BYTES."""
        requests: list[Request] = []
        size = 0
        for part in parts:
            if part.size >= BIG_PART or message.complete(part.section):
                continue
            if requests and size + part.size > WINDOW_BYTES:
                break
            requests.append(Request(part.section))
            size += part.size
        data = self.fetch(client, [message.uid], [r.item for r in requests]).get(message.uid)
        if data is None:
            return False
        for request in requests:
            chunk = chunk_in_response(data, request)
            if chunk is not None:  # else fetched in pieces, or PartMissing
                message.fetched[request.section] = chunk
        return True


def chunk_in_response(data: dict[bytes, Any], request: Request) -> Chunk | None:
    """What a FETCH response holds for `request`: its bytes, complete if they are the whole
    part (all of it was asked for, or fewer octets came than asked); None if the response
    lacks them. Exchange may answer a partial fetch with the whole part, under `BODY[n]`
    without the origin or with more octets than asked: at the first piece that is the
    whole part; later it makes no sense."""
    raw = data.get(request.key)
    if raw is None and request.length is not None and request.offset == 0:
        whole = data.get(Request(request.section).key)
        return Chunk(whole, True) if isinstance(whole, bytes) else None
    if not isinstance(raw, bytes):
        return None
    if request.length is None:
        return Chunk(raw, True)
    if len(raw) > request.length:
        return Chunk(raw, True) if request.offset == 0 else None
    return Chunk(raw, len(raw) < request.length)


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else b""


def _part_size(message: MessageInFlight, section: str) -> int:
    root = message.root
    if root is None:
        return 0
    return next((p.size for p in root.walk() if p.section == section), 0)
