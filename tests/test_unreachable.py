"""A server that cannot be reached is reported once, with its reason, and nothing is claimed."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rig.bridgecfg import rig_config, write_config
from rig.pki import TestPKI
from tests.bridgeproc import BridgeProcess, run_cli


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_an_unreachable_broker_is_logged_with_its_reason_and_online_is_not_claimed(
    make_bridge: Callable[..., BridgeProcess], secret_credential: dict[str, object],
) -> None:
    port = closed_port()
    bridge = make_bridge(secret_credential, mqtt_port=port).start()

    log = bridge.wait_log("all folders ready")

    assert bridge.stop() == 0
    reconnect = [line for line in log.splitlines() if "reconnecting in" in line]
    assert reconnect and f"cannot connect to 127.0.0.1:{port}: Connection refused" in reconnect[0]
    assert "WARNING" in reconnect[0]
    ready = next(line for line in log.splitlines() if "all folders ready" in line)
    assert "no MQTT broker (cannot connect" in ready
    assert "bridge online" not in log


@pytest.fixture
def unreachable(tmp_path: Path, pki: TestPKI) -> dict[str, Any]:
    """A config whose identity platform, IMAP server and broker all refuse connections."""
    port = closed_port()
    data = rig_config(authority=f"https://127.0.0.1:{port}", ca_file=pki.ca_file,
                      imap_port=port, mqtt_port=port, tenant_id="contoso.onmicrosoft.com",
                      client_id="00001111-aaaa-2222-bbbb-3333cccc4444",
                      mailbox="me@contoso.com", state_dir=tmp_path / "state",
                      secret="s3cr3t-value-that-is-long-enough-0123456789")
    # without a ca_file MSAL uses its own HTTP session, the one that retries and warns
    del data["accounts"][0]["ca_file"]
    return data


@pytest.fixture
def unreachable_config(tmp_path: Path, unreachable: dict[str, Any]) -> Path:
    return write_config(tmp_path / "unreachable.toml", unreachable)


@pytest.mark.parametrize("command", ["check", "token"])
def test_retries_of_the_http_library_do_not_flood_the_output(
    unreachable_config: Path, command: str
) -> None:
    done = run_cli(command, "-c", str(unreachable_config))

    assert done.returncode == 1
    output = done.stdout + done.stderr
    assert "cannot reach the identity platform" in output
    assert "Retrying" not in output and "urllib3" not in output


def test_at_debug_level_the_retries_are_still_shown(unreachable_config: Path) -> None:
    done = run_cli("token", "-c", str(unreachable_config), "--log-level", "debug")

    assert "Retrying" in done.stderr


def test_run_logs_an_unreachable_identity_platform_without_the_retries(
    tmp_path: Path, unreachable: dict[str, Any], bridges: list[BridgeProcess],
) -> None:
    bridge = BridgeProcess(tmp_path, unreachable)
    bridges.append(bridge)
    bridge.start("--log-level", "info")  # after the helper's debug: the last one counts

    log = bridge.wait_log("cannot reach the identity platform")

    assert bridge.stop() == 0
    assert "Retrying" not in log and "urllib3" not in log
