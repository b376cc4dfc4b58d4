"""Home Assistant discovery end to end on the rig: the bridge as a process, a real broker.

Each test uses its own base topic and discovery prefix, so retained configs of other
tests never show up.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rig.bridgecfg import rig_config
from rig.mqttsub import Collector, Received, retained
from rig.samples import make_message
from tests.bridgeproc import BridgeProcess


@pytest.fixture
def names() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {"base": f"o2m-{tag}", "prefix": f"ha-{tag}"}


@pytest.fixture
def second_mailbox() -> str:
    return f"w{uuid.uuid4().hex[:10]}@contoso.test"


@pytest.fixture
def two_accounts(idp: Any, pki: Any, dovecot: Any, mosquitto: Any, tenant: str, mailbox: str,
                 second_mailbox: str, tmp_path: Path, names: dict[str, str]) -> dict[str, Any]:
    """`home` watching INBOX and Receipts, `work` watching INBOX: three folders."""
    app = idp.register_app(tenant, secret=f"s-{uuid.uuid4().hex}",
                           mailboxes=[mailbox, second_mailbox])
    dovecot.create_folder(mailbox, "Receipts")
    cfg = rig_config(
        authority=idp.authority, ca_file=pki.ca_file, imap_port=dovecot.port,
        mqtt_port=mosquitto.port, tenant_id=tenant, client_id=app.client_id, mailbox=mailbox,
        secret=app.secrets[0], state_dir=tmp_path / "state", base_topic=names["base"],
        folders=[{"name": "INBOX"}, {"name": "Receipts"}], discovery=True,
    )
    cfg["homeassistant"]["prefix"] = names["prefix"]
    work = copy.deepcopy(cfg["accounts"][0])
    work.update(name="work", mailbox=second_mailbox, folders=[{"name": "INBOX"}])
    cfg["accounts"].append(work)
    return cfg


@pytest.fixture
def collector(mosquitto: Any, names: dict[str, str]) -> Iterator[Collector]:
    with Collector("127.0.0.1", mosquitto.port,
                   [f"{names['prefix']}/#", f"{names['base']}/#"]) as c:
        yield c


def run(bridges: list[BridgeProcess], workdir: Path, cfg: dict[str, Any]) -> BridgeProcess:
    proc = BridgeProcess(workdir, cfg).start()
    bridges.append(proc)
    return proc


def wait_online(collector: Collector, base: str, after: int = 0) -> None:
    collector.wait_for(lambda m: m.topic == f"{base}/bridge/state" and m.payload == b"online",
                       count=after + 1, timeout=30)


def device_topic(names: dict[str, str], account: str) -> str:
    return f"{names['prefix']}/device/{names['base']}_{account}/config"


def recorded_index(path: Path, done: Callable[[dict[str, Any]], bool],
                   timeout: float = 30) -> dict[str, Any]:
    """The discovery index once `done` holds for it, or as it is at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        index: dict[str, Any] = json.loads(path.read_text())
        if done(index) or time.monotonic() > deadline:
            return index
        time.sleep(0.1)


def test_discovery_configs_birth_republish_and_a_pressed_button(
    two_accounts: dict[str, Any], bridges: list[BridgeProcess], collector: Collector,
    dovecot: Any, mosquitto: Any, mailbox: str, names: dict[str, str], tmp_path: Path,
) -> None:
    for i in range(2):
        dovecot.deliver(mailbox, make_message(subject=f"unread {i}", to=mailbox))
    bridge = run(bridges, tmp_path, two_accounts)
    wait_online(collector, names["base"])
    home, work = device_topic(names, "home"), device_topic(names, "work")
    configs = {t: collector.wait_topic(t)[0] for t in (home, work)}
    assert all(m.retain for m in configs.values())
    bridge_device = device_topic(names, "bridge")  # its health sensors
    under_prefix = [f"{names['prefix']}/#"]
    assert set(retained("127.0.0.1", mosquitto.port, under_prefix)) == {home, work, bridge_device}

    home_cfg, work_cfg = (configs[t].json() for t in (home, work))
    folder_kinds = {"unread": "sensor", "total": "sensor", "last_subject": "sensor",
                    "new_mail": "event", "mark_all_read": "button", "refresh": "button"}
    account_kinds = {"connectivity": "binary_sensor", "token_expires": "sensor",
                     "refresh_all": "button"}

    def entity_set(*folders: str) -> dict[str, str]:
        found = dict(account_kinds)
        for folder in folders:
            found.update({f"{folder}_{kind}": p for kind, p in folder_kinds.items()})
        return found

    assert {k: c["platform"] for k, c in home_cfg["components"].items()} == entity_set(
        "inbox", "receipts")
    assert {k: c["platform"] for k, c in work_cfg["components"].items()} == entity_set("inbox")
    assert home_cfg["availability"] == [{"topic": f"{names['base']}/bridge/state"}]

    # the state topics the entities read are the ones the bridge fills
    unread = home_cfg["components"]["inbox_unread"]
    collector.wait_for(lambda m: m.topic == unread["state_topic"] and m.json()["unread"] == 2)
    connectivity = work_cfg["components"]["connectivity"]
    collector.wait_for(lambda m: m.topic == connectivity["state_topic"]
                       and m.json()["connected"] is True and m.json()["auth"] == "ok")

    # Home Assistant's birth message: every config again
    collector.publish(f"{names['prefix']}/status", "online")
    for topic in (home, work):
        again = collector.wait_topic(topic, count=2)[-1]
        assert again.json() == configs[topic].json()

    # press "INBOX mark all read" the way Home Assistant does
    button = home_cfg["components"]["inbox_mark_all_read"]
    collector.publish(button["command_topic"], button["payload_press"])
    reply = collector.wait_topic(f"{names['base']}/home/command/result")[0].json()
    assert reply["status"] == "ok" and reply["action"] == "mark_all_read"
    assert all("\\Seen" in flags for flags in dovecot.flags(mailbox).values())
    collector.wait_for(lambda m: m.topic == unread["state_topic"] and m.json()["unread"] == 0)
    assert bridge.stop() == 0


def test_shrunk_config_clears_stale_configs_and_removes_components_once(
    two_accounts: dict[str, Any], bridges: list[BridgeProcess], collector: Collector,
    mosquitto: Any, names: dict[str, str], tmp_path: Path,
) -> None:
    home, work = device_topic(names, "home"), device_topic(names, "work")
    run(bridges, tmp_path, two_accounts)
    wait_online(collector, names["base"])
    collector.wait_topic(work)
    assert bridges[0].stop() == 0

    # `work` removed, `home` down to INBOX
    shrunk = copy.deepcopy(two_accounts)
    shrunk["accounts"] = shrunk["accounts"][:1]
    shrunk["accounts"][0]["folders"] = [{"name": "INBOX"}]
    first_run = len(collector.messages)
    run(bridges, tmp_path, shrunk)
    cleared = collector.wait_for(lambda m: m.topic == work and m.payload == b"", timeout=30)
    assert cleared[0].retain

    def home_config(m: Received) -> bool:
        return m.topic == home and bool(m.payload) and "inbox_unread" in m.json()["components"]

    # Each Receipts component once as its platform alone (Home Assistant keeps an
    # omitted one), beside the plain config of the remaining ones.
    receipts = {"receipts_unread": "sensor", "receipts_total": "sensor",
                "receipts_last_subject": "sensor", "receipts_new_mail": "event",
                "receipts_mark_all_read": "button", "receipts_refresh": "button"}
    removal = collector.wait_for(
        lambda m: home_config(m) and "receipts_unread" in m.json()["components"],
        since=first_run)
    sent = removal[0].json()["components"]
    assert {k: c for k, c in sent.items() if k.startswith("receipts_")} == {
        k: {"platform": p} for k, p in receipts.items()}
    collector.wait_for(lambda m: home_config(m) and not any(
        k.startswith("receipts_") for k in m.json()["components"]), timeout=30)
    bridge_device = device_topic(names, "bridge")  # its health sensors stay
    under_prefix = [f"{names['prefix']}/#"]
    assert set(retained("127.0.0.1", mosquitto.port, under_prefix)) == {home, bridge_device}
    # The index is rewritten once the broker acknowledged every removal.
    index = recorded_index(tmp_path / "state" / "discovery-topics.json",
                           lambda i: sorted(i["devices"]) == sorted([home, bridge_device]))
    assert sorted(index["devices"]) == sorted([home, bridge_device])
    assert not set(receipts) & set(index["devices"][home])
    assert index["devices"][home]["inbox_unread"] == "sensor"
    wait_online(collector, names["base"], after=1)
    assert bridges[1].stop() == 0

    # the next start sends the removal no more
    before = len(collector.messages)
    configs_before = sum(m.topic == home for m in collector.messages)
    run(bridges, tmp_path, shrunk)
    wait_online(collector, names["base"], after=2)
    collector.publish(f"{names['prefix']}/status", "online")  # one more plain config
    collector.wait_for(lambda m: m.topic == home, count=configs_before + 2)
    assert not [m for m in collector.messages[before:]
                if m.topic == home and "receipts_unread" in m.json()["components"]]
    assert bridges[2].stop() == 0


def test_discovery_off_publishes_nothing_under_the_prefix(
    two_accounts: dict[str, Any], bridges: list[BridgeProcess], collector: Collector,
    names: dict[str, str], tmp_path: Path,
) -> None:
    cfg = copy.deepcopy(two_accounts)
    cfg["homeassistant"]["discovery"] = False
    run(bridges, tmp_path, cfg)
    wait_online(collector, names["base"])
    collector.publish(f"{names['prefix']}/status", "online")
    # The bridge takes MQTT messages in order, and answers a birth message at once: a
    # command's reply comes after anything it (wrongly) sent for the birth.
    collector.publish(f"{names['base']}/home/command", "refresh")
    collector.wait_topic(f"{names['base']}/home/command/result")
    prefix = f"{names['prefix']}/"
    ours = [m for m in collector.messages if m.topic.startswith(prefix)]
    assert [m.topic for m in ours] == [f"{names['prefix']}/status"]  # only our own birth
    assert not (tmp_path / "state" / "discovery-topics.json").exists()
    assert bridges[0].stop() == 0
