"""Bridge configs that point at the rig's servers (for tests and the demo)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tomli_w


def rig_config(
    *,
    authority: str,
    ca_file: Path,
    imap_port: int,
    mqtt_port: int,
    tenant_id: str,
    client_id: str,
    mailbox: str,
    state_dir: Path,
    secret: str | None = None,
    certificate_file: Path | None = None,
    private_key_file: Path | None = None,
    folders: Sequence[dict[str, Any]] = ({"name": "INBOX"},),
    base_topic: str = "outlook2mqtt",
    account: str = "home",
    poll_interval: float = 1,
    idle: bool = False,
    protocol: str = "5",
    extra_account: dict[str, Any] | None = None,
    discovery: bool = False,
) -> dict[str, Any]:
    """A config dict for one account on the rig (IMAP over implicit TLS on loopback)."""
    acct: dict[str, Any] = {
        "name": account,
        "mailbox": mailbox,
        "tenant_id": tenant_id,
        "client_id": client_id,
        "authority": authority,
        "imap_host": "127.0.0.1",
        "imap_port": imap_port,
        "ca_file": str(ca_file),
        "poll_interval": poll_interval,
        "idle": idle,
        "folders": [dict(f) for f in folders],
    }
    if secret is not None:
        acct["auth"] = "client_secret"
        acct["client_secret"] = secret
    else:
        acct["auth"] = "client_certificate"
        acct["certificate_file"] = str(certificate_file)
        acct["private_key_file"] = str(private_key_file)
    acct.update(extra_account or {})
    return {
        "mqtt": {
            "host": "127.0.0.1",
            "port": mqtt_port,
            "base_topic": base_topic,
            "client_id": f"outlook2mqtt-{base_topic}",
            "protocol": protocol,
        },
        "homeassistant": {"discovery": discovery},
        "bridge": {"state_dir": str(state_dir)},
        "accounts": [acct],
    }


def write_config(path: Path, data: dict[str, Any]) -> Path:
    """Write `data` as TOML, mode 0600 (it holds a secret)."""
    path.write_bytes(tomli_w.dumps(data).encode())
    path.chmod(0o600)
    return path
