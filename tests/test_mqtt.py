"""`bridge.mqtt`: a publication completes once, when the broker acknowledges it.

The watcher advances a folder's position only after every publication of a batch is
done (at least once), so `Publication` must never report done early, never lose a
completion that races its creation, and stay cheap (one per summary and attachment).
"""

from __future__ import annotations

import threading
import time
import uuid

from bridge.config.model import MqttConfig
from bridge.mqtt.client import MqttClient, Publication
from rig.mosquitto import Mosquitto
from rig.mqttsub import Collector
from rig.procs import free_port


def test_a_publication_is_pending_until_completed_then_stays_done() -> None:
    publication = Publication()
    assert not publication.done
    assert publication.wait(0) is False
    started = time.monotonic()
    assert publication.wait(0.05) is False
    assert time.monotonic() - started >= 0.04  # really waited
    threading.Timer(0.05, publication._complete, args=(True,)).start()
    assert publication.wait(5) is True
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
    waiters = [threading.Thread(target=lambda: results.append(publication.wait(5)))
               for _ in range(4)]
    for waiter in waiters:
        waiter.start()
    publication._complete(True)
    for waiter in waiters:
        waiter.join(5)
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


def test_paho_still_calls_the_jittered_reconnect_wait_and_stop_ends_it() -> None:
    """MqttClient overrides paho's private `_reconnect_wait` (there is no public hook for
    jitter): with no broker listening, paho must call it between attempts, and `stop`
    must end a pending wait at once."""
    client = MqttClient(MqttConfig(host="127.0.0.1", port=free_port(),
                                   client_id=f"nobody-{uuid.uuid4().hex[:8]}"))
    backoff = client._client.backoff
    closing = client._client.closing = _Recorded()
    client.start()
    try:
        # the third wait (about 4 s) is in progress
        assert closing.third.wait(30), f"paho called the wait {backoff.attempts} times"
    finally:
        client.stop()
    assert backoff.attempts >= 3  # paho called our wait before each reconnect attempt
    assert closing.ended[:1] == [True]  # the wait in progress ended with stop, not its delay


class _Recorded(threading.Event):
    """The client's reconnect wait: the first two pass at once, the third really waits
    and records whether the event (stop) ended it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.third = threading.Event()
        self.ended: list[bool] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.calls += 1
        if self.calls < 3:
            return False
        self.third.set()
        self.ended.append(super().wait(timeout))
        return self.ended[-1]
