"""A thin paho-mqtt wrapper: Last Will, reconnects with jittered backoff, and publishes
and subscribes whose acknowledgement (PUBACK, SUBACK) can be awaited.

The network thread (`bridge.mqtt.network`) calls the callbacks given here; they must not
block: the service hands work to queues.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from bridge.config.model import MqttConfig
from bridge.mqtt.network import NetworkThread
from bridge.util.backoff import Backoff

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Incoming:
    """A message received on a subscription."""

    topic: str
    payload: bytes
    retain: bool
    response_topic: str | None = None
    correlation_data: bytes | None = None


class Publication:
    """A publish in flight; `wait` returns True once the broker acknowledged it.

    One per summary and attachment, so it is kept cheap: a flag, and a bare lock held
    until `_complete` for the waiters to block on (a `threading.Event` would be a
    Condition and two locks)."""

    __slots__ = ("_done", "_latch", "ok")

    def __init__(self) -> None:
        self._latch = threading.Lock()
        self._latch.acquire()
        self._done = False
        self.ok = True

    def _complete(self, ok: bool) -> None:
        if self._done:
            return
        self.ok = ok
        self._done = True
        self._latch.release()

    def wait(self, timeout: float | None = None) -> bool:
        if not self._done:
            if not self._latch.acquire(timeout=-1 if timeout is None else max(timeout, 0)):
                return False
            self._latch.release()  # the next waiter's turn
        return self.ok

    @property
    def done(self) -> bool:
        return self._done


class Subscription(Publication):
    """A subscribe in flight; `wait` returns True once a SUBACK granted all its topics
    (an ACL refusal completes it, not ok)."""

    __slots__ = ("topics",)

    def __init__(self, topics: Iterable[str]) -> None:
        super().__init__()
        self.topics = frozenset(topics)


def connect_failure(target: str, exc: OSError) -> str:
    """Why a TCP (or TLS) connection to the broker at `target` failed, in a few words."""
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {target.rsplit(':', 1)[0]}: {exc.strerror}"
    return f"cannot connect to {target}: {exc.strerror or exc}"


def _user_properties(pairs: Iterable[tuple[str, str]]) -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.UserProperty = list(pairs)
    return props


class MqttClient:
    """One connection to the broker, reconnected with backoff (1 s to 5 min, jittered so
    a fleet of bridges does not hit a restarted broker in the same second; `backoff`
    replaces that schedule)."""

    def __init__(
        self,
        config: MqttConfig,
        *,
        will_topic: str | None = None,
        client_id: str | None = None,
        on_connect: Callable[[], None] | None = None,
        on_message: Callable[[Incoming], None] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self._config = config
        self.v5 = config.protocol == "5"
        self._on_connect_cb = on_connect
        self._on_message_cb = on_message
        self._subscriptions: list[str] = []
        self._lock = threading.Lock()
        self._pending: dict[int, Publication] = {}
        # QoS 0 publishes in _pending: paho neither resends them after a reconnect nor calls
        # back when it discards them, it only marks their MessageInfo
        self._pending_qos0: dict[int, paho.MQTTMessageInfo] = {}
        self._early: dict[int, bool] = {}  # PUBACKs that beat publish() back to us
        self._unacked: list[Subscription] = []
        self._subscribing: dict[int, list[str]] = {}  # SUBSCRIBE mid -> its topics
        self._early_subacks: dict[int, list[ReasonCode]] = {}
        self._session = False  # under _lock: _on_connect has taken the topics to subscribe
        self.connected = threading.Event()
        self.attempted = threading.Event()  # a connection attempt ended, connected or not
        self.max_packet_size: int | None = None
        self._stopping = False
        self._backoff = backoff or Backoff(initial=1.0, cap=300.0)
        self._target = f"{config.host}:{config.port}"
        self._failure: str | None = None  # why the last attempt failed
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or config.client_id,
            protocol=paho.MQTTv5 if self.v5 else paho.MQTTv311,
        )
        if config.username:
            client.username_pw_set(config.username, config.password)
        if config.tls:
            client.tls_set(
                ca_certs=str(config.ca_file) if config.ca_file else None,
                certfile=str(config.cert_file) if config.cert_file else None,
                keyfile=str(config.key_file) if config.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
            client.tls_insecure_set(config.tls_insecure)
        if will_topic:
            client.will_set(will_topic, "offline", qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_pre_connect = self._on_pre_connect
        self._client = client
        self._network = NetworkThread(
            client, name=f"mqtt-{client_id or config.client_id}",
            wait_to_reconnect=self._wait_to_reconnect, connect_failed=self._connect_failed,
            connection_lost=self._connection_lost,
        )

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background, and again whenever the connection is lost."""
        self._client.connect_async(self._config.host, self._config.port, self._config.keepalive)
        self._network.start()

    @property
    def last_error(self) -> str | None:
        """Why the broker is not connected, when an attempt failed."""
        return self._failure

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    def stop(self) -> None:
        """Disconnect cleanly (no Last Will) and stop the network thread."""
        self._stopping = True
        self._network.stop()
        self.connected.clear()

    # -- reconnecting (network thread) ---------------------------------------------------

    def _connect_failed(self, exc: OSError) -> None:
        self._failure = connect_failure(self._target, exc)
        self.attempted.set()

    def _wait_to_reconnect(self, closing: threading.Event) -> None:
        delay = self._backoff.next_delay()
        level = logging.WARNING if self._backoff.attempts <= 1 else logging.DEBUG
        _LOGGER.log(level, "MQTT: %s; reconnecting in %.1f s",
                    self._failure or f"not connected to {self._target}", delay)
        closing.wait(delay)

    # -- paho callbacks (network thread: never block) -----------------------------------

    def _on_connect(
        self, _c: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Properties | None
    ) -> None:
        if reason.is_failure:
            self._failure = f"broker {self._target} refused the connection: {reason.getName()}"
            self.attempted.set()
            return  # logged by the reconnect wait that follows
        self._failure = None
        self._backoff.reset()
        # MQTT 5 §3.2.2.3.6: the broker's Maximum Packet Size, when it announces one.
        limit = getattr(_p, "MaximumPacketSize", None) if self.v5 else None
        self.max_packet_size = int(limit) if isinstance(limit, int) else None
        _LOGGER.info("MQTT connected to %s:%d", self._config.host, self._config.port)
        with self._lock:
            topics = list(self._subscriptions)
            self._session = True
        if topics:
            self._subscribe(topics)
        self.connected.set()
        self.attempted.set()
        if self._on_connect_cb:
            self._on_connect_cb()

    def _on_disconnect(
        self, _c: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Properties | None
    ) -> None:
        self._connection_lost(reason.getName())

    def _connection_lost(self, why: str) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        with self._lock:
            self._session = False
            # Their SUBACKs will not come: the next _on_connect subscribes every topic again.
            self._subscribing.clear()
            self._early_subacks.clear()
        if was and not self._stopping:
            _LOGGER.warning(
                "MQTT connection to %s:%d lost (%s), reconnecting",
                self._config.host,
                self._config.port,
                why,
            )

    def _on_pre_connect(self, _c: paho.Client, _u: Any) -> None:
        """paho has just discarded the QoS 0 packets the lost connection left unsent: their
        publications fail (the watcher retries them) instead of waiting forever."""
        with self._lock:
            unsent = [mid for mid, info in self._pending_qos0.items()
                      if info.rc == paho.MQTT_ERR_CONN_LOST]
            for mid in unsent:
                del self._pending_qos0[mid]
            publications = [self._pending.pop(mid) for mid in unsent if mid in self._pending]
        for publication in publications:
            publication._complete(False)

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        incoming = Incoming(
            topic=msg.topic,
            payload=bytes(msg.payload),
            retain=bool(msg.retain),
            response_topic=getattr(props, "ResponseTopic", None),
            correlation_data=getattr(props, "CorrelationData", None),
        )
        if self._on_message_cb:
            try:
                self._on_message_cb(incoming)
            except Exception:
                _LOGGER.exception("error handling MQTT message on %s", msg.topic)

    def _on_publish(
        self, _c: paho.Client, _u: Any, mid: int, reason: ReasonCode, _p: Properties | None
    ) -> None:
        ok = not reason.is_failure
        with self._lock:
            pub = self._pending.pop(mid, None)
            self._pending_qos0.pop(mid, None)
            if pub is None:
                self._early[mid] = ok
        if pub is not None:
            pub._complete(ok)

    def _on_subscribe(
        self, _c: paho.Client, _u: Any, mid: int, reasons: list[ReasonCode],
        _p: Properties | None,
    ) -> None:
        with self._lock:
            topics = self._subscribing.pop(mid, None)
            if topics is None:  # the SUBACK beat _subscribe to registering the mid
                self._early_subacks[mid] = reasons
                return
        self._subscribed(topics, reasons)

    def _subscribed(self, topics: list[str], reasons: list[ReasonCode]) -> None:
        """A SUBACK for `topics`: complete every subscription it covers."""
        granted = {t for t, r in zip(topics, reasons, strict=False) if not r.is_failure}
        answered = set(topics)
        with self._lock:
            done = [s for s in self._unacked if s.topics <= answered]
            self._unacked = [s for s in self._unacked if not s.topics <= answered]
        for subscription in done:
            subscription._complete(subscription.topics <= granted)

    # -- operations ----------------------------------------------------------------------

    def subscribe(self, topics: Iterable[str]) -> Subscription:
        """Subscribe now (or once connected) and after every reconnect; the subscription
        is done at the first SUBACK for its topics."""
        new = list(topics)
        subscription = Subscription(new)
        with self._lock:
            self._subscriptions.extend(new)
            self._unacked.append(subscription)
            now = self._session  # else the next _on_connect subscribes them with the rest
        if now:
            self._subscribe(new)
        return subscription

    def _subscribe(self, topics: list[str]) -> None:
        qos = self._config.qos
        if self.v5:
            # Retain As Published: the retain flag reaches us, so retained commands are skipped.
            opts = SubscribeOptions(qos=qos, retainAsPublished=True)
            rc, mid = self._client.subscribe([(t, opts) for t in topics])
        else:
            rc, mid = self._client.subscribe([(t, qos) for t in topics])
        if rc != paho.MQTT_ERR_SUCCESS or mid is None:
            return  # not connected after all: the next _on_connect subscribes them
        with self._lock:
            reasons = self._early_subacks.pop(mid, None)
            if reasons is None:
                self._subscribing[mid] = topics
        if reasons is not None:
            self._subscribed(topics, reasons)

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        retain: bool = False,
        qos: int | None = None,
        user_properties: Iterable[tuple[str, str]] | None = None,
        correlation_data: bytes | None = None,
    ) -> Publication:
        """Queue a publish; paho resends QoS>0 messages after a reconnect."""
        properties = None
        if self.v5 and (user_properties or correlation_data is not None):
            properties = _user_properties(user_properties or ())
            if correlation_data is not None:
                properties.CorrelationData = correlation_data
        qos = self._config.qos if qos is None else qos
        publication = Publication()
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            publication._complete(False)
            return publication
        if qos == 0 and info.rc == paho.MQTT_ERR_NO_CONN:
            publication._complete(False)  # paho drops QoS 0 while disconnected
            return publication
        with self._lock:
            early = self._early.pop(info.mid, None)
            # queued on a lost connection and already discarded by a reconnect
            discarded = qos == 0 and info.rc == paho.MQTT_ERR_CONN_LOST
            if early is None and not discarded:
                self._pending[info.mid] = publication
                if qos == 0:
                    self._pending_qos0[info.mid] = info
        if discarded:
            publication._complete(False)
        elif early is not None:
            publication._complete(early)
        return publication
