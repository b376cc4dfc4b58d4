"""One watched folder: connect, find new UIDs, fetch, publish, advance the position.

Each watcher is a thread with its own IMAPClient. A message counts as published only
once the broker acknowledged its summary and attachments (QoS >= 1); the stored
position advances past acknowledged messages only, so a crash or an outage can cause
a duplicate but never a loss.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import imapclient

from bridge.auth.delegated import wait_for_new_login
from bridge.auth.tokens import Provider, Token
from bridge.config.model import AccountConfig, FolderConfig
from bridge.errors import (
    AuthError,
    FolderNotFound,
    ImapAuthError,
    ImapError,
    ImapThrottled,
    LoginRequired,
)
from bridge.imap.connection import (
    CONNECTION_LOST,
    IMAP_FAILURES,
    abandon,
    close,
    resolve_folder,
)
from bridge.imap.idle import idle, take_news
from bridge.imap.logins import Logins
from bridge.imap.search import Criteria
from bridge.imap.throttle import throttle_delay
from bridge.mailbox.positions import Position, StateStore
from bridge.mailbox.publisher import MessagePublisher
from bridge.mailbox.status import AccountStatus
from bridge.mqtt.client import MqttClient, Publication
from bridge.mqtt.topics import Topics
from bridge.util.backoff import Backoff
from bridge.util.times import iso_now
from bridge.util.wakeup import Wakeup

_LOGGER = logging.getLogger(__name__)

# Folders syncing at once, bridge-wide. A burst that wakes a thousand folders together would
# otherwise have a thousand threads queueing for the GIL, paho's network thread among them,
# and every summary would leave at the end.
SYNC_CONCURRENCY = 16


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


def await_acknowledgement(publication: Publication, stop: threading.Event) -> None:
    """Wait until the broker acknowledged `publication`; BrokerUnavailable if it refused
    it or the bridge stops first. paho resends QoS 1 messages after a reconnect: wait as
    long as the broker is away."""
    while not publication.wait(1.0):
        if publication.done and publication.ok:
            return  # acknowledged just after the wait timed out
        if publication.done or stop.is_set():
            raise BrokerUnavailable


class FolderWatcher(threading.Thread):
    """Publishes every new message of one folder, in UID order."""

    def __init__(
        self,
        *,
        account: AccountConfig,
        folder: FolderConfig,
        provider: Provider,
        mqtt: MqttClient,
        topics: Topics,
        store: StateStore,
        status: AccountStatus,
        stop: threading.Event,
        logins: Logins | None = None,
        sync_slots: threading.Semaphore | None = None,
    ) -> None:
        super().__init__(name=f"watch-{account.name}-{folder.topic}", daemon=True)
        self._sync_slots = sync_slots or threading.BoundedSemaphore(SYNC_CONCURRENCY)
        self.account = account
        self.folder = folder
        self._provider = provider
        self._logins = logins or Logins()
        self._mqtt = mqtt
        self._topics = topics
        self._store = store
        self._status = status
        self._stopping = stop
        self._wake = Wakeup()
        # Set once the starting position is recorded: the folder state means something.
        self.position_recorded = threading.Event()
        # Set once the first attempt has an outcome (position recorded, failure reported,
        # sign-in awaited) or the watcher stopped: the bridge announces `online` then.
        self.first_attempt_over = threading.Event()
        self.state = FolderState()
        self._published_state: tuple[int, int, int, int] | None = None
        self._server_name = folder.name
        self._session_ok = False
        self._handled_count = 0  # the folder's message count the last sync started from
        self._publisher = MessagePublisher(account=account, folder=folder, mqtt=mqtt, topics=topics,
                                           on_published=status.published)
        self._search = Criteria(folder.search) if folder.search else None

    @property
    def worker_id(self) -> str:
        return f"folder:{self.folder.topic}"

    def request_sync(self) -> None:
        """Sync now instead of at the next poll (after a command, or `refresh`)."""
        self._wake.set()

    # -- the loop --------------------------------------------------------------------

    def run(self) -> None:
        backoff = Backoff()
        fresh_token = False
        while not self._stopping.is_set():
            fresh_token = self._session(backoff, fresh_token=fresh_token)
        self.first_attempt_over.set()
        self._wake.close()

    def _session(self, backoff: Backoff, *, fresh_token: bool) -> bool:
        """Connect and watch until the session ends; True if the next session must use a
        freshly acquired token."""
        client: imapclient.IMAPClient | None = None
        self._session_ok = False
        lost = False
        try:
            opened = self._logins.open(self.account, self._provider, self._stopping,
                                       force_token=fresh_token)
            if opened is None:
                return fresh_token  # stopping
            client, token = opened
            client.normalise_times = False
            self._server_name = resolve_folder(client, self.folder.name)
            self._status.connected(self.worker_id, token.expires_at)
            self._watch(client, token)
            backoff.reset()  # an orderly end: token renewal or shutdown
        except LoginRequired as exc:
            self._await_login(exc)
            backoff.reset()
        except ImapAuthError as exc:
            # The server refused this token: one issued before admin consent, or revoked
            # early, stays refused, and MSAL would return it from its cache until expiry.
            self._failed(str(exc), auth=True, backoff=backoff)
            return True
        except AuthError as exc:
            self._failed(str(exc), auth=not exc.transient, backoff=backoff)
        except ImapThrottled as exc:  # Logins holds the account back for its time
            self._failed(str(exc), auth=False, backoff=backoff)
        except FolderNotFound as exc:
            existing = ", ".join(exc.existing[:20])
            self._failed(f"{exc}; folders: {existing}", auth=False, backoff=backoff)
        except ImapError as exc:
            self._failed(str(exc), auth=False, backoff=backoff)
        except BrokerUnavailable:
            if not self._stopping.is_set():
                self._failed("the broker refused a publish", auth=False, backoff=backoff)
        except IMAP_FAILURES as exc:
            lost = isinstance(exc, CONNECTION_LOST)
            return self._lost(exc, backoff)
        except Exception as exc:  # a bug must not silently end the watcher
            _LOGGER.exception("%s/%s: unexpected error", self.account.name, self.folder.name)
            self._failed(f"internal error: {type(exc).__name__}: {exc}", auth=False,
                         backoff=backoff)
        finally:
            (abandon if lost else close)(client)
        return False

    def _lost(self, exc: BaseException, backoff: Backoff) -> bool:
        """The session ended under us; True if the next one needs a fresh token."""
        text = f"IMAP connection lost: {type(exc).__name__}: {exc}"
        # Exchange ends sessions whose token expired or was revoked: "BYE Session
        # invalidated - AccessTokenExpired". After a healthy session, reconnect at once
        # (with a fresh token if the server named it); only repeated failures back off.
        throttled = throttle_delay(str(exc))
        if throttled is not None:
            # Exchange shedding load: reconnecting at once would add to it.
            self._logins.hold(self.account.name, throttled)
            self._failed(text, auth=False, backoff=backoff)
        elif self._session_ok:
            _LOGGER.info("%s/%s: %s; reconnecting now", self.account.name,
                         self.folder.name, text)
            backoff.reset()
        else:
            self._failed(text, auth=False, backoff=backoff)
        return "token" in str(exc).lower()

    def _failed(self, error: str, *, auth: bool, backoff: Backoff) -> None:
        # A throttled account waits at least as long as it was asked to.
        delay = max(backoff.next_delay(), self._logins.held_for(self.account.name))
        # The first failure of an outage is an error; its repetitions are warnings.
        level = logging.ERROR if backoff.attempts == 1 else logging.WARNING
        _LOGGER.log(
            level,
            "%s/%s (%s:%d): %s; retrying in %.1f s",
            self.account.name,
            self.folder.name,
            self.account.imap_host,
            self.account.imap_port,
            error,
            delay,
        )
        self._status.failed(self.worker_id, error, auth=auth)
        self.first_attempt_over.set()
        self._stopping.wait(delay)

    def _await_login(self, exc: LoginRequired) -> None:
        """Only a person can sign in again (`outlook2mqtt login`): report it, then wait
        for the token cache file to change instead of retrying against the identity
        platform; the other accounts run on meanwhile."""
        _LOGGER.warning("%s/%s: %s; waiting for the sign-in", self.account.name,
                        self.folder.name, exc)
        self._status.login_required(self.worker_id, str(exc))
        self.first_attempt_over.set()
        if self.account.token_cache is not None:
            wait_for_new_login(self.account.token_cache, exc.stamp, self._stopping)
            if not self._stopping.is_set():
                _LOGGER.info("%s/%s: token cache changed, signing in again",
                             self.account.name, self.folder.name)
        else:
            self._stopping.wait(60)

    def _renew_at(self, token: Token) -> float:
        """When to reconnect with a new token: 5 minutes before expiry (MSAL renews
        then), or at 80 % of the lifetime for short-lived tokens."""
        lifetime = max(0.0, token.expires_at - time.time())
        return time.monotonic() + lifetime - min(300.0, lifetime * 0.2)

    def _watch(self, client: imapclient.IMAPClient, token: Token) -> None:
        """Sync, then wait for news (IDLE or poll), until shutdown or token renewal."""
        renew_at = self._renew_at(token)
        use_idle = self.account.idle and b"IDLE" in client.capabilities()
        if self.account.idle and not use_idle:
            _LOGGER.info("%s/%s: server has no IDLE, polling every %g s", self.account.name,
                         self.folder.name, self.account.poll_interval)
        while not self._stopping.is_set():
            self._wake.clear()
            with self._sync_slots:
                self.sync(client)
            self._session_ok = True
            if time.monotonic() >= renew_at:
                _LOGGER.info("%s/%s: token expires soon, reconnecting with a new one",
                             self.account.name, self.folder.name)
                return
            if use_idle:
                # Mail that landed during the sync was announced in the answer to one
                # of its commands, or is announced to this NOOP: sync again first.
                client.noop()
                if take_news(client, self._handled_count):
                    _LOGGER.debug("%s/%s: changed during the sync", self.account.name,
                                  self.folder.name)
                    continue
                idle(client, self._wake, self._stopping,
                     until=min(renew_at, time.monotonic() + self.account.idle_renew))
            else:
                self._wake.wait(min(self.account.poll_interval,
                                    max(0.0, renew_at - time.monotonic())))

    # -- one sync --------------------------------------------------------------------

    def sync(self, client: imapclient.IMAPClient) -> None:
        """Publish what is new since the stored position and refresh the folder state."""
        selected = client.select_folder(self._server_name, readonly=True)
        self._handled_count = int(selected[b"EXISTS"])
        uidvalidity = int(selected[b"UIDVALIDITY"])
        uidnext = int(selected.get(b"UIDNEXT", 0)) or None
        position = self._start_position(client, uidvalidity, uidnext)
        self.position_recorded.set()
        self.first_attempt_over.set()
        new = [u for u in client.search(["UID", f"{position.last_uid + 1}:*"])]
        new = sorted(u for u in new if u > position.last_uid)
        if new:
            _LOGGER.debug("%s/%s: %d new", self.account.name, self.folder.name, len(new))
            if wanted := self._wanted(client, new):
                position = self._publish_new(client, wanted, position)
            if position.last_uid < new[-1]:
                # the rest did not match `search`: passed over, never to be looked at again
                position = Position(position.uidvalidity, new[-1])
                self._store.save(self.account.name, self.folder.name, position)
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
            uids = (self._search.matching(client, "1:*") if self._search
                    else sorted(client.search(["ALL"])))
            newest = uids[-self.folder.backfill :]
            last = newest[0] - 1 if newest else last
        position = Position(uidvalidity, last)
        self._store.save(self.account.name, self.folder.name, position)
        return position

    def _wanted(self, client: imapclient.IMAPClient, new: list[int]) -> list[int]:
        """The new UIDs to publish: those matching `search`, if the folder has one."""
        if self._search is None:
            return new
        matching = set(self._search.matching(client, f"{new[0]}:{new[-1]}"))
        return [u for u in new if u in matching]

    def _publish_new(
        self, client: imapclient.IMAPClient, uids: list[int], position: Position
    ) -> Position:
        batches = self._publisher.publish_batches(
            client, uids, server_name=self._server_name, uidvalidity=position.uidvalidity
        )
        with contextlib.closing(batches):  # stops its read-ahead thread, also on errors
            for batch in batches:
                for published in batch:
                    for publication in published.publications:
                        self._await(publication)
                    position = Position(position.uidvalidity, published.uid)
                    if published.payload is not None:
                        self.state.last_message = summary_lite(published.payload)
                # One atomic write per batch: a crash repeats at most a batch (at least once).
                self._store.save(self.account.name, self.folder.name, position)
        return position

    def _await(self, publication: Publication) -> None:
        await_acknowledgement(publication, self._stopping)

    def _publish_state(self, *, force: bool = False) -> None:
        key = self.state.key()
        if force or key != self._published_state:
            topic = self._topics.folder_state(self.account.name, self.folder.topic)
            self._mqtt.publish(topic, self.state.payload(), retain=True)
            self._published_state = key

    def republish_state(self) -> None:
        """Publish the retained state again (after an MQTT reconnect)."""
        if self.position_recorded.is_set():
            self._publish_state(force=True)
