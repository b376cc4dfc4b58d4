"""Several bridge processes on one broker and one base topic, each with its own accounts.

Each test runs its own Mosquitto with debug logging: its log names the client of every
PUBLISH it receives, which is how each topic is attributed to the bridge that published it.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rig.bridgecfg import rig_config
from rig.dovecot import Dovecot
from rig.idp import IdentityPlatform, random_secret
from rig.mosquitto import Mosquitto
from rig.mqttsub import Collector
from rig.pki import TestPKI
from rig.samples import make_message
from tests.bridgeproc import BridgeProcess

PREFIX = "homeassistant"
# Mosquitto's debug line for every PUBLISH a client sends
RECEIVED = re.compile(r"Received PUBLISH from (\S+) \(d\d, q\d, r\d, m\d+, '([^']*)'")
DEADLINE = 60.0  # seconds; generous: the machine may be loaded by a benchmark


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker of this test's own, logging every PUBLISH with its client id."""
    with Mosquitto(tmp_path / "broker", extra=["log_type debug"]) as server:
        yield server


@pytest.fixture
def watch(broker: Mosquitto) -> Iterator[Collector]:
    """Everything on the broker (`#`): nothing but this test's bridges use it."""
    with Collector("127.0.0.1", broker.port, ["#"]) as seen:
        yield seen


Start = Callable[..., BridgeProcess]


@pytest.fixture
def start_instance(
    idp: IdentityPlatform, pki: TestPKI, dovecot: Dovecot, broker: Mosquitto, tenant: str,
    tmp_path: Path, base_topic: str, bridges: list[BridgeProcess],
) -> Start:
    """Start `outlook2mqtt run` as `instance` (None: no instance) serving `accounts`
    (name -> mailbox), with the default client id, discovery on and health every second.
    Every instance shares one state_dir, as several configs in /etc would."""

    def start(instance: str | None, accounts: dict[str, str], label: str = "") -> BridgeProcess:
        configs = []
        for name, mailbox in accounts.items():
            secret = random_secret()
            app = idp.register_app(tenant, secret=secret, mailboxes=[mailbox])
            configs.append(rig_config(
                authority=idp.authority, ca_file=pki.ca_file, imap_port=dovecot.port,
                mqtt_port=broker.port, tenant_id=tenant, client_id=app.client_id,
                mailbox=mailbox, state_dir=tmp_path / "state", secret=secret,
                base_topic=base_topic, account=name, idle=True, poll_interval=300,
                discovery=True))
        data = configs[0]
        data["accounts"] = [c["accounts"][0] for c in configs]
        del data["mqtt"]["client_id"]  # the default: one per instance
        data["bridge"]["health_interval"] = 1
        if instance is not None:
            data["bridge"]["instance"] = instance
        workdir = tmp_path / (label or instance or "plain")
        workdir.mkdir(exist_ok=True)
        proc = BridgeProcess(workdir, data)
        bridges.append(proc)
        return proc.start()

    return start


def mailbox() -> str:
    return f"u{uuid.uuid4().hex[:10]}@contoso.test"


def published_by(broker: Mosquitto) -> dict[str, set[str]]:
    """Client id -> every topic it published, from the broker's own log."""
    found: dict[str, set[str]] = {}
    for client, topic in RECEIVED.findall(broker.log_file.read_text(errors="replace")):
        found.setdefault(client, set()).add(topic)
    return found


def wait_payload(seen: Collector, topic: str, payload: bytes) -> None:
    seen.wait_for(lambda m: m.topic == topic and m.payload == payload, timeout=DEADLINE)


def retained(broker: Mosquitto, topics: list[str], count: int) -> dict[str, bytes]:
    """The retained messages a new subscriber gets on `topics` (at least `count`)."""
    with Collector("127.0.0.1", broker.port, topics) as fresh:
        got = fresh.wait_for(lambda m: m.retain, count=count, timeout=DEADLINE)
        return {m.topic: m.payload for m in got}


def wait_log(bridge: BridgeProcess, pattern: str) -> None:
    """Poll the bridge's log for `pattern` until the deadline."""
    deadline = time.monotonic() + DEADLINE
    while not re.search(pattern, bridge.log()):
        assert time.monotonic() < deadline, f"no {pattern!r} in:\n{bridge.log()}"
        time.sleep(0.2)


def watch_topics(seen: Collector) -> set[str]:
    return {m.topic for m in seen.messages}


def payload_availability(payload: bytes) -> str:
    (entry,) = json.loads(payload)["availability"]
    topic: str = entry["topic"]
    return topic


def reconnects(bridge: BridgeProcess) -> list[str]:
    """Log lines of MQTT connections after the first, and of lost ones."""
    lines = bridge.log().splitlines()
    connected = [line for line in lines if "MQTT connected to" in line]
    lost = [line for line in lines if "MQTT connection to" in line and "lost" in line]
    return connected[1:] + lost


def test_two_instances_publish_disjoint_topics_and_a_killed_one_marks_only_itself_offline(
    start_instance: Start, broker: Mosquitto, watch: Collector, dovecot: Dovecot,
    base_topic: str,
) -> None:
    mailboxes = {"alpha": mailbox(), "beta": mailbox()}
    a = start_instance("a", {"alpha": mailboxes["alpha"]})
    b = start_instance("b", {"beta": mailboxes["beta"]})
    state = {i: f"{base_topic}/bridge/{i}/state" for i in ("a", "b")}
    for topic in state.values():
        wait_payload(watch, topic, b"online")
    # traffic on every kind of topic: a message, a command and its reply, health
    for account, address in mailboxes.items():
        dovecot.deliver(address, make_message(subject=f"for {account}", to=address))
        watch.wait_topic(f"{base_topic}/{account}/inbox/message", timeout=DEADLINE)
        watch.publish(f"{base_topic}/{account}/command", '{"action": "refresh", "id": "r"}')
        watch.wait_topic(f"{base_topic}/{account}/command/result", timeout=DEADLINE)
    for instance in ("a", "b"):  # discovery went out on connect, before `online`
        watch.wait_topic(f"{base_topic}/bridge/{instance}/health", count=2, timeout=DEADLINE)

    assert reconnects(a) == [] and reconnects(b) == []  # neither kicked the other off
    topics = published_by(broker)
    mine_a, mine_b = topics["outlook2mqtt-a"], topics["outlook2mqtt-b"]
    assert not mine_a & mine_b
    owned = {"outlook2mqtt-a": ("a", "alpha"), "outlook2mqtt-b": ("b", "beta")}
    for client, (instance, account) in owned.items():
        allowed = (f"{base_topic}/bridge/{instance}/", f"{base_topic}/{account}/",
                   f"{PREFIX}/device/{base_topic}_{account}/",
                   f"{PREFIX}/device/{base_topic}-bridge-{instance}/")
        assert all(t.startswith(allowed) for t in topics[client]), topics[client]
    assert {t for t in watch_topics(watch) if t.startswith(f"{base_topic}/bridge/")} <= (
        mine_a | mine_b)

    a.kill()  # SIGKILL: no clean disconnect, so the broker publishes the Last Will
    wait_payload(watch, state["a"], b"offline")

    states = retained(broker, [f"{base_topic}/bridge/+/state"], count=2)
    assert states == {state["a"]: b"offline", state["b"]: b"online"}
    assert not [m for m in watch.on(state["b"]) if m.payload != b"online"]
    configs = retained(broker, [f"{PREFIX}/device/+/config"], count=4)
    availability = {topic.split("/")[2]: payload_availability(payload)
                    for topic, payload in configs.items()}
    assert availability == {
        f"{base_topic}_alpha": state["a"], f"{base_topic}-bridge-a": state["a"],
        f"{base_topic}_beta": state["b"], f"{base_topic}-bridge-b": state["b"]}
    assert reconnects(b) == []
    assert b.stop() == 0


def test_an_instance_refuses_to_start_while_a_running_one_serves_its_account(
    start_instance: Start, broker: Mosquitto, watch: Collector, base_topic: str,
) -> None:
    shared = mailbox()
    a = start_instance("a", {"alpha": shared})
    wait_payload(watch, f"{base_topic}/bridge/a/state", b"online")

    c = start_instance("c", {"alpha": shared, "gamma": mailbox()})
    assert c.proc is not None
    assert c.proc.wait(DEADLINE) == 2

    log = c.log()
    assert re.search(r"ERROR .*account 'alpha' also served by instance 'a' "
                     rf"\({base_topic}/bridge/a/info\)", log), log
    assert "not starting" in log
    # it published nothing but the start check's fence
    assert published_by(broker).get("outlook2mqtt-c") == {f"{base_topic}/bridge/c/fence"}
    assert reconnects(a) == []

    assert a.stop() == 0  # now alpha is served by nobody: c may take it over
    c = start_instance("c", {"alpha": shared, "gamma": mailbox()}, label="c-again")
    wait_payload(watch, f"{base_topic}/bridge/c/state", b"online")
    assert re.search(r"WARNING .*account 'alpha' also served by instance 'a' .*which is "
                     "offline", c.log())


def test_a_running_bridge_logs_an_account_another_bridge_starts_serving(
    start_instance: Start, watch: Collector, base_topic: str,
) -> None:
    shared = mailbox()
    a = start_instance("a", {"alpha": shared})
    wait_payload(watch, f"{base_topic}/bridge/a/state", b"online")

    # no instance: no start check, so both serve alpha; each says so
    plain = start_instance(None, {"alpha": shared})
    wait_payload(watch, f"{base_topic}/bridge/state", b"online")

    wait_log(a, r"ERROR .*account 'alpha' also served by the bridge without an instance")
    wait_log(plain, r"ERROR .*account 'alpha' also served by instance 'a'")
    assert plain.stop() == 0 and a.stop() == 0
