"""Home Assistant discovery payloads and the docs built on them, without a network.

The rules checked are those of Home Assistant's MQTT docs (device-based discovery, and
the sensor, binary_sensor, button and event platforms); the examples in docs/ and
examples/ must parse and name only topics and entity ids the bridge really publishes.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2.sandbox
import pytest
import yaml

from bridge.commands.parse import parse_command
from bridge.config.load import parse_config
from bridge.config.model import ALL_COMMANDS, Config
from bridge.mqtt.discovery import (
    EVENT_TYPE,
    build_discovery,
    device_config,
    discovery_index,
    load_index,
    merge_index,
    node_id,
    removal_configs,
    removed_components,
    save_index,
    stale_topics,
)
from bridge.mqtt.topics import Topics

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "homeassistant.md"
EXAMPLES = ROOT / "examples"
TENANT = "11111111-2222-3333-4444-555555555555"
CLIENT = "66666666-7777-8888-9999-000000000000"
# HA's discovery topic matcher (homeassistant/components/mqtt/discovery.py), below the prefix
HA_TOPIC_MATCHER = re.compile(
    r"(?P<component>\w+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?(?P<object_id>[a-zA-Z0-9_-]+)/config"
)
# the options HA copies from the device payload into every component (mqtt/schemas.py;
# `qos` and `encoding` are accepted there too, but not copied)
SHARED_OPTIONS = ("availability", "availability_mode", "availability_template",
                  "availability_topic", "command_topic", "payload_available",
                  "payload_not_available", "state_topic")
REQUIRED = {
    "sensor": ("state_topic",),
    "binary_sensor": ("state_topic",),
    "button": ("command_topic",),
    "event": ("state_topic", "event_types"),
}
ENTITY_ID = re.compile(r"(sensor|binary_sensor|button|event)\.[a-z0-9_]+")


def account(name: str, *, folders: list[dict[str, Any]] | None = None,
            **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name, "mailbox": f"{name}@contoso.com", "tenant_id": TENANT,
        "client_id": CLIENT, "client_secret": "not-a-real-secret", **extra,
    }
    if folders is not None:
        data["folders"] = folders
    return data


def make_config(*accounts: dict[str, Any], base_topic: str = "outlook2mqtt",
                prefix: str = "homeassistant", discovery: bool = True,
                health_interval: int = 0) -> Config:
    """The accounts' devices alone, unless `health_interval` adds the bridge's (test_health)."""
    return parse_config({
        "mqtt": {"host": "broker.local", "base_topic": base_topic},
        "homeassistant": {"discovery": discovery, "prefix": prefix},
        "bridge": {"health_interval": health_interval},
        "accounts": list(accounts) or [account("home")],
    }, environ={})


@pytest.fixture
def config() -> Config:
    """Two accounts, three folders."""
    return make_config(
        account("home", folders=[{"name": "INBOX"}, {"name": "INBOX/Receipts"}]),
        account("work", folders=[{"name": "INBOX"}]),
    )


def payloads(config: Config) -> dict[str, dict[str, Any]]:
    built = build_discovery(config, Topics(config.mqtt.base_topic))
    return {topic: json.loads(payload) for topic, payload in built.items()}


def components(config: Config) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(key, component as HA sees it after merging the shared options, device payload)."""
    for device in payloads(config).values():
        for key, component in device["components"].items():
            merged = dict(component)
            for option in SHARED_OPTIONS:
                if option in device and option not in merged:
                    merged[option] = device[option]
            yield key, merged, device


def entity_ids(config: Config) -> set[str]:
    return {c["default_entity_id"] for _, c, _ in components(config)}


# -- the payloads ---------------------------------------------------------------------------


def test_one_retained_device_config_per_account(config: Config) -> None:
    assert set(payloads(config)) == {
        "homeassistant/device/outlook2mqtt_home/config",
        "homeassistant/device/outlook2mqtt_work/config",
    }
    for topic in payloads(config):
        match = HA_TOPIC_MATCHER.fullmatch(topic.removeprefix("homeassistant/"))
        assert match is not None and match["component"] == "device"


def test_device_payload_has_device_origin_and_components(config: Config) -> None:
    for device in payloads(config).values():
        assert device["device"]["identifiers"] and device["device"]["name"]
        assert device["device"]["sw_version"] and device["device"]["manufacturer"]
        assert device["origin"]["name"] == "outlook2mqtt" and device["origin"]["sw_version"]
        assert device["availability"] == [{"topic": "outlook2mqtt/bridge/state"}]
        for key, component in device["components"].items():
            assert re.fullmatch(r"[a-z0-9_-]+", key), key  # HA splits discovery ids on spaces
            assert component["platform"] in REQUIRED
            assert len(component) > 1  # an entry with only `platform` means "remove it"
            assert "device" not in component and "origin" not in component


def test_every_entity_has_unique_id_availability_device_and_its_required_fields(
    config: Config,
) -> None:
    for key, component, device in components(config):
        assert component["unique_id"], key
        assert component["availability"] == [{"topic": "outlook2mqtt/bridge/state"}]
        assert device["device"]["identifiers"]
        for option in REQUIRED[component["platform"]]:
            assert component.get(option), f"{key}: {option} missing"
        platform, _, object_id = component["default_entity_id"].partition(".")
        assert platform == component["platform"]
        assert re.fullmatch(r"[a-z0-9_]+", object_id)


def test_the_entities_of_two_accounts_and_three_folders(config: Config) -> None:
    kinds = {}
    for topic, device in payloads(config).items():
        kinds[topic.split("/")[2]] = {
            key: component["platform"] for key, component in device["components"].items()
        }
    per_folder = {"unread": "sensor", "total": "sensor", "last_subject": "sensor",
                  "new_mail": "event", "mark_all_read": "button", "refresh": "button"}
    per_account = {"connectivity": "binary_sensor", "token_expires": "sensor",
                   "refresh_all": "button"}

    def expected(*folders: str) -> dict[str, str]:
        found = dict(per_account)
        for folder in folders:
            found.update({f"{folder}_{kind}": p for kind, p in per_folder.items()})
        return found

    assert kinds == {
        "outlook2mqtt_home": expected("inbox", "inbox_receipts"),
        "outlook2mqtt_work": expected("inbox"),
    }


def test_entity_ids_match_what_older_home_assistant_derives_from_names(config: Config) -> None:
    # Before default_entity_id (HA 2025.10) the id is slugify("<device name> <entity name>").
    for _, component, device in components(config):
        derived = re.sub(r"[^a-z0-9]+", "_",
                         f"{device['device']['name']} {component['name']}".lower()).strip("_")
        assert component["default_entity_id"] == f"{component['platform']}.{derived}"


def test_platform_specific_settings(config: Config) -> None:
    by_key = {c["unique_id"]: c for _, c, _ in components(config)}
    unread = by_key["outlook2mqtt_home_inbox_unread"]
    assert unread["state_class"] == "measurement"
    assert unread["state_topic"] == "outlook2mqtt/home/inbox/state"
    event = by_key["outlook2mqtt_home_inbox_new_mail"]
    assert event["event_types"] == [EVENT_TYPE] == ["new_message"]
    assert event["state_topic"] == "outlook2mqtt/home/inbox/message"
    connectivity = by_key["outlook2mqtt_home_connectivity"]
    assert connectivity["device_class"] == "connectivity"
    assert connectivity["state_topic"] == "outlook2mqtt/home/status"
    assert by_key["outlook2mqtt_home_token_expires"]["device_class"] == "timestamp"
    subject = by_key["outlook2mqtt_home_inbox_receipts_last_subject"]
    assert subject["json_attributes_topic"] == "outlook2mqtt/home/inbox_receipts/state"
    for component in by_key.values():
        if component["platform"] == "button":
            assert component["retain"] is False  # a retained command is never executed


def test_topics_contain_no_wildcards_or_spaces(config: Config) -> None:
    for topic, device in payloads(config).items():
        assert not re.search(r"[+#\s]", topic)
        for _, component, _ in components(config):
            for option, value in component.items():
                if option.endswith("_topic"):
                    assert value and not re.search(r"[+#\s]", value), (option, value)
        for availability in device["availability"]:
            assert not re.search(r"[+#\s]", availability["topic"])


def test_entity_topics_are_topics_the_bridge_uses(config: Config) -> None:
    topics = Topics("outlook2mqtt")
    published = {topics.bridge_state}
    commands: dict[str, tuple[str, str | None]] = {}
    for acct in config.accounts:
        published.add(topics.account_status(acct.name))
        commands[topics.account_command(acct.name)] = (acct.name, None)
        for folder in acct.folders:
            published |= {topics.folder_state(acct.name, folder.topic),
                          topics.folder_message(acct.name, folder.topic)}
            commands[topics.folder_command(acct.name, folder.topic)] = (acct.name, folder.name)
    for _, component, _ in components(config):
        for option in ("state_topic", "json_attributes_topic"):
            if option in component:
                assert component[option] in published
        if "command_topic" in component:
            assert component["command_topic"] in commands


def test_buttons_send_commands_the_bridge_accepts(config: Config) -> None:
    topics = Topics("outlook2mqtt")
    routes: dict[str, tuple[str, str | None]] = {}
    for acct in config.accounts:
        routes[topics.account_command(acct.name)] = (acct.name, None)
        for folder in acct.folders:
            routes[topics.folder_command(acct.name, folder.topic)] = (acct.name, folder.name)
    pressed = []
    for _, button, _ in components(config):
        if button["platform"] != "button":
            continue
        name, folder = routes[button["command_topic"]]
        acct = config.account(name)
        assert acct is not None
        command = parse_command(button["payload_press"].encode(), account=acct, folder=folder)
        pressed.append((button["unique_id"], command.action, command.folder))
    assert ("outlook2mqtt_home_inbox_mark_all_read", "mark_all_read", "INBOX") in pressed
    assert ("outlook2mqtt_home_inbox_receipts_refresh", "refresh", "INBOX/Receipts") in pressed
    # no folder: every folder of the account ("*" or None, as the parser spells it)
    assert any(u == "outlook2mqtt_work_refresh_all" and a == "refresh" and f in (None, "*")
               for u, a, f in pressed)


def test_buttons_only_for_enabled_commands() -> None:
    config = make_config(account("home", commands=["mark_read"]))
    platforms = {c["platform"] for _, c, _ in components(config)}
    assert "button" not in platforms
    config = make_config(account("home", commands=["refresh"]))
    buttons = {c["unique_id"] for _, c, _ in components(config) if c["platform"] == "button"}
    assert buttons == {"outlook2mqtt_home_refresh_all", "outlook2mqtt_home_inbox_refresh"}


def test_unique_ids_are_stable_and_unique() -> None:
    tricky = make_config(
        account("home", folders=[{"name": "INBOX"}, {"name": "Token", "topic": "token"},
                                 {"name": "Refresh", "topic": "refresh"},
                                 {"name": "a-b", "topic": "a-b"}, {"name": "A b", "topic": "a_b"}]),
        account("home-2"),
        account("home_2"),
    )
    first = build_discovery(tricky, Topics(tricky.mqtt.base_topic))
    assert first == build_discovery(tricky, Topics(tricky.mqtt.base_topic))
    ids = [c["unique_id"] for _, c, _ in components(tricky)]
    assert len(ids) == len(set(ids))
    identifiers = [d["device"]["identifiers"][0] for d in payloads(tricky).values()]
    assert len(identifiers) == len(set(identifiers)) == 3


def test_node_id_fits_a_discovery_topic_level() -> None:
    assert node_id("outlook2mqtt", "home") == "outlook2mqtt_home"
    assert node_id("mail/outlook bridge", "work-1") == "mail_outlook_bridge_work-1"
    config = make_config(base_topic="mail/o2m", prefix="ha/discovery")
    [topic] = payloads(config)
    assert topic == "ha/discovery/device/mail_o2m_home/config"


def test_qos_is_the_configured_one() -> None:
    config = parse_config({"mqtt": {"host": "h", "qos": 2}, "accounts": [account("home")]},
                          environ={})
    for device in payloads(config).values():  # the account's and the bridge's
        assert {c["qos"] for c in device["components"].values()} == {2}
        assert "qos" not in device  # HA would not pass it on to the components


# -- the templates, rendered as Home Assistant would ---------------------------------------


def render(template: str, payload: Any) -> str:
    """Render like HA's MQTT value templates: `value`, `value_json`, `to_json`, `dict`."""
    env = jinja2.sandbox.ImmutableSandboxedEnvironment()
    env.filters["to_json"] = lambda obj: json.dumps(obj, ensure_ascii=False)  # as orjson
    text = json.dumps(payload)
    return str(env.from_string(template).render(value=text, value_json=payload))


def component(config: Config, unique_id: str) -> dict[str, Any]:
    return next(c for _, c, _ in components(config) if c["unique_id"] == unique_id)


SUMMARY = {
    "account": "home", "folder": "INBOX", "uid": 4123, "uidvalidity": 14,
    "message_id": "<p1@example.com>", "date": "2026-11-28T09:15:02+00:00",
    "received": "2026-11-28T09:15:04+00:00",
    "from": {"name": "Alice", "address": "alice@example.com"}, "to": [], "cc": [],
    "reply_to": [], "subject": "Paket für dich", "flags": [], "seen": False, "flagged": False,
    "importance": "normal", "size": 18233, "preview": "Your parcel", "has_attachments": True,
    "attachments": [{"index": 0, "filename": "a.pdf"}], "body": "x" * 100_000,
}


def test_event_template_makes_a_small_new_message_event(config: Config) -> None:
    event = component(config, "outlook2mqtt_home_inbox_new_mail")
    rendered = json.loads(render(event["value_template"], SUMMARY))
    assert rendered["event_type"] in event["event_types"]
    assert rendered["from_address"] == "alice@example.com"
    assert rendered["from_name"] == "Alice" and rendered["subject"] == "Paket für dich"
    assert rendered["uid"] == 4123 and rendered["has_attachments"] is True
    assert "body" not in rendered and len(json.dumps(rendered)) < 1000
    no_sender = json.loads(render(event["value_template"], {**SUMMARY, "from": None}))
    assert no_sender["from_address"] is None and no_sender["event_type"] == "new_message"


def test_folder_sensor_templates(config: Config) -> None:
    state = {"unread": 3, "total": 10, "uidvalidity": 14, "last_uid": 4123,
             "last_message": {"uid": 4123, "subject": "S" * 300, "from": None},
             "updated": "2026-11-28T09:15:04+00:00"}
    assert render(component(config, "outlook2mqtt_home_inbox_unread")["value_template"],
                  state) == "3"
    assert render(component(config, "outlook2mqtt_home_inbox_total")["value_template"],
                  state) == "10"
    subject = component(config, "outlook2mqtt_home_inbox_last_subject")
    assert render(subject["value_template"], state) == "S" * 255  # HA's state limit
    attributes = json.loads(render(subject["json_attributes_template"], state))
    assert attributes["uid"] == 4123
    fresh = {**state, "last_message": None}
    assert render(subject["value_template"], fresh) == "None"  # HA: unknown
    assert json.loads(render(subject["json_attributes_template"], fresh)) == {}


def test_account_templates(config: Config) -> None:
    status = {"connected": True, "auth": "ok", "last_error": None,
              "last_sync": None, "token_expires": "2026-11-28T10:15:02+00:00"}
    connected = component(config, "outlook2mqtt_home_connectivity")
    assert render(connected["value_template"], status) == "ON"
    assert render(connected["value_template"], {**status, "auth": "error"}) == "OFF"
    assert render(connected["value_template"], {**status, "connected": False}) == "OFF"
    expires = component(config, "outlook2mqtt_home_token_expires")
    assert render(expires["value_template"], status) == "2026-11-28T10:15:02+00:00"
    assert render(expires["value_template"], {**status, "token_expires": None}) == "None"


# -- removing what is no longer published -------------------------------------------------

HOME = "homeassistant/device/outlook2mqtt_home/config"
WORK = "homeassistant/device/outlook2mqtt_work/config"


def test_the_index_lists_every_device_and_its_components_platforms(config: Config) -> None:
    index = discovery_index(config, Topics("outlook2mqtt"))
    assert set(index) == {HOME, WORK}
    for topic, device in payloads(config).items():
        assert index[topic] == {k: c["platform"] for k, c in device["components"].items()}
    assert index[HOME]["inbox_receipts_new_mail"] == "event"


def test_stale_topics_are_those_no_longer_published() -> None:
    assert stale_topics({"a", "b", "c"}, ["b"]) == ["a", "c"]
    assert stale_topics(set(), ["b"]) == []


def test_removed_components_are_those_a_remaining_device_no_longer_has() -> None:
    previous = {HOME: {"inbox_unread": "sensor", "old_unread": "sensor", "old_read": "button"},
                WORK: {"inbox_unread": "sensor"}}
    current = {HOME: {"inbox_unread": "sensor", "new_unread": "sensor"}}
    # the gone device is cleared as a whole, not component by component
    assert removed_components(previous, current) == {
        HOME: {"old_unread": "sensor", "old_read": "button"}}
    assert removed_components({}, current) == {}
    assert removed_components(current, current) == {}


def test_a_removal_config_is_the_whole_config_plus_each_removed_platform_alone(
    config: Config,
) -> None:
    topics = Topics("outlook2mqtt")
    removed = {HOME: {"spam_unread": "sensor", "spam_mark_all_read": "button"}}
    configs = removal_configs(config, topics, removed)
    assert set(configs) == {HOME}
    sent = json.loads(configs[HOME])
    plain = payloads(config)[HOME]
    assert sent["components"] == {**plain["components"], "spam_unread": {"platform": "sensor"},
                                  "spam_mark_all_read": {"platform": "button"}}
    assert {k: v for k, v in sent.items() if k != "components"} == {
        k: v for k, v in plain.items() if k != "components"}
    assert removal_configs(config, topics, {}) == {}
    assert removal_configs(config, topics, {"homeassistant/device/gone/config": {"x": "sensor"}}
                           ) == {}


def test_the_recorded_index_keeps_removals_the_broker_did_not_acknowledge() -> None:
    current = {HOME: {"inbox_unread": "sensor"}}
    assert merge_index(current, {}) == current
    unsent = {HOME: {"inbox_unread": "button", "old_unread": "sensor"}, WORK: {"a": "event"}}
    assert merge_index(current, unsent) == {
        HOME: {"inbox_unread": "sensor", "old_unread": "sensor"}, WORK: {"a": "event"}}
    assert current == {HOME: {"inbox_unread": "sensor"}}  # not changed in place


def test_index_round_trip(tmp_path: Path) -> None:
    assert load_index(tmp_path) == {}
    index = {HOME: {"inbox_unread": "sensor", "inbox_new_mail": "event"}, WORK: {}}
    save_index(tmp_path, index)
    assert load_index(tmp_path) == index
    save_index(tmp_path, {})
    assert load_index(tmp_path) == {}
    assert [p.name for p in tmp_path.iterdir()] == ["discovery-topics.json"]  # no temp left


def test_an_index_of_topics_only_reads_as_devices_without_known_components(
    tmp_path: Path,
) -> None:
    (tmp_path / "discovery-topics.json").write_text(json.dumps({"topics": [HOME, WORK]}))
    assert load_index(tmp_path) == {HOME: {}, WORK: {}}


@pytest.mark.parametrize("content", [
    "{not json", '{"topics": "x"}', '{"other": []}', "[1]", '{"devices": []}',
    '{"devices": {"t": ["sensor"]}}', '{"devices": {"t": {"a": 1}}}',
])
def test_unreadable_index_is_ignored(tmp_path: Path, content: str,
                                     caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "discovery-topics.json").write_text(content)
    with caplog.at_level(logging.WARNING):
        assert load_index(tmp_path) == {}
    assert "discovery-topics.json" in caplog.text


def test_device_config_of_an_account_matches_build(config: Config) -> None:
    topics = Topics("outlook2mqtt")
    built = payloads(config)
    home = config.account("home")
    assert home is not None
    assert built["homeassistant/device/outlook2mqtt_home/config"] == json.loads(
        json.dumps(device_config(config, home, topics)))


# -- docs and examples ----------------------------------------------------------------------

# the names the docs assume: INBOX with one route, "parcels"
DOC_CONFIG = make_config(account("home", folders=[
    {"name": "INBOX", "routes": [{"name": "parcels", "from": ["*@parcels.example"]}]}]),
    health_interval=60)  # and the bridge's own device


def doc_topics() -> set[str]:
    """Concrete topics for the docs' config: every one the bridge publishes or reads."""
    topics = Topics("outlook2mqtt")
    found = {topics.bridge_state, topics.bridge_info, topics.account_status("home"),
             topics.account_command("home"), topics.command_result("home"),
             "homeassistant/status", *build_discovery(DOC_CONFIG, topics)}
    for suffix in ("state", "message", "error", "command", "attachment/4123/0",
                   "route/parcels"):
        found.add(f"outlook2mqtt/home/inbox/{suffix}")
    return found


def topic_matches(pattern: str, topic: str) -> bool:
    """MQTT topic filter matching (+ one level, # the rest)."""
    parts, levels = pattern.split("/"), topic.split("/")
    for i, part in enumerate(parts):
        if part == "#":
            return True
        if i >= len(levels) or (part != "+" and part != levels[i]):
            return False
    return len(parts) == len(levels)


def walk(node: Any, key: str | None = None) -> Iterator[tuple[str | None, Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v, key)
    else:
        yield key, node


def example_yaml() -> list[Path]:
    return sorted((EXAMPLES / "homeassistant").glob("*.yaml"))


def fenced(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```$", DOC.read_text(), flags=re.S | re.M)


def test_there_are_examples_for_the_three_automations() -> None:
    names = {p.name for p in example_yaml()}
    assert {"automation_mail_from.yaml", "card_unread.yaml", "card_mark_read.yaml"} <= names
    assert (EXAMPLES / "node-red" / "flow.json").is_file()


@pytest.mark.parametrize("path", example_yaml(), ids=lambda p: p.name)
def test_example_yaml_names_real_entities_and_topics(path: Path) -> None:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict) and data
    known = entity_ids(DOC_CONFIG)
    topics = doc_topics()
    for key, value in walk(data):
        if key in ("entity", "entity_id") and isinstance(value, str):
            assert value in known, f"{path.name}: no entity {value}"
        if key == "topic":
            assert value in topics, f"{path.name}: no topic {value}"
        if isinstance(value, str):
            for found in ENTITY_ID.finditer(value):
                if found[0] != "button.press":  # the action, not an entity
                    assert found[0] in known, f"{path.name}: no entity {found[0]}"


def test_example_script_payload_is_a_command_the_bridge_accepts() -> None:
    script = yaml.safe_load((EXAMPLES / "homeassistant" / "script_mark_read.yaml").read_text())
    data = script["mark_inbox_read"]["sequence"][0]["data"]
    home = DOC_CONFIG.account("home")
    assert home is not None and data["topic"] == "outlook2mqtt/home/inbox/command"
    assert parse_command(data["payload"].encode(), account=home, folder="INBOX").action == (
        "mark_all_read")


def test_doc_shows_every_example_and_its_yaml_parses() -> None:
    text = DOC.read_text()
    for path in example_yaml():
        assert path.read_text() in text, f"{path.name} differs from the docs"
    blocks = fenced("yaml")
    assert len(blocks) == len(example_yaml())
    for block in blocks:
        assert yaml.safe_load(block)
    [flow] = fenced("json")
    assert json.loads(flow) == json.loads((EXAMPLES / "node-red" / "flow.json").read_text())


def test_doc_entity_table_lists_every_entity() -> None:
    text = DOC.read_text()
    assert set(ENTITY_ID.findall(text)) <= {"sensor", "binary_sensor", "button", "event"}
    mentioned = {m[0] for m in ENTITY_ID.finditer(text)} - {"button.press"}
    assert mentioned == entity_ids(DOC_CONFIG)


def test_node_red_flow_is_wired_and_uses_bridge_topics() -> None:
    nodes = json.loads((EXAMPLES / "node-red" / "flow.json").read_text())
    ids = [n["id"] for n in nodes]
    assert len(ids) == len(set(ids))
    by_id = {n["id"]: n for n in nodes}
    for node in nodes:
        for output in node.get("wires", []):
            assert all(target in by_id for target in output)
        if "broker" in node and node["type"] != "mqtt-broker":
            assert by_id[node["broker"]]["type"] == "mqtt-broker"
        if "z" in node:
            assert by_id[node["z"]]["type"] == "tab"
        if node["type"] == "switch":
            assert len(node["wires"]) == node["outputs"] == len(node["rules"])
    topics = doc_topics()
    subscribed = [n["topic"] for n in nodes if n["type"] == "mqtt in"]
    assert subscribed and all(any(topic_matches(s, t) for t in topics) for s in subscribed)
    for node in nodes:
        if node["type"] == "mqtt out":
            assert node["retain"] == "false"  # a retained command is never executed
        for rule in node.get("rules", []) if node["type"] == "change" else []:
            if rule["p"] == "topic":
                assert rule["to"] == "'outlook2mqtt/' & payload.account & '/command'"
            if rule["p"] == "payload":
                action = re.search(r'"action": "(\w+)"', rule["to"])
                assert action and action[1] in ALL_COMMANDS


def crib_commands() -> list[str]:
    return [line for block in fenced("sh") for line in block.splitlines()
            if line.startswith("mosquitto_")]


def test_crib_sheet_topics_are_real() -> None:
    topics = doc_topics()
    lines = crib_commands()
    assert len(lines) > 20
    for line in lines:
        for topic in re.findall(r"-t '([^']+)'", line):
            assert topic == "me/replies" or any(topic_matches(topic, t) for t in topics), line


def test_crib_sheet_covers_every_topic_and_command() -> None:
    lines = crib_commands()
    text = "\n".join(lines)
    for suffix in ("bridge/state", "bridge/info", "home/status", "+/+/state", "+/+/message",
                   "+/+/error", "attachment/", "command/result", "homeassistant/status",
                   "homeassistant/device/"):
        assert suffix in text, suffix
    actions = set(re.findall(r'"action": "(\w+)"', text))
    actions |= set(re.findall(r"-m '(mark_all_read|refresh)'", text))
    assert actions == set(ALL_COMMANDS)


def test_crib_sheet_commands_are_accepted() -> None:
    home = make_config(account("home", commands=list(ALL_COMMANDS))).account("home")
    assert home is not None
    published = 0
    for line in crib_commands():
        found = re.search(r"-t '(outlook2mqtt/home/(?:inbox/)?command)' -m '([^']*)'", line)
        if not found:
            continue
        folder = "INBOX" if "/inbox/" in found[1] else None
        command = parse_command(found[2].encode(), account=home, folder=folder)
        assert command.action in ALL_COMMANDS
        assert " -r " not in line  # never retained
        published += 1
    assert published >= 15
