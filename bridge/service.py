"""The running bridge: wires accounts, folder watchers, command workers and MQTT."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field

from bridge import __version__, sdnotify
from bridge.auth.providers import TokenProviders
from bridge.commands.parse import response_topic_allowed
from bridge.commands.worker import CommandWorker
from bridge.config.model import AccountConfig, Config
from bridge.errors import InstanceConflict
from bridge.imap.logins import Logins
from bridge.mailbox.health import health_payload, sent_a_mail
from bridge.mailbox.positions import StateStore
from bridge.mailbox.publisher import MessagePublisher
from bridge.mailbox.status import AccountStatus
from bridge.mailbox.watcher import SYNC_CONCURRENCY, FolderWatcher
from bridge.mqtt.client import Incoming, MqttClient
from bridge.mqtt.discovery import (
    build_discovery,
    discovery_index,
    load_index,
    merge_index,
    removal_configs,
    removed_components,
    save_index,
    stale_topics,
)
from bridge.mqtt.peers import Overlap, Peers, check_at_start
from bridge.mqtt.topics import Topics

_LOGGER = logging.getLogger(__name__)

STARTUP_TIMEOUT = 60.0
# how long a named instance waits at start for the broker and the other bridges' info
PEER_CHECK_TIMEOUT = 10.0
SHUTDOWN_PUBLISH_TIMEOUT = 3.0
SHUTDOWN_JOIN_TIMEOUT = 5.0
# Exchange Online allows about 20 concurrent IMAP connections per mailbox.
CONNECTIONS_WARN = 15


@dataclass
class AccountWorkers:
    """Everything that runs for one account."""

    account: AccountConfig
    status: AccountStatus
    watchers: list[FolderWatcher] = field(default_factory=list)
    commands: CommandWorker | None = None


class Bridge:
    """Runs until `stop` is set; `online` is retained once every folder has a position."""

    def __init__(self, config: Config, *, stop: threading.Event | None = None) -> None:
        self.config = config
        self.stop_event = stop or threading.Event()
        self.topics = Topics.of(config)
        self.store = StateStore(config.bridge.state_dir)
        self.online = threading.Event()
        self._started = time.monotonic()
        self.mqtt = MqttClient(
            config.mqtt,
            will_topic=self.topics.bridge_state,
            on_connect=self._on_mqtt_connect,
            on_message=self._on_mqtt_message,
        )
        self.discovery: dict[str, bytes] = (
            build_discovery(config, self.topics) if config.homeassistant.discovery else {}
        )
        self.ha_status_topic = f"{config.homeassistant.prefix}/status"
        self.accounts: dict[str, AccountWorkers] = {}
        self._stale_discovery_checked = threading.Event()
        self.peers = Peers(self.topics, (a.name for a in config.accounts))
        # set once the bridge serves its accounts; a named instance checks the other
        # bridges first and publishes nothing of its own before
        self._serving = threading.Event()
        self._lifecycle = threading.Lock()  # serving starts, or stopping does, not both
        self.refused: list[Overlap] = []
        self.providers = TokenProviders()
        self.logins = Logins()
        self.sync_slots = threading.BoundedSemaphore(SYNC_CONCURRENCY)
        self._command_routes: dict[str, tuple[str, str | None]] = {}
        for account in config.accounts:
            self._build_account(account)

    def _build_account(self, account: AccountConfig) -> None:
        connections = len(account.folders) + 1  # one per watched folder, one for commands
        if connections > CONNECTIONS_WARN:
            _LOGGER.warning(
                "account %s uses %d IMAP connections; Exchange Online allows about 20 per "
                "mailbox (shared with Outlook clients): watch fewer folders",
                account.name, connections,
            )
        topics = self.topics
        status_topic = topics.account_status(account.name)
        workers = [f"folder:{f.topic}" for f in account.folders]
        status = AccountStatus(
            workers,
            lambda payload: self._publish_retained(status_topic, payload),
        )
        group = AccountWorkers(account, status)
        provider = self.providers.for_account(account)
        for folder in account.folders:
            group.watchers.append(
                FolderWatcher(
                    account=account,
                    folder=folder,
                    provider=provider,
                    mqtt=self.mqtt,
                    topics=topics,
                    store=self.store,
                    status=status,
                    stop=self.stop_event,
                    logins=self.logins,
                    sync_slots=self.sync_slots,
                )
            )
            self._command_routes[topics.folder_command(account.name, folder.topic)] = (
                account.name,
                folder.name,
            )
        self._command_routes[topics.account_command(account.name)] = (account.name, None)
        group.commands = CommandWorker(
            account=account,
            provider=provider,
            publishers={
                f.name: MessagePublisher(account=account, folder=f, mqtt=self.mqtt, topics=topics,
                                         on_published=status.published)
                for f in account.folders
            },
            reply=lambda msg, payload: self._reply(account.name, msg, payload),
            on_changed=lambda folder: self._folder_changed(account.name, folder),
            stop=self.stop_event,
            logins=self.logins,
        )
        self.accounts[account.name] = group

    # -- MQTT side ---------------------------------------------------------------------

    def info_payload(self) -> bytes:
        """`B/bridge/info`: what runs, never a secret."""
        instance = {"instance": self.config.bridge.instance} if self.config.bridge.instance else {}
        return json.dumps(
            {
                "version": __version__,
                **instance,
                "accounts": [
                    {
                        "name": a.name,
                        "mailbox": a.mailbox,
                        "auth": a.auth,
                        "folders": [{"name": f.name, "topic": f.topic} for f in a.folders],
                        "commands": list(a.commands),
                    }
                    for a in self.config.accounts
                ],
            }
        ).encode()

    def _on_mqtt_connect(self) -> None:
        if self._serving.is_set():
            self._announce()

    def _announce(self) -> None:
        """The bridge's retained topics, on every connection once it serves."""
        if not self._stale_discovery_checked.is_set():
            self._stale_discovery_checked.set()
            self._update_discovery()
        # Retained topics again after every (re)connect: a broker without persistence
        # forgets them, and the Last Will may have replaced `online`.
        self.mqtt.publish(self.topics.bridge_info, self.info_payload(), retain=True)
        for group in self.accounts.values():
            self.mqtt.publish(
                self.topics.account_status(group.account.name), group.status.payload(), retain=True
            )
            for watcher in group.watchers:
                watcher.republish_state()
        self._publish_discovery()
        if self.online.is_set():
            self.mqtt.publish(self.topics.bridge_state, "online", retain=True)

    def _publish_discovery(self) -> None:
        for topic, payload in self.discovery.items():
            self.mqtt.publish(topic, payload, retain=True)

    def _publish_retained(self, topic: str, payload: bytes) -> None:
        self.mqtt.publish(topic, payload, retain=True)

    def _on_mqtt_message(self, msg: Incoming) -> None:
        if self.peers.handle(msg.topic, msg.payload):
            return
        if msg.topic == self.ha_status_topic:
            # Home Assistant's birth message: it lost the retained configs only if its
            # broker did, but re-sending is what HA asks integrations to do.
            if msg.payload.strip() == b"online" and self.discovery:
                self._publish_discovery()
            return
        route = self._command_routes.get(msg.topic)
        if route is None:
            return
        account, folder = route
        worker = self.accounts[account].commands
        if worker is not None:
            worker.submit(msg, folder)

    def _reply(self, account: str, msg: Incoming, payload: bytes) -> None:
        status = self.accounts[account].status
        status.commanded()
        if sent_a_mail(payload):
            status.sent_mail()
        self.mqtt.publish(self.topics.command_result(account), payload)
        if not (msg.response_topic and self.mqtt.v5):
            return
        if response_topic_allowed(msg.response_topic, list(self._command_routes)):
            self.mqtt.publish(msg.response_topic, payload, correlation_data=msg.correlation_data)
        else:
            _LOGGER.warning("not replying on response topic %r: not a topic the bridge may "
                            "publish a reply to", msg.response_topic[:200])

    def _folder_changed(self, account: str, folder: str) -> None:
        for watcher in self.accounts[account].watchers:
            if folder in ("*", watcher.folder.name):
                watcher.request_sync()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start MQTT and every worker; publish `online` once every folder's first
        attempt is over. A named instance first checks that no other running bridge
        serves one of its accounts, on a thread of its own (stop must not wait for it)."""
        self.mqtt.subscribe(self.peers.filters)
        if self.config.bridge.instance:
            self.mqtt.start()
            threading.Thread(target=self._check_peers_then_serve, name="instance-check",
                             daemon=True).start()
            return
        self.peers.go_live()
        self._serving.set()
        self._subscribe_inputs()
        self.mqtt.start()
        self._start_workers()

    def _check_peers_then_serve(self) -> None:
        """Serve unless a running bridge lists one of our accounts."""
        refused = [o for o in check_at_start(self.mqtt, self.peers, PEER_CHECK_TIMEOUT)
                   if o.online]
        with self._lifecycle:
            if self.stop_event.is_set():
                return
            if refused:
                self.refused = refused
                self.stop_event.set()
                return
            self._serving.set()
            self._subscribe_inputs()
            if self.mqtt.connected.is_set():
                self._announce()  # else on connect
            self._start_workers()

    def _subscribe_inputs(self) -> None:
        self.mqtt.subscribe(self._command_routes)
        if self.discovery:
            self.mqtt.subscribe([self.ha_status_topic])

    def _start_workers(self) -> None:
        for group in self.accounts.values():
            for watcher in group.watchers:
                watcher.start()
            if group.commands is not None:
                group.commands.start()
        threading.Thread(target=self._announce_online, name="announce-online", daemon=True).start()
        if self.config.bridge.health_interval:
            threading.Thread(target=self._publish_health, name="health", daemon=True).start()

    def _publish_health(self) -> None:
        """`B/bridge/health` now and every `health_interval` seconds until stopped."""
        statuses = {name: group.status for name, group in self.accounts.items()}
        while True:
            self.mqtt.publish(self.topics.bridge_health,
                              health_payload(self._started, statuses), retain=True)
            if self.stop_event.wait(self.config.bridge.health_interval):
                return

    def _update_discovery(self) -> None:
        """On the first connection, remove from Home Assistant what was published last time and
        not now: empty the config of an account removed from the config, and send each
        removed component once as its platform alone. Then record what is published.
        A thread of its own: paho's callbacks must not wait for acknowledgements."""
        if not self.config.homeassistant.discovery:
            return  # nothing under the prefix; the index waits until discovery is back on
        state_dir = self.config.bridge.state_dir
        instance = self.config.bridge.instance
        previous = load_index(state_dir, instance)
        current = discovery_index(self.config, self.topics)
        stale = stale_topics(previous, current)
        removed = removed_components(previous, current)
        changes = {t: b"" for t in stale}
        # Sent besides the plain configs of _on_mqtt_connect: in either order, Home
        # Assistant deletes the removed components and keeps the others.
        changes.update(removal_configs(self.config, self.topics, removed))

        def send() -> None:
            if changes:
                _LOGGER.info("removing from Home Assistant: %d device(s), %d entity(ies)",
                             len(stale), sum(map(len, removed.values())))
            sent = {t: self.mqtt.publish(t, p, retain=True, qos=1) for t, p in changes.items()}
            # What the broker did not acknowledge stays in the index for next time.
            unsent = {t: previous[t] for t, publication in sent.items()
                      if not publication.wait(10)}
            try:
                save_index(state_dir, merge_index(current, unsent), instance)
            except OSError as exc:
                _LOGGER.warning("cannot record the discovery topics in %s: %s", state_dir, exc)

        threading.Thread(target=send, name="discovery-cleanup", daemon=True).start()

    def _announce_online(self) -> None:
        watchers = [w for g in self.accounts.values() for w in g.watchers]
        for watcher in watchers:
            # A folder that cannot connect does not hold the others back: its account
            # status says why. Every folder that connected has recorded its position.
            watcher.first_attempt_over.wait()  # also set when the watcher stops
            if self.stop_event.is_set():
                return
        if self.mqtt.connected.is_set():
            _LOGGER.info("all folders ready: bridge online")
        else:  # `online` is queued and reaches the broker with the connection
            _LOGGER.warning("all folders ready, but no MQTT broker (%s): online once it "
                            "connects", self.mqtt.last_error or "not connected yet")
        self.online.set()
        self.mqtt.publish(self.topics.bridge_state, "online", retain=True)
        sdnotify.notify("READY=1\nSTATUS=online")
        interval = sdnotify.watchdog_interval()
        if interval:
            threading.Thread(target=self._watchdog, args=(interval,), name="watchdog",
                             daemon=True).start()

    def healthy(self) -> bool:
        """Every worker thread is alive (a dead one means a bug: let systemd restart us)."""
        for group in self.accounts.values():
            threads: list[threading.Thread] = list(group.watchers)
            if group.commands is not None:
                threads.append(group.commands)
            if not all(t.is_alive() for t in threads):
                return False
        return True

    def _watchdog(self, interval: float) -> None:
        while not self.stop_event.wait(interval):
            if self.healthy():
                sdnotify.notify("WATCHDOG=1")
            else:
                _LOGGER.error("a worker thread died: no longer pinging the watchdog")

    def shutdown(self, *, offline: bool = True) -> None:
        """Stop workers (in-flight publishes get a bounded wait), publish `offline`,
        disconnect. `offline=False` for a reload: a new Bridge takes over at once."""
        if offline:
            sdnotify.notify("STOPPING=1")
        with self._lifecycle:
            self.stop_event.set()
        self.logins.wake()
        if not self._serving.is_set():  # refused, or stopped during the start check
            self.mqtt.stop()
            _LOGGER.info("bridge stopped")
            return
        for group in self.accounts.values():
            for watcher in group.watchers:
                watcher.request_sync()
            if group.commands is not None:
                group.commands.stop()
        threads: list[threading.Thread] = [w for g in self.accounts.values() for w in g.watchers]
        threads += [g.commands for g in self.accounts.values() if g.commands is not None]
        # One deadline for all: systemd's TimeoutStopSec must never be reached.
        deadline = time.monotonic() + SHUTDOWN_JOIN_TIMEOUT
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if offline:
            self.mqtt.publish(self.topics.bridge_state, "offline", retain=True).wait(
                SHUTDOWN_PUBLISH_TIMEOUT
            )
        self.mqtt.stop()
        _LOGGER.info("bridge stopped")

    def run(self, reload: threading.Event | None = None) -> None:
        """Run until the stop event is set; when `reload` is set too, stop without
        announcing `offline` (the caller starts a new Bridge). InstanceConflict when a
        running bridge serves one of the accounts (nothing was published then)."""
        self.start()
        try:
            self.stop_event.wait()
        finally:
            self.shutdown(offline=not (reload and reload.is_set()))
        if self.refused:
            raise InstanceConflict("; ".join(o.describe() for o in self.refused))
