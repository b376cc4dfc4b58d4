"""What a service install writes besides the unit: the service's config and credentials.

The config the service reads has every path absolute, no `state_dir` (the unit's
StateDirectory= sets $STATE_DIRECTORY) and, for the system service, no secret: secrets and
private keys go to the credential store (root, 0600) and reach the service through
LoadCredential=; certificates and CA files it must read are copied beside the config (0644).
"""

from __future__ import annotations

import copy
import os
import pwd
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from bridge.config.model import Config
from bridge.errors import ConfigError
from bridge.util.files import write_atomic

PREFIX = "outlook2mqtt."  # credential store files: outlook2mqtt.<credential name>
ACCOUNT_SECRETS = ("client_secret", "client_secret_file", "private_key_file",
                   "private_key_passphrase", "private_key_passphrase_file")
MQTT_SECRETS = ("password", "password_file")
PATH_KEYS = ("certificate_file", "private_key_file", "client_secret_file",
             "private_key_passphrase_file", "ca_file", "cert_file", "key_file",
             "password_file", "token_cache")
# files the service must read, copied beside its config: (key, name in the config dir)
ACCOUNT_PUBLIC = (("certificate_file", "{}.crt"), ("ca_file", "{}.ca.pem"))
MQTT_PUBLIC = (("ca_file", "mqtt.ca.pem"), ("cert_file", "mqtt.crt"))

Loader = Callable[..., Config]


@dataclass
class Plan:
    """The service's config, its credentials, and the files to copy or move."""

    source: Path
    data: dict[str, Any]
    secrets: dict[str, bytes] = field(default_factory=dict)  # credential name -> content
    copies: dict[Path, Path] = field(default_factory=dict)  # public file -> config dir
    moved: list[Path] = field(default_factory=list)  # secret files, removed once stored
    inline: bool = False  # the source config holds a secret inline


@contextmanager
def stored_credentials(credstore: Path | None, prefix: str = PREFIX
                       ) -> Iterator[dict[str, str]]:
    """An environment whose $CREDENTIALS_DIRECTORY holds what the store has for us, so a
    config installed before (its secrets already moved) loads again."""
    with tempfile.TemporaryDirectory(prefix="outlook2mqtt-creds-") as tmp:
        if credstore is not None and credstore.is_dir():
            for path in credstore.glob(prefix + "*"):
                shutil.copyfile(path, Path(tmp) / path.name.removeprefix(prefix))
        yield {"CREDENTIALS_DIRECTORY": tmp}


def plan(source: Path, config_dir: Path, credstore: Path | None, load: Loader, *,
         instance: str | None = None, prefix: str = PREFIX) -> Plan:
    """Read and validate `source` (ConfigError if invalid) and plan the service's files:
    those the service reads are copied to `config_dir`, secrets stored as `prefix` + name.
    With `instance` the config is that instance's (its `bridge.instance`, when set, must
    be the same)."""
    with stored_credentials(credstore, prefix) as environ:
        config = load(source, environ=environ)
        raw = tomllib.loads(source.read_text())
        secrets = _secrets(config) if credstore is not None else {}
    if instance and config.bridge.instance not in (None, instance):
        raise ConfigError([f"bridge.instance: {config.bridge.instance!r} is not the "
                           f"--instance {instance!r}; make them the same"])
    result = Plan(source, copy.deepcopy(raw), secrets)
    bridge = result.data.get("bridge", {})
    bridge.pop("state_dir", None)  # $STATE_DIRECTORY from the unit
    if instance:
        bridge["instance"] = instance
    if bridge:
        result.data["bridge"] = bridge
    else:
        result.data.pop("bridge", None)
    tables: list[tuple[dict[str, Any], tuple[str, ...], tuple[tuple[str, str], ...], str]] = [
        (result.data.setdefault("mqtt", {}), MQTT_SECRETS, MQTT_PUBLIC, "")]
    tables += [(t, ACCOUNT_SECRETS, ACCOUNT_PUBLIC, a.name)
               for t, a in zip(result.data.get("accounts", []), config.accounts, strict=True)]
    for table, secret_keys, public, name in tables:
        _absolute(table, source.parent)
        if credstore is None:
            continue
        for key in secret_keys:
            value = table.pop(key, None)
            if value is not None and key.endswith("_file"):
                result.moved.append(Path(value))
            result.inline |= value is not None and not key.endswith("_file")
        for key, filename in public:
            if key in table:
                table[key] = str(_public(Path(table[key]), config_dir / filename.format(name),
                                         result.copies))
    return result


def _secrets(config: Config) -> dict[str, bytes]:
    """Credential name -> content, for every secret and private key the config holds."""
    found: dict[str, bytes] = {}
    if config.mqtt.password:
        found["mqtt.password"] = config.mqtt.password.encode()
    for account in config.accounts:
        if account.client_secret:
            found[f"{account.name}.client_secret"] = account.client_secret.encode()
        if account.private_key_passphrase:
            found[f"{account.name}.private_key_passphrase"] = (
                account.private_key_passphrase.encode())
        if account.private_key_file:
            found[f"{account.name}.private_key"] = account.private_key_file.read_bytes()
    return found


def _absolute(table: dict[str, Any], base: Path) -> None:
    for key in PATH_KEYS:
        if isinstance(table.get(key), str):
            table[key] = str(base / Path(table[key]).expanduser())


def _public(path: Path, target: Path, copies: dict[Path, Path]) -> Path:
    if path.parent == target.parent:
        return path
    copies[path] = target
    return target


def apply(p: Plan, config_path: Path, credstore: Path | None, prefix: str = PREFIX
          ) -> list[str]:
    """Write everything `p` plans; one line per thing done."""
    done: list[str] = []
    config_path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    for src, dst in p.copies.items():
        dst.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        dst.chmod(0o644)
        done.append(f"copied {src} -> {dst} (0644: the service reads it)")
    if credstore is not None and p.secrets:
        credstore.mkdir(mode=0o700, parents=True, exist_ok=True)
        credstore.chmod(0o700)
        for name, data in p.secrets.items():
            write_atomic(credstore / (prefix + name), data, 0o600)
            done.append(f"credential {name} -> {credstore / (prefix + name)} (0600)")
    write_atomic(config_path, tomli_w.dumps(p.data).encode(), 0o600)
    done.append(f"config {config_path} (0600; state in $STATE_DIRECTORY"
                + (", no secrets)" if credstore is not None else ")"))
    for path in p.moved:
        if path.is_file() and credstore not in path.parents and path != config_path:
            path.unlink()
            done.append(f"moved {path} into the credential store")
    if p.inline and p.source != config_path:
        done.append(f"note: {p.source} still holds secrets inline: delete it")
    return done


def check_as_service(program: Path, config_path: Path, secrets: Mapping[str, bytes], *,
                     user: bool) -> bool:
    """Run `check` the way the service runs: a user service as this user; the system
    service as user nobody with its credentials in a private $CREDENTIALS_DIRECTORY."""
    print(f"..    {program} check, as the service would run it:", flush=True)
    if user:
        env = {k: v for k, v in os.environ.items()
               if k not in ("OUTLOOK2MQTT_CONFIG", "CREDENTIALS_DIRECTORY", "STATE_DIRECTORY")}
        return subprocess.run([str(program), "check", "-c", str(config_path)], env=env,
                              check=False).returncode == 0
    nobody = pwd.getpwnam("nobody")
    with tempfile.TemporaryDirectory(prefix="outlook2mqtt-check-") as tmp:
        creds = Path(tmp)
        for name, data in {"config.toml": config_path.read_bytes(), **secrets}.items():
            (creds / name).write_bytes(data)
            (creds / name).chmod(0o400)
            os.chown(creds / name, nobody.pw_uid, nobody.pw_gid)
        os.chown(creds, nobody.pw_uid, nobody.pw_gid)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
               "CREDENTIALS_DIRECTORY": str(creds), "PYTHONDONTWRITEBYTECODE": "1"}
        done = subprocess.run([str(program), "check", "-c", str(creds / "config.toml")],
                              env=env, user=nobody.pw_uid, group=nobody.pw_gid,
                              extra_groups=[], umask=0o077, cwd="/", check=False)
    return done.returncode == 0
