"""Discovery proven by a real Home Assistant: the bridge as a process, HA on the same broker.

The bridge runs with the names the docs assume (base topic `outlook2mqtt`, account `home`,
folder INBOX), so the entity ids the docs and their examples name are the ones Home
Assistant really gives. After each test the bridge's retained topics and its device
config are cleared, and Home Assistant has forgotten the device.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from imapclient import IMAPClient

from bridge.config.load import parse_config
from bridge.mqtt.discovery import device_configs
from bridge.mqtt.topics import Topics
from rig.bridgecfg import rig_config
from rig.homeassistant import HA_VERSION, HomeAssistant, frontend_dir
from rig.mqttsub import Collector, retained
from rig.samples import make_message
from tests.bridgeproc import BridgeProcess
from tests.conftest import HA_EXAMPLES, HA_PREFIX

BASE = "outlook2mqtt"
NODE = f"{BASE}_home"
DEVICE_TOPIC = f"{HA_PREFIX}/device/{NODE}/config"
BRIDGE_DEVICE_TOPIC = f"{HA_PREFIX}/device/{BASE}_bridge/config"  # its health sensors
INBOX_AND_RECEIPTS = [{"name": "INBOX"}, {"name": "Receipts"}]
PROBLEM = re.compile(r" (WARNING|ERROR|CRITICAL) \(")
# What this install logs while starting, none of it about what the tests use: pip is
# skipped on purpose, and the camera's and aiohttp's optional speedups are not installed.
START_UP_NOISE = ("Skipping pip installation", "zlib_ng and isal are not available",
                  "Error loading libturbojpeg")


# -- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture
def ha(homeassistant: HomeAssistant, mosquitto: Any) -> Iterator[HomeAssistant]:
    """Home Assistant, left without the bridge's device and retained topics afterwards."""
    yield homeassistant
    # The device first: an entity still there would read the emptied state topics.
    devices = {DEVICE_TOPIC, BRIDGE_DEVICE_TOPIC}
    left = {topic for topic, payload in
            retained("127.0.0.1", mosquitto.port, [f"{BASE}/#", *devices]).items() if payload}
    with Collector("127.0.0.1", mosquitto.port, list(devices)) as sub:
        for topic in left & devices:
            sub.publish(topic, b"", retain=True)
        wait_until(lambda: not ours(homeassistant.entity_registry(), BASE),
                   "the devices to go")
        for topic in left - devices:
            sub.publish(topic, b"", retain=True)


@pytest.fixture
def start_bridge(idp: Any, pki: Any, dovecot: Any, mosquitto: Any, app: Any, mailbox: str,
                 tmp_path: Path, bridges: list[BridgeProcess]
                 ) -> Callable[..., BridgeProcess]:
    """Start `outlook2mqtt run` as the docs assume it, watching `folders` with IDLE."""

    def start(folders: list[dict[str, Any]]) -> BridgeProcess:
        for folder in folders:
            if folder["name"] != "INBOX" and folder["name"] not in dovecot.folders(mailbox):
                dovecot.create_folder(mailbox, folder["name"])
        cfg = rig_config(
            authority=idp.authority, ca_file=pki.ca_file, imap_port=dovecot.port,
            mqtt_port=mosquitto.port, tenant_id=app.tenant_id, client_id=app.client_id,
            mailbox=mailbox, secret=app.secrets[0], state_dir=tmp_path / "state",
            base_topic=BASE, folders=folders, discovery=True, idle=True, poll_interval=300,
        )
        cfg["homeassistant"]["prefix"] = HA_PREFIX
        proc = BridgeProcess(tmp_path, cfg).start()
        bridges.append(proc)
        return proc

    return start


def wait_until(ready: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """Poll until ready() is truthy; return it."""
    deadline = time.monotonic() + timeout
    while not (result := ready()):
        if time.monotonic() > deadline:
            raise AssertionError(f"Home Assistant: still waiting for {what}")
        time.sleep(0.2)
    return result


def ours(registry: list[dict[str, Any]], node: str = NODE) -> dict[str, dict[str, Any]]:
    """The account's entries in the entity registry (with `node` = BASE the bridge's
    too), by unique id."""
    return {e["unique_id"]: e for e in registry
            if e["platform"] == "mqtt" and e["unique_id"].startswith(f"{node}_")}


def expected_entities(folders: list[dict[str, Any]]) -> dict[str, str]:
    """unique id -> the entity id the docs give, for a bridge watching `folders`."""
    config = parse_config({
        "mqtt": {"host": "127.0.0.1", "base_topic": BASE},
        "homeassistant": {"prefix": HA_PREFIX},
        "bridge": {"health_interval": 0},  # the account's device alone
        "accounts": [{"name": "home", "mailbox": "m@contoso.test", "tenant_id": "t",
                      "client_id": "c", "client_secret": "s", "folders": folders}],
    }, environ={})
    [device] = device_configs(config, Topics(BASE)).values()
    return {c["unique_id"]: c["default_entity_id"] for c in device["components"].values()}


def registered(ha: HomeAssistant, folders: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Wait until exactly the entities of `folders` are registered; their entries."""
    expected = set(expected_entities(folders))

    def exactly_those() -> dict[str, dict[str, Any]] | None:
        found = ours(ha.entity_registry())
        return found if set(found) == expected else None

    return wait_until(exactly_those, f"the entities of {[f['name'] for f in folders]}")


def state_of(ha: HomeAssistant, entity_id: str) -> str | None:
    found = ha.state(entity_id)
    return None if found is None else str(found["state"])


def wait_state(ha: HomeAssistant, entity_id: str, value: str) -> None:
    wait_until(lambda: state_of(ha, entity_id) == value, f"{entity_id} = {value}")


def log_problems(ha: HomeAssistant, since: int = 0) -> list[str]:
    """The warnings and errors Home Assistant logged from line `since` on (MQTT's, the
    examples' automations and script, anything else)."""
    return [line for line in ha.log_lines()[since:]
            if PROBLEM.search(line) and not any(n in line for n in START_UP_NOISE)]


def example(name: str) -> Any:
    return yaml.safe_load((HA_EXAMPLES / name).read_text())


# -- the discovered device --------------------------------------------------------------


def test_every_entity_is_registered_with_its_unique_id_and_the_documented_entity_id(
    ha: HomeAssistant, start_bridge: Callable[..., BridgeProcess], dovecot: Any, mailbox: str,
) -> None:
    log_start = len(ha.log_lines())
    for i in range(3):
        dovecot.deliver(mailbox, make_message(subject=f"m{i}", to=mailbox),
                        flags=["\\Seen"] if i == 0 else [])
    start_bridge(INBOX_AND_RECEIPTS)
    entries = registered(ha, INBOX_AND_RECEIPTS)
    expected = expected_entities(INBOX_AND_RECEIPTS)
    assert {u: e["entity_id"] for u, e in entries.items()} == expected
    assert len({e["device_id"] for e in entries.values()}) == 1
    [device] = [d for d in ha.ws_call("config/device_registry/list")
                if d["id"] == next(iter(entries.values()))["device_id"]]
    assert device["name"] == "Outlook home" and device["identifiers"] == [["mqtt", NODE]]

    # the unread sensor is Dovecot's count, the others follow their topics
    wait_state(ha, "sensor.outlook_home_inbox_unread", str(dovecot.status(mailbox)["unseen"]))
    assert state_of(ha, "sensor.outlook_home_inbox_unread") == "2"
    wait_state(ha, "sensor.outlook_home_inbox_total", "3")
    wait_state(ha, "sensor.outlook_home_receipts_unread", "0")
    wait_state(ha, "binary_sensor.outlook_home_connection", "on")
    assert log_problems(ha, log_start) == []


def test_a_new_mail_fires_the_event_and_the_docs_automations_notify(
    ha: HomeAssistant, start_bridge: Callable[..., BridgeProcess], imap_session: IMAPClient,
    mailbox: str,
) -> None:
    log_start = len(ha.log_lines())
    start_bridge([{"name": "INBOX"}])
    registered(ha, [{"name": "INBOX"}])
    wait_state(ha, "binary_sensor.outlook_home_connection", "on")
    imap_session.append("INBOX", make_message(subject="Lunch on Friday?", to=mailbox))

    def lunch_event() -> dict[str, Any] | None:
        event = ha.state("event.outlook_home_inbox_new_mail")
        if event and event["attributes"].get("subject") == "Lunch on Friday?":
            return dict(event["attributes"])
        return None

    attributes = wait_until(lunch_event, "the new_message event")
    assert attributes["event_type"] == "new_message"
    assert attributes["from_address"] == "alice@example.com"
    assert attributes["from_name"] == "Alice"
    assert (attributes["account"], attributes["folder"]) == ("home", "INBOX")

    # both example automations (event entity, MQTT trigger) sent "Mail from Alice"
    def notifications() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = ha.ws_call("persistent_notification/get")
        return [n for n in found if n["message"] == "Lunch on Friday?"]

    sent = wait_until(lambda: len(notifications()) == 2 and notifications(), "2 notifications")
    assert {n["title"] for n in sent} == {"Mail from Alice"}
    for name in ("mail_from_alice", "mail_from_alice_mqtt_trigger"):
        assert ha.state(f"automation.{name}")["attributes"]["last_triggered"]
    assert log_problems(ha, log_start) == []


def test_a_route_is_an_event_entity_that_fires_for_its_mail_alone(
    ha: HomeAssistant, start_bridge: Callable[..., BridgeProcess], imap_session: IMAPClient,
    mailbox: str,
) -> None:
    folders = [{"name": "INBOX", "routes": [{"name": "parcels", "from": ["*@parcels.example"]}]}]
    log_start = len(ha.log_lines())
    start_bridge(folders)
    entries = registered(ha, folders)
    route = "event.outlook_home_inbox_route_parcels"
    assert entries[f"{NODE}_inbox_route_parcels"]["entity_id"] == route
    wait_state(ha, "binary_sensor.outlook_home_connection", "on")

    def last_subject(entity_id: str, subject: str) -> dict[str, Any] | None:
        event = ha.state(entity_id)
        return event if event and event["attributes"].get("subject") == subject else None

    sender = "Driver <driver@parcels.example>"
    imap_session.append("INBOX", make_message(subject="Delivered", sender=sender, to=mailbox))
    fired = wait_until(lambda: last_subject(route, "Delivered"), "the route's event")
    assert fired["attributes"]["routes"] == ["parcels"]
    assert fired["attributes"]["event_type"] == "new_message"
    assert fired["attributes"]["from_address"] == "driver@parcels.example"
    for subject in ("Not a parcel", "Not one either"):
        imap_session.append("INBOX", make_message(subject=subject, to=mailbox))
    # The bridge publishes a message's route topics right after its message topic, and
    # Home Assistant takes them in order: once the main entity shows the last message,
    # a route event for the first would have shown.
    main = wait_until(lambda: last_subject("event.outlook_home_inbox_new_mail",
                                           "Not one either"), "the new_message event")
    assert main["attributes"]["routes"] == []
    assert ha.state(route) == fired
    assert log_problems(ha, log_start) == []


def test_mark_all_read_from_the_dashboard_card_and_the_script(
    ha: HomeAssistant, start_bridge: Callable[..., BridgeProcess], dovecot: Any, mailbox: str,
) -> None:
    log_start = len(ha.log_lines())
    for i in range(2):
        dovecot.deliver(mailbox, make_message(subject=f"unread {i}", to=mailbox))
    start_bridge([{"name": "INBOX"}])
    registered(ha, [{"name": "INBOX"}])
    wait_state(ha, "sensor.outlook_home_inbox_unread", "2")

    # the card's tap action, called as the frontend calls it
    action = example("card_mark_read.yaml")["tap_action"]
    domain, service = action["perform_action"].split(".")
    ha.rest("POST", f"/api/services/{domain}/{service}", action["target"])
    wait_state(ha, "sensor.outlook_home_inbox_unread", "0")
    assert dovecot.status(mailbox)["unseen"] == 0

    # the script publishes the folder command itself
    dovecot.deliver(mailbox, make_message(subject="one more", to=mailbox))
    wait_state(ha, "sensor.outlook_home_inbox_unread", "1")
    [script] = example("script_mark_read.yaml")
    ha.rest("POST", f"/api/services/script/{script}", {})
    wait_state(ha, "sensor.outlook_home_inbox_unread", "0")
    assert dovecot.status(mailbox)["unseen"] == 0
    assert log_problems(ha, log_start) == []


def test_a_bridge_restart_keeps_the_entities_and_their_ids(
    ha: HomeAssistant, start_bridge: Callable[..., BridgeProcess],
) -> None:
    log_start = len(ha.log_lines())
    first = start_bridge(INBOX_AND_RECEIPTS)
    before = registered(ha, INBOX_AND_RECEIPTS)
    wait_state(ha, "binary_sensor.outlook_home_connection", "on")
    assert first.stop() == 0
    wait_state(ha, "binary_sensor.outlook_home_connection", "unavailable")

    start_bridge(INBOX_AND_RECEIPTS)
    wait_state(ha, "binary_sensor.outlook_home_connection", "on")
    after = registered(ha, INBOX_AND_RECEIPTS)
    assert {u: (e["id"], e["entity_id"]) for u, e in after.items()} == {
        u: (e["id"], e["entity_id"]) for u, e in before.items()}
    assert log_problems(ha, log_start) == []


def test_a_removed_folder_leaves_the_entity_registry(
    ha: HomeAssistant, start_bridge: Callable[..., BridgeProcess],
) -> None:
    log_start = len(ha.log_lines())
    first = start_bridge(INBOX_AND_RECEIPTS)
    before = registered(ha, INBOX_AND_RECEIPTS)
    assert first.stop() == 0

    start_bridge([{"name": "INBOX"}])
    after = registered(ha, [{"name": "INBOX"}])  # exactly INBOX's and the account's
    assert {u: e["entity_id"] for u, e in after.items()} == {
        u: e["entity_id"] for u, e in before.items() if u in after}
    assert ha.state("sensor.outlook_home_receipts_unread") is None
    wait_state(ha, "sensor.outlook_home_inbox_unread", "0")
    assert log_problems(ha, log_start) == []


# -- the docs' examples, loaded into Home Assistant --------------------------------------------


def test_home_assistant_accepts_the_docs_examples(ha: HomeAssistant) -> None:
    checked = ha.check_config()
    report = checked.stdout + checked.stderr
    # it exits 0 with an automation it disables: the errors are in what it logs
    assert checked.returncode == 0 and "Testing configuration" in report, report
    assert "ERROR" not in report and "Failed config" not in report, report

    # loaded and working: the automations are on, the script is ready
    for path in sorted(HA_EXAMPLES.glob("automation_*.yaml")):
        alias = example(path.name)["alias"]
        [entity] = [s for s in ha.rest("GET", "/api/states")
                    if s["entity_id"].startswith("automation.")
                    and s["attributes"].get("friendly_name") == alias]
        assert entity["state"] == "on", entity
    [script] = example("script_mark_read.yaml")
    assert state_of(ha, f"script.{script}") == "off"
    assert log_problems(ha) == []  # nothing since the start either


def test_the_dashboard_cards_load_and_are_cards_of_this_frontend(ha: HomeAssistant) -> None:
    dashboard = ha.ws_call("lovelace/config", url_path="outlook-mail")
    cards = [example(p.name) for p in sorted(HA_EXAMPLES.glob("card_*.yaml"))]
    assert dashboard["views"][0]["cards"] == cards
    javascript = "".join(p.read_text(errors="replace")
                         for p in (frontend_dir() / "frontend_latest").glob("*.js"))
    services = {f"{domain['domain']}.{service}" for domain in ha.rest("GET", "/api/services")
                for service in domain["services"]}
    for card in cards:
        assert f'"hui-{card["type"]}-card"' in javascript, card["type"]
        action = card.get("tap_action")
        if action:
            assert f'"{action["action"]}"' in javascript
            assert action["perform_action"] in services


def test_the_suite_runs_the_documented_home_assistant_version(ha: HomeAssistant) -> None:
    assert ha.rest("GET", "/api/config")["version"] == HA_VERSION
    readme = (HA_EXAMPLES.parent.parent / "README.md").read_text()
    doc = (HA_EXAMPLES.parent.parent / "docs" / "homeassistant.md").read_text()
    assert f"Home Assistant {HA_VERSION}" in readme and f"Home Assistant {HA_VERSION}" in doc


def test_the_bridge_device_shows_its_health_with_the_documented_ids(
    ha: HomeAssistant, start_bridge: Callable[..., BridgeProcess],
) -> None:
    log_start = len(ha.log_lines())
    start_bridge([{"name": "INBOX"}])
    documented = {f"sensor.{BASE}_bridge_{k}"
                  for k in ("uptime", "messages_published", "memory", "threads")}

    def bridge_entities() -> set[str] | None:
        found = {e["entity_id"] for e in ours(ha.entity_registry(), f"{BASE}_bridge").values()}
        return found if found == documented else None

    wait_until(bridge_entities, "the bridge's sensors")
    memory = wait_until(lambda: (state_of(ha, f"sensor.{BASE}_bridge_memory") or "").isdigit()
                        and state_of(ha, f"sensor.{BASE}_bridge_memory"), "its memory")
    assert int(memory) > 10_000_000
    assert state_of(ha, f"sensor.{BASE}_bridge_messages_published") == "0"
    assert float(state_of(ha, f"sensor.{BASE}_bridge_threads") or 0) > 2
    assert log_problems(ha, log_start) == []
