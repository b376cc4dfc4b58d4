"""Configuration: what users write in config.toml and what the bridge makes of it."""

from __future__ import annotations

import copy
import datetime as dt
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.config.filters import ROUTE_KEYS
from bridge.config.load import (
    ACCOUNT_KEYS,
    BRIDGE_KEYS,
    FOLDER_KEYS,
    HOMEASSISTANT_KEYS,
    MQTT_KEYS,
    config_search_path,
    load_config,
    parse_config,
)
from bridge.config.model import ALL_COMMANDS, CLOUDS, DEFAULT_COMMANDS, Config, FolderConfig
from bridge.errors import ConfigError
from tests.profile import examples

EXAMPLE = Path(__file__).resolve().parent.parent / "config.toml.example"
SECRET = "s3cr3t-Value~never-shown"
PASSPHRASE = "correct horse battery staple"
TENANT = "11111111-2222-3333-4444-555555555555"
CLIENT = "66666666-7777-8888-9999-000000000000"
ACCOUNT: dict[str, Any] = {
    "name": "home", "mailbox": "me@contoso.com", "tenant_id": TENANT, "client_id": CLIENT,
    "client_secret": SECRET,
}
DELETE = object()


def build(
    *,
    mqtt: dict[str, Any] | None = None,
    account: dict[str, Any] | None = None,
    folders: list[dict[str, Any]] | None = None,
    top: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A minimal valid config with the given keys changed (DELETE removes a key)."""
    data: dict[str, Any] = {"mqtt": {"host": "broker.local"}, "accounts": [dict(ACCOUNT)]}
    if folders is not None:
        data["accounts"][0]["folders"] = copy.deepcopy(folders)
    for table, patch in ((data["mqtt"], mqtt), (data["accounts"][0], account), (data, top)):
        for key, value in (patch or {}).items():
            if value is DELETE:
                table.pop(key, None)
            else:
                table[key] = value
    return data


def problems_of(data: dict[str, Any], source: Path, environ: dict[str, str] | None = None,
                ) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, source=source, environ=environ or {})
    return caught.value.problems


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """Where the config under test pretends to live: relative paths start here."""
    return tmp_path / "config.toml"


# --- key material ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Pki:
    cert: Path
    key: Path
    encrypted_key: Path
    other_key: Path
    ec_cert: Path
    ec_key: Path
    der_cert: Path
    ca: Path


def _self_signed(key: Any, name: str) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    pem, der = serialization.Encoding.PEM, serialization.Encoding.DER
    pkcs8, none = serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    cert = _self_signed(key, "outlook2mqtt")
    files = {
        "cert": cert.public_bytes(pem),
        "key": key.private_bytes(pem, pkcs8, none),
        "encrypted_key": key.private_bytes(
            pem, pkcs8, serialization.BestAvailableEncryption(PASSPHRASE.encode())),
        "other_key": other.private_bytes(pem, pkcs8, none),
        "ec_cert": _self_signed(ec_key, "ec").public_bytes(pem),
        "ec_key": ec_key.private_bytes(pem, pkcs8, none),
        "der_cert": cert.public_bytes(der),
        "ca": _self_signed(other, "test CA").public_bytes(pem),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    return Pki(**{name: root / name for name in files})


def cert_account(pki: Pki, **changes: Any) -> dict[str, Any]:
    account: dict[str, Any] = {
        "auth": "client_certificate", "client_secret": DELETE,
        "certificate_file": str(pki.cert), "private_key_file": str(pki.key),
    }
    account.update(changes)
    return account


# --- the shipped example and the defaults ---------------------------------------------------

def test_example_config_is_valid_as_shipped() -> None:
    config = load_config(EXAMPLE, environ={})
    (account,) = config.accounts
    assert config.mqtt.host == "localhost"
    assert (account.name, account.auth, account.client_secret) == ("home", "client_secret", "...")
    assert account.folders == (FolderConfig(name="INBOX", topic="inbox"),)
    assert account.commands == DEFAULT_COMMANDS
    assert config.bridge.state_dir == EXAMPLE.parent / "state"


@pytest.mark.parametrize(("where", "environ", "state"), [
    pytest.param("/etc/outlook2mqtt", {}, "/var/lib/outlook2mqtt", id="copied-to-etc"),
    pytest.param("/etc/outlook2mqtt", {"STATE_DIRECTORY": "/var/lib/o2m:/x"}, "/var/lib/o2m",
                 id="etc-under-systemd"),
    pytest.param("/srv/o2m", {"STATE_DIRECTORY": "/var/lib/o2m"}, "/var/lib/o2m",
                 id="anywhere-under-systemd"),
    pytest.param("/srv/o2m", {}, "/srv/o2m/state", id="beside-the-config"),
])
def test_the_example_keeps_state_out_of_the_config_directory(
    where: str, environ: dict[str, str], state: str
) -> None:
    data = tomllib.loads(EXAMPLE.read_text())
    config = parse_config(data, source=Path(where) / "config.toml", environ=environ)
    assert config.bridge.state_dir == Path(state)


@pytest.mark.parametrize(
    ("table", "keys"),
    [("mqtt", MQTT_KEYS), ("homeassistant", HOMEASSISTANT_KEYS), ("bridge", BRIDGE_KEYS),
     ("accounts", ACCOUNT_KEYS), ("accounts.folders", FOLDER_KEYS),
     ("accounts.folders.routes", ROUTE_KEYS)],
)
def test_example_documents_every_key(table: str, keys: tuple[str, ...]) -> None:
    text = EXAMPLE.read_text()
    assert f"[{table}]" in text
    written = set(re.findall(r"^[#\s]*([a-z_]+) = ", text, re.MULTILINE))
    written |= set(re.findall(r"\b([a-z_]+_file) = ", text))
    tables = ("folders", "send", "routes")
    missing = [k for k in keys if k not in written and k not in tables]
    assert not missing, f"config.toml.example does not mention {missing}"


def test_minimal_config_gets_the_contract_defaults(source: Path) -> None:
    config = parse_config(build(), source=source, environ={})
    mqtt, account = config.mqtt, config.accounts[0]
    assert (mqtt.port, mqtt.protocol, mqtt.base_topic, mqtt.qos, mqtt.keepalive, mqtt.tls) == (
        1883, "5", "outlook2mqtt", 1, 60, False)
    assert (mqtt.client_id, mqtt.username, mqtt.password) == ("outlook2mqtt", None, None)
    assert config.homeassistant.discovery is True
    assert config.homeassistant.prefix == "homeassistant"
    assert config.bridge.state_dir == source.parent / "state"
    assert (account.auth, account.cloud, account.client_secret) == ("client_secret", "global",
                                                                    SECRET)
    assert account.authority_url == f"https://login.microsoftonline.com/{TENANT}"
    assert account.scope == "https://outlook.office365.com/.default"
    assert (account.imap_host, account.imap_port, account.imap_security) == (
        "outlook.office365.com", 993, "tls")
    assert (account.poll_interval, account.idle, account.idle_renew) == (60, True, 540)
    assert account.token_cache is None
    assert "delete" not in account.commands
    assert account.folders == (FolderConfig(name="INBOX", topic="inbox"),)
    assert config.source == source


def test_tls_moves_the_default_mqtt_port_to_8883(source: Path) -> None:
    assert parse_config(build(mqtt={"tls": True}), source=source).mqtt.port == 8883
    assert parse_config(build(mqtt={"tls": True, "port": 1884}), source=source).mqtt.port == 1884


def test_starttls_moves_the_default_imap_port_to_143(source: Path) -> None:
    account = parse_config(build(account={"imap_security": "starttls"}), source=source).accounts[0]
    assert account.imap_port == 143


def test_empty_mqtt_username_and_password_mean_none(source: Path) -> None:
    mqtt = parse_config(build(mqtt={"username": "", "password": ""}), source=source).mqtt
    assert (mqtt.username, mqtt.password) == (None, None)


# --- one mistake, one problem naming its key ------------------------------------------------

CASES = [
    # (id, build() arguments, dotted key, words the message must contain)
    ("mqtt host missing", {"mqtt": {"host": DELETE}}, "mqtt.host", "required"),
    ("mqtt section missing", {"top": {"mqtt": DELETE}}, "mqtt.host", "required"),
    ("mqtt section not a table", {"top": {"mqtt": "localhost"}}, "mqtt", "expected a table"),
    ("mqtt host with scheme", {"mqtt": {"host": "mqtt://b"}}, "mqtt.host", "without the scheme"),
    ("mqtt host with port", {"mqtt": {"host": "b:1883"}}, "mqtt.host", "port key"),
    ("mqtt host is a date", {"mqtt": {"host": dt.date(2024, 1, 1)}}, "mqtt.host",
     "expected a string, got a date/time"),
    ("port as string", {"mqtt": {"port": "1883"}}, "mqtt.port",
     "expected an integer, got a string; write the number without quotes"),
    ("port as boolean", {"mqtt": {"port": True}}, "mqtt.port",
     "expected an integer, got a boolean"),
    ("port as float", {"mqtt": {"port": 1883.0}}, "mqtt.port", "expected an integer, got a float"),
    ("port zero", {"mqtt": {"port": 0}}, "mqtt.port", "between 1 and 65535, got 0"),
    ("port too big", {"mqtt": {"port": 65536}}, "mqtt.port", "between 1 and 65535"),
    ("qos 3", {"mqtt": {"qos": 3}}, "mqtt.qos", "between 0 and 2"),
    ("protocol unknown", {"mqtt": {"protocol": "4"}}, "mqtt.protocol", "'5', '3.1.1'"),
    ("protocol as number", {"mqtt": {"protocol": 5}}, "mqtt.protocol", "put the value in quotes"),
    ("keepalive zero", {"mqtt": {"keepalive": 0}}, "mqtt.keepalive", "between 1 and 65535"),
    ("base topic wildcard", {"mqtt": {"base_topic": "a/+/b"}}, "mqtt.base_topic", "wildcards"),
    ("base topic hash", {"mqtt": {"base_topic": "mail#"}}, "mqtt.base_topic", "wildcards"),
    ("base topic slashes", {"mqtt": {"base_topic": "/mail/"}}, "mqtt.base_topic", "use 'mail'"),
    ("tls flag as string", {"mqtt": {"tls": "true"}}, "mqtt.tls", "true or false without quotes"),
    ("ca_file without tls", {"mqtt": {"ca_file": "ca.pem"}}, "mqtt.ca_file", "set tls = true"),
    ("tls_insecure without tls", {"mqtt": {"tls_insecure": True}}, "mqtt.tls_insecure",
     "set tls = true"),
    ("ca_file missing", {"mqtt": {"tls": True, "ca_file": "ca.pem"}}, "mqtt.ca_file",
     "does not exist"),
    ("client cert without key", {"mqtt": {"tls": True, "cert_file": "c.pem"}}, "mqtt.key_file",
     "needs both"),
    ("password file missing", {"mqtt": {"username": "u", "password_file": "pw"}},
     "mqtt.password_file", "does not exist"),
    ("password on 3.1.1 without user", {"mqtt": {"protocol": "3.1.1", "password": "x"}},
     "mqtt.password", "set username"),
    ("key in the wrong table", {"mqtt": {"state_dir": "s"}}, "mqtt.state_dir",
     "belongs in [bridge]"),
    ("ha prefix wildcard", {"top": {"homeassistant": {"prefix": "ha/#"}}}, "homeassistant.prefix",
     "wildcards"),
    ("ha discovery as string", {"top": {"homeassistant": {"discovery": "yes"}}},
     "homeassistant.discovery", "expected a boolean"),
    ("state_dir as number", {"top": {"bridge": {"state_dir": 5}}}, "bridge.state_dir",
     "expected a path, got an integer"),
    ("accounts missing", {"top": {"accounts": DELETE}}, "accounts", "at least one [[accounts]]"),
    ("accounts empty", {"top": {"accounts": []}}, "accounts", "at least one [[accounts]]"),
    ("accounts as a table", {"top": {"accounts": {"name": "home"}}}, "accounts",
     "expected an array of tables ([[accounts]]), got a table"),
    ("unknown section", {"top": {"mqqt": {}}}, "mqqt", "did you mean 'mqtt'?"),
    ("account name upper case", {"account": {"name": "Home Mail"}}, "accounts[0].name",
     "e.g. 'home_mail'"),
    ("account name reserved", {"account": {"name": "bridge"}}, "accounts[0].name", "reserved"),
    ("account name missing", {"account": {"name": DELETE}}, "accounts[0].name", "required"),
    ("mailbox not an address", {"account": {"mailbox": "me"}}, "accounts[0].mailbox",
     "not an e-mail address"),
    ("auth unknown", {"account": {"auth": "secret"}}, "accounts[0].auth",
     "did you mean 'client_secret'?"),
    ("cloud unknown", {"account": {"cloud": "germany"}}, "accounts[0].cloud", "'usgov-dod'"),
    ("tenant missing", {"account": {"tenant_id": DELETE}}, "accounts[0].tenant_id", "required"),
    ("tenant common for app-only", {"account": {"tenant_id": "common"}}, "accounts[0].tenant_id",
     "needs your directory (tenant) ID"),
    ("tenant url", {"account": {"tenant_id": "https://x/y"}}, "accounts[0].tenant_id",
     "directory (tenant) ID"),
    ("client id missing", {"account": {"client_id": DELETE}}, "accounts[0].client_id", "required"),
    ("client id empty", {"account": {"client_id": ""}}, "accounts[0].client_id", "not be empty"),
    ("authority with tenant", {"account": {"authority": f"https://login.microsoftonline.com/{TENANT}"}},
     "accounts[0].authority", "put the tenant in tenant_id"),
    ("authority over http", {"account": {"authority": "http://login.example"}},
     "accounts[0].authority", "https://"),
    ("imap host is a url", {"account": {"imap_host": "https://outlook.office365.com"}},
     "accounts[0].imap_host", "without the scheme"),
    ("graph scope", {"account": {"scope": "https://graph.microsoft.com/.default"}},
     "accounts[0].scope", "not Microsoft Graph"),
    ("delegated scope for app-only", {"account": {"scope": "https://x/IMAP.AccessAsUser.All"}},
     "accounts[0].scope", "'/.default'"),
    ("two scopes", {"account": {"auth": "device_code", "client_secret": DELETE,
                                "scope": "a offline_access"}}, "accounts[0].scope", "single scope"),
    ("imap security unknown", {"account": {"imap_security": "ssl"}}, "accounts[0].imap_security",
     "'tls', 'starttls'"),
    ("imap port zero", {"account": {"imap_port": 0}}, "accounts[0].imap_port", "between 1"),
    ("poll interval zero", {"account": {"poll_interval": 0}}, "accounts[0].poll_interval",
     "greater than 0"),
    ("poll interval infinite", {"account": {"poll_interval": float("inf")}},
     "accounts[0].poll_interval", "greater than 0"),
    ("poll interval boolean", {"account": {"poll_interval": True}}, "accounts[0].poll_interval",
     "expected a number (seconds), got a boolean"),
    ("idle renew too long", {"account": {"idle_renew": 601}}, "accounts[0].idle_renew",
     "at most 600"),
    ("idle renew zero", {"account": {"idle_renew": 0}}, "accounts[0].idle_renew", "greater than 0"),
    ("idle as string", {"account": {"idle": "on"}}, "accounts[0].idle", "expected a boolean"),
    ("command misspelt", {"account": {"commands": ["mark_raed"]}}, "accounts[0].commands[0]",
     "did you mean 'mark_read'?"),
    ("commands as string", {"account": {"commands": "mark_read"}}, "accounts[0].commands",
     "expected an array of strings, got a string"),
    ("command not a string", {"account": {"commands": ["flag", 1]}}, "accounts[0].commands[1]",
     "expected a string, got an integer"),
    ("token cache without device code", {"account": {"token_cache": "t.json"}},
     "accounts[0].token_cache", 'only used with auth = "device_code"'),
    ("secret missing", {"account": {"client_secret": DELETE}}, "accounts[0].client_secret",
     "required with auth"),
    ("secret empty", {"account": {"client_secret": ""}}, "accounts[0].client_secret",
     "must not be empty"),
    ("secret inline and file", {"account": {"client_secret_file": "secret.txt"}},
     "accounts[0].client_secret", "not both"),
    ("secret file missing", {"account": {"client_secret": DELETE, "client_secret_file": "nope"}},
     "accounts[0].client_secret_file", "does not exist"),
    ("secret as number", {"account": {"client_secret": 12345}}, "accounts[0].client_secret",
     "expected a string, got an integer"),
    ("certificate with secret auth", {"account": {"certificate_file": "c.crt"}},
     "accounts[0].certificate_file", "not used with auth = \"client_secret\""),
    ("secret with device code", {"account": {"auth": "device_code"}}, "accounts[0].client_secret",
     "not used with auth = \"device_code\""),
    ("passphrase with device code", {"account": {"auth": "device_code", "client_secret": DELETE,
                                                 "private_key_passphrase": "x"}},
     "accounts[0].private_key_passphrase", "not used"),
    ("account ca_file missing", {"account": {"ca_file": "ca.pem"}}, "accounts[0].ca_file",
     "does not exist"),
    ("folders empty", {"account": {"folders": []}}, "accounts[0].folders", "at least one"),
    ("folders as table", {"account": {"folders": {"name": "INBOX"}}}, "accounts[0].folders",
     "expected an array of tables ([[accounts.folders]])"),
    ("folder name missing", {"folders": [{"topic": "x"}]}, "accounts[0].folders[0].name",
     "required"),
    ("folder topic with slash", {"folders": [{"name": "INBOX", "topic": "in/box"}]},
     "accounts[0].folders[0].topic", "no '/', '+' or '#'"),
    ("folder topic wildcard", {"folders": [{"name": "INBOX", "topic": "+"}]},
     "accounts[0].folders[0].topic", "topic segment"),
    ("folder topic reserved", {"folders": [{"name": "Status"}]}, "accounts[0].folders[0].topic",
     "reserved"),
    ("folder name without slug", {"folders": [{"name": "Входящие"}]},
     "accounts[0].folders[0].topic", "set topic"),
    ("backfill negative", {"folders": [{"name": "INBOX", "backfill": -1}]},
     "accounts[0].folders[0].backfill", "at least 0"),
    ("preview negative", {"folders": [{"name": "INBOX", "preview_chars": -1}]},
     "accounts[0].folders[0].preview_chars", "at least 0"),
    ("attachment size negative", {"folders": [{"name": "INBOX", "max_attachment_bytes": -1}]},
     "accounts[0].folders[0].max_attachment_bytes", "at least 0"),
    ("attachment type not a glob", {"folders": [{"name": "INBOX", "attachment_types": ["pdf"]}]},
     "accounts[0].folders[0].attachment_types[0]", "content type glob"),
    ("attachment types empty", {"folders": [{"name": "INBOX", "attachment_types": []}]},
     "accounts[0].folders[0].attachment_types", "attachments = false"),
    ("folder key misspelt", {"folders": [{"name": "INBOX", "topik": "x"}]},
     "accounts[0].folders[0].topik", "did you mean 'topic'?"),
    ("account key below folders", {"folders": [{"name": "INBOX", "idle": False}]},
     "accounts[0].folders[0].idle", "move it above the account's first [[accounts.folders]]"),
    ("unknown key without a match", {"mqtt": {"zzz": 1}}, "mqtt.zzz", "unknown key; remove it"),
    ("key in capitals", {"mqtt": {"PORT": 1883}}, "mqtt.PORT", "did you mean 'port'?"),
]


@pytest.mark.parametrize(("changes", "key", "words"),
                         [pytest.param(c, k, w, id=i) for i, c, k, w in CASES])
def test_a_mistake_is_one_problem_naming_its_key(
    changes: dict[str, Any], key: str, words: str, source: Path
) -> None:
    problems = problems_of(build(**changes), source)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{key}: "), problems
    assert words in problems[0]


@pytest.mark.parametrize(
    ("changes", "key", "words"),
    [
        pytest.param({"top": {"accounts": [dict(ACCOUNT), dict(ACCOUNT)]}}, "accounts[1].name",
                     "'home' is already the name of accounts[0]", id="duplicate account"),
        pytest.param({"folders": [{"name": "INBOX"}, {"name": "inbox"}]},
                     "accounts[0].folders[1].name", "already watched by accounts[0].folders[0]",
                     id="INBOX twice, case-insensitively"),
        pytest.param({"folders": [{"name": "INBOX/Receipts"}, {"name": "Inbox/receipts"}]},
                     "accounts[0].folders[1].name", "already watched by accounts[0].folders[0]",
                     id="a folder below INBOX twice, case-insensitively"),
        pytest.param({"folders": [{"name": "INBOX/Receipts"}, {"name": "INBOX.Receipts"}]},
                     "accounts[0].folders[1].topic", "'inbox_receipts' is already the topic",
                     id="two folders slug to one topic"),
        pytest.param({"folders": [{"name": "A", "topic": "x"}, {"name": "B", "topic": "x"}]},
                     "accounts[0].folders[1].topic", "already the topic", id="topic twice"),
    ],
)
def test_names_and_topics_must_be_unique(
    changes: dict[str, Any], key: str, words: str, source: Path
) -> None:
    problems = problems_of(build(**changes), source)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{key}: ") and words in problems[0]


def test_folder_topics_may_repeat_across_accounts(source: Path) -> None:
    other = dict(ACCOUNT, name="work")
    config = parse_config(build(top={"accounts": [dict(ACCOUNT), other]}), source=source)
    assert [a.folders[0].topic for a in config.accounts] == ["inbox", "inbox"]


def test_every_problem_is_reported_at_once(source: Path) -> None:
    data = build(
        mqtt={"host": DELETE, "port": "x", "qos": 9, "hots": "b"},
        account={"auth": "client_secret", "client_secret": DELETE, "idle_renew": 900},
        folders=[{"name": "INBOX", "topic": "a/b"}, {"name": "Sent", "backfill": -5}],
        top={"homeassistant": {"prefix": "/ha/"}},
    )
    data["accounts"].append({"name": "Bad Name"})
    problems = problems_of(data, source)
    keys = [p.split(": ", 1)[0] for p in problems]
    assert set(keys) >= {
        "mqtt.host", "mqtt.port", "mqtt.qos", "mqtt.hots", "homeassistant.prefix",
        "accounts[0].client_secret", "accounts[0].idle_renew", "accounts[0].folders[0].topic",
        "accounts[0].folders[1].backfill", "accounts[1].name", "accounts[1].mailbox",
        "accounts[1].tenant_id", "accounts[1].client_id", "accounts[1].client_secret",
    }
    assert "hint: did you mean 'host'?" not in problems  # the hint is part of the message
    assert any(p.startswith("mqtt.hots: unknown key; did you mean 'host'?") for p in problems)
    assert len(keys) == len(set(keys)), "no key is reported twice"


@pytest.mark.parametrize(
    ("changes", "key", "suggestion"),
    [
        ({"mqtt": {"hots": "x"}}, "mqtt.hots", "host"),
        ({"mqtt": {"basetopic": "x"}}, "mqtt.basetopic", "base_topic"),
        ({"account": {"clientsecret": "x"}}, "accounts[0].clientsecret", "client_secret"),
        ({"account": {"folder": []}}, "accounts[0].folder", "folders"),
        ({"top": {"homeassistent": {}}}, "homeassistent", "homeassistant"),
        ({"folders": [{"name": "INBOX", "include_bodies": True}]},
         "accounts[0].folders[0].include_bodies", "include_body"),
    ],
)
def test_unknown_keys_suggest_the_closest_key(
    changes: dict[str, Any], key: str, suggestion: str, source: Path
) -> None:
    assert problems_of(build(**changes), source) == [
        f"{key}: unknown key; did you mean {suggestion!r}?"
    ]


TOML_VALUES = st.recursive(
    st.booleans() | st.integers() | st.floats()
    | st.text(max_size=12) | st.sampled_from(["", "x", "INBOX", "5", "tls", "device_code"])
    | st.dates(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=8,
)


@settings(max_examples=examples(300), deadline=None)
@given(
    mqtt=st.dictionaries(st.sampled_from(MQTT_KEYS), TOML_VALUES, max_size=5),
    account=st.dictionaries(st.sampled_from(ACCOUNT_KEYS), TOML_VALUES, max_size=6),
    folder=st.dictionaries(st.sampled_from(FOLDER_KEYS), TOML_VALUES, max_size=4),
)
def test_any_toml_gives_a_config_or_a_config_error(
    mqtt: dict[str, Any], account: dict[str, Any], folder: dict[str, Any]
) -> None:
    # the secrets sit in secret keys only (unless the draw replaces them)
    data = build(mqtt={"password": SECRET, **mqtt}, account=account)
    data["accounts"][0].setdefault("folders", [folder])
    try:
        parse_config(data, source=Path("/nonexistent/config.toml"), environ={})
    except ConfigError as exc:
        assert exc.problems
        assert all(re.match(r"(mqtt|accounts\[0\])[.\[]", p) for p in exc.problems), exc.problems
        assert SECRET not in str(exc)


# --- the file itself ------------------------------------------------------------------------

def test_toml_syntax_error_names_the_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[mqtt]\nhost = "b"\nclient_secret = {SECRET}\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    (problem,) = caught.value.problems
    assert problem.startswith(f"{path}: TOML syntax error at line 3, column ")
    assert SECRET not in problem


@pytest.mark.parametrize(
    ("make", "words"),
    [
        pytest.param(lambda p: None, "file not found; create it with 'outlook2mqtt init' or "
                     "pass -c PATH", id="missing"),
        pytest.param(lambda p: p.mkdir(), "is a directory", id="directory"),
        pytest.param(lambda p: p.write_bytes(b"a = '\xff'"), "not UTF-8 text", id="not utf-8"),
    ],
)
def test_an_unusable_config_file_is_one_problem(make: Any, words: str, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    make(path)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    (problem,) = caught.value.problems
    assert problem.startswith(f"{path}: ") and words in problem


def test_an_unreadable_file_says_permission_denied(
    tmp_path: Path, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.toml"
    path.write_text("")
    secret_file = tmp_path / "secret"
    real_read = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self in (path, secret_file):  # chmod 0 does not stop root, so pretend
            raise PermissionError(13, "Permission denied")
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.problems == [
        f"{path}: cannot read it: permission denied; check its owner and mode"]
    problems = problems_of(build(account={"client_secret": DELETE,
                                          "client_secret_file": "secret"}), source)
    assert problems == [f"accounts[0].client_secret_file: cannot read {secret_file}: "
                        "permission denied; check its owner and mode"]


def test_relative_config_path_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               ) -> None:
    (tmp_path / "config.toml").write_text('[mqtt]\nhost = "b"\n[[accounts]]\nname = "home"\n'
                                          f'mailbox = "a@b.c"\ntenant_id = "{TENANT}"\n'
                                          f'client_id = "{CLIENT}"\nclient_secret = "x"\n')
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("config.toml"), environ={})
    assert config.source == tmp_path / "config.toml"
    assert config.bridge.state_dir == tmp_path / "state"


# --- secrets --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("account", "files", "creds"),
    [
        pytest.param({}, {}, {}, id="inline"),
        pytest.param({"client_secret": DELETE, "client_secret_file": "secret.txt"},
                     {"secret.txt": f"\n  {SECRET} \n"}, {}, id="file, stripped"),
        pytest.param({"client_secret": DELETE}, {}, {"home.client_secret": SECRET + "\n"},
                     id="credentials directory, per account"),
        pytest.param({"client_secret": DELETE}, {}, {"client_secret": SECRET},
                     id="credentials directory, shared"),
        pytest.param({"client_secret": DELETE}, {},
                     {"home.client_secret": SECRET, "client_secret": "the shared one"},
                     id="per-account credential wins"),
        pytest.param({}, {}, {"home.client_secret": "ignored"},
                     id="inline wins over the credentials directory"),
    ],
)
def test_client_secret_sources(account: dict[str, Any], files: dict[str, str],
                               creds: dict[str, str], source: Path) -> None:
    for name, text in files.items():
        (source.parent / name).write_text(text)
    creds_dir = source.parent / "creds"
    creds_dir.mkdir()
    for name, text in creds.items():
        (creds_dir / name).write_text(text)
    config = parse_config(build(account=account), source=source,
                          environ={"CREDENTIALS_DIRECTORY": str(creds_dir)})
    assert config.accounts[0].client_secret == SECRET


@pytest.mark.parametrize(
    ("mqtt", "creds"),
    [
        pytest.param({"password": SECRET}, {}, id="inline"),
        pytest.param({"password_file": "mqtt.pw"}, {}, id="file"),
        pytest.param({}, {"mqtt.password": SECRET}, id="credential mqtt.password"),
        pytest.param({}, {"mqtt_password": SECRET}, id="credential mqtt_password"),
    ],
)
def test_mqtt_password_sources(mqtt: dict[str, Any], creds: dict[str, str],
                               source: Path) -> None:
    (source.parent / "mqtt.pw").write_text(SECRET + "\n")
    creds_dir = source.parent / "creds"
    creds_dir.mkdir()
    for name, text in creds.items():
        (creds_dir / name).write_text(text)
    config = parse_config(build(mqtt={"username": "bridge", **mqtt}), source=source,
                          environ={"CREDENTIALS_DIRECTORY": str(creds_dir)})
    assert config.mqtt.password == SECRET


def test_credentials_directory_is_read_from_the_process_environment_by_default(
    source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (source.parent / "home.client_secret").write_text(SECRET)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(source.parent))
    config = parse_config(build(account={"client_secret": DELETE}), source=source)
    assert config.accounts[0].client_secret == SECRET


def test_empty_secret_file_is_a_problem(source: Path) -> None:
    (source.parent / "secret.txt").write_text(" \n")
    problems = problems_of(build(account={"client_secret": DELETE,
                                          "client_secret_file": "secret.txt"}), source)
    assert problems == [f"accounts[0].client_secret_file: {source.parent / 'secret.txt'} is "
                        "empty; put the secret in it"]


def test_secrets_never_appear_in_problems_or_repr(pki: Pki, source: Path) -> None:
    (source.parent / "pw").write_text(SECRET)
    broken = build(
        mqtt={"password": SECRET, "password_file": "pw", "port": SECRET},
        account=cert_account(pki, client_secret=SECRET, private_key_file=str(pki.encrypted_key),
                             private_key_passphrase=SECRET, tenant_id=SECRET),
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(broken, source=source, environ={})
    assert len(caught.value.problems) >= 4
    assert SECRET not in str(caught.value)
    assert SECRET not in repr(caught.value.problems)

    good = build(mqtt={"username": "u", "password": SECRET},
                 account=cert_account(pki, private_key_file=str(pki.encrypted_key),
                                      private_key_passphrase=PASSPHRASE))
    config = parse_config(good, source=source, environ={})
    assert SECRET not in repr(config) and PASSPHRASE not in repr(config)
    assert set(config.secret_values()) == {SECRET, PASSPHRASE}
    config = parse_config(build(), source=source, environ={})
    assert SECRET not in repr(config) and SECRET not in str(config)


# --- clouds ---------------------------------------------------------------------------------

@pytest.mark.parametrize("cloud", list(CLOUDS))
def test_cloud_presets_set_authority_imap_host_and_scope(cloud: str, source: Path) -> None:
    account = parse_config(build(account={"cloud": cloud}), source=source).accounts[0]
    authority, imap_host = CLOUDS[cloud]
    assert (account.authority, account.imap_host) == (authority, imap_host)
    assert account.scope == f"https://{imap_host}/.default"
    assert account.authority_url == f"{authority}/{TENANT}"


@pytest.mark.parametrize(
    ("overrides", "authority", "imap_host", "scope"),
    [
        pytest.param({"authority": "https://login.example:8443/"}, "https://login.example:8443",
                     "outlook.office365.us", "https://outlook.office365.us/.default",
                     id="authority only"),
        pytest.param({"imap_host": "127.0.0.1"}, "https://login.microsoftonline.us",
                     "127.0.0.1", "https://outlook.office365.us/.default",
                     id="imap host override keeps the cloud's scope"),
        pytest.param({"imap_host": "imap.test", "scope": "api://test/.default"},
                     "https://login.microsoftonline.us", "imap.test", "api://test/.default",
                     id="explicit scope wins"),
    ],
)
def test_cloud_values_can_be_overridden_one_by_one(
    overrides: dict[str, str], authority: str, imap_host: str, scope: str, source: Path
) -> None:
    account = parse_config(build(account={"cloud": "usgov", **overrides}),
                           source=source).accounts[0]
    assert (account.authority, account.imap_host, account.scope) == (authority, imap_host, scope)


def test_device_code_defaults_to_consumers_delegated_scope_and_a_token_cache(
    source: Path,
) -> None:
    config = parse_config(build(account={"auth": "device_code", "client_secret": DELETE,
                                         "tenant_id": DELETE}), source=source)
    account = config.accounts[0]
    assert account.tenant_id == "consumers"
    assert account.scope == "https://outlook.office.com/IMAP.AccessAsUser.All"
    assert account.token_cache == config.bridge.state_dir / "home.token-cache.json"
    assert account.client_secret is None


def test_device_code_in_another_cloud_asks_that_cloud_for_imap(source: Path) -> None:
    account = parse_config(build(account={"auth": "device_code", "client_secret": DELETE,
                                          "cloud": "china", "token_cache": "cache.json"}),
                           source=source).accounts[0]
    assert account.scope == "https://partner.outlook.cn/IMAP.AccessAsUser.All"
    assert account.token_cache == source.parent / "cache.json"


# --- paths ----------------------------------------------------------------------------------

def test_relative_paths_start_at_the_config_files_directory(pki: Pki, source: Path) -> None:
    (source.parent / "ca.pem").write_bytes(pki.ca.read_bytes())
    (source.parent / "secret").write_text(SECRET)
    data = build(mqtt={"tls": True, "ca_file": "ca.pem"},
                 account={"client_secret": DELETE, "client_secret_file": "secret",
                          "ca_file": "./ca.pem"},
                 top={"bridge": {"state_dir": "var/state"}})
    config = parse_config(data, source=source)
    assert config.mqtt.ca_file == source.parent / "ca.pem"
    assert config.accounts[0].ca_file == source.parent / "ca.pem"
    assert config.bridge.state_dir == source.parent / "var" / "state"
    assert config.accounts[0].client_secret == SECRET


def test_without_a_source_relative_paths_start_at_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = parse_config(build(top={"bridge": {"state_dir": "s"}}), environ={})
    assert config.bridge.state_dir == tmp_path / "s"
    assert config.source is None


def test_ca_file_must_hold_a_pem_certificate(pki: Pki, source: Path) -> None:
    problems = problems_of(build(account={"ca_file": str(pki.key)}), source)
    assert problems == [f"accounts[0].ca_file: {pki.key} holds no PEM certificate "
                        "(expected '-----BEGIN CERTIFICATE-----')"]


# --- certificates ---------------------------------------------------------------------------

def test_certificate_account_with_a_matching_key_is_valid(pki: Pki, source: Path) -> None:
    account = parse_config(build(account=cert_account(pki)), source=source).accounts[0]
    assert (account.certificate_file, account.private_key_file) == (pki.cert, pki.key)
    assert account.client_secret is None and account.private_key_passphrase is None


@pytest.mark.parametrize("how", ["inline", "file", "credential"])
def test_encrypted_key_opens_with_the_right_passphrase(how: str, pki: Pki, source: Path) -> None:
    (source.parent / "home.private_key_passphrase").write_text(PASSPHRASE + "\n")
    given = {"inline": {"private_key_passphrase": PASSPHRASE},
             "file": {"private_key_passphrase_file": "home.private_key_passphrase"},
             "credential": {}}[how]
    account = parse_config(
        build(account=cert_account(pki, private_key_file=str(pki.encrypted_key), **given)),
        source=source, environ={"CREDENTIALS_DIRECTORY": str(source.parent)},
    ).accounts[0]
    assert account.private_key_passphrase == PASSPHRASE


def test_private_key_can_come_from_the_credentials_directory(pki: Pki, source: Path) -> None:
    creds = source.parent / "creds"
    creds.mkdir()
    (creds / "home.private_key").write_bytes(pki.key.read_bytes())
    account = parse_config(build(account=cert_account(pki, private_key_file=DELETE)),
                           source=source, environ={"CREDENTIALS_DIRECTORY": str(creds)}
                           ).accounts[0]
    assert account.private_key_file == creds / "home.private_key"


CERT_CASES = [
    ("wrong passphrase", {"private_key_file": "encrypted_key", "private_key_passphrase": "wrong"},
     "accounts[0].private_key_passphrase", "wrong passphrase (given inline): "),
    ("missing passphrase", {"private_key_file": "encrypted_key"},
     "accounts[0].private_key_passphrase",
     "is encrypted; set private_key_passphrase or private_key_passphrase_file"),
    ("passphrase for a plain key", {"private_key_passphrase": "x"},
     "accounts[0].private_key_passphrase", "is not encrypted; remove the passphrase"),
    ("key of another certificate", {"private_key_file": "other_key"},
     "accounts[0].private_key_file", "does not belong to the certificate"),
    ("not an RSA key", {"certificate_file": "ec_cert", "private_key_file": "ec_key"},
     "accounts[0].private_key_file", "not an RSA key"),
    ("DER certificate", {"certificate_file": "der_cert"}, "accounts[0].certificate_file",
     "not a PEM X.509 certificate (it looks like DER"),
    ("key file is a certificate", {"private_key_file": "cert"}, "accounts[0].private_key_file",
     "not a PEM private key"),
    ("certificate file missing", {"certificate_file": "nowhere.crt"},
     "accounts[0].certificate_file", "does not exist"),
    ("key file missing", {"private_key_file": "nowhere.key"}, "accounts[0].private_key_file",
     "does not exist"),
    ("certificate not given", {"certificate_file": DELETE}, "accounts[0].certificate_file",
     "required with auth"),
    ("key not given", {"private_key_file": DELETE}, "accounts[0].private_key_file",
     "required with auth"),
    ("secret with certificate auth", {"client_secret": SECRET}, "accounts[0].client_secret",
     "not used with auth = \"client_certificate\""),
    ("token cache with certificate auth", {"token_cache": "t.json"}, "accounts[0].token_cache",
     "only used with"),
]


@pytest.mark.parametrize(("changes", "key", "words"),
                         [pytest.param(c, k, w, id=i) for i, c, k, w in CERT_CASES])
def test_certificate_problems_say_which_file_is_wrong(
    changes: dict[str, Any], key: str, words: str, pki: Pki, source: Path
) -> None:
    fields = set(Pki.__dataclass_fields__)
    changes = {k: str(getattr(pki, v)) if isinstance(v, str) and v in fields else v
               for k, v in changes.items()}
    problems = problems_of(build(account=cert_account(pki, **changes)), source)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{key}: ") and words in problems[0]
    assert SECRET not in problems[0]


def test_mqtt_client_certificate_is_checked(pki: Pki, source: Path) -> None:
    good = build(mqtt={"tls": True, "cert_file": str(pki.cert), "key_file": str(pki.key)})
    assert parse_config(good, source=source).mqtt.key_file == pki.key
    encrypted = build(mqtt={"tls": True, "cert_file": str(pki.cert),
                            "key_file": str(pki.encrypted_key)})
    assert problems_of(encrypted, source) == [
        f"mqtt.key_file: the private key {pki.encrypted_key} is encrypted; "
        "decrypt it (openssl pkey)"]


# --- folders, attachments and commands ------------------------------------------------------

@pytest.mark.parametrize(
    ("name", "stored", "topic"),
    [
        ("INBOX", "INBOX", "inbox"),
        ("inbox", "INBOX", "inbox"),
        ("INBOX/Receipts", "INBOX/Receipts", "inbox_receipts"),
        ("Sent Items", "Sent Items", "sent_items"),
        ("Archive/2024 \u2013 Q1 ", "Archive/2024 \u2013 Q1 ", "archive_2024_q1"),
    ],
)
def test_folder_topic_defaults_to_the_slug_of_its_name(
    name: str, stored: str, topic: str, source: Path
) -> None:
    folder = parse_config(build(folders=[{"name": name}]), source=source).accounts[0].folders[0]
    assert (folder.name, folder.topic) == (stored, topic)


def test_folder_keys_are_read(source: Path) -> None:
    folder = parse_config(build(folders=[{
        "name": "INBOX/Receipts", "topic": "receipts", "backfill": 5, "attachments": False,
        "max_attachment_bytes": 0, "inline_attachments": True,
        "attachment_types": ["Application/PDF", "!image/gif"], "include_body": True,
        "preview_chars": 0,
    }]), source=source).accounts[0].folders[0]
    assert folder == FolderConfig(
        name="INBOX/Receipts", topic="receipts", backfill=5, attachments=False,
        max_attachment_bytes=0, inline_attachments=True,
        attachment_types=("application/pdf", "!image/gif"), include_body=True, preview_chars=0)


def test_delete_is_allowed_only_when_listed(source: Path) -> None:
    account = parse_config(build(account={"commands": [*ALL_COMMANDS, "flag"]}),
                           source=source).accounts[0]
    assert account.commands == ALL_COMMANDS  # duplicates dropped, order kept
    assert parse_config(build(account={"commands": []}), source=source).accounts[0].commands == ()


def test_accounts_are_found_by_name(source: Path) -> None:
    config = parse_config(build(top={"accounts": [dict(ACCOUNT), dict(ACCOUNT, name="work")]}),
                          source=source)
    assert isinstance(config, Config)
    found = config.account("work")
    assert found is not None and found.name == "work"
    assert config.account("nope") is None
    assert found.folder("inbox") == found.folders[0]


# --- where the config file is looked for ----------------------------------------------------

def test_config_search_path_follows_the_contract(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"OUTLOOK2MQTT_CONFIG": "/srv/o2m.toml"}
    assert config_search_path("my.toml", env) == Path("my.toml")
    assert config_search_path(None, env) == Path("/srv/o2m.toml")
    assert config_search_path(None, {}) == Path("/etc/outlook2mqtt/config.toml")
    (tmp_path / "config.toml").write_text("")
    assert config_search_path(None, {}) == Path("config.toml")
    assert config_search_path(None, env) == Path("/srv/o2m.toml")
