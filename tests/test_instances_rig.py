"""Several bridge processes on one broker and one base topic, each with its own accounts.

Each test runs its own Mosquitto with debug logging: its log names the client of every
PUBLISH it receives, which is how each topic is attributed to the bridge that published it.
The Home Assistant test uses the session's broker, which Home Assistant listens to; the
cluster test a three-node NATS cluster (rig/nats.py), an instance on each node.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.enums import MQTTProtocolVersion

from rig.bridgecfg import rig_config
from rig.dovecot import Dovecot
from rig.homeassistant import HomeAssistant
from rig.idp import IdentityPlatform, random_secret
from rig.mosquitto import Mosquitto
from rig.mqttsub import Collector, retained
from rig.nats import NatsCluster
from rig.pki import TestPKI
from rig.samples import make_message
from tests.bridgeproc import BridgeProcess
from tests.conftest import HA_PREFIX
from tests.test_homeassistant_rig import log_problems, state_of, wait_until

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
    (name -> mailbox) through the broker on `port`, with the default client id, discovery
    on and health every second.
    Every instance shares one state_dir, as several configs in /etc would."""

    def start(instance: str | None, accounts: dict[str, str], label: str = "", *,
              port: int = broker.port, prefix: str = PREFIX,
              protocol: str = "5") -> BridgeProcess:
        configs = []
        for name, mailbox in accounts.items():
            secret = random_secret()
            app = idp.register_app(tenant, secret=secret, mailboxes=[mailbox])
            configs.append(rig_config(
                authority=idp.authority, ca_file=pki.ca_file, imap_port=dovecot.port,
                mqtt_port=port, tenant_id=tenant, client_id=app.client_id,
                mailbox=mailbox, state_dir=tmp_path / "state", secret=secret,
                base_topic=base_topic, account=name, idle=True, poll_interval=300,
                discovery=True))
        data = configs[0]
        data["accounts"] = [c["accounts"][0] for c in configs]
        del data["mqtt"]["client_id"]  # the default: one per instance
        data["mqtt"]["protocol"] = protocol
        data["homeassistant"]["prefix"] = prefix
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

    states = retained("127.0.0.1", broker.port, [f"{base_topic}/bridge/+/state"])
    assert states == {state["a"]: b"offline", state["b"]: b"online"}
    assert not [m for m in watch.on(state["b"]) if m.payload != b"online"]
    configs = retained("127.0.0.1", broker.port, [f"{PREFIX}/device/+/config"])
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


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """Three brokers in one cluster, each with its own MQTT listener."""
    with NatsCluster(tmp_path / "cluster") as nodes:
        yield nodes


def test_on_a_broker_cluster_instances_on_different_nodes_see_each_other_and_wills_stay_apart(
    start_instance: Start, cluster: NatsCluster, dovecot: Dovecot, base_topic: str,
) -> None:
    """Instance a on the first node, b on the second, a subscriber on the third: each
    instance's retained state, its mail and its Last Will reach every node; an instance
    on the third node refuses an account that a serves through the first; a killed a is
    marked offline, and b is not."""
    first, second, third = cluster.mqtt_ports
    mailboxes = {"alpha": mailbox(), "beta": mailbox()}
    a = start_instance("a", {"alpha": mailboxes["alpha"]}, port=first, protocol="3.1.1")
    b = start_instance("b", {"beta": mailboxes["beta"]}, port=second, protocol="3.1.1")
    state = {i: f"{base_topic}/bridge/{i}/state" for i in ("a", "b")}
    with Collector("127.0.0.1", third, [f"{base_topic}/#"],
                   protocol=MQTTProtocolVersion.MQTTv311) as seen:
        for topic in state.values():
            wait_payload(seen, topic, b"online")
        for account, address in mailboxes.items():
            dovecot.deliver(address, make_message(subject=f"for {account}", to=address))
            seen.wait_topic(f"{base_topic}/{account}/inbox/message", timeout=DEADLINE)

        c = start_instance("c", {"alpha": mailboxes["alpha"]}, port=third, protocol="3.1.1")
        assert c.proc is not None
        assert c.proc.wait(DEADLINE) == 2
        assert re.search(r"ERROR .*account 'alpha' also served by instance 'a' ", c.log())

        a.kill()  # its node publishes the Last Will; the third node's subscriber gets it
        wait_payload(seen, state["a"], b"offline")
        assert not [m for m in seen.on(state["b"]) if m.payload != b"online"]
        assert reconnects(a) == [] and reconnects(b) == []
        assert b.stop() == 0
        wait_payload(seen, state["b"], b"offline")


def test_a_running_bridge_logs_an_account_another_bridge_starts_serving(
    start_instance: Start, watch: Collector, base_topic: str,
) -> None:
    shared = mailbox()
    a = start_instance("a", {"alpha": shared})
    wait_payload(watch, f"{base_topic}/bridge/a/state", b"online")

    # no instance: no start check, so both serve alpha; each says so
    plain = start_instance(None, {"alpha": shared})
    wait_payload(watch, f"{base_topic}/bridge/state", b"online")

    a.wait_log(re.compile(r"ERROR .*account 'alpha' also served by the bridge without an "
                          "instance"), timeout=DEADLINE)
    plain.wait_log(re.compile(r"ERROR .*account 'alpha' also served by instance 'a'"),
                   timeout=DEADLINE)
    assert plain.stop() == 0 and a.stop() == 0


def test_home_assistant_shows_a_device_per_instance_and_a_killed_one_takes_only_its_own(
    homeassistant: HomeAssistant, mosquitto: Mosquitto, start_instance: Start,
    base_topic: str,
) -> None:
    ha, log_start = homeassistant, len(homeassistant.log_lines())
    a = start_instance("a", {"alpha": mailbox()}, port=mosquitto.port, prefix=HA_PREFIX)
    b = start_instance("b", {"beta": mailbox()}, port=mosquitto.port, prefix=HA_PREFIX)
    # by unique id: the entity ids depend on the Home Assistant version (docs/homeassistant.md)
    wanted = {f"{base_topic}_alpha_connectivity": ("connection", "a"),
              f"{base_topic}_beta_connectivity": ("connection", "b"),
              f"{base_topic}-bridge-a_uptime": ("uptime", "a"),
              f"{base_topic}-bridge-b_uptime": ("uptime", "b")}
    try:
        entries = wait_until(lambda: registered(ha, set(wanted)), "the four entities",
                             timeout=DEADLINE)
        connection = {wanted[u][1]: e["entity_id"] for u, e in entries.items()
                      if wanted[u][0] == "connection"}
        uptime = {wanted[u][1]: e["entity_id"] for u, e in entries.items()
                  if wanted[u][0] == "uptime"}
        for instance in ("a", "b"):
            wait_state(ha, connection[instance], "on".__eq__)
            wait_state(ha, uptime[instance], str.isdigit)
        device = {wanted[u]: e["device_id"] for u, e in entries.items()}
        assert len(set(device.values())) == 4  # two accounts, two bridges: four devices

        a.kill()

        wait_state(ha, connection["a"], "unavailable".__eq__)
        wait_state(ha, uptime["a"], "unavailable".__eq__)
        assert state_of(ha, connection["b"]) == "on"
        assert (state_of(ha, uptime["b"]) or "").isdigit()
        assert log_problems(ha, log_start) == []
    finally:
        b.stop()
        forget(ha, mosquitto, base_topic)


def registered(ha: HomeAssistant, unique_ids: set[str]) -> dict[str, Any] | None:
    """The registry entries of `unique_ids`, once all are there."""
    found = {e["unique_id"]: e for e in ha.entity_registry()
             if e["platform"] == "mqtt" and e["unique_id"] in unique_ids}
    return found if set(found) == unique_ids else None


def wait_state(ha: HomeAssistant, entity_id: str, ok: Callable[[str], bool]) -> None:
    wait_until(lambda: ok(state_of(ha, entity_id) or ""), entity_id, timeout=DEADLINE)


def forget(ha: HomeAssistant, broker: Mosquitto, base_topic: str) -> None:
    """Clear this test's retained device configs (four when all went well), wait until Home
    Assistant dropped their entities, then clear the bridges' retained topics."""

    left = {topic for topic, payload in retained(
        "127.0.0.1", broker.port, [f"{base_topic}/#", f"{HA_PREFIX}/device/+/config"]).items()
        if payload}
    configs = {t for t in left if t.startswith(f"{HA_PREFIX}/")
               and t.split("/")[2].startswith(base_topic)}
    with Collector("127.0.0.1", broker.port, [f"{base_topic}/#"]) as sub:
        for topic in configs:
            sub.publish(topic, b"", retain=True)
        wait_until(lambda: not [e for e in ha.entity_registry() if e["platform"] == "mqtt"
                                and e["unique_id"].startswith(base_topic)],
                   "the devices to go", timeout=DEADLINE)
        for topic in left:
            if topic.startswith(f"{base_topic}/"):
                sub.publish(topic, b"", retain=True)
