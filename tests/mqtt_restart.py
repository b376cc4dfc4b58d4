"""A broker restart seen by `bridge.mqtt`'s client while every descriptor below 1024 is
taken, played in a process of its own (`reconnect_above_select_limit`); and the test doubles
`test_mqtt_network` shares with it.

Its own process, because any other thread or garbage collection in a test worker may close
a low descriptor between the taking and the reconnect, and the new socket would take it.
"""

from __future__ import annotations

import gc
import os
import resource
import socket
import threading
import uuid
from pathlib import Path

from bridge.config.model import MqttConfig
from bridge.mqtt.client import MqttClient
from bridge.util.backoff import Backoff
from rig.mosquitto import Mosquitto

SELECT_LIMIT = 1024  # FD_SETSIZE: select() refuses descriptors from here on


class RecordingBackoff(Backoff):
    """A Backoff that notes each delay it hands out and signals it."""

    def __init__(self, initial: float, cap: float, jitter: float = 0.0) -> None:
        super().__init__(initial=initial, cap=cap, jitter=jitter)
        self.delays: list[float] = []
        self.waiting = threading.Event()  # set with each delay: a reconnect wait begins

    def next_delay(self) -> float:
        delay = super().next_delay()
        self.delays.append(delay)
        self.waiting.set()
        return delay


class Connections:
    """The client's on_connect: counts connections, each one signalled."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = threading.Condition()

    def __call__(self) -> None:
        with self._changed:
            self.count += 1
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.count >= count, timeout)


def mqtt_config(port: int, **overrides: object) -> MqttConfig:
    return MqttConfig(host="127.0.0.1", port=port, **overrides)  # type: ignore[arg-type]


def network_threads(client_id: str) -> list[str]:
    """The names of the client's MQTT network threads still running."""
    return [t.name for t in threading.enumerate() if t.name == f"mqtt-{client_id}"]


class LowDescriptors:
    """Holds every free descriptor below SELECT_LIMIT, so the sockets this process opens
    next get numbers select() refuses."""

    def __init__(self) -> None:
        self._placeholder = socket.socket()

    def take(self) -> int:
        """Take the free ones below the limit; return the lowest free descriptor after."""
        gc.collect()  # what garbage would free later, free now
        while (fd := os.dup(self._placeholder.fileno())) < SELECT_LIMIT:
            pass  # held until the process ends
        os.close(fd)
        return fd


def reconnect_above_select_limit(broker_dir: str) -> int:
    """Connect, take the low descriptors, restart the broker; return the descriptor of the
    connection the client got back on, once a publish made while the broker was down and
    one made after are acknowledged. Raises AssertionError on what went wrong."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard == resource.RLIM_INFINITY or hard >= SELECT_LIMIT + 100, (
        f"RLIMIT_NOFILE hard limit {hard} leaves no room above {SELECT_LIMIT}: "
        "raise it (ulimit -Hn) to run this test")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    client_id = f"highfd-{uuid.uuid4().hex[:8]}"
    connections = Connections()
    backoff = RecordingBackoff(initial=1.0, cap=2.0)
    with Mosquitto(Path(broker_dir)) as broker:
        client = MqttClient(mqtt_config(broker.port, client_id=client_id),
                            on_connect=connections, backoff=backoff)
        client.start()
        try:
            assert connections.wait_for(1, 30), client.last_error
            low = LowDescriptors()
            low.take()
            broker.stop()
            # The lost connection's descriptor is free again once the reconnect wait
            # begins: take it too, a second before the first attempt.
            assert backoff.waiting.wait(30)
            assert low.take() >= SELECT_LIMIT
            waiting = client.publish(f"{client_id}/while-down", "queued")  # QoS 1: kept
            broker.start()
            assert connections.wait_for(2, 60), client.last_error
            sock = client._client.socket()
            assert sock is not None
            fd = sock.fileno()
            assert waiting.wait(30), "the publish made while down was not acknowledged"
            assert client.publish(f"{client_id}/after", "hello").wait(30)
        finally:
            client.stop()
    assert not network_threads(client_id)
    return fd
