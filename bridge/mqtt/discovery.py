"""Home Assistant MQTT discovery payloads (docs/homeassistant.md): pure functions, no network.

One device-based discovery config per account, `<prefix>/device/<node>/config`, with
the device, origin, availability and QoS given once and every entity in `components`
(Home Assistant's `mqtt` docs, "Device discovery payload"). Home Assistant keeps a
component that is left out of a later config: it removes one only when the component is
sent with its platform alone. A device whose account is gone from the config gets an
empty retained payload, which removes all of its components. Both are found through an
index of what each device published last time (`load_index` / `save_index`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bridge import __version__
from bridge.config.model import AccountConfig, Config, FolderConfig
from bridge.mqtt.topics import Topics
from bridge.util.files import write_atomic

_LOGGER = logging.getLogger(__name__)

INDEX_FILE = "discovery-topics.json"  # discovery-topics.<instance>.json for an instance
# device config topic -> component id -> platform: what each device published
DiscoveryIndex = dict[str, dict[str, str]]
EVENT_TYPE = "new_message"
ORIGIN = {"name": "outlook2mqtt", "sw_version": __version__}

# Jinja templates, rendered by Home Assistant with the payload as `value_json`.
# A state the bridge does not know yet renders as "None", which HA shows as unknown.
UNREAD_TEMPLATE = "{{ value_json.unread }}"
TOTAL_TEMPLATE = "{{ value_json.total }}"
# HA drops a sensor state longer than 255 characters, so the subject is cut there.
SUBJECT_TEMPLATE = (
    "{{ value_json.last_message.subject[:255] if value_json.last_message else 'None' }}"
)
LAST_MESSAGE_ATTRIBUTES = "{{ (value_json.last_message or {}) | to_json }}"
CONNECTED_TEMPLATE = (
    "{{ 'ON' if value_json.connected and value_json.auth == 'ok' else 'OFF' }}"
)
EXPIRY_TEMPLATE = "{{ value_json.token_expires }}"
# The event entity needs a JSON object with `event_type`; everything else becomes the
# event's attributes. A slim, flat set keeps them small (a summary may carry the whole
# body) and easy to use in automations (`from_address` rather than a nested `from`).
EVENT_TEMPLATE = (
    "{% set f = value_json['from'] or {} %}"
    "{{ dict(event_type='" + EVENT_TYPE + "', account=value_json.get('account'), "
    "folder=value_json.get('folder'), uid=value_json.get('uid'), "
    "message_id=value_json.get('message_id'), date=value_json.get('date'), "
    "from_name=f.get('name'), from_address=f.get('address'), "
    "subject=value_json.get('subject'), preview=value_json.get('preview'), "
    "has_attachments=value_json.get('has_attachments'), seen=value_json.get('seen'), "
    "routes=value_json.get('routes', [])) "
    "| to_json }}"
)
ACCOUNT_REFRESH_PAYLOAD = '{"action": "refresh"}'
# Home Assistant's MQTT notify passes only the message text (as `value`): the command
# mails it to the account's default_to (docs/sending.md).
NOTIFY_TEMPLATE = "{{ dict(action='notify', text=value) | to_json }}"


def node_id(base_topic: str, account: str) -> str:
    """The device's id in topics and unique ids: base topic and account, e.g.
    `outlook2mqtt_home`."""
    return f"{_node_base(base_topic)}_{account}"


def _node_base(base_topic: str) -> str:
    # HA allows only `[a-zA-Z0-9_-]` in a discovery topic level
    return re.sub(r"[^A-Za-z0-9_-]+", "_", base_topic).strip("_") or "outlook2mqtt"


def bridge_node_id(base_topic: str, instance: str | None) -> str:
    """The bridge device's id: `outlook2mqtt_bridge`, or `outlook2mqtt-bridge-<instance>`
    for a named instance. Account devices are `<base>_<account>` and an account name may
    be any segment but "bridge", so only a '-' right after the base keeps an instance's
    id apart from every account's."""
    if not instance:
        return node_id(base_topic, "bridge")  # "bridge" is no account's name
    return f"{_node_base(base_topic)}-bridge-{instance}"


def device_topic(prefix: str, node: str) -> str:
    """`<prefix>/device/<node>/config`: one retained config per account."""
    return f"{prefix}/device/{node}/config"


def _entity_slug(text: str) -> str:
    # entity ids allow only a-z, 0-9 and '_'
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _entity(platform: str, unique_id: str, entity_id: str, name: str) -> dict[str, Any]:
    return {
        "platform": platform,
        "unique_id": unique_id,
        # `default_entity_id` replaced `object_id` in HA 2025.10 (object_id stops working
        # in 2026.4); older versions ignore it and derive the same id from device + name.
        "default_entity_id": f"{platform}.{entity_id}",
        "name": name,
    }


def account_components(account: AccountConfig, topics: Topics, node: str) -> dict[str, Any]:
    """The account's own entities: connectivity, token expiry, refresh of every folder."""
    ent = f"outlook_{_entity_slug(account.name)}"
    status = topics.account_status(account.name)
    components: dict[str, Any] = {
        "connectivity": {
            **_entity("binary_sensor", f"{node}_connectivity", f"{ent}_connection",
                      "Connection"),
            "device_class": "connectivity",
            "state_topic": status,
            "value_template": CONNECTED_TEMPLATE,
            "json_attributes_topic": status,
        },
        "token_expires": {
            **_entity("sensor", f"{node}_token_expires", f"{ent}_token_expires",
                      "Token expires"),
            "device_class": "timestamp",
            "entity_category": "diagnostic",
            "state_topic": status,
            "value_template": EXPIRY_TEMPLATE,
        },
    }
    if "refresh" in account.commands:
        components["refresh_all"] = {
            **_entity("button", f"{node}_refresh_all", f"{ent}_refresh_all",
                      "Refresh all"),
            "command_topic": topics.account_command(account.name),
            "payload_press": ACCOUNT_REFRESH_PAYLOAD,
            "retain": False,  # a retained command is never executed (README, Commands over MQTT)
            "icon": "mdi:refresh",
        }
    return components


def notify_components(account: AccountConfig, topics: Topics, node: str) -> dict[str, Any]:
    """A notify entity when the account sends and has somewhere to send notifications."""
    if account.send is None or not account.sending or not account.send.default_to:
        return {}
    ent = f"outlook_{_entity_slug(account.name)}"
    return {
        "send_mail": {
            **_entity("notify", f"{node}_send_mail", f"{ent}_send_mail", "Send mail"),
            "command_topic": topics.account_command(account.name),
            "command_template": NOTIFY_TEMPLATE,
            "retain": False,  # a retained command is never executed (README, Commands over MQTT)
            "icon": "mdi:email-send-outline",
        },
    }


def folder_components(
    account: AccountConfig, folder: FolderConfig, topics: Topics, node: str
) -> dict[str, Any]:
    """One folder's entities, keyed `<folder topic>_<kind>`."""
    ent = f"outlook_{_entity_slug(account.name)}_{_entity_slug(folder.topic)}"
    key = folder.topic
    state = topics.folder_state(account.name, folder.topic)
    command = topics.folder_command(account.name, folder.topic)
    components: dict[str, Any] = {
        f"{key}_unread": {
            **_entity("sensor", f"{node}_{key}_unread", f"{ent}_unread",
                      f"{folder.name} unread"),
            "state_topic": state,
            "value_template": UNREAD_TEMPLATE,
            "state_class": "measurement",
            "suggested_display_precision": 0,
            "icon": "mdi:email-alert-outline",
        },
        f"{key}_total": {
            **_entity("sensor", f"{node}_{key}_total", f"{ent}_total",
                      f"{folder.name} total"),
            "state_topic": state,
            "value_template": TOTAL_TEMPLATE,
            "state_class": "measurement",
            "suggested_display_precision": 0,
            "icon": "mdi:email-multiple-outline",
        },
        f"{key}_last_subject": {
            **_entity("sensor", f"{node}_{key}_last_subject", f"{ent}_last_subject",
                      f"{folder.name} last subject"),
            "state_topic": state,
            "value_template": SUBJECT_TEMPLATE,
            "json_attributes_topic": state,
            "json_attributes_template": LAST_MESSAGE_ATTRIBUTES,
            "icon": "mdi:email-outline",
        },
        f"{key}_new_mail": {
            **_entity("event", f"{node}_{key}_new_mail", f"{ent}_new_mail",
                      f"{folder.name} new mail"),
            "state_topic": topics.folder_message(account.name, folder.topic),
            "event_types": [EVENT_TYPE],
            "value_template": EVENT_TEMPLATE,
            "icon": "mdi:email-receive-outline",
        },
    }
    components.update(route_components(account, folder, topics, node))
    for action, label, icon in (
        ("mark_all_read", "mark all read", "mdi:email-open-multiple-outline"),
        ("refresh", "refresh", "mdi:refresh"),
    ):
        if action in account.commands:
            components[f"{key}_{action}"] = {
                **_entity("button", f"{node}_{key}_{action}", f"{ent}_{action}",
                          f"{folder.name} {label}"),
                "command_topic": command,
                "payload_press": action,  # the folder command topic takes the plain word
                "retain": False,
                "icon": icon,
            }
    return components


def route_components(
    account: AccountConfig, folder: FolderConfig, topics: Topics, node: str
) -> dict[str, Any]:
    """An event entity per route of the folder, keyed `<folder topic>_route_<route>`."""
    ent = f"outlook_{_entity_slug(account.name)}_{_entity_slug(folder.topic)}"
    return {
        f"{folder.topic}_route_{route.name}": {
            **_entity("event", f"{node}_{folder.topic}_route_{route.name}",
                      f"{ent}_route_{_entity_slug(route.name)}",
                      f"{folder.name} route {route.name}"),
            "state_topic": topics.folder_route(account.name, folder.topic, route.name),
            "event_types": [EVENT_TYPE],
            "value_template": EVENT_TEMPLATE,
            "icon": "mdi:email-fast-outline",
        }
        for route in folder.routes
    }


def device_config(config: Config, account: AccountConfig, topics: Topics) -> dict[str, Any]:
    """The device-based discovery payload of one account."""
    node = node_id(config.mqtt.base_topic, account.name)
    components = account_components(account, topics, node)
    components.update(notify_components(account, topics, node))
    for folder in account.folders:
        components.update(folder_components(account, folder, topics, node))
    for component in components.values():
        # Per component: HA accepts `qos` in the device payload but copies only the
        # availability and topic options into the components (mqtt/schemas.py).
        component["qos"] = config.mqtt.qos
    return {
        "device": {
            "identifiers": [node],
            "name": f"Outlook {account.name}",
            "manufacturer": "outlook2mqtt",
            "model": "Outlook mailbox",
            "serial_number": account.mailbox,
            "sw_version": __version__,
        },
        "origin": dict(ORIGIN),
        # shared by every component (HA merges these into each one)
        "availability": [{"topic": topics.bridge_state}],
        "components": components,
    }


def device_configs(config: Config, topics: Topics) -> dict[str, dict[str, Any]]:
    """Every account's discovery payload and the bridge's, by device config topic."""
    prefix = config.homeassistant.prefix
    return {
        **{device_topic(prefix, node_id(config.mqtt.base_topic, account.name)): device_config(
            config, account, topics) for account in config.accounts},
        **bridge_device_config(config, topics),
    }


def bridge_device_config(config: Config, topics: Topics) -> dict[str, dict[str, Any]]:
    """The bridge's own device, with diagnostic sensors read from `B/bridge/health`, by its
    device config topic; none when health is off."""
    if not config.bridge.health_interval:
        return {}
    instance = topics.instance
    node = bridge_node_id(config.mqtt.base_topic, instance)
    ent = _entity_slug(node)

    def sensor(key: str, name: str, field: str, **extra: Any) -> dict[str, Any]:
        return {**_entity("sensor", f"{node}_{key}", f"{ent}_{key}", name),
                "entity_category": "diagnostic", "state_topic": topics.bridge_health,
                "value_template": f"{{{{ value_json.{field} }}}}", "qos": config.mqtt.qos,
                **extra}

    components = {
        "uptime": sensor("uptime", "Uptime", "uptime", device_class="duration",
                         unit_of_measurement="s", state_class="measurement"),
        "messages_published": sensor("messages_published", "Messages published",
                                     "messages_published", state_class="total_increasing",
                                     icon="mdi:email-fast-outline"),
        "memory": sensor("memory", "Memory", "rss_bytes", device_class="data_size",
                         unit_of_measurement="B", state_class="measurement"),
        "threads": sensor("threads", "Threads", "threads", state_class="measurement",
                          icon="mdi:format-list-numbered"),
    }
    payload = {
        "device": {"identifiers": [node],
                   "name": " ".join(filter(None, ("outlook2mqtt bridge", instance))),
                   "manufacturer": "outlook2mqtt", "model": "Bridge",
                   "sw_version": __version__},
        "origin": dict(ORIGIN),
        "availability": [{"topic": topics.bridge_state}],
        "components": components,
    }
    return {device_topic(config.homeassistant.prefix, node): payload}


def _encode(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True).encode()


def build_discovery(config: Config, topics: Topics) -> dict[str, bytes]:
    """Every retained discovery config: topic -> JSON payload."""
    return {topic: _encode(payload) for topic, payload in device_configs(config, topics).items()}


# -- removing what is no longer published -----------------------------------------------


def discovery_index(config: Config, topics: Topics) -> DiscoveryIndex:
    """What the config publishes: each device topic with its components' platforms."""
    return {
        topic: {cid: component["platform"] for cid, component in payload["components"].items()}
        for topic, payload in device_configs(config, topics).items()
    }


def stale_topics(previous: Iterable[str], current: Iterable[str]) -> list[str]:
    """Device topics published last time and not now: each gets an empty retained payload."""
    return sorted(set(previous) - set(current))


def removed_components(previous: DiscoveryIndex, current: DiscoveryIndex) -> DiscoveryIndex:
    """Per device still published, the components it published last time and not now."""
    removed: DiscoveryIndex = {}
    for topic, components in current.items():
        gone = {cid: p for cid, p in previous.get(topic, {}).items() if cid not in components}
        if gone:
            removed[topic] = gone
    return removed


def removal_configs(config: Config, topics: Topics, removed: DiscoveryIndex) -> dict[str, bytes]:
    """The configs that remove components: a device's whole config plus each removed
    component as its platform alone, which is how Home Assistant is told to delete it
    (the rest of the config stays, as this may be the retained one)."""
    configs: dict[str, bytes] = {}
    for topic, payload in device_configs(config, topics).items():
        if gone := removed.get(topic):
            payload["components"].update({cid: {"platform": p} for cid, p in gone.items()})
            configs[topic] = _encode(payload)
    return configs


def merge_index(current: DiscoveryIndex, unsent: DiscoveryIndex) -> DiscoveryIndex:
    """The index to record: what is published now, plus the removals the broker did not
    acknowledge (they are tried again at the next start)."""
    merged = {topic: dict(components) for topic, components in unsent.items()}
    for topic, components in current.items():
        merged.setdefault(topic, {}).update(components)
    return merged


def index_path(state_dir: Path, instance: str | None) -> Path:
    """Where the index is kept: one per instance, since instances may share a state_dir
    and each must clear only what it published itself."""
    name = INDEX_FILE.replace(".json", f".{instance}.json") if instance else INDEX_FILE
    return state_dir / name


def load_index(state_dir: Path, instance: str | None = None) -> DiscoveryIndex:
    """The index recorded by `save_index`; empty when there is none or it is unreadable.

    An index that lists only topics (written before components were recorded) reads as
    devices with no known components: their stale configs are still cleared.
    """
    path = index_path(state_dir, instance)
    try:
        return _parse_index(json.loads(path.read_text("utf-8")))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        _LOGGER.warning("ignoring unreadable %s (%s): stale discovery configs stay", path, exc)
        return {}


def _parse_index(data: Any) -> DiscoveryIndex:
    if isinstance(data, dict) and "devices" in data:
        devices = data["devices"]
        if not isinstance(devices, dict) or not all(
            isinstance(components, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in components.items())
            for components in devices.values()
        ):
            raise TypeError("'devices' is not an object of {component: platform} objects")
        return {topic: dict(components) for topic, components in devices.items()}
    topics = data["topics"]
    if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
        raise TypeError("'topics' is not a list of strings")
    return {topic: {} for topic in topics}


def save_index(state_dir: Path, index: DiscoveryIndex, instance: str | None = None) -> None:
    """Record what each device now publishes (atomically; no secrets in it)."""
    data = json.dumps({"devices": index}, indent=1, sort_keys=True)
    write_atomic(index_path(state_dir, instance), data.encode())
