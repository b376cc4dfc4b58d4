"""The command line: `token` shows claims but never the token; log levels; exit codes."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from bridge import __version__
from rig.bridgecfg import rig_config, write_config
from rig.dovecot import Dovecot
from rig.idp import App, IdentityPlatform
from rig.mosquitto import Mosquitto
from rig.pki import TestPKI
from tests.bridgeproc import run_cli
from tests.clitools import main, recording_tokens


@pytest.fixture
def config_file(idp: IdentityPlatform, pki: TestPKI, dovecot: Dovecot, mosquitto: Mosquitto,
                tenant: str, mailbox: str, app: App, tmp_path: Path) -> Path:
    """A working config for the rig, with a second account of the same app."""
    data = rig_config(authority=idp.authority, ca_file=pki.ca_file, imap_port=dovecot.port,
                      mqtt_port=mosquitto.port, tenant_id=tenant, client_id=app.client_id,
                      mailbox=mailbox, state_dir=tmp_path / "state", secret=app.secrets[0])
    data["accounts"].append(dict(data["accounts"][0], name="work"))
    return write_config(tmp_path / "config.toml", data)


def test_token_prints_the_claims_and_never_the_token(
    config_file: Path, idp: IdentityPlatform, app: App, tenant: str,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    with recording_tokens(idp, monkeypatch) as issued:
        assert main("token", "-c", str(config_file), "--account", "home") == 0

    out, err = capsys.readouterr()
    shown = json.loads(out)
    assert list(shown) == ["home"]
    claims = shown["home"]["claims"]
    assert claims["aud"] == "https://outlook.office365.com"
    assert claims["roles"] == ["IMAP.AccessAsApp"]
    assert claims["tid"] == tenant and claims["appid"] == app.client_id
    assert claims["oid"] == app.service_principal_id and claims["idtyp"] == "app"
    assert shown["home"]["expires"].endswith("+00:00")
    assert 3000 < shown["home"]["expires_in"] <= 3599
    assert len(issued) == 1
    assert issued[0] not in out + err
    assert not any(part in out + err for part in issued[0].split("."))  # nor any part of it
    assert "eyJ" not in out + err


def test_token_without_account_shows_every_account(
    config_file: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main("token", "-c", str(config_file)) == 0

    assert list(json.loads(capsys.readouterr().out)) == ["home", "work"]


def test_token_for_an_unknown_account_names_the_configured_ones(
    config_file: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main("token", "-c", str(config_file), "--account", "nope") == 1

    assert "no account named 'nope' (configured: home, work)" in capsys.readouterr().err


def test_token_refused_exits_1_with_the_hint(
    config_file: Path, app: App, capsys: pytest.CaptureFixture[str],
) -> None:
    app.expire_secrets()

    assert main("token", "-c", str(config_file), "--account", "home") == 1

    out, err = capsys.readouterr()
    assert out == ""
    assert "FAIL  [home] token acquired: AADSTS7000222" in err
    assert "client secret has expired" in err


def test_token_unfit_for_imap_is_shown_with_a_warning(
    config_file: Path, app: App, capsys: pytest.CaptureFixture[str],
) -> None:
    app.roles.clear()

    assert main("token", "-c", str(config_file), "--account", "home") == 0

    out, err = capsys.readouterr()
    assert "roles" not in json.loads(out)["home"]["claims"]
    assert "has no IMAP.AccessAsApp role" in err


def test_token_with_an_invalid_config_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[mqtt]\nhost = "localhost"\n')

    assert main("token", "-c", str(path)) == 2

    assert "accounts: at least one [[accounts]] table is required" in capsys.readouterr().err


def test_check_and_token_log_only_warnings_unless_asked(
    config_file: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main("token", "-c", str(config_file), "--account", "home") == 0
    assert "INFO" not in capsys.readouterr().err

    assert main("token", "-c", str(config_file), "--account", "home", "--log-level", "debug") \
        == 0
    err = capsys.readouterr().err
    assert "INFO    bridge.auth.tokens: token acquired for account home" in err
    assert "DEBUG" in err


def test_version_and_the_module_entry_point(tmp_path: Path) -> None:
    done = run_cli("--version", cwd=tmp_path, env={"PYTHONPATH": str(Path.cwd())})

    assert done.returncode == 0
    assert done.stdout.strip() == f"outlook2mqtt {__version__}"


def test_check_as_a_subprocess_exits_0_on_the_rig(config_file: Path) -> None:
    done = run_cli("check", "-c", str(config_file))

    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "ok    config", "ok    [home] token acquired", "ok    [home] IMAP login",
        "ok    [home] folder INBOX", "ok    [work] token acquired", "ok    [work] IMAP login",
        "ok    [work] folder INBOX", "ok    MQTT"]
    assert done.stderr == ""


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error"])
def test_every_command_takes_config_and_log_level_after_its_name(level: str) -> None:
    from bridge.cli.main import build_parser

    parser = build_parser()
    for command in (["run"], ["check"], ["token"], ["init"]):
        args: Any = parser.parse_args([*command, "-c", f"{uuid.uuid4()}.toml",
                                       "--log-level", level])
        assert args.log_level == level


@pytest.mark.parametrize(("command", "says"), [
    ("run", "until SIGTERM"), ("check", "step by step"), ("token", "never the token"),
    ("login", "device_code"), ("init", "Write a config"), ("cert", "certificate"),
])
def test_every_command_help_describes_it(
    command: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        main(command, "--help")

    assert done.value.code == 0
    usage, _, rest = capsys.readouterr().out.partition("\n\n")
    assert usage.startswith("usage: outlook2mqtt " + command)
    assert says in rest.split("\n\n")[0]  # the description, before the options
