"""Fetch messages of a selected folder and publish their summaries and attachments.

Used by the folder watchers (new mail) and by the `fetch` command (re-publish). The
caller waits for the returned publications before it advances anything.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import imapclient

from .config import AccountConfig, FolderConfig
from .message import Summary, summarize
from .mqtt import MqttClient, Publication
from .topics import Topics

_LOGGER = logging.getLogger(__name__)

FETCH_BATCH = 50
# BODY.PEEK: fetching must never set \Seen (RFC 3501 §6.4.5).
FETCH_ITEMS = [b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE", b"BODY.PEEK[]"]


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
        self, *, account: AccountConfig, folder: FolderConfig, mqtt: MqttClient, topics: Topics
    ) -> None:
        self.account = account
        self.folder = folder
        self._mqtt = mqtt
        self._topics = topics

    def publish_batches(
        self,
        client: imapclient.IMAPClient,
        uids: Sequence[int],
        *,
        server_name: str,
        uidvalidity: int,
        include_body: bool | None = None,
    ) -> Iterator[list[Published]]:
        """Fetch and publish `uids` (ascending) batch by batch; yield each batch's results."""
        for batch in chunks(sorted(uids), FETCH_BATCH):
            response = client.fetch(batch, FETCH_ITEMS)
            results = []
            for uid in batch:
                data = response.get(uid)
                if data is None:
                    results.append(Published(uid, (), None))  # expunged meanwhile
                    continue
                results.append(
                    self._publish_one(uid, uidvalidity, data, server_name, include_body)
                )
            yield results

    def _publish_one(
        self,
        uid: int,
        uidvalidity: int,
        data: dict[bytes, Any],
        server_name: str,
        include_body: bool | None,
    ) -> Published:
        account, folder = self.account.name, self.folder.topic
        try:
            summary = self._summarize(uid, uidvalidity, data, server_name, include_body)
        except Exception as exc:  # the parser must never stop the bridge
            _LOGGER.exception("%s/%s: cannot summarise UID %d", account, self.folder.name, uid)
            error = json.dumps({"uid": uid, "error": f"{type(exc).__name__}: {exc}"})
            topic = self._topics.folder_error(account, folder)
            return Published(uid, (self._mqtt.publish(topic, error),), None)
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
        # Home Assistant's MQTT event entity reads the event type from the payload.
        payload = {**summary.payload, "event_type": "new_message"}
        publications.append(self._mqtt.publish(topic, json.dumps(payload)))
        return Published(uid, tuple(publications), summary.payload)

    def _summarize(
        self,
        uid: int,
        uidvalidity: int,
        data: dict[bytes, Any],
        server_name: str,
        include_body: bool | None,
    ) -> Summary:
        return summarize(
            data.get(b"BODY[]") or b"",
            account=self.account.name,
            folder=self.folder,
            folder_name=server_name,
            uid=uid,
            uidvalidity=uidvalidity,
            flags=list(data.get(b"FLAGS", ())),
            internaldate=data.get(b"INTERNALDATE"),
            size=data.get(b"RFC822.SIZE"),
            attachment_topic_prefix=self._topics.attachment_prefix(
                self.account.name, self.folder.topic
            ),
            include_body=include_body,
        )
