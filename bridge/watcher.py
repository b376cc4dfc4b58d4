"""One watched folder: connect, find new UIDs, fetch, publish, advance the position.

Each watcher is a thread with its own IMAPClient. A message counts as published only
once the broker acknowledged its summary and attachments (QoS >= 1); the stored
position advances past acknowledged messages only, so a crash or an outage can cause
a duplicate but never a loss.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import imapclient

from . import imap
from .auth import TokenProvider
from .backoff import Backoff
from .config import AccountConfig, FolderConfig
from .errors import AuthError, FolderNotFound, ImapAuthError, ImapError
from .message import Summary, summarize
from .mqtt import MqttClient, Publication
from .state import Position, StateStore
from .status import AccountStatus, iso_now
from .topics import Topics

_LOGGER = logging.getLogger(__name__)

FETCH_BATCH = 50
FETCH_ITEMS = [b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE", b"BODY.PEEK[]"]


class BrokerUnavailable(Exception):
    """Publishing stopped because the bridge is shutting down before the broker acked."""


@dataclass
class FolderState:
    """What `B/A/F/state` shows."""

    unread: int = 0
    total: int = 0
    uidvalidity: int = 0
    last_uid: int = 0
    last_message: dict[str, Any] | None = None

    def payload(self) -> bytes:
        return json.dumps(
            {
                "unread": self.unread,
                "total": self.total,
                "uidvalidity": self.uidvalidity,
                "last_uid": self.last_uid,
                "last_message": self.last_message,
                "updated": iso_now(),
            }
        ).encode()

    def key(self) -> tuple[int, int, int, int]:
        return (self.unread, self.total, self.uidvalidity, self.last_uid)


def summary_lite(payload: dict[str, Any]) -> dict[str, Any]:
    """The part of a summary kept in the retained folder state."""
    keys = ("uid", "message_id", "date", "from", "subject", "seen", "has_attachments")
    return {k: payload.get(k) for k in keys}


def chunks(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class FolderWatcher(threading.Thread):
    """Publishes every new message of one folder, in UID order."""

    def __init__(
        self,
        *,
        account: AccountConfig,
        folder: FolderConfig,
        provider: TokenProvider,
        mqtt: MqttClient,
        topics: Topics,
        store: StateStore,
        status: AccountStatus,
        stop: threading.Event,
    ) -> None:
        super().__init__(name=f"watch-{account.name}-{folder.topic}", daemon=True)
        self.account = account
        self.folder = folder
        self._provider = provider
        self._mqtt = mqtt
        self._topics = topics
        self._store = store
        self._status = status
        self._stopping = stop
        self._wake = threading.Event()
        self.ready = threading.Event()  # starting position recorded (or first attempt failed)
        self.settled = threading.Event()
        self.state = FolderState()
        self._published_state: tuple[int, int, int, int] | None = None
        self._server_name = folder.name

    @property
    def worker_id(self) -> str:
        return f"folder:{self.folder.topic}"

    def request_sync(self) -> None:
        """Sync now instead of at the next poll (after a command, or `refresh`)."""
        self._wake.set()

    # -- the loop --------------------------------------------------------------------

    def run(self) -> None:
        backoff = Backoff()
        while not self._stopping.is_set():
            client: imapclient.IMAPClient | None = None
            try:
                token = self._provider.get_token()
                client = imap.connect(self.account, token)
                client.normalise_times = False
                self._server_name = imap.resolve_folder(client, self.folder.name)
                self._status.connected(self.worker_id, token.expires_at)
                backoff.reset()
                self._watch(client)
            except (AuthError, ImapAuthError) as exc:
                self._failed(str(exc), auth=True, backoff=backoff)
            except FolderNotFound as exc:
                existing = ", ".join(exc.existing[:20])
                self._failed(f"{exc}; folders: {existing}", auth=False, backoff=backoff)
            except ImapError as exc:
                self._failed(str(exc), auth=False, backoff=backoff)
            except BrokerUnavailable:
                pass
            except imap.CONNECTION_ERRORS as exc:
                self._failed(
                    f"IMAP connection lost: {type(exc).__name__}: {exc}",
                    auth=False,
                    backoff=backoff,
                )
            finally:
                imap.close(client)
        self.settled.set()

    def _failed(self, error: str, *, auth: bool, backoff: Backoff) -> None:
        delay = backoff.next_delay()
        level = logging.ERROR if backoff.attempts == 1 else logging.WARNING
        _LOGGER.log(
            level,
            "%s/%s: %s; retrying in %.1f s",
            self.account.name,
            self.folder.name,
            error,
            delay,
        )
        self._status.failed(self.worker_id, error, auth=auth)
        self.settled.set()
        self._stopping.wait(delay)

    def _watch(self, client: imapclient.IMAPClient) -> None:
        while not self._stopping.is_set():
            self.sync(client)
            self._wake.wait(self.account.poll_interval)
            self._wake.clear()

    # -- one sync --------------------------------------------------------------------

    def sync(self, client: imapclient.IMAPClient) -> None:
        """Publish what is new since the stored position and refresh the folder state."""
        selected = client.select_folder(self._server_name, readonly=True)
        uidvalidity = int(selected[b"UIDVALIDITY"])
        uidnext = int(selected.get(b"UIDNEXT", 0)) or None
        position = self._start_position(client, uidvalidity, uidnext)
        self.ready.set()
        self.settled.set()
        new = [u for u in client.search(["UID", f"{position.last_uid + 1}:*"])]
        new = sorted(u for u in new if u > position.last_uid)
        if new:
            _LOGGER.debug("%s/%s: %d new", self.account.name, self.folder.name, len(new))
            position = self._publish_new(client, new, position)
        total = int(selected[b"EXISTS"])
        unread = len(client.search(["UNSEEN"])) if total else 0
        self.state.unread, self.state.total = unread, total
        self.state.uidvalidity, self.state.last_uid = position.uidvalidity, position.last_uid
        self._publish_state()
        self._status.synced()

    def _start_position(
        self, client: imapclient.IMAPClient, uidvalidity: int, uidnext: int | None
    ) -> Position:
        stored = self._store.load(self.account.name, self.folder.name)
        if stored is not None and stored.uidvalidity == uidvalidity:
            return stored
        if uidnext is None:
            uids = client.search(["ALL"])
            uidnext = (max(uids) + 1) if uids else 1
        last = uidnext - 1
        if stored is not None:
            # UIDVALIDITY changed (RFC 3501 §2.3.1.1): old UIDs mean nothing now. Resync
            # without replaying the folder.
            _LOGGER.warning(
                "%s/%s: UIDVALIDITY changed %d -> %d, resyncing without replay",
                self.account.name,
                self.folder.name,
                stored.uidvalidity,
                uidvalidity,
            )
        elif self.folder.backfill:
            uids = sorted(client.search(["ALL"]))
            newest = uids[-self.folder.backfill :]
            last = newest[0] - 1 if newest else last
        position = Position(uidvalidity, last)
        self._store.save(self.account.name, self.folder.name, position)
        return position

    def _publish_new(
        self, client: imapclient.IMAPClient, uids: list[int], position: Position
    ) -> Position:
        for batch in chunks(uids, FETCH_BATCH):
            response = client.fetch(batch, FETCH_ITEMS)
            in_flight: list[tuple[int, list[Publication], dict[str, Any] | None]] = []
            for uid in batch:
                data = response.get(uid)
                if data is None:
                    in_flight.append((uid, [], None))  # expunged meanwhile: nothing to publish
                    continue
                in_flight.append((uid, *self._publish_message(uid, position.uidvalidity, data)))
            for uid, publications, payload in in_flight:
                for publication in publications:
                    self._await(publication)
                position = Position(position.uidvalidity, uid)
                if payload is not None:
                    self.state.last_message = summary_lite(payload)
            self._store.save(self.account.name, self.folder.name, position)
        return position

    def _await(self, publication: Publication) -> None:
        # paho resends QoS 1 messages after a reconnect: wait as long as the broker is away.
        while not publication.wait(1.0):
            if publication.done:
                raise BrokerUnavailable
            if self._stopping.is_set():
                raise BrokerUnavailable

    def _publish_message(
        self, uid: int, uidvalidity: int, data: dict[bytes, Any]
    ) -> tuple[list[Publication], dict[str, Any] | None]:
        account, folder = self.account.name, self.folder.topic
        try:
            summary = self._summarize(uid, uidvalidity, data)
        except Exception as exc:  # the parser must never stop the bridge
            _LOGGER.exception("%s/%s: cannot summarise UID %d", account, self.folder.name, uid)
            error = json.dumps({"uid": uid, "error": f"{type(exc).__name__}: {exc}"})
            topic = self._topics.folder_error(account, folder)
            return [self._mqtt.publish(topic, error)], None
        publications = [
            self._mqtt.publish(
                att.topic,
                att.data,
                user_properties=[
                    ("filename", att.filename or ""),
                    ("content_type", att.content_type),
                    ("size", str(att.size)),
                ],
            )
            for att in summary.attachments
            if att.topic is not None
        ]
        topic = self._topics.folder_message(account, folder)
        publications.append(self._mqtt.publish(topic, json.dumps(summary.payload)))
        return publications, summary.payload

    def _summarize(self, uid: int, uidvalidity: int, data: dict[bytes, Any]) -> Summary:
        raw = data.get(b"BODY[]") or b""
        return summarize(
            raw,
            account=self.account.name,
            folder=self.folder,
            folder_name=self._server_name,
            uid=uid,
            uidvalidity=uidvalidity,
            flags=list(data.get(b"FLAGS", ())),
            internaldate=data.get(b"INTERNALDATE"),
            size=data.get(b"RFC822.SIZE"),
            attachment_topic_prefix=self._topics.attachment_prefix(
                self.account.name, self.folder.topic
            ),
        )

    def _publish_state(self, *, force: bool = False) -> None:
        key = self.state.key()
        if force or key != self._published_state:
            topic = self._topics.folder_state(self.account.name, self.folder.topic)
            self._mqtt.publish(topic, self.state.payload(), retain=True)
            self._published_state = key

    def republish_state(self) -> None:
        """Publish the retained state again (after an MQTT reconnect)."""
        if self.ready.is_set():
            self._publish_state(force=True)
