"""Fetch messages of a selected folder and publish their summaries and attachments.

Used by the folder watchers (new mail) and by the `fetch` command (re-publish). The
caller waits for the returned publications before it advances anything.

The fetching is `bridge.imap.partfetch`'s: metadata and BODYSTRUCTURE for `META_BATCH`
UIDs in one FETCH, then only the parts a summary needs and the attachments that will be
published; a message whose structure it does not handle is fetched whole and summarised
by `summarize`. Here: the summary from the parts (`bridge.mail.message.assemble`),
attachments published as they are fetched (one big one in memory at a time), then the
summary, all in UID order.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import imapclient

from bridge.config.model import AccountConfig, FolderConfig
from bridge.imap.partfetch import BIG_PART, MessageInFlight, PartFetcher, PartMissing, wanted
from bridge.mail.message import StoredMessage, Summary, assemble, summarize
from bridge.mail.partwise import PartWalk
from bridge.mail.policy import AttachmentRules, SummaryOptions, skip_reason
from bridge.mail.routes import Route, Router
from bridge.mail.walk import FoundAttachment, MessageContent
from bridge.mailbox.readahead import ReadAhead
from bridge.mqtt.client import MqttClient, Publication
from bridge.mqtt.topics import Topics

_LOGGER = logging.getLogger(__name__)

META_BATCH = 200  # UIDs per metadata FETCH
# Messages handed to the caller at a time (it awaits them, then saves). A batch is handed
# over once the next one is published, so two are published but unsaved at most: a crash
# repeats at most 2 x 25 = 50 messages.
PUBLISH_BATCH = 25
YIELD_BYTES = 16 << 20  # attachment bytes published before the caller must await them
BIG_PART_WAIT = 30.0  # seconds to wait for the broker to take the previous big part
# Up to this many new messages are fetched in the publishing thread: a read-ahead thread
# overlaps nothing in a single window, and starting one is dear when a thousand folders
# wake at once.
INLINE_MAX = 10


@dataclass(frozen=True)
class Published:
    """One message handed to MQTT: its publications, and the summary (None if expunged
    before the fetch, or if only an error event could be published)."""

    uid: int
    publications: tuple[Publication, ...]
    payload: dict[str, Any] | None


def chunks(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class MessagePublisher:
    """Turns UIDs of one folder into MQTT publishes, in UID order."""

    def __init__(
        self, *, account: AccountConfig, folder: FolderConfig, mqtt: MqttClient, topics: Topics,
        on_published: Callable[[], None] | None = None,
    ) -> None:
        self.account = account
        self._on_published = on_published  # counts summaries for B/bridge/health
        self._configured = folder
        self.folder = folder
        self._mqtt = mqtt
        self._topics = topics
        self._prefix = topics.attachment_prefix(account.name, folder.topic)
        self._router = Router([Route(r.name, r.senders, r.subject) for r in folder.routes])

    def publish_batches(
        self,
        client: imapclient.IMAPClient,
        uids: Sequence[int],
        *,
        server_name: str,
        uidvalidity: int,
        include_body: bool | None = None,
    ) -> Generator[list[Published], None, None]:
        """Fetch and publish `uids` (ascending) batch by batch; yield each batch's results.

        A batch is handed over once the next one has been published: its PUBACKs have
        arrived by then. (Mosquitto's default `set_tcp_nodelay false` holds back the last
        PUBACKs of a burst until the client's delayed TCP ACK, up to 40 ms, unless the
        client sends more.) After YIELD_BYTES of attachments, everything is handed over.
        """
        self.folder = self._within_broker_limit(self._configured)
        run = _PublishRun(summary_options(
            self.folder, account=self.account.name, folder_name=server_name,
            uidvalidity=uidvalidity, attachment_topic_prefix=self._prefix,
            include_body=include_body))
        handover = _Handover(run)
        with contextlib.closing(self._published(client, sorted(uids), run)) as published:
            for item in published:
                if ready := handover.add(item):
                    yield ready
        if rest := handover.rest():
            yield rest

    def _published(self, client: imapclient.IMAPClient, uids: Sequence[int],
                   run: _PublishRun) -> Generator[Published, None, None]:
        """Each message of `uids` published, in order, the next window fetched meanwhile."""
        fetcher = PartFetcher(run.options, log_name=self.folder.name)
        windows: contextlib.AbstractContextManager[Iterable[list[MessageInFlight]]] = (
            ReadAhead(lambda: self._windows(client, fetcher, uids),
                      name=f"{threading.current_thread().name}-fetch", stop=fetcher.stop)
            if len(uids) > INLINE_MAX
            else contextlib.closing(self._windows(client, fetcher, uids)))
        with windows as source:
            for window in source:
                for message in window:
                    yield self._publish(client, fetcher, message, run)

    def _windows(self, client: imapclient.IMAPClient, fetcher: PartFetcher,
                 uids: Sequence[int]) -> Generator[list[MessageInFlight], None, None]:
        """The messages of `uids`, a window at a time, with the parts fetched that their
        summaries need (run a window ahead of the publishing, in its own thread)."""
        for batch in chunks(uids, META_BATCH):
            started, trips = time.monotonic(), fetcher.round_trips
            for window in fetcher.windows(fetcher.metadata(client, batch)):
                fetcher.fetch_window(client, window)
                yield window
            _LOGGER.debug("%s/%s: %d messages (UID %d-%d) in %d FETCH commands, %.2f s",
                          self.account.name, self.folder.name, len(batch), batch[0], batch[-1],
                          fetcher.round_trips - trips, time.monotonic() - started)

    def _within_broker_limit(self, folder: FolderConfig) -> FolderConfig:
        """`folder` with `max_attachment_bytes` lowered below the broker's Maximum Packet
        Size (MQTT 5 CONNACK): paho does not check it, and a broker that drops the
        connection over a too-large packet would get the same packet again after every
        reconnect, for ever. Such attachments are skipped as `too_large` instead."""
        limit = self._mqtt.max_packet_size
        if limit is None:
            return folder
        # topic, properties and fixed header: 1 KB is ample for our topics
        room = max(0, limit - 1024)
        if folder.max_attachment_bytes <= room:
            return folder
        return replace(folder, max_attachment_bytes=room)

    def _publish(self, client: imapclient.IMAPClient, fetcher: PartFetcher,
                 message: MessageInFlight, run: _PublishRun) -> Published:
        meta, walk = message.meta, message.walk
        if meta is None:
            return Published(message.uid, (), None)  # expunged meanwhile
        if walk is None:
            return self._publish_whole(client, fetcher, message, run)
        try:
            return self._publish_parts(client, fetcher, message, walk, meta, run)
        except PartMissing as exc:
            _LOGGER.warning("%s/%s: %s; fetching the message whole", self.account.name,
                            self.folder.name, exc)
            return self._publish_whole(client, fetcher, message, run)

    def _publish_parts(self, client: imapclient.IMAPClient, fetcher: PartFetcher,
                       message: MessageInFlight, walk: PartWalk, meta: dict[bytes, Any],
                       run: _PublishRun) -> Published:
        publications: list[Publication] = []
        found = self._publish_leaves(client, fetcher, message, walk, run, publications)
        if found is None:
            return Published(message.uid, tuple(publications), None)  # expunged

        def content() -> MessageContent:
            notes.extend(walk.notes)
            return MessageContent(walk.texts, found, walk.calendar)

        notes: list[str] = []
        summary = self._summary(message.uid, lambda: assemble(
            message.headers, notes, content, run.options, _stored(message.uid, meta),
            int(meta.get(b"RFC822.SIZE") or 0)))
        return self._publish_summary(message.uid, summary, publications)

    def _publish_leaves(self, client: imapclient.IMAPClient, fetcher: PartFetcher,
                        message: MessageInFlight, walk: PartWalk, run: _PublishRun,
                        publications: list[Publication]) -> list[FoundAttachment] | None:
        """Fetch and publish the attachments that may be published, one big one in memory
        at a time; return them all as found, with their sizes (None if expunged)."""
        rules = run.options.attachments
        found: list[FoundAttachment] = []
        for index, leaf in enumerate(walk.leaves):
            if not wanted(rules, leaf):
                found.append(replace(leaf.found, size=leaf.bounds.estimate))
                continue
            if leaf.part.size >= BIG_PART:
                self._wait_for_big(run)
            data = fetcher.attachment(client, message, leaf.part)
            if data is None:
                return None
            item = replace(leaf.found, size=len(data))
            found.append(item)
            if skip_reason(rules, content_type=item.content_type, size=len(data),
                           inline=item.inline) is None:
                publication = self._publish_attachment(
                    run, message.uid, index, item.filename, item.content_type, data)
                publications.append(publication)
                if len(data) >= BIG_PART:
                    run.last_big_attachment = publication
            del data  # one big part in memory at a time
        return found

    def _wait_for_big(self, run: _PublishRun) -> None:
        """Let the broker take the previous big attachment before the next is read, so that
        only one is in memory; not forever: a broker outage is the watcher's to handle."""
        big, run.last_big_attachment = run.last_big_attachment, None
        deadline = time.monotonic() + BIG_PART_WAIT
        while (big is not None and not big.done and self._mqtt.connected.is_set()
               and time.monotonic() < deadline):
            big.wait(0.2)

    def _publish_whole(self, client: imapclient.IMAPClient, fetcher: PartFetcher,
                       message: MessageInFlight, run: _PublishRun) -> Published:
        if not fetcher.whole(client, message) or message.meta is None:
            return Published(message.uid, (), None)
        meta, raw = message.meta, message.raw or b""
        message.raw = None
        stored = replace(_stored(message.uid, meta), size=meta.get(b"RFC822.SIZE"))
        summary = self._summary(message.uid, lambda: summarize(raw, run.options, stored))
        publications = [] if isinstance(summary, Exception) else [
            self._publish_attachment(run, message.uid, att.index, att.filename,
                                     att.content_type, att.data)
            for att in summary.attachments if att.topic is not None
        ]
        return self._publish_summary(message.uid, summary, publications)

    def _summary(self, uid: int, build: Callable[[], Summary]) -> Summary | Exception:
        try:
            summary: Summary = build()
            return summary
        except Exception as exc:  # the parser must never stop the bridge
            _LOGGER.exception("%s/%s: cannot summarise UID %d", self.account.name,
                              self.folder.name, uid)
            return exc

    def _publish_attachment(self, run: _PublishRun, uid: int, index: int, filename: str | None,
                            content_type: str, data: bytes) -> Publication:
        run.unawaited_bytes += len(data)
        return self._mqtt.publish(
            f"{self._prefix}/{uid}/{index}",
            data,
            user_properties=[
                ("filename", filename or ""),
                ("content_type", content_type),
                ("size", str(len(data))),
            ],
        )

    def _publish_summary(self, uid: int, summary: Summary | Exception,
                         publications: list[Publication]) -> Published:
        account, folder = self.account.name, self.folder.topic
        if isinstance(summary, Exception):
            error = json.dumps({"uid": uid, "error": f"{type(summary).__name__}: {summary}"})
            topic = self._topics.folder_error(account, folder)
            return Published(uid, (*publications, self._mqtt.publish(topic, error)), None)
        topic = self._topics.folder_message(account, folder)
        # Home Assistant's MQTT event entity reads the event type from the payload.
        payload = {**summary.payload, "event_type": "new_message"}
        routes = self._router.match_summary(payload) if self._router else []
        if self._router:
            payload["routes"] = routes
        data = json.dumps(payload).encode()  # once, for every topic it goes to
        publications.append(self._mqtt.publish(topic, data))
        # the same payload again on each matching route's topic, after the main one
        publications.extend(self._mqtt.publish(self._topics.folder_route(account, folder, name),
                                               data) for name in routes)
        if self._on_published is not None:
            self._on_published()
        return Published(uid, tuple(publications), summary.payload)


def summary_options(folder: FolderConfig, *, account: str, folder_name: str,
                    uidvalidity: int, attachment_topic_prefix: str,
                    include_body: bool | None = None) -> SummaryOptions:
    """The options of the summaries of `folder`; `include_body` (when given) overrides the
    folder's."""
    rules = AttachmentRules(publish=folder.attachments, inline=folder.inline_attachments,
                            types=folder.attachment_types,
                            max_bytes=folder.max_attachment_bytes)
    return SummaryOptions(
        account=account, folder=folder_name, uidvalidity=uidvalidity,
        attachment_topic_prefix=attachment_topic_prefix, attachments=rules,
        preview_chars=folder.preview_chars,
        include_body=folder.include_body if include_body is None else include_body)


def _stored(uid: int, meta: dict[bytes, Any]) -> StoredMessage:
    return StoredMessage(uid, flags=list(meta.get(b"FLAGS", ())),
                         internaldate=meta.get(b"INTERNALDATE"))


@dataclass
class _PublishRun:
    """One `publish_batches` call."""

    options: SummaryOptions
    last_big_attachment: Publication | None = None  # its successor waits for its PUBACK
    unawaited_bytes: int = 0  # attachment bytes published that the caller has not awaited


class _Handover:
    """When published messages go to the caller: a batch once the next one is published
    (its PUBACKs have arrived by then), everything after YIELD_BYTES of attachments."""

    def __init__(self, run: _PublishRun) -> None:
        self._run = run
        self._previous: list[Published] = []  # published, handed over after the next batch
        self._current: list[Published] = []
        self._previous_bytes = 0

    def add(self, published: Published) -> list[Published]:
        """Take `published`; return what is ready for the caller (often nothing)."""
        run = self._run
        self._current.append(published)
        if run.unawaited_bytes >= YIELD_BYTES:
            ready = self._previous + self._current
            self._previous, self._current, self._previous_bytes = [], [], 0
            run.unawaited_bytes = 0
            return ready
        if len(self._current) >= PUBLISH_BATCH:
            ready = self._previous
            run.unawaited_bytes -= self._previous_bytes
            self._previous, self._current = self._current, []
            self._previous_bytes = run.unawaited_bytes
            return ready
        return []

    def rest(self) -> list[Published]:
        """What is left once every message is published."""
        return self._previous + self._current
