"""`outlook2mqtt check` on the rig: every failure the rig can produce gets its concrete hint."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import socket
import ssl
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from bridge.cli.check import run_check
from bridge.cli.steps import Step, format_step
from bridge.config.load import parse_config
from bridge.config.model import Config
from rig.bridgecfg import rig_config, write_config
from rig.dovecot import Dovecot
from rig.idp import App, IdentityPlatform
from rig.mosquitto import Mosquitto
from rig.pki import TestPKI, make_client_certificate
from rig.procs import free_port
from rig.samples import make_message
from tests.clitools import main

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
BROKER_USER, BROKER_PASSWORD = "bridge", "broker-pw-7f3a"


@pytest.fixture(scope="module")
def locked_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A broker that wants a user name and password."""
    with Mosquitto(tmp_path_factory.mktemp("locked"),
                   users={BROKER_USER: BROKER_PASSWORD}) as broker:
        yield broker


@pytest.fixture
def rig_data(idp: IdentityPlatform, pki: TestPKI, dovecot: Dovecot, mosquitto: Mosquitto,
             tenant: str, mailbox: str, app: App, tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """Config dicts for the rig: the working one, with keyword overrides."""

    def make(**overrides: Any) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "authority": idp.authority, "ca_file": pki.ca_file, "imap_port": dovecot.port,
            "mqtt_port": mosquitto.port, "tenant_id": tenant, "client_id": app.client_id,
            "mailbox": mailbox, "state_dir": tmp_path / "state",
            "secret": (app.secrets or app.expired_secrets)[0],
            "base_topic": f"o2m-{uuid.uuid4().hex[:8]}",
        }
        kwargs.update(overrides)
        return rig_config(**kwargs)

    return make


def checked(data: dict[str, Any] | Config) -> tuple[bool, list[Step], str]:
    """Run check in-process: (ok, steps from the JSON, the text a person would see)."""
    config = data if isinstance(data, Config) else parse_config(data)
    out = io.StringIO()
    ok = run_check(config, out, as_json=True)
    document = json.loads(out.getvalue())
    assert document["ok"] == ok
    steps = [Step(**s) for s in document["steps"]]
    return ok, steps, "".join(format_step(s) for s in steps)


def failed(steps: list[Step]) -> Step:
    """The one failed step."""
    bad = [s for s in steps if not s.ok]
    assert len(bad) == 1, bad
    return bad[0]


def with_account(data: dict[str, Any], **changes: Any) -> Config:
    """The config with account fields set past validation (what a config cannot express)."""
    config = parse_config(data)
    return dataclasses.replace(config,
                               accounts=(dataclasses.replace(config.accounts[0], **changes),))


# -- the happy paths -------------------------------------------------------------------------

def test_every_step_passes_with_a_client_secret(
    rig_data: Callable[..., dict[str, Any]], dovecot: Dovecot, mailbox: str,
) -> None:
    dovecot.deliver(mailbox, make_message(subject="hello", to=mailbox))

    ok, steps, text = checked(rig_data())

    assert ok
    assert [s.name for s in steps] == ["config", "token acquired", "IMAP login", "folder INBOX",
                                       "MQTT"]
    token = steps[1].detail
    assert "aud https://outlook.office365.com" in token and "roles IMAP.AccessAsApp" in token
    assert "expires 20" in token
    assert steps[3].detail == "1 unread / 1 total"
    assert all(line.startswith("ok    ") for line in text.splitlines())


def test_every_step_passes_with_a_client_certificate(
    rig_data: Callable[..., dict[str, Any]], idp: IdentityPlatform, tenant: str, mailbox: str,
    tmp_path: Path,
) -> None:
    cert = make_client_certificate(tmp_path, "app")
    app = idp.register_app(tenant, certificates=[cert.cert_pem], mailboxes=[mailbox])

    ok, _steps, _text = checked(rig_data(client_id=app.client_id, secret=None,
                                         certificate_file=cert.cert_file,
                                         private_key_file=cert.key_file))

    assert ok


def test_cli_exit_codes_are_0_all_passed_1_a_step_failed_2_config_invalid(
    rig_data: Callable[..., dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    good = write_config(tmp_path / "good.toml", rig_data())
    bad_folder = write_config(tmp_path / "bad.toml", rig_data(folders=[{"name": "Nope"}]))
    broken = rig_data()
    del broken["accounts"][0]["mailbox"]
    invalid = write_config(tmp_path / "invalid.toml", broken)

    assert main("check", "-c", str(good)) == 0
    assert main("check", "-c", str(bad_folder)) == 1
    capsys.readouterr()
    assert main("check", "-c", str(invalid)) == 2
    assert "FAIL  config: accounts[0].mailbox" in capsys.readouterr().out
    assert main("check", "--json", "-c", str(invalid)) == 2
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is False
    assert document["steps"][0]["error"] == "config"


# -- token ------------------------------------------------------------------------------------

def test_wrong_secret_says_copy_the_value_not_the_id(
    rig_data: Callable[..., dict[str, Any]],
) -> None:
    ok, steps, text = checked(rig_data(secret="not-the-right-secret-value"))

    step = failed(steps)
    assert not ok and step.name == "token acquired" and step.error == "AADSTS7000215"
    assert step.detail.startswith("AADSTS7000215: Invalid client secret provided")
    assert "copy the secret's Value" in (step.hint or "")
    assert "FAIL  [home] token acquired: AADSTS7000215" in text
    assert "      hint: client secret is wrong" in text


def test_secret_that_is_a_guid_is_called_a_secret_id(
    rig_data: Callable[..., dict[str, Any]],
) -> None:
    _ok, steps, _text = checked(rig_data(secret=str(uuid.uuid4())))

    assert "looks like a Secret ID" in (failed(steps).hint or "")


def test_expired_secret_says_create_a_new_one(
    rig_data: Callable[..., dict[str, Any]], app: App,
) -> None:
    app.expire_secrets()

    _ok, steps, _text = checked(rig_data())

    step = failed(steps)
    assert step.error == "AADSTS7000222"
    assert "client secret has expired: create a new one" in (step.hint or "")


def test_unknown_app_names_the_client_id_and_tenant(
    rig_data: Callable[..., dict[str, Any]], tenant: str,
) -> None:
    client_id = str(uuid.uuid4())

    _ok, steps, _text = checked(rig_data(client_id=client_id))

    step = failed(steps)
    assert step.error == "AADSTS700016"
    assert f"no application {client_id} in tenant {tenant}" in (step.hint or "")
    assert "Application (client) ID" in (step.hint or "")


def test_unknown_tenant_is_found_behind_msals_value_error(
    rig_data: Callable[..., dict[str, Any]],
) -> None:
    tenant = str(uuid.uuid4())

    _ok, steps, _text = checked(rig_data(tenant_id=tenant))

    step = failed(steps)
    assert step.error == "AADSTS90002"
    assert step.detail == f"AADSTS90002: Tenant '{tenant}' not found."
    assert f"tenant {tenant} not found" in (step.hint or "")
    assert "Directory (tenant) ID" in (step.hint or "")


def test_unregistered_certificate_says_upload_it_with_its_thumbprint(
    rig_data: Callable[..., dict[str, Any]], idp: IdentityPlatform, tenant: str, mailbox: str,
    tmp_path: Path,
) -> None:
    registered = make_client_certificate(tmp_path / "a", "registered")
    other = make_client_certificate(tmp_path / "b", "outlook2mqtt")
    app = idp.register_app(tenant, certificates=[registered.cert_pem], mailboxes=[mailbox])

    _ok, steps, _text = checked(rig_data(client_id=app.client_id, secret=None,
                                         certificate_file=other.cert_file,
                                         private_key_file=other.key_file))

    step = failed(steps)
    assert step.error == "AADSTS700027"
    assert f"certificate {other.sha1_thumbprint_hex} is not registered" in (step.hint or "")
    assert "upload outlook2mqtt.cer" in (step.hint or "")


def test_key_not_matching_the_registered_certificate_is_a_signature_hint(
    rig_data: Callable[..., dict[str, Any]], idp: IdentityPlatform, tenant: str, mailbox: str,
    tmp_path: Path,
) -> None:
    registered = make_client_certificate(tmp_path / "a", "registered")
    stray = make_client_certificate(tmp_path / "b", "stray")
    app = idp.register_app(tenant, certificates=[registered.cert_pem], mailboxes=[mailbox])
    data = rig_data(client_id=app.client_id, secret=None,
                    certificate_file=registered.cert_file, private_key_file=registered.key_file)

    # the config refuses the mismatched pair itself, before any token request ...
    broken = dict(data, accounts=[dict(data["accounts"][0],
                                       private_key_file=str(stray.key_file))])
    with pytest.raises(Exception, match="does not belong to the certificate"):
        parse_config(broken)
    # ... and Entra's answer to such an assertion gets its own hint
    _ok, steps, _text = checked(with_account(data, private_key_file=stray.key_file))
    step = failed(steps)
    assert step.error == "AADSTS700027"
    assert f"thumbprint {registered.sha1_thumbprint_hex} is registered, but the assertion " \
           "was not signed by its key" in (step.hint or "")


@pytest.mark.parametrize(("scope", "code"), [
    ("https://example.com/.default", "AADSTS500011"),
    ("https://outlook.office365.com/IMAP.AccessAsApp", "AADSTS1002012"),
])
def test_invalid_scope_says_use_the_outlook_scope(
    rig_data: Callable[..., dict[str, Any]], scope: str, code: str,
) -> None:
    _ok, steps, _text = checked(with_account(rig_data(), scope=scope))

    step = failed(steps)
    assert step.error == code
    assert 'set scope = "https://outlook.office365.com/.default"' in (step.hint or "")


def test_graph_token_says_use_the_outlook_scope(
    rig_data: Callable[..., dict[str, Any]],
) -> None:
    _ok, steps, _text = checked(with_account(rig_data(), scope=GRAPH_SCOPE))

    step = failed(steps)
    assert step.error == "graph_audience"
    assert "aud https://graph.microsoft.com" in step.detail
    assert "Microsoft Graph token" in (step.hint or "")
    assert [s.name for s in steps][-1] == "MQTT"  # no IMAP login with a token that cannot work


def test_token_without_the_imap_role_says_grant_admin_consent(
    rig_data: Callable[..., dict[str, Any]], app: App,
) -> None:
    app.roles.clear()

    _ok, steps, _text = checked(rig_data())

    step = failed(steps)
    assert step.error == "no_imap_role" and "roles -" in step.detail
    assert "Office 365 Exchange Online -> Application permissions -> IMAP.AccessAsApp" in (
        step.hint or "")
    assert "Grant admin consent" in (step.hint or "")


# -- IMAP -------------------------------------------------------------------------------------

def test_missing_mailbox_grant_prints_the_powershell_with_both_ids(
    rig_data: Callable[..., dict[str, Any]], idp: IdentityPlatform, tenant: str, mailbox: str,
) -> None:
    ungranted = idp.register_app(tenant, secret="ungranted-secret-1234")

    _ok, steps, text = checked(rig_data(client_id=ungranted.client_id,
                                        secret="ungranted-secret-1234"))

    step = failed(steps)
    sp = ungranted.service_principal_id
    assert step.name == "IMAP login" and step.error == "authenticate_failed"
    assert "AUTHENTICATIONFAILED" in step.detail
    hint = step.hint or ""
    assert f"New-ServicePrincipal -AppId {ungranted.client_id} -ObjectId {sp}" in hint
    assert f"Add-MailboxPermission -Identity {mailbox} -User {sp} -AccessRights FullAccess" \
        in hint
    assert "Enterprise applications" in hint and "NOT the Object ID on the App registrations" \
        in hint
    # the one query that sees an Add-MailboxPermission grant
    assert f"Get-MailboxPermission -Identity {mailbox} -User {sp}" in hint
    assert "Test-ServicePrincipalAuthorization" not in hint
    assert f"            New-ServicePrincipal -AppId {ungranted.client_id}" in text


@pytest.fixture
def untrusted_tls_port() -> Iterator[int]:
    """A TLS server on loopback whose certificate comes from a CA nobody trusts."""
    server_cert = trustme.CA().issue_cert("127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(context)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn, contextlib.suppress(ssl.SSLError, OSError):  # the client hangs up
                context.wrap_socket(conn, server_side=True).close()

    thread = threading.Thread(target=serve, name="untrusted-tls", daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(2)
    listener.close()


def test_untrusted_imap_certificate_says_ca_file(
    rig_data: Callable[..., dict[str, Any]], untrusted_tls_port: int,
) -> None:
    _ok, steps, _text = checked(rig_data(imap_port=untrusted_tls_port))

    step = failed(steps)
    assert step.error == "tls" and "not trusted" in step.detail
    assert "set ca_file" in (step.hint or "")


def test_untrusted_identity_platform_certificate_says_ca_file(
    rig_data: Callable[..., dict[str, Any]],
) -> None:
    data = rig_data()
    del data["accounts"][0]["ca_file"]

    _ok, steps, _text = checked(data)

    step = failed(steps)
    assert step.name == "token acquired" and step.error == "tls"
    assert "is not trusted" in (step.hint or "") and "ca_file" in (step.hint or "")


def test_unresolvable_hosts_are_dns_errors(rig_data: Callable[..., dict[str, Any]]) -> None:
    _ok, steps, _text = checked(rig_data(extra_account={"imap_host": "imap.invalid"}))
    step = failed(steps)
    assert step.error == "dns" and "imap.invalid" in (step.hint or "")

    _ok, steps, _text = checked(rig_data(authority="https://login.invalid"))
    step = failed(steps)
    assert step.name == "token acquired" and step.error == "dns"


def test_closed_imap_port_says_check_host_and_port(
    rig_data: Callable[..., dict[str, Any]],
) -> None:
    _ok, steps, _text = checked(rig_data(imap_port=free_port()))

    step = failed(steps)
    assert step.error == "imap" and "check imap_host/imap_port" in (step.hint or "")


def test_missing_folder_lists_the_folders_that_exist(
    rig_data: Callable[..., dict[str, Any]], dovecot: Dovecot, mailbox: str,
) -> None:
    dovecot.create_folder(mailbox, "Receipts")

    ok, steps, text = checked(rig_data(folders=[{"name": "INBOX"}, {"name": "Reciepts"}]))

    step = failed(steps)
    assert not ok and step.name == "folder Reciepts" and step.error == "folder_not_found"
    assert "did you mean 'Receipts'?" in (step.hint or "")
    existing = (step.hint or "").split("existing folders: ")[1].splitlines()[0].split(", ")
    assert {"INBOX", "Receipts"} <= set(existing)
    assert "ok    [home] folder INBOX" in text  # the other folder is still checked


# -- MQTT -------------------------------------------------------------------------------------

def test_broker_refusing_the_password_says_check_username_and_password(
    rig_data: Callable[..., dict[str, Any]], locked_broker: Mosquitto,
) -> None:
    data = rig_data(mqtt_port=locked_broker.port)
    data["mqtt"] |= {"username": BROKER_USER, "password": "wrong-password"}

    _ok, steps, text = checked(data)

    step = failed(steps)
    assert step.name == "MQTT" and step.error == "mqtt_auth"
    assert f"the broker refused user '{BROKER_USER}'" in (step.hint or "")
    assert "wrong-password" not in text


def test_broker_refusing_anonymous_clients_says_so(
    rig_data: Callable[..., dict[str, Any]], locked_broker: Mosquitto,
) -> None:
    _ok, steps, _text = checked(rig_data(mqtt_port=locked_broker.port))

    assert "refused anonymous clients" in (failed(steps).hint or "")


def test_broker_accepting_the_password_passes(
    rig_data: Callable[..., dict[str, Any]], locked_broker: Mosquitto,
) -> None:
    data = rig_data(mqtt_port=locked_broker.port)
    data["mqtt"] |= {"username": BROKER_USER, "password": BROKER_PASSWORD}

    ok, _steps, _text = checked(data)

    assert ok


def test_broker_acl_denying_the_base_topic_says_fix_the_acl(
    rig_data: Callable[..., dict[str, Any]], tmp_path: Path,
) -> None:
    # Mosquitto answers a denied QoS 1 publish with PUBACK all the same: only the missing
    # echo tells. The user may read everything but write nothing.
    acl = [f"user {BROKER_USER}", "topic read #"]
    with Mosquitto(tmp_path / "acl", users={BROKER_USER: BROKER_PASSWORD}, acl=acl) as broker:
        data = rig_data(mqtt_port=broker.port)
        data["mqtt"] |= {"username": BROKER_USER, "password": BROKER_PASSWORD}

        ok, steps, _text = checked(data)

    step = failed(steps)
    assert not ok and step.name == "MQTT" and step.error == "mqtt_acl"
    assert "ACL" in (step.hint or "")


def test_no_broker_on_the_port_says_is_it_running(
    rig_data: Callable[..., dict[str, Any]],
) -> None:
    _ok, steps, _text = checked(rig_data(mqtt_port=free_port()))

    step = failed(steps)
    assert step.error == "mqtt_connect" and "is the broker running" in (step.hint or "")


def test_json_lists_every_step_with_its_error_code(
    rig_data: Callable[..., dict[str, Any]], app: App,
) -> None:
    app.roles.clear()
    out = io.StringIO()

    assert not run_check(parse_config(rig_data()), out, as_json=True)

    document = json.loads(out.getvalue())
    assert document["ok"] is False
    assert [(s["name"], s["ok"], s["error"]) for s in document["steps"]] == [
        ("config", True, None), ("token acquired", False, "no_imap_role"), ("MQTT", True, None)]
    assert set(document["steps"][1]) == {"account", "name", "ok", "detail", "hint", "error"}


def test_search_is_run_on_the_server_and_its_matches_counted(
    rig_data: Callable[..., dict[str, Any]], dovecot: Dovecot, mailbox: str,
) -> None:
    for sender in ("alerts@example.com", "bob@example.com", "alerts@example.com"):
        dovecot.deliver(mailbox, make_message(subject="alarm", sender=sender, to=mailbox))
    search = 'FROM "alerts@example.com" SUBJECT "Alarm"'

    ok, steps, text = checked(rig_data(folders=[{"name": "INBOX", "search": search}]))

    assert ok, text
    step = next(s for s in steps if s.name == "search in INBOX")
    assert step.detail == f"{search}: 2 of the folder's messages match"
    assert [s.name for s in steps].index("search in INBOX") == [s.name for s in steps].index(
        "folder INBOX") + 1
