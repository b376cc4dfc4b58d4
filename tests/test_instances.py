"""Several bridges on one base topic: `bridge.instance`, its topics, client id, Home Assistant
devices, and the overlap rule between instances (pure parts; the processes on the rig are
in test_instances_rig.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from bridge.config.load import parse_config
from bridge.config.model import Config
from bridge.errors import ConfigError
from bridge.mqtt.discovery import build_discovery, index_path, load_index, save_index
from bridge.mqtt.peers import Peers, info_accounts
from bridge.mqtt.topics import Topics
from tests.test_discovery import account

B = "outlook2mqtt"


def make_config(*, instance: str | None = None, mqtt: dict[str, Any] | None = None,
                accounts: tuple[str, ...] = ("home",), health_interval: int = 60) -> Config:
    bridge: dict[str, Any] = {"health_interval": health_interval}
    if instance is not None:
        bridge["instance"] = instance
    return parse_config({"mqtt": {"host": "broker.local", **(mqtt or {})}, "bridge": bridge,
                         "accounts": [account(a) for a in accounts]}, environ={})


def discovery(config: Config) -> dict[str, dict[str, Any]]:
    built = build_discovery(config, Topics.of(config))
    return {topic: json.loads(payload) for topic, payload in built.items()}


# -- the config key and the client id ----------------------------------------------------


def test_without_instance_everything_is_as_before() -> None:
    config = make_config()
    topics = Topics.of(config)

    assert config.bridge.instance is None and config.mqtt.client_id == "outlook2mqtt"
    assert (topics.bridge_state, topics.bridge_info, topics.bridge_health) == (
        f"{B}/bridge/state", f"{B}/bridge/info", f"{B}/bridge/health")


def test_an_instance_has_its_own_bridge_topics_and_client_id() -> None:
    config = make_config(instance="helpdesk-1")
    topics = Topics.of(config)

    assert config.mqtt.client_id == "outlook2mqtt-helpdesk-1"
    assert (topics.bridge_state, topics.bridge_info, topics.bridge_health) == (
        f"{B}/bridge/helpdesk-1/state", f"{B}/bridge/helpdesk-1/info",
        f"{B}/bridge/helpdesk-1/health")
    assert topics.account_status("home") == f"{B}/home/status"  # account topics unchanged


def test_an_explicit_client_id_is_kept_with_an_instance() -> None:
    config = make_config(instance="a", mqtt={"client_id": "my-bridge"})

    assert config.mqtt.client_id == "my-bridge"


@pytest.mark.parametrize(("value", "words"), [
    ("Help Desk", "'Help Desk' is used as a topic segment: use only a-z, 0-9, '_' and '-', "
                  "e.g. 'help_desk'"),
    ("a/b", "is used as a topic segment"),
    ("a+", "is used as a topic segment"),
    ("", "is used as a topic segment"),
    ("state", "'state' would read as <base_topic>/bridge/state; choose another"),
    ("info", "would read as <base_topic>/bridge/info"),
    (7, "expected a string, got an integer; put the value in quotes"),
])
def test_a_bad_instance_is_a_config_error_naming_the_key(value: object, words: str) -> None:
    data = {"mqtt": {"host": "broker.local"}, "bridge": {"instance": value},
            "accounts": [account("home")]}

    with pytest.raises(ConfigError) as caught:
        parse_config(data, environ={})

    (problem,) = caught.value.problems
    assert problem.startswith("bridge.instance: ") and words in problem, problem


# -- Home Assistant ------------------------------------------------------------------------


def test_single_bridge_discovery_ids_do_not_change() -> None:
    found = discovery(make_config(accounts=("home",)))

    assert set(found) == {"homeassistant/device/outlook2mqtt_home/config",
                          "homeassistant/device/outlook2mqtt_bridge/config"}
    bridge = found["homeassistant/device/outlook2mqtt_bridge/config"]
    assert bridge["device"]["name"] == "outlook2mqtt bridge"
    assert bridge["components"]["uptime"]["unique_id"] == "outlook2mqtt_bridge_uptime"


def test_each_instance_has_its_own_bridge_device_and_availability() -> None:
    a = discovery(make_config(instance="a", accounts=("home",)))
    b = discovery(make_config(instance="b", accounts=("work",)))

    assert not set(a) & set(b)
    bridge_a = a["homeassistant/device/outlook2mqtt-bridge-a/config"]
    assert bridge_a["device"]["identifiers"] == ["outlook2mqtt-bridge-a"]
    assert bridge_a["device"]["name"] == "outlook2mqtt bridge a"
    assert bridge_a["components"]["uptime"]["unique_id"] == "outlook2mqtt-bridge-a_uptime"
    assert bridge_a["components"]["uptime"]["state_topic"] == f"{B}/bridge/a/health"
    for payloads, instance in ((a, "a"), (b, "b")):
        for payload in payloads.values():
            assert payload["availability"] == [{"topic": f"{B}/bridge/{instance}/state"}]
    ids_a = {c["unique_id"] for p in a.values() for c in p["components"].values()}
    ids_b = {c["unique_id"] for p in b.values() for c in p["components"].values()}
    assert not ids_a & ids_b


def test_an_account_keeps_its_device_when_it_moves_into_an_instance() -> None:
    alone = discovery(make_config(accounts=("home",)))
    moved = discovery(make_config(instance="a", accounts=("home",)))
    topic = "homeassistant/device/outlook2mqtt_home/config"

    assert alone[topic]["device"] == moved[topic]["device"]
    assert alone[topic]["components"] == moved[topic]["components"]


@pytest.mark.parametrize("name", ["bridge_a", "bridge-a", "a"])
def test_no_account_name_can_take_an_instance_bridge_device_id(name: str) -> None:
    accounts = discovery(make_config(accounts=(name,), health_interval=0))
    bridge = discovery(make_config(instance="a", accounts=("x",)))

    assert not set(accounts) & set(bridge)


def test_each_instance_keeps_its_own_discovery_index(tmp_path: Path) -> None:
    save_index(tmp_path, {"t/a": {"c": "sensor"}}, "a")
    save_index(tmp_path, {"t/b": {"c": "sensor"}}, "b")
    save_index(tmp_path, {"t/x": {"c": "sensor"}})

    assert load_index(tmp_path, "a") == {"t/a": {"c": "sensor"}}
    assert load_index(tmp_path, "b") == {"t/b": {"c": "sensor"}}
    assert load_index(tmp_path) == {"t/x": {"c": "sensor"}}
    assert index_path(tmp_path, None).name == "discovery-topics.json"
    assert index_path(tmp_path, "a").name == "discovery-topics.a.json"


# -- the other instances ---------------------------------------------------------------------


def info(*accounts: str) -> bytes:
    return json.dumps({"version": "1", "accounts": [{"name": a} for a in accounts]}).encode()


def test_peer_topics_are_recognised() -> None:
    topics = Topics(B, "a")

    assert topics.peer_of(f"{B}/bridge/b/info") == ("b", "info")
    assert topics.peer_of(f"{B}/bridge/info") == (None, "info")
    assert topics.peer_of(f"{B}/home/status") is None
    assert topics.peer_of(f"{B}/bridge/b/x/info") is None
    assert topics.peer_filters("info") == (f"{B}/bridge/+/info", f"{B}/bridge/info")


def test_info_accounts_reads_names_and_survives_garbage() -> None:
    assert info_accounts(info("home", "work")) == {"home", "work"}
    for junk in (b"", b"not json", b"[]", b'{"accounts": 3}', b'{"accounts": [1]}'):
        assert info_accounts(junk) == frozenset()


def test_an_account_another_running_instance_lists_is_an_overlap(
    caplog: pytest.LogCaptureFixture,
) -> None:
    peers = Peers(Topics(B, "a"), ["home", "work"])
    assert peers.handle(f"{B}/bridge/b/state", b"online")
    assert peers.handle(f"{B}/bridge/b/info", info("work", "shop"))
    assert peers.handle(f"{B}/bridge/c/info", info("other"))

    with caplog.at_level(logging.WARNING):
        (overlap,) = peers.go_live()

    assert (overlap.instance, overlap.accounts, overlap.online) == ("b", ("work",), True)
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    assert "account 'work' also served by instance 'b'" in record.getMessage()


def test_an_offline_instance_listing_an_account_is_a_warning_with_the_fix(
    caplog: pytest.LogCaptureFixture,
) -> None:
    peers = Peers(Topics(B, "a"), ["home"])
    peers.handle(f"{B}/bridge/info", info("home"))
    peers.handle(f"{B}/bridge/state", b"offline")

    with caplog.at_level(logging.WARNING):
        (overlap,) = peers.go_live()

    assert overlap.instance is None and not overlap.online
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "the bridge without an instance" in record.getMessage()
    assert f"mosquitto_pub -r -n -t '{B}/bridge/info'" in record.getMessage()


def test_own_retained_topics_and_foreign_ones_are_not_peers() -> None:
    peers = Peers(Topics(B, "a"), ["home"])

    assert peers.handle(f"{B}/bridge/a/info", info("home"))  # ours, from the last run
    assert not peers.handle(f"{B}/home/status", b"{}")
    assert not peers.handle(f"{B}/bridge/b/health", b"{}")
    assert peers.go_live() == []


def test_once_live_a_new_overlap_is_logged_once_and_again_when_it_comes_online(
    caplog: pytest.LogCaptureFixture,
) -> None:
    peers = Peers(Topics(B, "a"), ["home"])
    assert peers.go_live() == []

    with caplog.at_level(logging.WARNING):
        peers.handle(f"{B}/bridge/b/state", b"offline")
        peers.handle(f"{B}/bridge/b/info", info("home"))
        peers.handle(f"{B}/bridge/b/info", info("home"))  # the same again: no new line
        peers.handle(f"{B}/bridge/b/state", b"online")

    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.ERROR]


def test_a_named_instance_subscribes_to_its_fence_and_the_fence_sets_the_event() -> None:
    peers = Peers(Topics(B, "a"), ["home"])

    assert f"{B}/bridge/a/fence" in peers.filters
    assert f"{B}/bridge/fence" not in Peers(Topics(B), ["home"]).filters
    assert peers.handle(f"{B}/bridge/a/fence", b"") and peers.fenced.is_set()
