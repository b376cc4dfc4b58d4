"""`bridge.mqtt`'s network thread: it reconnects after a broker restart even when every
descriptor below 1024 is taken (paho's own loop waits in select(), which cannot), waits
as its Backoff says between attempts, keeps an idle connection alive with pings,
connects again after an unexpected error in its loop (backing off while the error
repeats, failing the QoS 0 publishes the lost connection never sent), and `stop` ends it
at once, connected or waiting, without the Last Will."""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from bridge.mqtt import network
from bridge.mqtt.client import Incoming, MqttClient, Publication
from rig.mosquitto import Mosquitto
from rig.mqttsub import Collector
from rig.pki import TestPKI
from rig.procs import free_port
from tests.mqtt_restart import (
    SELECT_LIMIT,
    Connections,
    RecordingBackoff,
    mqtt_config,
    network_threads,
    reconnect_above_select_limit,
)


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker of this test's own, to restart."""
    with Mosquitto(tmp_path / "broker") as broker:
        yield broker


def test_a_broker_restart_reconnects_when_only_descriptors_above_1024_are_free(
    tmp_path: Path,
) -> None:
    """A bridge with a thousand folders holds thousands of descriptors: after a broker
    restart the new MQTT socket is numbered above 1024, and the client must still get
    back, with a publish made while the broker was down acknowledged."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as child:
        fd = child.submit(reconnect_above_select_limit, str(tmp_path / "broker")).result(180)
    assert fd >= SELECT_LIMIT  # what the test is about


def test_reconnect_attempts_are_spaced_as_the_backoff_says() -> None:
    """A listener that hangs up on every connection: each attempt comes only after the
    Backoff's next delay (doubling to its cap), which is not reset as no CONNACK came."""
    listener = socket.create_server(("127.0.0.1", 0))
    attempts: list[float] = []
    enough = threading.Event()

    def hang_up() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                attempts.append(time.monotonic())
                conn.close()
                if len(attempts) >= 5:
                    enough.set()

    threading.Thread(target=hang_up, name="hang-up", daemon=True).start()
    backoff = RecordingBackoff(initial=0.1, cap=0.4)
    client = MqttClient(mqtt_config(listener.getsockname()[1],
                                    client_id=f"spaced-{uuid.uuid4().hex[:8]}"),
                        backoff=backoff)
    client.start()
    try:
        assert enough.wait(60)
    finally:
        client.stop()
        listener.close()
    assert backoff.delays[:4] == pytest.approx([0.1, 0.2, 0.4, 0.4])
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    for gap, delay in zip(gaps, backoff.delays, strict=False):
        assert gap >= delay - 0.01  # waited (the margin: clocks read on two threads)


def test_stop_ends_a_pending_reconnect_wait_at_once() -> None:
    client_id = f"waiting-{uuid.uuid4().hex[:8]}"
    backoff = RecordingBackoff(initial=60.0, cap=60.0)
    client = MqttClient(mqtt_config(free_port(), client_id=client_id), backoff=backoff)
    client.start()
    try:
        assert backoff.waiting.wait(30)  # refused at once, now waiting a minute
        assert client.last_error is not None and "Connection refused" in client.last_error
    finally:
        started = time.monotonic()
        client.stop()
        stopped_in = time.monotonic() - started
    assert stopped_in < 30  # not the minute's wait, however loaded the machine
    assert not network_threads(client_id)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_publish_and_stop_wake_the_thread_and_stop_disconnects_cleanly(
    mosquitto: Mosquitto, protocol: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With keepalive ticks a minute apart, a publish from another thread is still written at
    once, and stop ends the thread at once: both wake its poll. The broker sees a
    DISCONNECT, so no Last Will: a marker published after stop arrives after anything
    the disconnect caused, and nothing came on the will topic before it."""
    monkeypatch.setattr(network, "MISC_INTERVAL", 60.0)  # the keepalive's quarter rules
    client_id = f"stopping-{uuid.uuid4().hex[:8]}"
    will = f"{client_id}/state"
    with Collector("127.0.0.1", mosquitto.port, [f"{client_id}/#"]) as watcher:
        client = MqttClient(mqtt_config(mosquitto.port, client_id=client_id,
                                        protocol=protocol, keepalive=240),
                            will_topic=will)
        client.start()
        try:
            assert client.wait_connected(30)
            # far less than a tick, however loaded the machine
            assert client.publish(f"{client_id}/hello", "hi").wait(30)
        finally:
            started = time.monotonic()
            client.stop()
            stopped_in = time.monotonic() - started
        assert stopped_in < 30
        assert not network_threads(client_id)
        assert not client.connected.is_set()
        watcher.publish(f"{client_id}/marker", "after stop")
        watcher.wait_topic(f"{client_id}/marker", timeout=30)
        assert watcher.on(will) == []


def test_pings_keep_an_idle_connection_up_past_its_keepalive(own_broker: Mosquitto) -> None:
    """Keepalive 2 s: without a PINGREQ the broker drops the client after 3 s (1.5 times
    the keepalive, MQTT 3.1.1 §3.1.2.10). Idle for 7 s, it stays connected throughout."""
    connections = Connections()
    client = MqttClient(mqtt_config(own_broker.port, client_id=f"idle-{uuid.uuid4().hex[:8]}",
                                    keepalive=2),
                        on_connect=connections)
    lost = threading.Event()
    on_disconnect = client._client.on_disconnect
    assert on_disconnect is not None

    def noting_loss(*args: Any) -> None:
        lost.set()
        on_disconnect(*args)

    client._client.on_disconnect = noting_loss
    client.start()
    try:
        assert connections.wait_for(1, 30)
        assert not lost.wait(7.0)
        assert connections.count == 1 and client.connected.is_set()
        assert client.publish("idle/still-there", "yes").wait(30)
    finally:
        client.stop()
    assert "exceeded timeout" not in own_broker.log_file.read_text()


def test_over_tls_a_burst_is_acknowledged_and_comes_back_on_a_subscription(
    tmp_path: Path, pki: TestPKI,
) -> None:
    """Through TLS (the socket paho polls is an SSLSocket): 300 publishes to a topic the
    client itself subscribes to, every PUBACK and every message back."""
    topic = f"tls-{uuid.uuid4().hex[:8]}"
    received: list[str] = []
    all_back = threading.Event()

    def on_message(msg: Incoming) -> None:
        received.append(msg.topic)
        if len(received) == 300:
            all_back.set()

    with Mosquitto(tmp_path / "tls", pki=pki) as broker:
        assert broker.tls_port is not None
        client = MqttClient(mqtt_config(broker.tls_port, client_id=topic, tls=True,
                                        ca_file=pki.ca_file),
                            on_message=on_message)
        subscription = client.subscribe([f"{topic}/#"])
        client.start()
        try:
            assert subscription.wait(30)
            publications = [client.publish(f"{topic}/{i}", "x" * i) for i in range(300)]
            assert all(p.wait(30) for p in publications)
            assert all_back.wait(30)
        finally:
            client.stop()
    assert sorted(received) == sorted(f"{topic}/{i}" for i in range(300))


def quick_client(broker: Mosquitto, client_id: str, on_connect: Callable[[], None],
                 **config: object) -> MqttClient:
    """A client (not started) calling `on_connect`, whose usual reconnect wait is 0.1 s."""
    return MqttClient(mqtt_config(broker.port, client_id=client_id, **config),
                      on_connect=on_connect, backoff=RecordingBackoff(initial=0.1, cap=0.1))


def broker_connections(broker: Mosquitto, client_id: str) -> int:
    """How many times the broker saw `client_id` connect, from its own log."""
    return broker.log_file.read_text(errors="replace").count(f" as {client_id} ")


def test_an_unexpected_error_in_the_network_loop_reconnects_instead_of_ending_it(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug that raises out of paho's loop (here the bridge's on_connect, the first time)
    is logged; the connection is ended, reported lost, and made again, and publishes go
    on, instead of MQTT ending for the life of the process while the watchers run on.
    paho is not left to handle the failed CONNACK a second time."""
    connects: list[float] = []

    def failing_once() -> None:
        connects.append(time.monotonic())
        if len(connects) == 1:
            raise RuntimeError("a bug in on_connect")

    client_id = f"resilient-{uuid.uuid4().hex[:8]}"
    client = quick_client(mosquitto, client_id, failing_once)
    client.start()
    try:
        assert client.publish(f"{client_id}/after", "still here").wait(30)
        assert len(connects) == 2  # one on_connect per connection
        assert broker_connections(mosquitto, client_id) == 2
        assert network_threads(client_id) == [f"mqtt-{client_id}"]
    finally:
        client.stop()
    failures = [r for r in caplog.records if r.exc_info and "network loop" in r.getMessage()]
    assert [type(r.exc_info[1]) for r in failures if r.exc_info] == [RuntimeError]
    assert "lost (the network loop failed)" in caplog.text


def test_a_qos0_publish_the_lost_connection_never_sent_fails_instead_of_waiting_forever(
    mosquitto: Mosquitto,
) -> None:
    """A QoS 0 publish queued on a connection that is then lost is discarded by paho at
    the next connect, with no callback: its publication must fail (a watcher would retry
    it), not wait for ever; a QoS 0 publish on the new connection goes out."""
    queued: list[Publication] = []
    client_id = f"qos0-{uuid.uuid4().hex[:8]}"

    def queue_then_fail() -> None:
        if not queued:
            queued.append(client.publish(f"{client_id}/unsent", "x", qos=0))
            raise RuntimeError("a bug in on_connect")

    client = quick_client(mosquitto, client_id, queue_then_fail, qos=0)
    client.start()
    try:
        deadline = time.monotonic() + 30
        while not queued and time.monotonic() < deadline:
            time.sleep(0.05)
        assert queued and queued[0].wait(30) is False
        assert queued[0].done
        assert client.wait_connected(30)  # the connection after the failed one
        assert client.publish(f"{client_id}/sent", "y", qos=0).wait(30)
    finally:
        client.stop()


def test_a_bug_on_every_connection_backs_off_instead_of_spinning(
    mosquitto: Mosquitto,
) -> None:
    """on_connect raises every time: the waits between connections grow (1 s, 2 s, 4 s ...,
    each +-20 %, on top of the usual wait of 0.1 s here), and stop, arriving during such a
    wait, ends the thread at once and closes the socket the last failure left."""
    connects: list[float] = []
    third = threading.Event()

    def always_failing() -> None:
        connects.append(time.monotonic())
        if len(connects) == 3:
            third.set()
        raise RuntimeError("a bug in on_connect")

    client_id = f"failing-{uuid.uuid4().hex[:8]}"
    client = quick_client(mosquitto, client_id, always_failing)
    client.start()
    try:
        assert third.wait(60)
        first_gap, second_gap = connects[1] - connects[0], connects[2] - connects[1]
        assert first_gap >= 0.8 and second_gap >= 1.6  # without a backoff: 0.1 s each
        assert network_threads(client_id) == [f"mqtt-{client_id}"]
    finally:
        started = time.monotonic()
        client.stop()
        stopped_in = time.monotonic() - started
    assert stopped_in < 2  # not the failure backoff's 4 s
    assert not network_threads(client_id)
    sock = client._client.socket()
    assert sock is not None and sock.fileno() == -1  # left by the failure, closed at the end
