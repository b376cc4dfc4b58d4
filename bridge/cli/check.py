"""`outlook2mqtt check`: the "Test connection" button, one line per step with a fix.

Steps per account: token (with its audience and roles) -> IMAP login -> each folder; then
MQTT once. Every failure people actually hit maps to a hint saying what to change where;
`error` is a stable short code for scripts (`--json`).
"""

from __future__ import annotations

import contextlib
import difflib
import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import TextIO

from bridge import log
from bridge.auth.tokens import Provider, Token, hint_for, login_hint, token_provider
from bridge.cli import cert as certs
from bridge.config.model import CLOUDS, AccountConfig, Config, MqttConfig
from bridge.errors import AuthError, FolderNotFound, ImapAuthError, ImapError, LoginRequired
from bridge.imap import connection as imap
from bridge.mqtt.client import Incoming, MqttClient
from bridge.util.times import iso_ts

IMAP_ROLE = "IMAP.AccessAsApp"
IMAP_SCOPE = "IMAP.AccessAsUser.All"
_PORTAL_SECRETS = "App registrations -> your app -> Certificates & secrets"


@dataclass(frozen=True)
class Step:
    """One checked step: what, whether it passed, what was seen, and how to fix it."""

    account: str | None
    name: str
    ok: bool
    detail: str
    hint: str | None = None
    error: str | None = None  # short stable code for scripts, e.g. "AADSTS7000215", "dns"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and every exception it was raised from or while handling."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _chain_text(exc: BaseException) -> str:
    return " | ".join(f"{type(e).__name__}: {e}" for e in _chain(exc))


def _outlook_scope(account: AccountConfig) -> str:
    return f"https://{CLOUDS[account.cloud][1]}/.default"


def _certificate_hint(account: AccountConfig, text: str) -> str:
    thumbprint = "?"
    if account.certificate_file is not None:
        with contextlib.suppress(certs.CertificateError):
            thumbprint = certs.describe_certificate(account.certificate_file).sha1_thumbprint
    cer = (account.certificate_file.with_suffix(".cer").name
           if account.certificate_file else "the .cer file")
    if re.search(r"expired", text, re.IGNORECASE):
        return ("the registered certificate has expired: make a new one with "
                f"`outlook2mqtt cert new`, upload its .cer under {_PORTAL_SECRETS} -> "
                "Certificates, and point certificate_file/private_key_file at it")
    if re.search(r"signature", text, re.IGNORECASE):
        return (f"a certificate with thumbprint {thumbprint} is registered, but the assertion "
                "was not signed by its key: private_key_file must be the key generated "
                "together with that certificate (outlook2mqtt cert new writes both)")
    return (f"certificate {thumbprint} is not registered on the app: upload {cer} under "
            f"{_PORTAL_SECRETS} -> Certificates -> Upload certificate; the portal must then "
            f"list thumbprint {thumbprint} (`outlook2mqtt cert show` prints it)")


def _auth_hint(account: AccountConfig, exc: AuthError, code: int | None, text: str) -> str | None:
    """What to change for a token request the identity platform refused."""
    scope = _outlook_scope(account)
    if code == 7000215:
        hint = ("client secret is wrong: copy the secret's Value (shown once, ~40 characters),"
                f" not its Secret ID, from {_PORTAL_SECRETS} -> Client secrets")
        if re.fullmatch(r"[0-9a-fA-F-]{36}", account.client_secret or ""):
            hint += "; client_secret looks like a Secret ID (a GUID)"
        return hint
    if code == 7000222:
        return (f"client secret has expired: create a new one under {_PORTAL_SECRETS} -> "
                "New client secret and put its Value in client_secret (or switch to a "
                "certificate: `outlook2mqtt cert new`)")
    if code == 700016:
        return (f"no application {account.client_id} in tenant {account.tenant_id}: "
                "client_id must be the Application (client) ID from the app's Overview page "
                "(not its Object ID), tenant_id the Directory (tenant) ID of the tenant the app "
                "is registered in (or has admin consent in)")
    if code == 700027:
        return _certificate_hint(account, text)
    if code == 90002 or "double check your tenant" in text:
        return (f"tenant {account.tenant_id} not found at {account.authority}: tenant_id must "
                "be the Directory (tenant) ID from the app's Overview page (or a verified "
                "domain); for a government or China tenant set cloud = \"usgov\", "
                "\"usgov-dod\" or \"china\"")
    if code in (1002012, 70011, 500011):
        return (f"scope {account.scope!r} is not valid for IMAP: remove scope (the default for "
                f"cloud = \"{account.cloud}\" is {scope}) or set scope = \"{scope}\"")
    if "CERTIFICATE_VERIFY_FAILED" in text or "SSLCertVerificationError" in text:
        return (f"the TLS certificate of {account.authority} is not trusted: behind a "
                "TLS-inspecting proxy set ca_file to its CA bundle; else check the system CAs "
                "(ca-certificates) and authority")
    if "NameResolutionError" in text or "gaierror" in text:
        return (f"cannot resolve the host of {account.authority}: check DNS, and authority / "
                "cloud in the config")
    if re.search(r"ConnectionRefused|ConnectTimeout|NewConnectionError|ProxyError", text):
        return (f"cannot connect to {account.authority}: outbound HTTPS (443) must be allowed; "
                "set HTTPS_PROXY if a proxy is required")
    if exc.transient:
        return "the identity platform is unavailable: try again in a few minutes"
    return hint_for(code)


def _auth_failure(account: AccountConfig, exc: AuthError) -> Step:
    text = _chain_text(exc)
    code = exc.code
    detail = str(exc)
    # MSAL raises ValueError for a tenant its discovery request could not find: Entra's own
    # words (AADSTS90002) are only in the exception it was raised while handling
    if code is None and (found := re.search(r"(AADSTS(\d+): [^\"\\]*?\.)(?=\s|\\|\"|$)",
                                            text)):
        code, detail = int(found[2]), found[1]
    if code is None and "double check your tenant" in text:
        code = 90002
    generic = hint_for(code)
    if generic and detail.endswith(f" ({generic})"):
        detail = detail.removesuffix(f" ({generic})")  # the hint gets its own line
    if code and f"AADSTS{code}" not in detail:
        detail = f"AADSTS{code}: {detail}"
    error = f"AADSTS{code}" if code else (
        "tls" if "CERTIFICATE_VERIFY_FAILED" in text else
        "dns" if "NameResolutionError" in text or "gaierror" in text else "token")
    return Step(account.name, "token acquired", False, detail,
                _auth_hint(account, exc, code, text), error)


def _delegated_step(account: AccountConfig, token: Token) -> Step:
    """Judge a delegated token: the signed-in user, the Outlook audience, the IMAP scope.
    A personal account's access token is opaque: then only the user and expiry show."""
    name = "token acquired"
    claims = token.claims
    minutes = max(0, int(token.expires_in // 60))
    user = str(claims.get("upn") or claims.get("preferred_username") or token.username)
    detail = f"expires {iso_ts(token.expires_at)} (in {minutes} min), user {user}"
    if not claims:
        return Step(account.name, name, True, detail + " (opaque token)")
    aud = str(claims.get("aud", "?"))
    scopes = str(claims.get("scp", "")).split()
    detail += f", aud {aud}, scp {','.join(scopes) or '-'}"
    if user.casefold() != account.mailbox.casefold():
        hint = (f"the token is for {user}, but mailbox is {account.mailbox}: "
                f"{login_hint(account)} and sign in as {account.mailbox}")
        return Step(account.name, name, False, detail, hint, "wrong_user")
    if not re.search(r"outlook|office365", aud):
        hint = "unexpected audience: remove scope (the default is the Outlook IMAP scope)"
        return Step(account.name, name, False, detail, hint, "audience")
    if IMAP_SCOPE not in scopes:
        hint = (f"the token has no {IMAP_SCOPE} scope: App registrations -> your app -> API "
                "permissions -> Add a permission -> APIs my organization uses -> Office 365 "
                f"Exchange Online -> Delegated permissions -> {IMAP_SCOPE}; then "
                f"{login_hint(account)} again")
        return Step(account.name, name, False, detail, hint, "no_imap_scope")
    return Step(account.name, name, True, detail)


def token_step(account: AccountConfig, provider: Provider) -> tuple[Step, Token | None]:
    """Acquire a token and judge its claims: Outlook audience and the IMAP role (app-only)
    or scope (delegated)."""
    name = "token acquired"
    try:
        token = provider.get_token()
    except LoginRequired as exc:
        return Step(account.name, name, False, str(exc), login_hint(account),
                    "login_required"), None
    except AuthError as exc:
        return _auth_failure(account, exc), None
    if token.delegated:
        return _delegated_step(account, token), token
    aud = str(token.claims.get("aud", "?"))
    roles = [str(r) for r in token.claims.get("roles") or []]
    minutes = max(0, int(token.expires_in // 60))
    detail = (f"expires {iso_ts(token.expires_at)} (in {minutes} min), aud {aud}, "
              f"roles {','.join(roles) or '-'}")
    scope = _outlook_scope(account)
    if "graph.microsoft" in aud:
        hint = ("this is a Microsoft Graph token; IMAP needs an Outlook token: remove scope "
                f"or set scope = \"{scope}\"")
        return Step(account.name, name, False, detail, hint, "graph_audience"), token
    if not re.search(r"outlook|office365", aud):
        hint = f"unexpected audience: remove scope or set scope = \"{scope}\""
        return Step(account.name, name, False, detail, hint, "audience"), token
    if IMAP_ROLE not in roles:
        hint = (f"the token has no {IMAP_ROLE} role (admin consent missing): App registrations"
                " -> your app -> API permissions -> Add a permission -> APIs my organization "
                f"uses -> Office 365 Exchange Online -> Application permissions -> {IMAP_ROLE};"
                " then 'Grant admin consent'. The delegated IMAP.AccessAsUser.All does not "
                "count for app-only access")
        return Step(account.name, name, False, detail, hint, "no_imap_role"), token
    return Step(account.name, name, True, detail), token


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
        f"    Test-ServicePrincipalAuthorization -Identity {sp_id} -Resource {account.mailbox}",
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
    close = difflib.get_close_matches(folder, existing, n=1, cutoff=0.6)
    lines = [f"did you mean {close[0]!r}?"] if close else []
    lines.append("existing folders: " + ", ".join(existing))
    lines.append("use the name as listed (subfolders of the inbox are 'Inbox/Name' on "
                 "Exchange; names are localized, e.g. 'Junk Email')")
    return "\n".join(lines)


def check_account(account: AccountConfig, emit: Callable[[Step], None]) -> bool:
    """Token -> IMAP login -> folders, emitting a Step each; True if all passed."""
    try:
        provider = token_provider(account)
    except AuthError as exc:
        emit(_auth_failure(account, exc))
        return False
    step, token = token_step(account, provider)
    emit(step)
    if token is None or not step.ok:
        return False  # an IMAP login with this token would only fail for the same reason
    try:
        client = imap.connect(account, token)
    except ImapError as exc:
        emit(_imap_failure(account, exc, token))
        return False
    emit(Step(account.name, "IMAP login", True,
              f"{account.mailbox} on {account.imap_host}:{account.imap_port}"))
    all_ok = True
    try:
        for folder in account.folders:
            name = f"folder {folder.name}"
            try:
                st = imap.folder_status(client, imap.resolve_folder(client, folder.name))
            except FolderNotFound as exc:
                all_ok = False
                emit(Step(account.name, name, False, str(exc),
                          _folder_hint(folder.name, exc.existing), "folder_not_found"))
                continue
            emit(Step(account.name, name, True, f"{st.unread} unread / {st.total} total"))
    except imap.IMAP_FAILURES as exc:
        emit(Step(account.name, "folders", False, f"IMAP error: {exc}",
                  "the server dropped the connection: run check again", "imap"))
        all_ok = False
    finally:
        imap.close(client)
    return all_ok


def _preflight(config: MqttConfig, timeout: float) -> tuple[str, str] | None:
    """(error code, text) if the broker's port cannot be reached (or TLS fails), else None."""
    where = f"{config.host}:{config.port}"
    try:
        sock = socket.create_connection((config.host, config.port), timeout=timeout)
    except socket.gaierror as exc:
        return "dns", f"cannot resolve {config.host}: {exc.strerror}"
    except OSError as exc:
        return "connect", f"cannot connect to {where}: {exc.strerror or exc}"
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
    client.subscribe([topic])
    client.start()
    try:
        deadline = time.monotonic() + timeout
        while not client.wait_connected(0.05):
            if client.last_error or time.monotonic() > deadline:
                raise RuntimeError(client.last_error or "no CONNACK from the broker")
        time.sleep(0.2)  # let SUBACK arrive before publishing
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
    topic = f"{mqtt.base_topic}/bridge/check"
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
        if "did not receive" in text:
            hint = (f"the broker's ACL must let {mqtt.username or 'this client'} publish and "
                    f"subscribe to {mqtt.base_topic}/# (Mosquitto: 'topic readwrite "
                    f"{mqtt.base_topic}/#' in the acl_file)")
            return Step(None, "MQTT", False, text, hint, "mqtt_acl")
        hint = f"check the broker's log; mqtt.protocol is \"{mqtt.protocol}\""
        return Step(None, "MQTT", False, f"{where}: {text}", hint, "mqtt")
    return Step(None, "MQTT", True, f"{where}, publish/receive in {rtt * 1000:.0f} ms")


def format_step(step: Step) -> str:
    """`ok    [home] IMAP login: ...` plus indented hint lines."""
    where = f"[{step.account}] " if step.account else ""
    lines = [f"{'ok  ' if step.ok else 'FAIL'}  {where}{step.name}: {step.detail}"]
    if step.hint:
        first, *rest = step.hint.splitlines()
        lines.append(f"      hint: {first}")
        lines += [f"            {line}" for line in rest]
    return log.redact("\n".join(lines)) + "\n"


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
