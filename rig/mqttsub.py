"""A recording MQTT subscriber for tests and the demo."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

# seconds a wait for the servers' and the bridge's doings may take on a loaded machine
WAIT = 30.0


@dataclass(frozen=True)
class Received:
    """One message as the subscriber saw it."""

    topic: str
    payload: bytes
    retain: bool
    user_properties: tuple[tuple[str, str], ...] = ()
    correlation_data: bytes | None = None

    def json(self) -> Any:
        return json.loads(self.payload)


class Collector:
    """Subscribes to `topics` and records everything; `wait_for` wakes on each arrival."""

    def __init__(
        self,
        host: str,
        port: int,
        topics: Sequence[str] = ("#",),
        *,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
        client_id: str | None = None,
        clean: bool = True,
        on_message: Callable[[Received], None] | None = None,
    ) -> None:
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._subscribed = threading.Event()
        self._callback = on_message
        v5 = protocol == paho.MQTTv5
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"collector-{uuid.uuid4().hex[:8]}",
            protocol=protocol,
            clean_session=None if v5 else clean,
        )
        self._v5 = protocol == paho.MQTTv5
        self._topics = list(topics)
        self._clean = clean
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self._host, self._port = host, port

    def _on_connect(self, client: paho.Client, *_a: Any) -> None:
        if self._v5:
            opts = SubscribeOptions(qos=1, retainAsPublished=True)
            client.subscribe([(t, opts) for t in self._topics])
        else:
            client.subscribe([(t, 1) for t in self._topics])

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        received = Received(
            msg.topic,
            bytes(msg.payload),
            bool(msg.retain),
            tuple(getattr(props, "UserProperty", []) or []),
            getattr(props, "CorrelationData", None),
        )
        with self._arrived:
            self.messages.append(received)
            self._arrived.notify_all()
        if self._callback:
            self._callback(received)

    def start(self, timeout: float = 30) -> Collector:
        if self._v5:
            props = None
            if not self._clean:
                # A persistent session must outlive the connection (MQTT 5 §3.1.2.11.2).
                props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                props.SessionExpiryInterval = 3600
            self.client.connect(self._host, self._port, clean_start=self._clean,
                                properties=props)
        else:
            self.client.connect(self._host, self._port)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            raise TimeoutError("collector did not get SUBACK")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def on(self, topic: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def wait_for(
        self,
        predicate: Callable[[Received], bool],
        count: int = 1,
        timeout: float = WAIT,
        *,
        since: int = 0,
    ) -> list[Received]:
        """Wait until `count` recorded messages match (of those recorded from index `since`
        on); return them (or raise)."""
        hits: list[Received] = []
        scanned = since

        def enough() -> bool:  # each message is looked at once
            nonlocal scanned
            hits.extend(m for m in self.messages[scanned:] if predicate(m))
            scanned = len(self.messages)
            return len(hits) >= count

        with self._arrived:
            if not self._arrived.wait_for(enough, timeout):
                raise TimeoutError(f"saw {len(hits)} of {count} expected messages")
        return hits

    def wait_topic(self, topic: str, count: int = 1, timeout: float = WAIT) -> list[Received]:
        return self.wait_for(lambda m: m.topic == topic, count, timeout)

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        retain: bool = False,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
    ) -> None:
        properties = None
        if self._v5 and (response_topic or correlation_data):
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            if response_topic:
                properties.ResponseTopic = response_topic
            if correlation_data:
                properties.CorrelationData = correlation_data
        info = self.client.publish(topic, payload, qos=1, retain=retain, properties=properties)
        info.wait_for_publish(10)


def retained(host: str, port: int, topics: Sequence[str]) -> dict[str, bytes]:
    """What a client subscribing now gets: the retained messages on `topics`."""
    # The broker sends a subscriber the retained messages before anything published after
    # the subscription: once a marker sent then is back, every retained one is in.
    marker = f"o2m-marker/{uuid.uuid4().hex}"
    with Collector(host, port, [*topics, marker]) as fresh:
        fresh.publish(marker, b"end")
        fresh.wait_topic(marker)
        return {m.topic: m.payload for m in fresh.messages if m.retain}
