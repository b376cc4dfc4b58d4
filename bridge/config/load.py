"""Loading: TOML read once, every field checked by `bridge.config.fields`, problems collected.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from bridge.config import credentials, fields, filters
from bridge.config.model import (
    ALL_COMMANDS,
    CLOUDS,
    DEFAULT_COMMANDS,
    AccountConfig,
    BridgeConfig,
    Config,
    FolderConfig,
    HomeAssistantConfig,
    MqttConfig,
    default_client_id,
    folder_key,
)
from bridge.config.send import parse_send
from bridge.errors import ConfigError

ETC = Path("/etc")
DEFAULT_CONFIG = ETC / "outlook2mqtt" / "config.toml"
DEFAULT_STATE = Path("/var/lib/outlook2mqtt")  # where systemd's StateDirectory= puts it
CONFIG_ENV = "OUTLOOK2MQTT_CONFIG"
AUTHS = ("client_secret", "client_certificate", "device_code")
# topics the bridge itself uses one level below B/<account>/
RESERVED_FOLDER_TOPICS = ("status", "command")
PLACEHOLDER_ID = "00000000-0000-0000-0000-000000000000"

MQTT_KEYS = (
    "host", "port", "username", "password", "password_file", "client_id", "protocol",
    "base_topic", "qos", "keepalive", "tls", "ca_file", "cert_file", "key_file", "tls_insecure",
)
HOMEASSISTANT_KEYS = ("discovery", "prefix")
BRIDGE_KEYS = ("state_dir", "health_interval", "instance")
ACCOUNT_KEYS = (
    "name", "mailbox", "tenant_id", "client_id", "auth", "client_secret", "client_secret_file",
    "certificate_file", "private_key_file", "private_key_passphrase",
    "private_key_passphrase_file", "assertion_algorithm",
    "cloud", "authority", "scope", "imap_host", "imap_port",
    "imap_security", "ca_file", "poll_interval", "idle", "idle_renew", "token_cache",
    "commands", "folders", "send",
)
FOLDER_KEYS = (
    "name", "topic", "backfill", "attachments", "max_attachment_bytes", "inline_attachments",
    "attachment_types", "include_body", "preview_chars", "search", "routes",
)
_TABLES: dict[str, tuple[str, ...]] = {
    "[mqtt]": MQTT_KEYS, "[homeassistant]": HOMEASSISTANT_KEYS, "[bridge]": BRIDGE_KEYS,
    "[[accounts]]": ACCOUNT_KEYS, "[[accounts.folders]]": FOLDER_KEYS,
    f"[[{filters.ROUTE_HEADER}]]": filters.ROUTE_KEYS,
}
_FOLDER_ELSEWHERE = {
    # the classic TOML slip: account keys written below [[accounts.folders]] land in the folder
    "the account: keys below [[accounts.folders]] belong to that folder, so move it above "
    "the account's first [[accounts.folders]]": ACCOUNT_KEYS,
    **{label: keys for label, keys in _TABLES.items() if label != "[[accounts]]"},
}


def config_search_path(explicit: str | None, environ: Mapping[str, str] | None = None) -> Path:
    """The config file to use: -c, else $OUTLOOK2MQTT_CONFIG, else ./config.toml if it
    exists, else /etc/outlook2mqtt/config.toml."""
    environ = os.environ if environ is None else environ
    if explicit:
        return Path(explicit)
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV])
    local = Path("config.toml")
    return local if local.is_file() else DEFAULT_CONFIG


def load_config(path: Path, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a TOML config file; raise ConfigError listing every problem."""
    path = Path(path).expanduser().absolute()
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found; create it with 'outlook2mqtt init' "
                           "or pass -c PATH"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{path}: is a directory; pass the file with -c PATH"]) from None
    except PermissionError:
        raise ConfigError([f"{path}: cannot read it: permission denied; check its owner "
                           "and mode"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read it: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8"]
                          ) from None
    except tomllib.TOMLDecodeError as exc:
        # the message ends in "(at line L, column C)"; the line itself may hold a secret
        found = re.fullmatch(r"(.*) \(at (line \d+, column \d+|end of document)\)", str(exc))
        where, what = (found[2], found[1]) if found else ("", str(exc))
        raise ConfigError([f"{path}: TOML syntax error at {where}: {what}; fix the syntax there"
                           if where else f"{path}: TOML syntax error: {what}"]) from None
    return parse_config(data, source=path, environ=environ)


def default_state_dir(config_dir: Path, environ: Mapping[str, str]) -> Path:
    """Where state goes when the config names no `state_dir`."""
    # systemd's StateDirectory= sets $STATE_DIRECTORY: the natural default under systemd.
    if environ.get("STATE_DIRECTORY"):
        return Path(environ["STATE_DIRECTORY"].split(":")[0])
    # A config in /etc is a system install: /etc is configuration, often read-only.
    if config_dir == ETC or ETC in config_dir.parents:
        return DEFAULT_STATE
    return config_dir / "state"


def parse_config(
    data: Mapping[str, Any],
    *,
    source: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Validate parsed TOML into a Config; raise ConfigError listing every problem.

    Relative paths are taken from `source`'s directory (else the working directory);
    `environ` (default os.environ) supplies $CREDENTIALS_DIRECTORY. No network access.
    """
    environ = os.environ if environ is None else environ
    source = source.absolute() if source is not None else None
    base = source.parent if source is not None else Path.cwd()
    problems = fields.Problems()
    root = fields.Table(data, "", problems, base)
    root.check_keys(("mqtt", "homeassistant", "bridge", "accounts"), _TABLES)
    mqtt_table = root.table("mqtt")
    mqtt = _mqtt(mqtt_table, environ)
    homeassistant = _homeassistant(root.table("homeassistant"))
    bridge = _bridge(root.table("bridge"), base, environ)
    if bridge.instance and not mqtt_table.has("client_id"):
        mqtt = replace(mqtt, client_id=default_client_id(bridge.instance))
    accounts = _accounts(root, bridge.state_dir, environ)
    if problems.items:
        raise ConfigError(problems.items)
    return Config(mqtt, accounts, homeassistant, bridge, source)


def _bridge(t: fields.Table, base: Path, environ: Mapping[str, str]) -> BridgeConfig:
    t.check_keys(BRIDGE_KEYS, _elsewhere("[bridge]"))
    instance = t.opt_string("instance")
    if instance is not None:
        fields.check(t, "instance", fields.instance_problem(instance))
    return BridgeConfig(
        state_dir=t.path("state_dir") or default_state_dir(base, environ),
        health_interval=t.integer("health_interval", 60, 0, 86400),
        instance=instance)


def _elsewhere(label: str) -> dict[str, tuple[str, ...]]:
    return {other: keys for other, keys in _TABLES.items() if other != label}


def _mqtt(t: fields.Table, environ: Mapping[str, str]) -> MqttConfig:
    t.check_keys(MQTT_KEYS, _elsewhere("[mqtt]"))
    host = t.required_string("host", "localhost")
    if host:
        fields.check(t, "host", fields.host_problem(host, "mqtt.example.com"))
    tls = t.boolean("tls", False)
    username = t.opt_string("username") or None
    password = credentials.secret(t, "password", credentials=("mqtt.password", "mqtt_password"),
                                  environ=environ, blank_is_unset=True)
    protocol = t.choice("protocol", "5", ("5", "3.1.1"))
    if password and not username and protocol == "3.1.1":
        t.problem("password", "MQTT 3.1.1 sends a password only with a username; set username")
    return MqttConfig(
        host=host,
        port=t.integer("port", 8883 if tls else 1883, 1, 65535),
        username=username,
        password=password.value if password else None,
        client_id=t.string("client_id", default_client_id(None)),
        protocol=protocol,
        base_topic=fields.check_topic_prefix(t, "base_topic", "outlook2mqtt"),
        qos=t.integer("qos", 1, 0, 2),
        keepalive=t.integer("keepalive", 60, 1, 65535),
        tls=tls,
        **_mqtt_tls(t, tls),
    )


def _mqtt_tls(t: fields.Table, tls: bool) -> dict[str, Any]:
    """ca_file, cert_file, key_file and tls_insecure, which only make sense with tls = true."""
    if not tls:
        for name in ("ca_file", "cert_file", "key_file", "tls_insecure"):
            if t.data.get(name, False) is not False:
                t.problem(name, "only used with TLS; set tls = true or remove it")
        return {}
    cert_file, key_file = t.path("cert_file"), t.path("key_file")
    if cert_file and key_file:
        credentials.check_key_pair(t.problems, (t.key("cert_file"), cert_file),
                                   (t.key("key_file"), key_file))
    elif cert_file or key_file:
        missing = "key_file" if cert_file else "cert_file"
        t.problem(missing, "a client certificate needs both cert_file and key_file; add it")
    return {"ca_file": credentials.check_ca_file(t, "ca_file"), "cert_file": cert_file,
            "key_file": key_file, "tls_insecure": t.boolean("tls_insecure", False)}


def _homeassistant(t: fields.Table) -> HomeAssistantConfig:
    t.check_keys(HOMEASSISTANT_KEYS, _elsewhere("[homeassistant]"))
    return HomeAssistantConfig(
        discovery=t.boolean("discovery", True),
        prefix=fields.check_topic_prefix(t, "prefix", "homeassistant"),
    )


def _accounts(
    root: fields.Table, state_dir: Path, environ: Mapping[str, str]
) -> tuple[AccountConfig, ...]:
    tables = root.tables("accounts", "accounts")
    if not tables:
        if tables is not None or not root.has("accounts"):
            root.problem("accounts", "at least one [[accounts]] table is required; "
                                     "see config.toml.example")
        return ()
    accounts = [_account(t, state_dir, environ) for t in tables]
    seen: dict[str, str] = {}
    for t, account in zip(tables, accounts, strict=True):
        if account.name in seen:
            t.problem("name", f"{account.name!r} is already the name of {seen[account.name]}; "
                              "account names must be unique")
        elif account.name:
            seen[account.name] = t.dotted
    return tuple(accounts)


def _account(t: fields.Table, state_dir: Path, environ: Mapping[str, str]) -> AccountConfig:
    t.check_keys(ACCOUNT_KEYS, _elsewhere("[[accounts]]"))
    name = t.required_string("name", "home")
    name_ok = bool(fields.SEGMENT.fullmatch(name))
    if name:
        fields.check(t, "name", fields.account_name_problem(name))
    mailbox = t.required_string("mailbox", "me@contoso.com")
    if mailbox:
        fields.check(t, "mailbox", fields.mailbox_problem(mailbox))
    auth = t.choice("auth", "client_secret", AUTHS)
    auth_ok = t.data.get("auth", "client_secret") in AUTHS
    tenant_id = (t.string("tenant_id", "consumers") if auth == "device_code"
                 else t.required_string("tenant_id", PLACEHOLDER_ID))
    if tenant_id:
        fields.check(t, "tenant_id", fields.tenant_problem(tenant_id, auth))
    cloud = t.choice("cloud", "global", tuple(CLOUDS))
    authority, imap_host = _endpoints(t, cloud)
    imap_security = t.choice("imap_security", "tls", ("tls", "starttls"))
    client_secret, certificate, private_key, passphrase = credentials.account_credentials(
        t, auth if auth_ok else None, name if name_ok else None, environ
    )
    token_cache = _token_cache(t, auth, state_dir / f"{name}.token-cache.json")
    return AccountConfig(
        name=name,
        mailbox=mailbox,
        tenant_id=tenant_id,
        client_id=t.required_string("client_id", PLACEHOLDER_ID),
        auth=auth,
        authority=authority,
        scope=credentials.scope(t, auth, CLOUDS[cloud][1], CLOUDS["global"][1]),
        imap_host=imap_host,
        folders=_folders(t),
        client_secret=client_secret,
        certificate_file=certificate,
        private_key_file=private_key,
        private_key_passphrase=passphrase,
        assertion_algorithm=t.choice("assertion_algorithm", "RS256", ("RS256", "PS256")),
        cloud=cloud,
        imap_port=t.integer("imap_port", 143 if imap_security == "starttls" else 993, 1, 65535),
        imap_security=imap_security,
        ca_file=credentials.check_ca_file(t, "ca_file"),
        poll_interval=t.number("poll_interval", 60),
        idle=t.boolean("idle", True),
        idle_renew=t.number("idle_renew", 540, le=600,
                            why=" (the bridge must renew IDLE at least every 10 minutes)"),
        token_cache=token_cache,
        commands=_commands(t),
        send=parse_send(t, auth=auth, cloud=cloud),
    )


def _endpoints(t: fields.Table, cloud: str) -> tuple[str, str]:
    """authority and imap_host: the cloud's, unless overridden."""
    default_authority, default_imap_host = CLOUDS[cloud]
    authority = t.string("authority", default_authority)
    if t.has("authority"):
        fields.check(t, "authority", fields.authority_problem(authority, default_authority))
        authority = authority.rstrip("/")
    imap_host = t.string("imap_host", default_imap_host)
    if imap_host:
        fields.check(t, "imap_host", fields.host_problem(imap_host, default_imap_host))
    return authority, imap_host


def _token_cache(t: fields.Table, auth: str, default: Path) -> Path | None:
    """Where a device_code account keeps its sign-in; other accounts have none."""
    if auth == "device_code":
        return t.path("token_cache") or default
    if t.has("token_cache"):
        t.problem("token_cache", 'only used with auth = "device_code"; remove it')
    return None


def _commands(t: fields.Table) -> tuple[str, ...]:
    commands = t.strings("commands", DEFAULT_COMMANDS)
    for i, command in enumerate(commands):
        if command not in ALL_COMMANDS:
            t.problems.add(f"{t.key('commands')}[{i}]", f"unknown command {command!r}"
                           f"{fields.did_you_mean(command, ALL_COMMANDS)} (known: "
                           + ", ".join(ALL_COMMANDS) + ")")
    return tuple(dict.fromkeys(commands))


def _folders(t: fields.Table) -> tuple[FolderConfig, ...]:
    tables = t.tables("folders", "accounts.folders")
    if tables is None:
        # no [[accounts.folders]]: watch the inbox, the one folder every mailbox has
        return () if t.has("folders") else (FolderConfig(name="INBOX", topic="inbox"),)
    if not tables and not t.data["folders"]:
        t.problem("folders", "list at least one [[accounts.folders]], or leave them all out "
                             "to watch INBOX")
    folders = [_folder(ft) for ft in tables]
    names: dict[str, str] = {}
    topics: dict[str, str] = {}
    for ft, folder in zip(tables, folders, strict=True):
        if folder_key(folder.name) in names:
            ft.problem("name", f"{folder.name!r} is already watched by "
                               f"{names[folder_key(folder.name)]}")
        elif folder.topic in topics:
            ft.problem("topic", f"{folder.topic!r} is already the topic of {topics[folder.topic]}; "
                                "set a different topic")
        names.setdefault(folder_key(folder.name), ft.dotted)
        topics.setdefault(folder.topic, ft.dotted)
    return tuple(folders)


def _folder(t: fields.Table) -> FolderConfig:
    t.check_keys(FOLDER_KEYS, _FOLDER_ELSEWHERE)
    name = t.required_string("name", "INBOX")
    if folder_key(name) == "INBOX":
        name = "INBOX"  # one spelling for topics and status
    topic = fields.slug(name)
    if t.has("topic"):
        topic = t.string("topic", topic)
        if not fields.SEGMENT.fullmatch(topic):
            t.problem("topic", f"{topic!r} is a topic segment: use only a-z, 0-9, '_' and '-' "
                               f"(no '/', '+' or '#'), e.g. {fields.slug(topic) or 'inbox'!r}")
    elif name and not topic:
        t.problem("topic", f"cannot make a topic out of {name!r}; set topic = \"...\"")
    if topic in RESERVED_FOLDER_TOPICS:
        t.problem("topic", f"{topic!r} is reserved for <base_topic>/<account>/{topic}; "
                           "set a different topic")
    types = tuple(s.lower() for s in t.strings("attachment_types", ("*/*",)))
    if not types:
        t.problem("attachment_types", "list at least one type (e.g. \"*/*\"); to publish no "
                                      "attachments set attachments = false")
    for i, pattern in enumerate(types):
        if not re.fullmatch(r"!?[^\s/!]+/[^\s/]+", pattern):
            t.problems.add(f"{t.key('attachment_types')}[{i}]",
                           f"{pattern!r} is not a content type glob such as 'image/*' or "
                           "'!image/gif'")
    return FolderConfig(
        name=name,
        topic=topic,
        backfill=t.integer("backfill", 0, 0),
        attachments=t.boolean("attachments", True),
        max_attachment_bytes=t.integer("max_attachment_bytes", 10_000_000, 0),
        inline_attachments=t.boolean("inline_attachments", False),
        attachment_types=types,
        include_body=t.boolean("include_body", False),
        preview_chars=t.integer("preview_chars", 280, 0),
        search=filters.search(t),
        routes=filters.routes(t, _elsewhere(f"[[{filters.ROUTE_HEADER}]]")),
    )
