"""`outlook2mqtt check`: the "Test connection" button, one line per step with a fix.

Steps per account: token (with its audience and roles) -> IMAP login -> each folder; then
MQTT once. Every failure people actually hit maps to a hint saying what to change where;
`error` is a stable short code for scripts (`--json`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any, TextIO

import imapclient
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from bridge import log
from bridge.auth.delegated import login_hint
from bridge.auth.providers import token_provider
from bridge.auth.tokens import Token
from bridge.cli.check_smtp import smtp_step
from bridge.cli.configuration import add_command
from bridge.cli.exits import EXIT_FAIL, EXIT_INVALID, EXIT_OK
from bridge.cli.steps import Step, format_step
from bridge.cli.token_checks import IMAP_SCOPE, auth_failure, token_step
from bridge.config.model import CLOUDS, AccountConfig, Config, FolderConfig, MqttConfig
from bridge.errors import (
    AuthError,
    ConfigError,
    FolderNotFound,
    ImapAuthError,
    ImapError,
)
from bridge.imap import connection
from bridge.imap.search import Criteria, SearchRefused
from bridge.mqtt.client import Incoming, MqttClient, connect_failure
from bridge.mqtt.topics import Topics
from bridge.util.suggest import did_you_mean


def authenticate_failed_hint(account: AccountConfig, token: Token | None) -> str:
    """The Exchange Online PowerShell that registers the app and grants it the mailbox."""
    sp_id = str((token.claims.get("oid") if token else None)
                or "<Enterprise application Object ID>")
    return "\n".join((
        "Exchange refused the token: the app's service principal is not registered in "
        "Exchange Online or has no permission on the mailbox. In Exchange Online PowerShell "
        "(Install-Module ExchangeOnlineManagement; Connect-ExchangeOnline):",
        f"    New-ServicePrincipal -AppId {account.client_id} -ObjectId {sp_id} "
        "-DisplayName outlook2mqtt",
        f"    Add-MailboxPermission -Identity {account.mailbox} -User {sp_id} "
        "-AccessRights FullAccess",
        # Test-ServicePrincipalAuthorization sees only RBAC for Applications, not this grant
        f"    Get-MailboxPermission -Identity {account.mailbox} -User {sp_id}",
        f"-ObjectId is the Object ID shown under Entra ID -> Enterprise applications -> the app "
        f"(the token's oid claim, {sp_id}), NOT the Object ID on the App registrations page. "
        "Changes take up to 30 minutes to apply.",
    ))


def _imap_failure(account: AccountConfig, exc: ImapError, token: Token) -> Step:
    text = str(exc)
    where = f"{account.imap_host}:{account.imap_port}"
    if isinstance(exc, ImapAuthError) and token.delegated:
        hint = (f"Exchange refused the token of {token.username}: IMAP must be on for the "
                "mailbox (Outlook.com: Settings -> Mail -> Forwarding and IMAP -> Let devices "
                "and apps use IMAP; Microsoft 365: the mailbox's IMAP setting), mailbox must be "
                f"the signed-in user's address, and the app needs the delegated {IMAP_SCOPE} "
                f"permission; then {login_hint(account)}")
        return Step(account.name, "IMAP login", False, text, hint, "authenticate_failed")
    if isinstance(exc, ImapAuthError):
        if "not connected" in text.lower():
            hint = (f"'User is authenticated but not connected': the token is fine, but "
                    f"Exchange cannot open {account.mailbox}: the address is wrong, the mailbox "
                    "does not exist or is not licensed, or the app has no FullAccess on it. "
                    "For a shared mailbox use its own address as mailbox.\n"
                    + authenticate_failed_hint(account, token))
            return Step(account.name, "IMAP login", False, text, hint, "not_connected")
        return Step(account.name, "IMAP login", False, text,
                    authenticate_failed_hint(account, token), "authenticate_failed")
    if "not trusted" in text:
        hint = (f"the TLS certificate of {where} is not trusted: check imap_host (a name the "
                "certificate is valid for); behind a TLS-inspecting proxy set ca_file to its "
                "CA bundle")
        return Step(account.name, "IMAP login", False, text, hint, "tls")
    if "cannot resolve" in text:
        hint = (f"DNS cannot resolve {account.imap_host}: check imap_host (cloud = "
                f"\"{account.cloud}\" uses {CLOUDS[account.cloud][1]}) and the resolver")
        return Step(account.name, "IMAP login", False, text, hint, "dns")
    hint = (f"check imap_host/imap_port ({where}; 993 = implicit TLS, 143 = "
            "imap_security = \"starttls\"), the network and outbound firewall")
    return Step(account.name, "IMAP login", False, text, hint, "imap")


def _folder_hint(folder: str, existing: list[str]) -> str:
    suggestion = did_you_mean(folder, existing)
    lines = [suggestion] if suggestion else []
    lines.append("existing folders: " + ", ".join(existing))
    lines.append("use the name as listed (subfolders of the inbox are 'Inbox/Name' on "
                 "Exchange; names are localized, e.g. 'Junk Email')")
    return "\n".join(lines)


def search_step(client: imapclient.IMAPClient, account: AccountConfig, folder: FolderConfig,
                server_name: str) -> Step:
    """Run the folder's `search` on the server: a refusal here would fail every sync."""
    name = f"search in {folder.name}"
    client.select_folder(server_name, readonly=True)
    try:
        found = Criteria(folder.search or "").matching(client, "1:*")
    except SearchRefused as exc:
        return Step(account.name, name, False, str(exc),
                    "every sync would fail the same way: change the search criteria (the "
                    "README lists what Exchange supports); non-ASCII text goes with CHARSET "
                    "UTF-8, so if that is what is refused, search for ASCII words instead",
                    "search_refused")
    finally:
        with contextlib.suppress(IMAPClientError):
            client.close_folder()
    return Step(account.name, name, True, f"{folder.search}: {len(found)} of the folder's "
                                          "messages match")


def check_account(account: AccountConfig, emit: Callable[[Step], None]) -> bool:
    """Token -> IMAP login -> folders, emitting a Step each; True if all passed."""
    try:
        provider = token_provider(account)
    except AuthError as exc:
        emit(auth_failure(account, exc))
        return False
    step, token = token_step(account, provider)
    emit(step)
    if token is None or not step.ok:
        return False  # an IMAP login with this token would only fail for the same reason
    try:
        client = connection.connect(account, token)
    except ImapError as exc:
        emit(_imap_failure(account, exc, token))
        return False
    emit(Step(account.name, "IMAP login", True,
              f"{account.mailbox} on {account.imap_host}:{account.imap_port}"))
    try:
        folders_ok = _check_folders(account, client, emit)
    except connection.IMAP_FAILURES as exc:
        emit(Step(account.name, "folders", False, f"IMAP error: {exc}",
                  "the server dropped the connection: run check again", "imap"))
        return False
    finally:
        connection.close(client)
    if not account.sending:
        return folders_ok
    step = smtp_step(account, provider)
    emit(step)
    return folders_ok and step.ok


def _check_folders(account: AccountConfig, client: IMAPClient,
                   emit: Callable[[Step], None]) -> bool:
    """A Step per configured folder: found, and its counts; True if all were found."""
    all_ok = True
    for folder in account.folders:
        name = f"folder {folder.name}"
        try:
            server_name = connection.resolve_folder(client, folder.name)
            st = connection.folder_status(client, server_name)
        except FolderNotFound as exc:
            all_ok = False
            emit(Step(account.name, name, False, str(exc),
                      _folder_hint(folder.name, exc.existing), "folder_not_found"))
            continue
        emit(Step(account.name, name, True, f"{st.unread} unread / {st.total} total"))
        if folder.search:
            step = search_step(client, account, folder, server_name)
            all_ok = all_ok and step.ok
            emit(step)
    return all_ok


def _preflight(config: MqttConfig, timeout: float) -> tuple[str, str] | None:
    """(error code, text) if the broker's port cannot be reached (or TLS fails), else None."""
    where = f"{config.host}:{config.port}"
    try:
        sock = socket.create_connection((config.host, config.port), timeout=timeout)
    except OSError as exc:
        code = "dns" if isinstance(exc, socket.gaierror) else "connect"
        return code, connect_failure(where, exc)
    with sock:
        if not config.tls:
            return None
        context = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file
                                             else None)
        if config.tls_insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        try:
            with context.wrap_socket(sock, server_hostname=config.host):
                return None
        except ssl.SSLCertVerificationError as exc:
            return "tls", f"TLS certificate of {where} not trusted: {exc.verify_message}"
        except (ssl.SSLError, OSError) as exc:
            return "tls", f"TLS handshake with {where} failed: {exc}"


def mqtt_probe(config: MqttConfig, topic: str, timeout: float = 10) -> float:
    """Connect, subscribe, publish and receive one message; the round trip in seconds.

    Raises RuntimeError with the broker's reason; a refusal returns at once, without
    waiting out `timeout` as paho's reconnect loop would.
    """
    received = threading.Event()
    token = f"check-{time.time_ns()}".encode()

    def on_message(msg: Incoming) -> None:
        if msg.payload == token:
            received.set()

    client = MqttClient(config, client_id=f"{config.client_id}-check", on_message=on_message)
    subscription = client.subscribe([topic])
    client.start()
    try:
        if not (client.attempted.wait(timeout) and client.connected.is_set()):
            raise RuntimeError(client.last_error or "no CONNACK from the broker")
        if not subscription.wait(timeout):  # the echo can only come once it is granted
            raise RuntimeError(f"the broker refused the subscription to {topic}"
                               if subscription.done else "no SUBACK from the broker")
        start = time.monotonic()
        client.publish(topic, token, qos=1)
        if not received.wait(timeout):
            raise RuntimeError(f"published to {topic} but did not receive it back")
        return time.monotonic() - start
    finally:
        client.stop()


def check_mqtt(config: Config, timeout: float = 10) -> Step:
    """Connect, then publish and receive a test message."""
    mqtt = config.mqtt
    topic = Topics.of(config).bridge_check
    where = f"{mqtt.host}:{mqtt.port}"
    failed = _preflight(mqtt, min(timeout, 5))
    if failed is not None:
        code, text = failed
        hints = {
            "dns": f"check mqtt.host ({mqtt.host!r}) and DNS",
            "connect": (f"is the broker running and listening on {where}? (1883 plain, "
                        "8883 with tls = true); check firewalls"),
            "tls": ("set mqtt.ca_file to the CA that signed the broker's certificate, or "
                    "check mqtt.host against the certificate's names"),
        }
        return Step(None, "MQTT", False, text, hints[code], f"mqtt_{code}")
    try:
        rtt = mqtt_probe(mqtt, topic, timeout)
    except RuntimeError as exc:
        text = str(exc)
        if re.search(r"user name or password|not authori[sz]ed|bad username", text, re.I):
            who = f"user {mqtt.username!r}" if mqtt.username else "anonymous clients"
            hint = (f"the broker refused {who}: check mqtt.username and mqtt.password "
                    "(or password_file, or the credential mqtt.password); Mosquitto: "
                    "mosquitto_passwd -c <password_file> <user>")
            return Step(None, "MQTT", False, f"{where}: {text}", hint, "mqtt_auth")
        if "did not receive" in text or "refused the subscription" in text:
            hint = (f"the broker's ACL must let {mqtt.username or 'this client'} publish and "
                    f"subscribe to {mqtt.base_topic}/# (Mosquitto: 'topic readwrite "
                    f"{mqtt.base_topic}/#' in the acl_file)")
            return Step(None, "MQTT", False, text, hint, "mqtt_acl")
        hint = f"check the broker's log; mqtt.protocol is \"{mqtt.protocol}\""
        return Step(None, "MQTT", False, f"{where}: {text}", hint, "mqtt")
    return Step(None, "MQTT", True, f"{where}, publish/receive in {rtt * 1000:.0f} ms")


def run_check(config: Config, out: TextIO, *, as_json: bool = False) -> bool:
    """Run every step for every account; True only if all passed."""
    steps: list[Step] = []

    def emit(step: Step) -> None:
        steps.append(step)
        if not as_json:
            out.write(format_step(step))
            out.flush()

    folders = sum(len(a.folders) for a in config.accounts)
    where = f"{config.source}: " if config.source else ""
    emit(Step(None, "config", True,
              f"{where}{len(config.accounts)} account(s), {folders} folder(s)"))
    ok = True
    for account in config.accounts:
        ok = check_account(account, emit) and ok
    mqtt_step = check_mqtt(config)
    emit(mqtt_step)
    ok = ok and mqtt_step.ok
    if as_json:
        out.write(log.redact(json.dumps({"ok": ok, "steps": [asdict(s) for s in steps]},
                                        indent=2)) + "\n")
    return ok


def add_parser(subparsers: Any, *, parents: Sequence[argparse.ArgumentParser]) -> None:
    p = add_command(subparsers, "check", "test token, IMAP, folders and MQTT", parents, run,
                    description="Test each account step by step (config, token, IMAP login, "
                    "each folder) and the MQTT broker; one ok/FAIL line per step with a "
                    "hint. Exit 0 if all passed, 1 if one failed, 2 on a config error.",
                    on_invalid=report_invalid)
    p.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace, config: Config) -> int:
    """Test every step from token to MQTT; exit 0 only if all passed."""
    return EXIT_OK if run_check(config, sys.stdout, as_json=args.json) else EXIT_FAIL


def report_invalid(exc: ConfigError, args: argparse.Namespace) -> int:
    """An invalid configuration as failed `config` steps, in the output format asked for."""
    steps = [Step(None, "config", False, p, None, "config") for p in exc.problems]
    if args.json:
        print(json.dumps({"ok": False, "steps": [asdict(s) for s in steps]}, indent=2))
    else:
        sys.stdout.write("".join(format_step(s) for s in steps))
    return EXIT_INVALID
