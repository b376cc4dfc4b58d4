"""Faults injected on the rig: broker and IMAP restarts, kicks, kill -9, short tokens,
an identity-platform outage. The bridge must lose nothing and heal by itself."""

from __future__ import annotations

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
from rig.samples import make_message
from tests.bridgeproc import BridgeProcess
from tests.conftest import wait_online

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


def test_broker_restart_during_backlog_loses_no_message(
    own_broker: Mosquitto, make_bridge: Callable[..., BridgeProcess],
    secret_credential: dict[str, Any], dovecot: Dovecot, mailbox: str, base_topic: str,
    record_property: Callable[[str, object], None],
) -> None:
    deliver_many(dovecot, mailbox, BACKLOG)
    topic = f"{base_topic}/home/inbox/message"
    sub = Collector("127.0.0.1", own_broker.port, [topic], client_id=f"sub-{base_topic}",
                    clean=False).start()
    try:
        make_bridge(secret_credential, mqtt_port=own_broker.port,
                    folders=[{"name": "INBOX", "backfill": BACKLOG}]).start()
        sub.wait_topic(topic, count=40, timeout=30)
        own_broker.restart()
        seen = wait_all_uids(sub, topic, set(dovecot.uids(mailbox)), timeout=90)
    finally:
        sub.stop()
    duplicates = sum(n - 1 for n in seen.values())
    record_property("duplicates", duplicates)
    print(f"broker restart during {BACKLOG}-message backlog: {duplicates} duplicates")
    assert len(seen) == BACKLOG


def test_kill_9_during_backlog_then_restart_loses_no_message(
    make_bridge: Callable[..., BridgeProcess], secret_credential: dict[str, Any],
    collector: Collector, dovecot: Dovecot, mailbox: str, base_topic: str,
    record_property: Callable[[str, object], None],
) -> None:
    deliver_many(dovecot, mailbox, BACKLOG)
    topic = f"{base_topic}/home/inbox/message"
    folders = [{"name": "INBOX", "backfill": BACKLOG}]
    first = make_bridge(secret_credential, folders=folders).start()
    collector.wait_topic(topic, count=60, timeout=30)
    first.kill()
    make_bridge(secret_credential, folders=folders).start()
    seen = wait_all_uids(collector, topic, set(dovecot.uids(mailbox)))
    duplicates = sum(n - 1 for n in seen.values())
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
    collector.wait_topic(topic, count=2, timeout=20)

    dovecot.stop()
    time.sleep(1)
    dovecot.start()
    dovecot.deliver(mailbox, make_message(subject="after restart", to=mailbox))
    msgs = collector.wait_topic(topic, count=3, timeout=30)
    assert [m.json()["subject"] for m in msgs] == ["before", "after kick", "after restart"]


def test_short_lived_tokens_are_renewed_without_losing_mail_or_erroring(
    mode: dict[str, Any], make_bridge: Callable[..., BridgeProcess],
    secret_credential: dict[str, Any], collector: Collector, dovecot: Dovecot,
    idp: IdentityPlatform, mailbox: str, base_topic: str,
) -> None:
    idp.token_lifetime = 15
    topic = f"{base_topic}/home/inbox/message"
    bridge = make_bridge(secret_credential, **mode).start()
    wait_online(collector, base_topic)
    tokens_before = idp.token_requests
    for i in range(12):  # 60 s: four token lifetimes
        dovecot.deliver(mailbox, make_message(subject=f"tick {i}", to=mailbox))
        time.sleep(5)
    msgs = collector.wait_topic(topic, count=12, timeout=15)
    assert [m.json()["subject"] for m in msgs] == [f"tick {i}" for i in range(12)]
    assert idp.token_requests - tokens_before >= 4  # really renewed
    statuses = [m.json() for m in collector.on(f"{base_topic}/home/status")]
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
    collector.wait_for(lambda m: m.topic == status_topic and m.json()["last_error"] is not None,
                       timeout=20)
    status = collector.on(status_topic)[-1].json()
    assert status["connected"] is False and status["auth"] != "error"  # an outage, not a refusal
    idp.down = False
    collector.wait_for(lambda m: m.topic == status_topic and m.json()["connected"], timeout=30)
    dovecot.deliver(mailbox, make_message(subject="after outage", to=mailbox))
    msg = collector.wait_topic(f"{base_topic}/home/inbox/message", timeout=20)[0]
    assert msg.json()["subject"] == "after outage"


def test_wrong_secret_is_an_auth_error_on_the_status_topic_not_a_hot_loop(
    make_bridge: Callable[..., BridgeProcess], secret_credential: dict[str, Any],
    collector: Collector, idp: IdentityPlatform, base_topic: str,
) -> None:
    cred = {**secret_credential, "secret": "definitely-not-the-secret"}
    requests_before = idp.token_requests
    bridge = make_bridge(cred).start()
    status_topic = f"{base_topic}/home/status"
    msg = collector.wait_for(lambda m: m.topic == status_topic and m.json()["auth"] == "error",
                             timeout=20)[0]
    assert "7000215" in msg.json()["last_error"]
    assert "client secret is wrong" in msg.json()["last_error"]
    wait_online(collector, base_topic)  # the bridge is up; the account says what is wrong
    time.sleep(3)
    assert idp.token_requests - requests_before <= 4  # backoff, not a hot loop
    assert "definitely-not-the-secret" not in bridge.log()
