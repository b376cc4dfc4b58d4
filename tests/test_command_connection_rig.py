"""The command connection on the rig: opened by the first command, logged out after a
quiet period, opened afresh by the next. A relay in front of Dovecot counts the
connections and logins as the server sees them."""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.auth.providers import TokenProviders
from bridge.commands.worker import CommandWorker
from bridge.config.load import parse_config
from bridge.config.model import AccountConfig
from bridge.imap.logins import Logins
from bridge.mqtt.client import Incoming
from bridge.service import Bridge
from rig.bridgecfg import rig_config
from rig.dovecot import Dovecot
from rig.idp import App, IdentityPlatform
from rig.mosquitto import Mosquitto
from rig.mqttsub import Collector
from rig.pki import TestPKI
from rig.samples import make_message
from tests.conftest import wait_online
from tests.relay import Relay, relay_tls

QUIET = 1.0  # the quiet period under test, instead of a minute
LOGIN = b"AUTHENTICATE XOAUTH2"
LOGOUT = b" LOGOUT\r\n"
DEADLINE = 30.0


@pytest.fixture
def imap_relay(dovecot: Dovecot, pki: TestPKI) -> Iterator[Relay]:
    """Dovecot behind a relay that sees IMAP in clear."""
    with Relay(dovecot.port, tls=relay_tls(pki)) as relay:
        yield relay


def config_data(idp: IdentityPlatform, pki: TestPKI, mosquitto: Mosquitto, app: App,
                mailbox: str, relay: Relay, tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    return rig_config(authority=idp.authority, ca_file=pki.ca_file, imap_port=relay.port,
                      mqtt_port=mosquitto.port, tenant_id=app.tenant_id,
                      client_id=app.client_id, secret=app.secrets[0], mailbox=mailbox,
                      state_dir=tmp_path / "state", **overrides)


def eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"not within {DEADLINE} s: {what}"
        time.sleep(0.05)


class Worker:
    """A command worker on the relay; its replies, with when they came and how many
    connections the relay had open then (the worker cannot close one before replying)."""

    def __init__(self, account: AccountConfig, quiet_close: float, relay: Relay) -> None:
        self.stop = threading.Event()
        self.relay = relay
        self.replies: queue.Queue[tuple[float, int, dict[str, Any]]] = queue.Queue()
        self.thread = CommandWorker(
            account=account, provider=TokenProviders().for_account(account), publishers={},
            reply=self._reply, on_changed=lambda _folder: None, stop=self.stop,
            logins=Logins(start_jitter=0), quiet_close=quiet_close)

    def _reply(self, _msg: Incoming, payload: bytes) -> None:
        self.replies.put((time.monotonic(), self.relay.open_connections, json.loads(payload)))

    def submit(self, action: str, uid: int) -> str:
        command_id = uuid.uuid4().hex[:8]
        payload = {"action": action, "folder": "INBOX", "uid": uid, "id": command_id}
        self.thread.submit(Incoming("o2m/home/command", json.dumps(payload).encode(), False),
                           None)
        return command_id

    def answer(self) -> tuple[float, int, dict[str, Any]]:
        return self.replies.get(timeout=DEADLINE)

    def command(self, action: str, uid: int) -> tuple[float, int]:
        """Submit a command, wait for its reply (the next one): when, and the connections."""
        command_id = self.submit(action, uid)
        at, connections, body = self.answer()
        assert body["id"] == command_id and body["status"] == "ok", body
        return at, connections

    def close(self) -> None:
        self.stop.set()
        self.thread.stop()
        self.thread.join(DEADLINE)
        assert not self.thread.is_alive()


@pytest.fixture
def worker(idp: IdentityPlatform, pki: TestPKI, mosquitto: Mosquitto, app: App, mailbox: str,
           imap_relay: Relay, tmp_path: Path) -> Iterator[Worker]:
    (account,) = parse_config(config_data(idp, pki, mosquitto, app, mailbox, imap_relay,
                                          tmp_path)).accounts
    made = Worker(account, QUIET, imap_relay)
    made.thread.start()
    yield made
    made.close()


def test_the_command_connection_opens_with_a_command_and_closes_after_the_quiet_period(
    worker: Worker, imap_relay: Relay, dovecot: Dovecot, mailbox: str,
) -> None:
    uid = dovecot.deliver(mailbox, make_message(to=mailbox))
    assert imap_relay.open_connections == 0  # the worker runs, but no command came yet

    answered, connections = worker.command("flag", uid)
    assert connections == 1 and imap_relay.count(LOGIN) == 1

    eventually(lambda: imap_relay.open_connections == 0, "the quiet connection is closed")
    (logout,) = imap_relay.times_of(LOGOUT)  # logged out, not dropped
    assert logout - answered >= QUIET * 0.9  # not before the quiet period was over

    _, connections = worker.command("unflag", uid)
    assert connections == 1 and imap_relay.count(LOGIN) == 2
    assert "\\Flagged" not in dovecot.flags(mailbox)[uid]


def test_a_command_that_arrives_while_the_connection_closes_is_answered_once(
    worker: Worker, imap_relay: Relay, dovecot: Dovecot, mailbox: str,
) -> None:
    uid = dovecot.deliver(mailbox, make_message(to=mailbox))
    # The server's answer to the quiet LOGOUT is held: the worker is in mid-close when
    # the next command comes.
    imap_relay.hold_on = LOGOUT
    try:
        worker.command("flag", uid)
        eventually(lambda: bool(imap_relay.times_of(LOGOUT)), "the quiet LOGOUT is sent")
        during = worker.submit("mark_read", uid)
    finally:
        imap_relay.hold_on = None
        imap_relay.release()

    _, _, body = worker.answer()
    assert body["id"] == during and body["status"] == "ok", body
    after = worker.submit("unflag", uid)  # answered in order: a repeat would come first
    _, _, body = worker.answer()
    assert body["id"] == after, body
    assert worker.replies.empty()
    store = b"UID STORE %d +FLAGS.SILENT (\\Seen)" % uid
    assert sum(store in line for line in imap_relay.commands()) == 1
    assert imap_relay.count(LOGIN) == 2  # on a fresh connection
    assert "\\Seen" in dovecot.flags(mailbox)[uid]


def test_the_bridge_opens_no_command_connection_at_start_and_stays_connected_when_it_closes(
    idp: IdentityPlatform, pki: TestPKI, mosquitto: Mosquitto, app: App, mailbox: str,
    imap_relay: Relay, dovecot: Dovecot, tmp_path: Path, base_topic: str, collector: Collector,
) -> None:
    uid = dovecot.deliver(mailbox, make_message(to=mailbox))
    data = config_data(idp, pki, mosquitto, app, mailbox, imap_relay, tmp_path,
                       base_topic=base_topic, idle=True, poll_interval=300)
    data["bridge"]["health_interval"] = 1
    bridge = Bridge(parse_config(data))
    commands = bridge.accounts["home"].commands
    assert commands is not None
    commands.quiet_close = QUIET
    runner = threading.Thread(target=bridge.run, name="bridge-under-test")
    runner.start()
    try:
        wait_online(collector, base_topic)
        online = len(collector.messages)
        assert imap_relay.count(LOGIN) == 1 and imap_relay.open_connections == 1  # INBOX's

        result = f"{base_topic}/home/command/result"
        collector.publish(f"{base_topic}/home/command",
                          json.dumps({"action": "flag", "folder": "INBOX", "uid": uid}))
        (reply,) = collector.wait_topic(result, count=1, timeout=DEADLINE)
        assert reply.json()["status"] == "ok" and imap_relay.count(LOGIN) == 2

        eventually(lambda: imap_relay.open_connections == 1, "the quiet connection is closed")
        assert len(imap_relay.times_of(LOGOUT)) == 1
        health_topic = f"{base_topic}/bridge/health"
        seen = len(collector.on(health_topic))
        health = collector.wait_topic(health_topic, count=seen + 1, timeout=DEADLINE)[seen]
        assert health.json()["accounts"]["home"]["connected"] is True
        status_topic = f"{base_topic}/home/status"
        assert all(m.json()["connected"] for m in collector.messages[online:]
                   if m.topic == status_topic)
        assert json.loads(bridge.accounts["home"].status.payload())["connected"] is True
    finally:
        bridge.stop_event.set()
        runner.join(DEADLINE)
    assert not runner.is_alive()
