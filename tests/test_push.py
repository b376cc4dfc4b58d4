"""Push you can trust: mail is published promptly whatever the connection or the token
does. Each test plays one way Exchange and the network really behave, on the rig, at the
bridge's default IDLE settings (idle_renew 9 minutes: nothing here waits for it)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.chaos import _inject
from rig.dovecot import Dovecot
from rig.faults import SessionReaper
from rig.idp import IMAP_ROLE, IdentityPlatform, random_secret
from rig.mosquitto import Mosquitto
from rig.mqttsub import Collector
from rig.pki import TestPKI
from rig.relay import ImapRelay
from rig.samples import make_message
from tests.bridgeproc import BridgeProcess
from tests.conftest import wait_online

IDLE = {"idle": True, "poll_interval": 300}


@pytest.fixture
def relay(pki: TestPKI, dovecot: Dovecot) -> Iterator[ImapRelay]:
    """A relay between the bridge and Dovecot (TLS on both sides)."""
    with ImapRelay(pki, dovecot.port) as proxy:
        yield proxy


def published_within(collector: Collector, topic: str, subject: str, seconds: float) -> float:
    """Wait for the summary with `subject`; return how long it took (or fail)."""
    started = time.monotonic()
    collector.wait_for(lambda m: m.topic == topic and m.json()["subject"] == subject,
                       timeout=seconds)
    return time.monotonic() - started


def test_mail_landing_during_a_sync_is_published_without_waiting_for_idle_renewal(
    make_bridge: Callable[..., BridgeProcess], secret_credential: dict[str, Any],
    collector: Collector, dovecot: Dovecot, relay: ImapRelay, mailbox: str, base_topic: str,
) -> None:
    """The second message lands while the bridge's sync runs its UNSEEN search: the
    server announces it only inside that SEARCH answer (`* 2 EXISTS`), never again."""
    topic = f"{base_topic}/home/inbox/message"
    make_bridge(secret_credential, imap_port=relay.port, **IDLE).start()
    wait_online(collector, base_topic)
    landed: list[float] = []

    def land_second() -> None:
        dovecot.deliver(mailbox, make_message(subject="during the sync", to=mailbox))
        landed.append(time.monotonic())

    relay.before_command(b"SEARCH UNSEEN", land_second)
    dovecot.deliver(mailbox, make_message(subject="first", to=mailbox))
    published_within(collector, topic, "first", 30)
    # Missed, it would wait for IDLE's next check (60 s) or the renewal (9 minutes).
    published_within(collector, topic, "during the sync", 30)
    assert landed  # during the sync, indeed


def test_consent_granted_after_start_is_used_without_a_restart(
    make_bridge: Callable[..., BridgeProcess], idp: IdentityPlatform, tenant: str,
    collector: Collector, dovecot: Dovecot, mailbox: str, base_topic: str,
) -> None:
    """Tokens carry the roles granted when they were issued (as Entra's do): the token
    cached before admin consent stays refused, so the bridge must get a new one."""
    app = idp.register_app(tenant, secret=random_secret(), roles=[], mailboxes=[mailbox])
    bridge = make_bridge({"client_id": app.client_id, "secret": app.secrets[0]}, **IDLE).start()
    status_topic = f"{base_topic}/home/status"
    collector.wait_for(lambda m: m.topic == status_topic and m.json()["auth"] == "error",
                       timeout=30)
    app.roles.append(IMAP_ROLE)  # the admin grants consent
    granted = time.monotonic()
    collector.wait_for(lambda m: m.topic == status_topic and m.json()["connected"], timeout=60)
    # the folder's first state: its position is recorded, so new mail counts as new (mail
    # that lands between the sign-in and that first look is already there, like any old)
    collector.wait_topic(f"{base_topic}/home/inbox/state", timeout=60)
    dovecot.deliver(mailbox, make_message(subject="after consent", to=mailbox))
    published_within(collector, f"{base_topic}/home/inbox/message", "after consent",
                     max(1.0, 60 - (time.monotonic() - granted)))
    assert "unexpected error" not in bridge.log()  # healed by design, not by a fallback


@pytest.mark.slow
def test_tokens_refused_before_their_expiry_cost_no_mail(
    make_bridge: Callable[..., BridgeProcess], secret_credential: dict[str, Any],
    collector: Collector, dovecot: Dovecot, idp: IdentityPlatform, mailbox: str,
    base_topic: str, app: Any,
) -> None:
    """Every token is refused 10 s after issue while it claims an hour, and sessions
    are ended then, as Exchange does when an admin revokes them."""
    idp.refuse_after = 10
    topic = f"{base_topic}/home/inbox/message"
    with SessionReaper(idp, dovecot, mailbox, app.client_id) as reaper:
        bridge = make_bridge(secret_credential, **IDLE).start()
        wait_online(collector, base_topic)
        delays = []
        for i in range(6):  # 42 s: several refusals in a row
            dovecot.deliver(mailbox, make_message(subject=f"tick {i}", to=mailbox))
            delays.append(published_within(collector, topic, f"tick {i}", 30))
            time.sleep(max(0.0, 7 - delays[-1]))
    assert reaper.kicks >= 2  # the sessions really were ended
    assert "unexpected error" not in bridge.log()
    print(f"early refusal: {reaper.kicks} kicks, slowest message {max(delays):.1f} s")


@pytest.mark.slow
def test_a_silently_dropped_connection_is_replaced_in_time(
    make_bridge: Callable[..., BridgeProcess], secret_credential: dict[str, Any],
    collector: Collector, dovecot: Dovecot, relay: ImapRelay, mailbox: str, base_topic: str,
) -> None:
    """The relay forgets every open connection (no FIN, no RST): the IDLE connection is
    replaced and its mail published within 2 minutes; a command is answered in 90 s."""
    topic = f"{base_topic}/home/inbox/message"
    results = f"{base_topic}/home/command/result"
    make_bridge(secret_credential, imap_port=relay.port, **IDLE).start()
    wait_online(collector, base_topic)
    dovecot.deliver(mailbox, make_message(subject="before", to=mailbox))
    published_within(collector, topic, "before", 30)
    command = f"{base_topic}/home/command"
    idling = threading.Event()  # the command makes the folder sync, then IDLE again
    relay.before_command(b" IDLE\r\n", idling.set)
    collector.publish(command, '{"action": "mark_read", "folder": "INBOX", "uid": 1}')
    first = collector.wait_topic(results)[0]
    assert first.json()["status"] == "ok"  # the command connection is open now
    assert idling.wait(30)
    time.sleep(1)  # the server's "+ idling" is through: the drop finds the folder in IDLE
    assert relay.drop_existing() == 2  # the folder's and the commands' connections

    dropped = time.monotonic()
    dovecot.deliver(mailbox, make_message(subject="after the drop", to=mailbox))
    collector.publish(command, '{"action": "mark_unread", "folder": "INBOX", "uid": 1}')
    reply = collector.wait_topic(results, count=2, timeout=90)[1]
    answered = time.monotonic() - dropped
    published_within(collector, topic, "after the drop", 120 - (time.monotonic() - dropped))
    print(f"silent drop: command answered after {answered:.0f} s, mail published after "
          f"{time.monotonic() - dropped:.0f} s")
    assert reply.json()["status"] == "ok"


def test_a_broker_the_chaos_run_restarted_stays_up_for_the_drain(tmp_path: Path) -> None:
    """bench/chaos.py restarts the broker from its fault thread, whose children get
    SIGTERM when that thread exits (PR_SET_PDEATHSIG): the thread must outlive the
    drain, or mail still waiting on a late silent drop can never be published (run B's
    five "lost" messages)."""
    with Mosquitto(tmp_path / "mqtt", persistence=True) as broker:
        stop, done = threading.Event(), _Awaited()
        faults: list[tuple[float, str]] = []
        injector = threading.Thread(
            target=_inject, args=({"broker restart": broker.restart}, random.Random(1), stop,
                                  faults, done), kwargs={"every": (0.1, 0.1)}, daemon=True)
        injector.start()
        deadline = time.monotonic() + 30
        while not faults and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()  # the run's last mail is in: no more faults, the drain begins
        try:
            # the restart under way is complete once the thread waits for the drain
            assert faults and done.awaited.wait(30), "the fault thread did not stay"
            assert broker.running, "the restarted broker died with the run"
            collector = Collector("127.0.0.1", broker.port).start()
            collector.stop()
        finally:
            done.set()
            injector.join(30)


class _Awaited(threading.Event):
    """An event that tells when someone started waiting for it."""

    def __init__(self) -> None:
        super().__init__()
        self.awaited = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.awaited.set()
        return super().wait(timeout)
