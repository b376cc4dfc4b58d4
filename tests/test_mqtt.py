"""`bridge.mqtt`: a publication completes once, when the broker acknowledges it; a
subscription once the broker's SUBACK granted it.

The watcher advances a folder's position only after every publication of a batch is
done (at least once), so `Publication` must never report done early, never lose a
completion that races its creation, and stay cheap (one per summary and attachment).
`check` publishes its test message only once its subscription is granted.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from bridge.config.model import MqttConfig
from bridge.mqtt.client import Incoming, MqttClient, Publication
from rig.mosquitto import Mosquitto
from rig.mqttsub import Collector
from rig.procs import free_port
from tests.relay import Relay


def test_a_publication_is_pending_until_completed_then_stays_done() -> None:
    publication = Publication()
    assert not publication.done
    assert publication.wait(0) is False
    started = time.monotonic()
    assert publication.wait(0.05) is False
    assert time.monotonic() - started >= 0.04  # really waited
    threading.Timer(0.05, publication._complete, args=(True,)).start()
    assert publication.wait(30) is True
    assert publication.done
    assert publication.wait(0) is True and publication.wait() is True  # any number of waits
    publication._complete(True)  # a second completion changes nothing
    assert publication.done and publication.wait(0) is True


def test_a_refused_publication_is_done_but_not_ok() -> None:
    publication = Publication()
    publication._complete(False)
    assert publication.done
    assert publication.wait(1) is False


def test_every_waiter_is_released_by_one_completion() -> None:
    publication = Publication()
    results: list[bool] = []
    waiters = [threading.Thread(target=lambda: results.append(publication.wait(30)))
               for _ in range(4)]
    for waiter in waiters:
        waiter.start()
    publication._complete(True)
    for waiter in waiters:
        waiter.join(30)
    assert results == [True] * 4


def test_a_burst_of_qos1_publishes_is_each_acknowledged_and_delivered(
    mosquitto: Mosquitto,
) -> None:
    """500 publishes queued at once (paho keeps at most the broker's Receive Maximum in
    flight): every publication completes ok, and a subscriber gets all of them."""
    topic = f"t-{uuid.uuid4().hex[:8]}"
    client = MqttClient(MqttConfig(host="127.0.0.1", port=mosquitto.port,
                                   client_id=f"burst-{uuid.uuid4().hex[:8]}"))
    client.start()
    try:
        assert client.wait_connected(10)
        with Collector("127.0.0.1", mosquitto.port, [f"{topic}/#"]) as sub:
            publications = [client.publish(f"{topic}/{i}", f"payload {i}") for i in range(500)]
            assert all(p.wait(30) for p in publications)
            assert all(p.done for p in publications)
            received = sub.wait_for(lambda m: m.topic.startswith(f"{topic}/"), 500, timeout=30)
            got = sorted(int(m.topic.rsplit("/", 1)[1]) for m in received)
        assert got == list(range(500))
    finally:
        client.stop()


def test_a_qos0_publish_while_disconnected_is_reported_failed(mosquitto: Mosquitto) -> None:
    client = MqttClient(MqttConfig(host="127.0.0.1", port=mosquitto.port, qos=0,
                                   client_id=f"q0-{uuid.uuid4().hex[:8]}"))
    publication = client.publish("never/sent", "x")  # not started: no connection
    assert publication.done and publication.wait(0) is False


def receiver(port: int, got: threading.Event, protocol: str = "5") -> MqttClient:
    """A client that sets `got` when a message arrives."""

    def on_message(_msg: Incoming) -> None:
        got.set()

    return MqttClient(MqttConfig(host="127.0.0.1", port=port, protocol=protocol,
                                 client_id=f"sub-{uuid.uuid4().hex[:8]}"),
                      on_message=on_message)


def publish_from_another_client(port: int, topic: str) -> None:
    with Collector("127.0.0.1", port, [f"{topic}/unused"]) as other:
        other.publish(topic, "hello")


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_subscription_made_before_connecting_is_done_at_its_suback(
    mosquitto: Mosquitto, protocol: str,
) -> None:
    """Subscribed with the connection's SUBSCRIBE: once done, a message another client
    publishes reaches it."""
    topic, got = f"t-{uuid.uuid4().hex[:8]}/check", threading.Event()
    client = receiver(mosquitto.port, got, protocol)
    subscription = client.subscribe([topic])
    assert not subscription.done
    client.start()
    try:
        assert subscription.wait(30) and subscription.done
        publish_from_another_client(mosquitto.port, topic)
        assert got.wait(30)
    finally:
        client.stop()


def test_a_subscription_is_pending_until_the_broker_s_suback_arrives(
    mosquitto: Mosquitto,
) -> None:
    topic, got = f"t-{uuid.uuid4().hex[:8]}/later", threading.Event()
    with Relay(mosquitto.port) as relay:
        client = receiver(relay.port, got)
        client.start()
        try:
            assert client.wait_connected(30)
            relay.hold()  # the broker's answers, the SUBACK among them, wait in the relay
            subscription = client.subscribe([topic])
            assert subscription.wait(0.5) is False and not subscription.done
            relay.release()
            assert subscription.wait(30)
            publish_from_another_client(mosquitto.port, topic)
            assert got.wait(30)
        finally:
            client.stop()


def test_a_subscription_the_broker_refuses_is_done_but_not_ok() -> None:
    """A SUBACK's failure code (an ACL refusal on brokers that answer so; Mosquitto grants
    and filters on delivery instead) completes the subscriptions it answers, not ok."""
    client = MqttClient(MqttConfig(host="127.0.0.1", port=free_port(), client_id="refused"))
    granted, refused = client.subscribe(["a"]), client.subscribe(["b", "c"])
    client._subscribed(["a", "b", "c"], [ReasonCode(PacketTypes.SUBACK, "Granted QoS 1"),
                                         ReasonCode(PacketTypes.SUBACK, "Granted QoS 1"),
                                         ReasonCode(PacketTypes.SUBACK, "Not authorized")])
    assert granted.wait(0) is True
    assert refused.done and refused.wait(0) is False
