"""Faults injected on the rig: broker and IMAP restarts, kicks, kill -9, short tokens,
an identity-platform outage. The bridge must lose nothing and heal by itself."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rig.dovecot import Dovecot
from rig.idp import IdentityPlatform
from rig.mosquitto import Mosquitto
from rig.mqttsub import Collector
from rig.pki import TestPKI
from rig.samples import make_message
from tests.bridgeproc import BridgeProcess
from tests.conftest import wait_online
from tests.relay import Relay, relay_tls

BACKLOG = 200


def deliver_many(dovecot: Dovecot, mailbox: str, count: int, prefix: str = "m") -> None:
    for i in range(count):
        dovecot.deliver(mailbox, make_message(subject=f"{prefix} {i}", to=mailbox,
                                              text=f"body {i} " * 20))


def uids_seen(collector: Collector, topic: str) -> Counter[int]:
    return Counter(m.json()["uid"] for m in collector.on(topic))


def wait_all_uids(collector: Collector, topic: str, expected: set[int],
                  timeout: float = 60) -> Counter[int]:
    deadline = time.monotonic() + timeout
    while True:
        seen = uids_seen(collector, topic)
        if expected <= set(seen):
            return seen
        if time.monotonic() > deadline:
            missing = sorted(expected - set(seen))
            raise AssertionError(f"{len(missing)} UIDs never published, e.g. {missing[:10]}")
        time.sleep(0.1)


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker with persistence, so a restart keeps sessions and queued messages."""
    with Mosquitto(tmp_path / "broker", persistence=True) as broker:
        yield broker


# What the README promises a crash or a broker restart repeats at most: one batch.
REPEAT_LIMIT = 50


FAULT_AT = 110  # publishes the broker gets before the fault: mid-batch, mid-backlog


@pytest.fixture
def slow_imap(dovecot: Dovecot, pki: TestPKI) -> Iterator[Relay]:
    """Dovecot behind a relay passing 20 KB/s: the bridge publishes each window as it
    arrives and then waits for the next, as it does with Exchange far away."""
    with Relay(dovecot.port, tls=relay_tls(pki)) as relay:
        relay.rate = 20_000
        yield relay


def wait_count(relay: Relay, pattern: bytes, count: int, timeout: float = 30) -> None:
    """Until the server behind the relay got `pattern` `count` times."""
    deadline = time.monotonic() + timeout
    while relay.count(pattern) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert relay.count(pattern) >= count


def wait_closed(relay: Relay, timeout: float = 30) -> None:
    """Until the relay passed on all a dead client had sent and closed its connections."""
    deadline = time.monotonic() + timeout
    while relay.open_connections and time.monotonic() < deadline:
        time.sleep(0.05)
    assert relay.open_connections == 0


def stored_last_uid(state_dir: Path) -> int:
    """The INBOX position the bridge has recorded (acknowledged messages only)."""
    path = state_dir / "positions" / "home" / "INBOX.json"
    return int(json.loads(path.read_text())["last_uid"])


def check_in_order_one_batch_repeated(arrivals: list[int], expected: list[int]) -> int:
    """Every UID, first seen in UID order; repeats within one batch. Returns the repeats."""
    assert list(dict.fromkeys(arrivals)) == expected
    repeated = sorted(uid for uid, n in Counter(arrivals).items() if n > 1)
    assert len(repeated) <= REPEAT_LIMIT, repeated
    assert not repeated or repeated[-1] - repeated[0] < REPEAT_LIMIT, repeated
    return len(arrivals) - len(expected)


@pytest.mark.slow
def test_broker_restart_during_backlog_loses_no_message(
    own_broker: Mosquitto, make_bridge: Callable[..., BridgeProcess],
    secret_credential: dict[str, Any], dovecot: Dovecot, mailbox: str, base_topic: str,
    record_property: Callable[[str, object], None], slow_imap: Relay,
) -> None:
    deliver_many(dovecot, mailbox, BACKLOG)
    topic = f"{base_topic}/home/inbox/message"
    sub = Collector("127.0.0.1", own_broker.port, [topic], client_id=f"sub-{base_topic}",
                    clean=False).start()
    try:
        with Relay(own_broker.port) as relay:
            # The broker gets FAULT_AT summaries, then nothing more until it restarts.
            relay.stop_after = (topic.encode(), FAULT_AT)
            make_bridge(secret_credential, mqtt_port=relay.port, imap_port=slow_imap.port,
                        folders=[{"name": "INBOX", "backfill": BACKLOG}]).start()
            wait_count(relay, topic.encode(), FAULT_AT)
            published_before = relay.count(topic.encode())
            own_broker.restart()
            seen = wait_all_uids(sub, topic, set(dovecot.uids(mailbox)), timeout=90)
    finally:
        sub.stop()
    assert published_before < BACKLOG  # the fault hit the backlog, not its end
    duplicates = check_in_order_one_batch_repeated(
        [m.json()["uid"] for m in sub.on(topic)], dovecot.uids(mailbox))
    record_property("duplicates", duplicates)
    print(f"broker restart during {BACKLOG}-message backlog: {duplicates} duplicates")
    assert len(seen) == BACKLOG


@pytest.mark.slow
def test_kill_9_during_backlog_then_restart_loses_no_message(
    make_bridge: Callable[..., BridgeProcess], secret_credential: dict[str, Any],
    collector: Collector, dovecot: Dovecot, mosquitto: Mosquitto, mailbox: str,
    base_topic: str, record_property: Callable[[str, object], None], tmp_path: Path,
    slow_imap: Relay,
) -> None:
    deliver_many(dovecot, mailbox, BACKLOG)
    topic = f"{base_topic}/home/inbox/message"
    folders = [{"name": "INBOX", "backfill": BACKLOG}]
    with Relay(mosquitto.port) as relay:
        relay.stop_after = (topic.encode(), FAULT_AT)  # then the bridge is killed
        first = make_bridge(secret_credential, folders=folders, mqtt_port=relay.port,
                            imap_port=slow_imap.port).start()
        wait_count(relay, topic.encode(), FAULT_AT)
        first.kill()
        wait_closed(relay)
        published_before = relay.count(topic.encode())
    stored = stored_last_uid(tmp_path / "state")
    assert published_before < BACKLOG and stored < max(dovecot.uids(mailbox))
    make_bridge(secret_credential, folders=folders).start()
    seen = wait_all_uids(collector, topic, set(dovecot.uids(mailbox)))
    arrivals = [m.json()["uid"] for m in collector.on(topic)]
    duplicates = check_in_order_one_batch_repeated(arrivals, dovecot.uids(mailbox))
    record_property("duplicates", duplicates)
    print(f"kill -9 during {BACKLOG}-message backlog: {duplicates} duplicates")
    assert len(seen) == BACKLOG


def test_dovecot_restart_and_kick_reconnect_and_publish_mail_that_arrived_meanwhile(
    mode: dict[str, Any], make_bridge: Callable[..., BridgeProcess],
    secret_credential: dict[str, Any], collector: Collector, dovecot: Dovecot, mailbox: str,
    base_topic: str,
) -> None:
    topic = f"{base_topic}/home/inbox/message"
    make_bridge(secret_credential, **mode).start()
    wait_online(collector, base_topic)
    dovecot.deliver(mailbox, make_message(subject="before", to=mailbox))
    collector.wait_topic(topic, count=1)

    dovecot.kick(mailbox)  # what Exchange's "BYE Session invalidated" does to a session
    dovecot.deliver(mailbox, make_message(subject="after kick", to=mailbox))
    collector.wait_topic(topic, count=2)

    dovecot.stop()
    time.sleep(1)
    dovecot.start()
    dovecot.deliver(mailbox, make_message(subject="after restart", to=mailbox))
    msgs = collector.wait_topic(topic, count=3, timeout=60)  # reconnect backoff: 1, 2, 4 ... s
    assert [m.json()["subject"] for m in msgs] == ["before", "after kick", "after restart"]


@pytest.mark.slow  # 40 s of mail
def test_short_lived_tokens_are_renewed_without_losing_mail_or_erroring(
    mode: dict[str, Any], make_bridge: Callable[..., BridgeProcess],
    secret_credential: dict[str, Any], collector: Collector, dovecot: Dovecot,
    idp: IdentityPlatform, mailbox: str, base_topic: str,
) -> None:
    idp.token_lifetime = 10  # renewed every 8 s, long enough for a login on a busy machine
    topic = f"{base_topic}/home/inbox/message"
    bridge = make_bridge(secret_credential, **mode).start()
    wait_online(collector, base_topic)
    tokens_before = idp.token_requests
    for i in range(8):  # 40 s: four token lifetimes
        dovecot.deliver(mailbox, make_message(subject=f"tick {i}", to=mailbox))
        time.sleep(5)
    msgs = collector.wait_topic(topic, count=8)
    assert [m.json()["subject"] for m in msgs] == [f"tick {i}" for i in range(8)]
    deadline = time.monotonic() + 30  # the fourth renewal may be a little late under load
    while idp.token_requests - tokens_before < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert idp.token_requests - tokens_before >= 4  # really renewed
    statuses = [m.json() for m in collector.on(f"{base_topic}/home/status")]
    assert any(s["auth"] == "ok" and s["connected"] for s in statuses)
    assert all(s["auth"] != "error" and s["last_error"] is None for s in statuses)
    assert bridge.stop() == 0


def test_identity_platform_down_at_start_then_up_bridge_comes_up_by_itself(
    make_bridge: Callable[..., BridgeProcess], secret_credential: dict[str, Any],
    collector: Collector, dovecot: Dovecot, idp: IdentityPlatform, mailbox: str,
    base_topic: str,
) -> None:
    idp.down = True
    make_bridge(secret_credential, idle=True).start()
    status_topic = f"{base_topic}/home/status"
    collector.wait_for(lambda m: m.topic == status_topic and m.json()["last_error"] is not None)
    status = collector.on(status_topic)[-1].json()
    assert status["connected"] is False and status["auth"] != "error"  # an outage, not a refusal
    idp.down = False
    collector.wait_for(lambda m: m.topic == status_topic and m.json()["connected"],
                       timeout=60)  # the backoff grew while the platform was down
    dovecot.deliver(mailbox, make_message(subject="after outage", to=mailbox))
    msg = collector.wait_topic(f"{base_topic}/home/inbox/message")[0]
    assert msg.json()["subject"] == "after outage"


def test_wrong_secret_is_an_auth_error_on_the_status_topic_not_a_hot_loop(
    make_bridge: Callable[..., BridgeProcess], secret_credential: dict[str, Any],
    collector: Collector, idp: IdentityPlatform, base_topic: str,
) -> None:
    cred = {**secret_credential, "secret": "definitely-not-the-secret"}
    requests_before = idp.token_requests
    bridge = make_bridge(cred).start()
    status_topic = f"{base_topic}/home/status"
    msg = collector.wait_for(lambda m: m.topic == status_topic and m.json()["auth"] == "error")[0]
    assert "7000215" in msg.json()["last_error"]
    assert "client secret is wrong" in msg.json()["last_error"]
    wait_online(collector, base_topic)  # the bridge is up; the account says what is wrong
    time.sleep(3)
    assert idp.token_requests - requests_before <= 4  # backoff, not a hot loop
    assert "definitely-not-the-secret" not in bridge.log()
