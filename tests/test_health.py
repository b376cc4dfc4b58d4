"""`B/bridge/health`: the payload, its Home Assistant sensors, and the bridge publishing it."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from bridge.config.load import parse_config
from bridge.errors import ConfigError
from bridge.mailbox.health import health_payload, rss_bytes, sent_a_mail
from bridge.mailbox.status import AccountStatus
from bridge.mqtt.discovery import bridge_device_config
from bridge.mqtt.topics import Topics
from rig.bridgecfg import rig_config
from rig.dovecot import Dovecot
from rig.idp import IdentityPlatform
from rig.mosquitto import Mosquitto
from rig.mqttsub import Collector
from rig.pki import TestPKI
from rig.samples import make_message
from tests.bridgeproc import BridgeProcess
from tests.test_discovery import account, make_config, render


def statuses() -> dict[str, AccountStatus]:
    home = AccountStatus(["folder:inbox"], lambda _payload: None)
    work = AccountStatus(["folder:inbox", "folder:receipts"], lambda _payload: None)
    home.connected("folder:inbox")
    work.connected("folder:inbox")
    work.failed("folder:receipts", "folder 'Receipts' does not exist", auth=False)
    for _ in range(3):
        home.published()
    work.published()
    home.commanded()
    return {"home": home, "work": work}


def test_payload_has_uptime_memory_threads_and_each_account() -> None:
    payload = json.loads(health_payload(100.0, statuses(), now=lambda: 161.4))

    assert payload["uptime"] == 61
    assert payload["threads"] >= 1
    assert 10_000_000 < payload["rss_bytes"] < 2_000_000_000
    assert payload["messages_published"] == 4
    assert payload["accounts"] == {
        "home": {"connected": True, "messages_published": 3, "commands": 1, "sent": 0,
                 "last_error": None},
        "work": {"connected": False, "messages_published": 1, "commands": 0, "sent": 0,
                 "last_error": "folder 'Receipts' does not exist"},
    }


@pytest.mark.parametrize(("reply", "sent"), [
    (b'{"id": "s1", "action": "send", "status": "ok", "message_id": "<a@b>"}', True),
    (b'{"action": "notify", "status": "ok", "message_id": "<a@b>"}', True),
    (b'{"action": "send", "status": "error", "error": "not allowed: x@y"}', False),
    (b'{"action": "mark_read", "status": "ok", "uids": [1]}', False),
    (b'not json', False),
])
def test_a_mail_counts_as_sent_when_its_reply_names_the_message(reply: bytes, sent: bool) -> None:
    assert sent_a_mail(reply) is sent


def test_sent_mail_is_counted_per_account() -> None:
    status = statuses()["home"]
    status.sent_mail()

    assert status.health()["sent"] == 1


def test_the_latest_error_stays_after_recovery_while_status_clears_it() -> None:
    status = statuses()["work"]
    status.connected("folder:receipts")

    assert json.loads(status.payload())["last_error"] is None
    assert status.health()["last_error"] == "folder 'Receipts' does not exist"
    assert status.health()["connected"] is True


def test_rss_is_the_resident_size_the_kernel_reports() -> None:
    status = Path("/proc/self/status").read_text()
    found = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert found
    assert abs(rss_bytes() - int(found[1]) * 1024) < 20_000_000


@pytest.mark.parametrize(("value", "ok"), [(0, True), (1, True), (-1, False), ("60", False)])
def test_health_interval_is_whole_seconds_and_0_turns_it_off(value: object, ok: bool) -> None:
    data = {"mqtt": {"host": "localhost"}, "bridge": {"health_interval": value},
            "accounts": [account("home")]}
    if ok:
        assert parse_config(data, environ={}).bridge.health_interval == value
    else:
        with pytest.raises(ConfigError, match=r"bridge\.health_interval"):
            parse_config(data, environ={})


def test_discovery_puts_diagnostic_sensors_on_a_bridge_device() -> None:
    config = make_config(account("home"), health_interval=60)
    built = bridge_device_config(config, Topics("outlook2mqtt"))

    (topic,) = built
    device = built[topic]
    assert topic == "homeassistant/device/outlook2mqtt_bridge/config"
    assert device["device"]["identifiers"] == ["outlook2mqtt_bridge"]
    assert device["availability"] == [{"topic": "outlook2mqtt/bridge/state"}]
    sample = json.loads(health_payload(0.0, statuses(), now=lambda: 3600.0))
    shown = {}
    for key, component in device["components"].items():
        assert component["entity_category"] == "diagnostic"
        assert component["state_topic"] == "outlook2mqtt/bridge/health"
        assert component["platform"] == "sensor" and component["unique_id"]
        shown[key] = render(component["value_template"], sample)
    assert shown["uptime"] == "3600" and shown["messages_published"] == "4"
    assert int(shown["memory"]) == sample["rss_bytes"]
    assert device["components"]["messages_published"]["state_class"] == "total_increasing"


def test_no_bridge_device_when_health_is_off() -> None:
    config = parse_config({"mqtt": {"host": "localhost"}, "bridge": {"health_interval": 0},
                           "accounts": [account("home")]}, environ={})

    assert bridge_device_config(config, Topics("outlook2mqtt")) == {}


def test_the_bridge_publishes_health_with_what_it_did(
    idp: IdentityPlatform, pki: TestPKI, dovecot: Dovecot, mosquitto: Mosquitto, tenant: str,
    mailbox: str, tmp_path: Path, base_topic: str, collector: Collector,
    bridges: list[BridgeProcess],
) -> None:
    app = idp.register_app(tenant, secret=f"s3cr3t-{uuid.uuid4().hex}", mailboxes=[mailbox])
    data = rig_config(authority=idp.authority, ca_file=pki.ca_file, imap_port=dovecot.port,
                      mqtt_port=mosquitto.port, tenant_id=tenant, client_id=app.client_id,
                      mailbox=mailbox, state_dir=tmp_path / "state", secret=app.secrets[0],
                      base_topic=base_topic)
    data["bridge"]["health_interval"] = 1
    bridge = BridgeProcess(tmp_path, data)
    bridges.append(bridge)
    bridge.start()
    health_topic = f"{base_topic}/bridge/health"

    def health_where(check: Any) -> dict[str, Any]:
        found = collector.wait_for(lambda m: m.topic == health_topic and check(m.json()),
                                   timeout=30)
        return dict(found[-1].json())

    health_where(lambda h: h["accounts"]["home"]["connected"])
    dovecot.deliver(mailbox, make_message(subject="health", to=mailbox))
    collector.publish(f"{base_topic}/home/command", '{"action": "refresh", "id": "h1"}')
    done = health_where(lambda h: h["accounts"]["home"]["messages_published"] == 1
                        and h["accounts"]["home"]["commands"] == 1)

    assert done["messages_published"] == 1 and done["threads"] > 2
    assert done["uptime"] >= 0 and done["rss_bytes"] > 0
    assert bridge.stop() == 0
