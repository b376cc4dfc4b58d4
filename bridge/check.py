"""`outlook2mqtt check`: the "Test connection" button, one line per step with a fix."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TextIO

from . import imap
from .auth import Token, TokenProvider
from .config import AccountConfig, Config
from .errors import AuthError, BridgeError, FolderNotFound, ImapAuthError, ImapError
from .mqtt import connect_probe
from .status import iso_ts

IMAP_ROLE = "IMAP.AccessAsApp"


@dataclass(frozen=True)
class Step:
    """One checked step: what, whether it passed, what was seen, and how to fix it."""

    account: str | None
    name: str
    ok: bool
    detail: str
    hint: str | None = None


def authenticate_failed_hint(account: AccountConfig, token: Token | None) -> str:
    """The Exchange Online PowerShell that grants an app access to a mailbox."""
    sp_id = (token.claims.get("oid") if token else None) or "<service principal object id>"
    app_id = account.client_id
    return (
        "Exchange refused the token. Usually the app's service principal is not registered "
        "in Exchange or has no permission on the mailbox. In Exchange Online PowerShell "
        "(Connect-ExchangeOnline):\n"
        f"    New-ServicePrincipal -AppId {app_id} -ObjectId {sp_id}\n"
        f"    Add-MailboxPermission -Identity {account.mailbox} -User {sp_id} "
        "-AccessRights FullAccess\n"
        "  -ObjectId is the object id of the Enterprise application (Entra ID -> Enterprise "
        "applications), NOT the app registration's object id. Also check admin consent for "
        f"Office 365 Exchange Online -> {IMAP_ROLE}, and allow ~30 min for changes to apply."
    )


def _token_step(account: AccountConfig, provider: TokenProvider) -> tuple[Step, Token | None]:
    name = "token acquired"
    try:
        token = provider.get_token()
    except AuthError as exc:
        code = f"AADSTS{exc.code}: " if exc.code and f"AADSTS{exc.code}" not in str(exc) else ""
        return Step(account.name, name, False, f"{code}{exc}"), None
    aud = str(token.claims.get("aud", "?"))
    roles = token.claims.get("roles") or []
    detail = f"expires {iso_ts(token.expires_at)}, aud {aud}, roles {','.join(roles) or '-'}"
    if "graph.microsoft" in aud:
        hint = (
            "this is a Microsoft Graph token: IMAP needs the Outlook audience; set "
            f'scope = "https://{account.imap_host}/.default"'
        )
        return Step(account.name, name, False, detail, hint), token
    if not re.search(r"outlook|office365", aud):
        return Step(
            account.name,
            name,
            False,
            detail,
            f"unexpected audience: use scope https://{account.imap_host}/.default",
        ), token
    if IMAP_ROLE not in roles:
        hint = (
            f"the token has no {IMAP_ROLE} role: in the app registration add API "
            "permission Office 365 Exchange Online -> Application permissions -> "
            f"{IMAP_ROLE}, then 'Grant admin consent'"
        )
        return Step(account.name, name, False, detail, hint), token
    return Step(account.name, name, True, detail), token


def check_account(account: AccountConfig, emit: Callable[[Step], None]) -> bool:
    """Token -> IMAP login -> folders, emitting a Step each; True if all passed."""
    provider = TokenProvider(account)
    step, token = _token_step(account, provider)
    emit(step)
    if token is None:
        return False
    all_ok = step.ok
    try:
        client = imap.connect(account, token)
    except ImapAuthError as exc:
        hint = authenticate_failed_hint(account, token)
        if "not connected" in str(exc).lower():
            hint = (
                "'User is authenticated but not connected': the mailbox "
                f"{account.mailbox} does not exist or the service principal has no "
                "FullAccess on it.\n  " + hint
            )
        emit(Step(account.name, "IMAP login", False, str(exc), hint))
        return False
    except ImapError as exc:
        hint = (
            f"check imap_host/imap_port ({account.imap_host}:{account.imap_port}), "
            "network and TLS trust (ca_file)"
        )
        emit(Step(account.name, "IMAP login", False, str(exc), hint))
        return False
    emit(
        Step(
            account.name,
            "IMAP login",
            True,
            f"{account.mailbox} on {account.imap_host}:{account.imap_port}",
        )
    )
    try:
        for folder in account.folders:
            try:
                name = imap.resolve_folder(client, folder.name)
                st = imap.folder_status(client, name)
                emit(
                    Step(
                        account.name,
                        f"folder {folder.name}",
                        True,
                        f"{st.unread} unread / {st.total} total",
                    )
                )
            except FolderNotFound as exc:
                all_ok = False
                emit(
                    Step(
                        account.name,
                        f"folder {folder.name}",
                        False,
                        str(exc),
                        "existing folders: " + ", ".join(exc.existing),
                    )
                )
    except imap.CONNECTION_ERRORS as exc:
        emit(Step(account.name, "folders", False, f"IMAP error: {exc}"))
        all_ok = False
    finally:
        imap.close(client)
    return all_ok


def check_mqtt(config: Config) -> Step:
    """Connect, then publish and receive a test message."""
    topic = f"{config.mqtt.base_topic}/bridge/check"
    try:
        rtt = connect_probe(config.mqtt, topic)
    except BridgeError as exc:
        hint = (
            "check mqtt.host/port, username/password and the broker's ACL for "
            f"{config.mqtt.base_topic}/#"
        )
        return Step(None, "MQTT", False, str(exc), hint)
    return Step(
        None,
        "MQTT",
        True,
        f"{config.mqtt.host}:{config.mqtt.port}, publish/receive in {rtt * 1000:.0f} ms",
    )


def run_check(config: Config, out: TextIO, *, as_json: bool = False) -> bool:
    """Run every step for every account; True only if all passed."""
    steps: list[Step] = []

    def emit(step: Step) -> None:
        steps.append(step)
        if not as_json:
            where = f"[{step.account}] " if step.account else ""
            out.write(f"{'ok  ' if step.ok else 'FAIL'}  {where}{step.name}: {step.detail}\n")
            if step.hint:
                out.write(f"      hint: {step.hint}\n")
            out.flush()

    emit(
        Step(
            None,
            "config",
            True,
            f"{len(config.accounts)} account(s), "
            f"{sum(len(a.folders) for a in config.accounts)} folder(s)",
        )
    )
    ok = True
    for account in config.accounts:
        ok = check_account(account, emit) and ok
    emit(check_mqtt(config))
    ok = ok and steps[-1].ok
    if as_json:
        json.dump({"ok": ok, "steps": [asdict(s) for s in steps]}, out, indent=2)
        out.write("\n")
    return ok
