"""docs/sending.md is true: its config loads, every command it shows is accepted and would
reach only allowed recipients, and its Home Assistant examples use the real entity and
render to accepted commands."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

from bridge.commands.outgoing import SendCommand, parse_request
from bridge.config.load import parse_config
from bridge.config.model import AccountConfig
from bridge.mqtt.discovery import build_discovery
from bridge.mqtt.topics import Topics
from tests.hatemplates import render_ha

DOC = Path(__file__).parent.parent / "docs" / "sending.md"
TENANT = "11111111-1111-1111-1111-111111111111"
# the account's discovery config (the bridge publishes its own device beside it)
ACCOUNT_DEVICE = "homeassistant/device/outlook2mqtt_home/config"


def fenced(lang: str) -> list[str]:
    return re.findall(rf"^ *```{lang}\n(.*?)^ *```$", DOC.read_text(), flags=re.S | re.M)


def doc_account() -> AccountConfig:
    [block] = fenced("toml")
    send = tomllib.loads(block)["accounts"]["send"]
    config = parse_config({"mqtt": {"host": "localhost"}, "accounts": [{
        "name": "home", "mailbox": "me@contoso.com", "tenant_id": TENANT, "client_id": TENANT,
        "client_secret": "not-a-real-secret", "send": send}]}, environ={})
    return config.accounts[0]


def accepted(payload: str, account: AccountConfig) -> SendCommand:
    command = parse_request(payload.encode(), account=account)
    assert isinstance(command, SendCommand)
    assert account.send is not None
    for address in command.recipients.addresses():
        assert account.send.allows(address), address
    return command


def test_every_mosquitto_pub_example_is_an_accepted_command_to_allowed_recipients() -> None:
    account = doc_account()
    lines = [line for block in fenced("sh") for line in block.splitlines()
             if line.startswith("mosquitto_pub")]
    actions = set()
    for line in lines:
        assert " -r" not in line and "-t 'outlook2mqtt/home/command'" in line
        found = re.search(r"-m '([^']*)'$", line) or re.search(r'-m "(.*)"$', line)
        assert found, line
        payload = found[1].replace('\\"', '"').replace("$(base64 -w0 door.jpg)", "eA==")
        actions.add(accepted(payload, account).action)
    assert actions == {"send", "reply", "forward", "notify"}


def test_the_home_assistant_examples_use_the_notify_entity_and_publish_accepted_commands(
) -> None:
    account = doc_account()
    config = parse_config({"mqtt": {"host": "localhost"}, "accounts": [{
        "name": "home", "mailbox": "me@contoso.com", "tenant_id": TENANT, "client_id": TENANT,
        "client_secret": "x", "send": {"allowed_recipients": ["*@example.com"],
                                       "default_to": ["me@example.com"]}}]}, environ={})
    device = build_discovery(config, Topics("outlook2mqtt"))[ACCOUNT_DEVICE]
    notify_id = json.loads(device)["components"]["send_mail"]["default_entity_id"]
    blocks = [yaml.safe_load(block) for block in fenced("yaml")]
    assert len(blocks) == 2
    actions: list[dict[str, Any]] = [a for b in blocks for a in b["actions"]]
    notify = [a for a in actions if a["action"] == "notify.send_message"]
    assert notify and notify[0]["target"]["entity_id"] == notify_id
    published = [a["data"] for a in actions if a["action"] == "mqtt.publish"]
    assert published and all(p["topic"] == "outlook2mqtt/home/command" for p in published)
    for data in published:
        assert data["retain"] is False
        accepted(render_ha(data["payload"]), account)
