"""An Entra ID look-alike over HTTPS for MSAL, plus the token check Dovecot asks over HTTP."""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
import ssl
import string
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from rig.pki import TestPKI, b64url, thumbprints
from rig.procs import Service, free_port

_LOGGER = logging.getLogger(__name__)

OUTLOOK_RESOURCE = "https://outlook.office365.com"
GRAPH_RESOURCE = "https://graph.microsoft.com"
IMAP_ROLE = "IMAP.AccessAsApp"
SMTP_ROLE = "SMTP.SendAsApp"  # what Exchange's SMTP AUTH wants in an app token
# the delegated scopes (rig.idp_delegated) IMAP and SMTP logins need in a user's token
IMAP_SCOPE = "IMAP.AccessAsUser.All"
SMTP_SCOPE = "SMTP.Send"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_RESOURCES = (OUTLOOK_RESOURCE, GRAPH_RESOURCE)
# the grants of delegated sign-in, served by rig.idp_delegated
DELEGATED_GRANTS = ("urn:ietf:params:oauth:grant-type:device_code", "refresh_token")
_SECRET_ALPHABET = string.ascii_letters + string.digits + "~._-"

JSON = dict[str, Any]


def random_secret() -> str:
    """Return a client secret shaped like the ones Azure hands out (40 chars, with ~ . _ -)."""
    body = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(34))
    return f"{secrets.token_hex(2)[:3]}8Q~{body}"


@dataclass(eq=False)
class App:
    """An app registration with its service principal, credentials and Exchange grants."""

    client_id: str
    tenant_id: str
    service_principal_id: str
    display_name: str
    roles: list[str]
    mailboxes: set[str]
    secrets: list[str] = field(default_factory=list)
    certificates: list[bytes] = field(default_factory=list)
    expired_secrets: list[str] = field(default_factory=list)
    # the JOSE headers of every client assertion presented (alg, x5t / x5t#S256), for tests
    assertion_headers: list[dict[str, object]] = field(default_factory=list)

    def may_open(self, mailbox: str) -> bool:
        """Tell whether the app has FullAccess to mailbox (addresses compare case-insensitively)."""
        wanted = mailbox.casefold()
        return any(granted.casefold() == wanted for granted in self.mailboxes)

    def expire_secrets(self) -> None:
        """Turn every current secret into an expired one (AADSTS7000222 from now on)."""
        self.expired_secrets.extend(self.secrets)
        self.secrets.clear()


@dataclass(frozen=True)
class Introspection:
    """One token check Dovecot asked for, and the verdict."""

    mailbox: str | None
    client_id: str | None
    active: bool
    reason: str


class EntraError(Exception):
    """An error reply in Entra's shape: status, OAuth error, AADSTS code and message."""

    def __init__(self, status: int, error: str, code: int, message: str) -> None:
        super().__init__(f"AADSTS{code}: {message}")
        self.status = status
        self.error = error
        self.code = code

    def body(self) -> JSON:
        """Return the JSON body Entra sends for this error."""
        trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        return {
            "error": self.error,
            "error_description": (
                f"{self}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}"
                f"\r\nTimestamp: {now}"
            ),
            "error_codes": [self.code],
            "timestamp": now,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"https://login.microsoftonline.com/error?code={self.code}",
        }


class _Reject(Exception):
    """A token Dovecot must not accept; the message says why."""


class _Handler(BaseHTTPRequestHandler):
    """Routes requests of both listeners to the IdentityPlatform."""

    server: _Server
    disable_nagle_algorithm = True  # else every reply waits ~40 ms for a delayed ACK

    def do_GET(self) -> None:
        """Serve discovery and keys."""
        self._dispatch("GET", b"")

    def do_POST(self) -> None:
        """Serve token and introspection requests."""
        length = int(self.headers.get("Content-Length") or 0)
        self._dispatch("POST", self.rfile.read(length))

    def _dispatch(self, method: str, body: bytes) -> None:
        idp = self.server.idp
        host = self.headers.get("Host") or f"{idp.host}:{idp.port}"
        try:
            status, payload = idp.handle(
                method, self.path, body, host=host, tls=self.server.tls is not None
            )
        except Exception:
            _LOGGER.exception("identity platform stand-in failed on %s %s", method, self.path)
            status, payload = 500, {"error": "server_error"}
        data = json.dumps(payload).encode()
        content_type = "application/json; charset=utf-8"
        if status == 429:  # Entra's throttling answer: plain text, not JSON
            data, content_type = b"Too Many Requests", "text/plain"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        if status == 503 and idp.retry_after is not None:
            self.send_header("Retry-After", str(idp.retry_after))
        if status == 429:
            self.send_header("Retry-After", str(idp.throttle_retry_after))
        self.end_headers()
        self.wfile.write(data)
        with idp.lock:
            idp.requests.append((method, self.path.split("?", maxsplit=1)[0], status))

    def log_message(self, format: str, *args: Any) -> None:
        """Send the access log to debug logging instead of stderr."""
        if _LOGGER.isEnabledFor(logging.DEBUG):
            _LOGGER.debug("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    """A threading HTTP server that does the TLS handshake in the request's thread."""

    daemon_threads = True
    # socketserver listens with a backlog of 5: a ramp of logins (token requests and
    # Dovecot's token checks at once) overflowed it, and the dropped connections waited
    # for TCP's retransmission, 1 s and more, which Entra never makes anyone do.
    request_queue_size = 256

    def __init__(
        self, address: tuple[str, int], idp: IdentityPlatform, tls: ssl.SSLContext | None
    ) -> None:
        self.idp = idp
        self.tls = tls
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Wrap the connection in TLS here, so a slow handshake never blocks accept()."""
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        try:
            conn = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            _LOGGER.debug("TLS handshake from %s failed: %s", client_address, exc)
            return
        try:
            super().finish_request(conn, client_address)
        finally:
            conn.close()


class IdentityPlatform(Service):
    """Entra ID stand-in: tenants, app registrations, client-credential tokens, a token check."""

    def __init__(
        self,
        pki: TestPKI,
        *,
        host: str = "127.0.0.1",
        token_lifetime: int = 3599,
        port: int = 0,
        introspection_port: int = 0,
    ) -> None:
        self.pki = pki
        self.host = host
        self.token_lifetime = token_lifetime
        self.down = False
        self.retry_after: int | None = 0  # MSAL throttles a 5xx'd request this long (None: 5 s)
        # tokens refused this many seconds after issue, whatever their exp claims (None: at exp)
        self.refuse_after: float | None = None
        # Every throttle_every-th client-credentials token request (0: none) is answered
        # HTTP 429 with Retry-After: throttle_retry_after, as Entra throttles an app.
        self.throttle_every = 0
        self.throttle_retry_after = 2
        self.lock = threading.Lock()
        self.tenants: dict[str, dict[str, App]] = {}
        self.token_requests = 0
        self.introspection_requests = 0
        self.issued: list[JSON] = []
        self.introspections: list[Introspection] = []
        self.requests: list[tuple[str, str, int]] = []
        self._revoked: set[str] = set()
        self._ports = [port, introspection_port]
        self._servers: list[_Server] = []
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.key_id = b64url(secrets.token_bytes(20))
        # rig.idp_delegated builds on this module's errors: imported here to avoid a cycle
        from rig.idp_delegated import DelegatedSignIn  # noqa: PLC0415

        self.delegated = DelegatedSignIn(self)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start both listeners (again on the same ports after a stop)."""
        if self._servers:
            return
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(self.pki.server_cert_file, self.pki.server_key_file)
        for index, context in enumerate((tls, None)):
            server = _Server((self.host, self._ports[index] or free_port(self.host)),
                             self, context)
            self._ports[index] = server.server_address[1]
            name = f"idp-{'https' if context else 'introspection'}-{self._ports[index]}"
            # A short poll interval keeps stop() (and so restarts) quick.
            threading.Thread(target=server.serve_forever, args=(0.05,), name=name,
                             daemon=True).start()
            self._servers.append(server)
        _LOGGER.debug("identity platform on %s, introspection on %s", self.authority,
                      self.introspection_url)

    def stop(self) -> None:
        """Stop both listeners; start() brings them back on the same ports."""
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()

    @property
    def port(self) -> int:
        """The HTTPS port (known once started)."""
        return self._bound(0)

    @property
    def introspection_port(self) -> int:
        """The plain HTTP port Dovecot asks (known once started)."""
        return self._bound(1)

    def _bound(self, index: int) -> int:
        if not self._ports[index]:
            raise RuntimeError("IdentityPlatform is not started yet")
        return self._ports[index]

    @property
    def authority(self) -> str:
        """The authority host URL; clients append /TENANT."""
        return f"https://{self.host}:{self.port}"

    @property
    def introspection_url(self) -> str:
        """The URL Dovecot's oauth2 passdb posts to (see Dovecot's config)."""
        return f"http://{self.host}:{self.introspection_port}/introspect"

    # -- directory -------------------------------------------------------------------------

    def add_tenant(self, tenant_id: str | None = None) -> str:
        """Create a tenant (a random GUID when none given) and return its id."""
        tenant_id = tenant_id or str(uuid.uuid4())
        with self.lock:
            self.tenants.setdefault(tenant_id, {})
        return tenant_id

    def register_app(
        self,
        tenant_id: str,
        *,
        client_id: str | None = None,
        secret: str | None = None,
        certificates: Sequence[bytes] = (),
        roles: Sequence[str] = (IMAP_ROLE,),
        mailboxes: Sequence[str] = (),
        display_name: str | None = None,
    ) -> App:
        """Register an app with admin-consented roles and mailbox grants in a tenant."""
        client_id = client_id or str(uuid.uuid4())
        app = App(
            client_id=client_id,
            tenant_id=tenant_id,
            service_principal_id=str(uuid.uuid4()),
            display_name=display_name or f"outlook2mqtt test {client_id[:8]}",
            roles=list(roles),
            mailboxes=set(mailboxes),
            secrets=[secret] if secret else [],
            certificates=list(certificates),
        )
        with self.lock:
            self.tenants[tenant_id][client_id] = app
        return app

    def revoke_all(self, client_id: str) -> int:
        """Revoke every token issued so far to client_id; return how many."""
        with self.lock:
            tokens = {c["uti"] for c in self.issued if c["appid"] == client_id}
            self._revoked |= tokens
        return len(tokens)

    def good_until(self, claims: JSON) -> float:
        """When a token with these claims stops being accepted (exp, or refuse_after)."""
        if self.refuse_after is None:
            return float(claims["exp"])
        return min(float(claims["exp"]), float(claims["iat"]) + self.refuse_after)

    def public_key_pem(self) -> bytes:
        """The token-signing public key as PEM (for Dovecot's local JWT validation)."""
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    # -- requests --------------------------------------------------------------------------

    def handle(self, method: str, path: str, body: bytes, *, host: str, tls: bool) -> tuple[
        int, JSON
    ]:
        """Answer one request: (status, JSON body)."""
        if self.down:
            return 503, {"error": "temporarily_unavailable",
                         "error_description": "The service is unavailable (simulated outage)."}
        form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        parts = path.split("?", maxsplit=1)[0].strip("/").split("/")
        try:
            if not tls:
                if method == "POST" and parts == ["introspect"]:
                    return self._introspect(form, IMAP_ROLE, IMAP_SCOPE)
                if method == "POST" and parts == ["introspect", "smtp"]:
                    return self._introspect(form, SMTP_ROLE, SMTP_SCOPE)
            elif method == "GET" and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
                return 200, self._discovery(parts[0], f"https://{host}")
            elif method == "GET" and parts[1:] == ["discovery", "v2.0", "keys"]:
                return 200, self._jwks()
            elif method == "POST" and parts[1:] == ["oauth2", "v2.0", "devicecode"]:
                return 200, self.delegated.device_code(parts[0], form, f"https://{host}")
            elif method == "POST" and parts[1:] == ["oauth2", "v2.0", "token"]:
                if form.get("grant_type") in DELEGATED_GRANTS:
                    return 200, self.delegated.token(parts[0], form, f"https://{host}")
                if self._throttled():
                    return 429, {}
                return 200, self._token(parts[0], form, f"https://{host}")
        except EntraError as exc:
            _LOGGER.debug("%s %s -> %s", method, path, exc)
            return exc.status, exc.body()
        return 404, {"error": "not_found", "error_description": f"No route for {method} {path}"}

    def _throttled(self) -> bool:
        with self.lock:
            self.token_requests += 1
            return bool(self.throttle_every) and self.token_requests % self.throttle_every == 0

    def _tenant(self, tenant_id: str, error: str = "invalid_request") -> dict[str, App]:
        apps = self.tenants.get(tenant_id)
        if apps is None:
            raise EntraError(
                400, error, 90002,
                f"Tenant '{tenant_id}' not found. Check to make sure you have the correct tenant "
                "ID and are signing into the correct cloud. Check with your subscription "
                "administrator, this may happen if there are no active subscriptions for the "
                "tenant.",
            )
        return apps

    def _discovery(self, tenant_id: str, base: str) -> JSON:
        # Entra answers an unknown tenant here with invalid_tenant; MSAL raises ValueError.
        self._tenant(tenant_id, error="invalid_tenant")
        oauth = f"{base}/{tenant_id}/oauth2/v2.0"
        return {
            "issuer": f"{base}/{tenant_id}/v2.0",
            "authorization_endpoint": f"{oauth}/authorize",
            "token_endpoint": f"{oauth}/token",
            "device_authorization_endpoint": f"{oauth}/devicecode",
            "jwks_uri": f"{base}/{tenant_id}/discovery/v2.0/keys",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post", "private_key_jwt", "client_secret_basic"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "tenant_region_scope": "EU",
        }

    def _jwks(self) -> JSON:
        numbers = self._key.public_key().public_numbers()
        n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
        e = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
        return {"keys": [{"kty": "RSA", "use": "sig", "kid": self.key_id, "x5t": self.key_id,
                          "n": b64url(n), "e": b64url(e)}]}

    def _token(self, tenant_id: str, form: dict[str, str], base: str) -> JSON:
        apps = self._tenant(tenant_id)
        grant = form.get("grant_type", "")
        if grant != "client_credentials":
            raise EntraError(400, "unsupported_grant_type", 70003,
                             f"The app requested an unsupported grant type '{grant}'.")
        client_id = form.get("client_id", "")
        if not client_id:
            raise EntraError(400, "invalid_request", 900144,
                             "The request body must contain the following parameter: "
                             "'client_id'.")
        app = apps.get(client_id)
        if app is None:
            raise EntraError(
                400, "unauthorized_client", 700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{tenant_id}'. This can happen if the application has not been installed by "
                "the administrator of the tenant or consented to by any user in the tenant. You "
                "may have sent your authentication request to the wrong tenant.",
            )
        if "client_secret" in form:
            _check_secret(app, form["client_secret"])
            acr = "1"
        elif form.get("client_assertion_type") == ASSERTION_TYPE and form.get("client_assertion"):
            audiences = [f"{b}/{tenant_id}/oauth2/{v}" for b in {base, self.authority}
                         for v in ("v2.0/token", "token")]
            _check_assertion(app, form["client_assertion"], audiences)
            acr = "2"
        else:
            raise EntraError(401, "invalid_client", 7000218,
                             "The request body must contain the following parameter: "
                             "'client_assertion' or 'client_secret'.")
        resource = _resource(form.get("scope", ""), tenant_id)
        lifetime = self.token_lifetime
        return {
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": self._issue(app, resource, acr, lifetime),
        }

    def _issue(self, app: App, resource: str, acr: str, lifetime: int) -> str:
        now = int(time.time())
        issuer = f"https://sts.windows.net/{app.tenant_id}/"
        claims: JSON = {
            "aud": resource, "iss": issuer, "iat": now, "nbf": now, "exp": now + lifetime,
            "app_displayname": app.display_name, "appid": app.client_id, "appidacr": acr,
            "idp": issuer, "idtyp": "app", "oid": app.service_principal_id,
            "sub": app.service_principal_id, "tid": app.tenant_id,
            "uti": b64url(secrets.token_bytes(16)), "ver": "1.0",
        }
        if app.roles:  # Entra leaves the claim out when nothing is granted
            claims["roles"] = list(app.roles)
        token = jwt.encode(claims, self._key, algorithm="RS256",
                           headers={"kid": self.key_id, "x5t": self.key_id})
        with self.lock:
            self.issued.append(claims)
        return token

    # -- Dovecot's token check -------------------------------------------------------------

    @property
    def smtp_introspection_url(self) -> str:
        """The token check of the rig's SMTP submission: like IMAP's, but for SMTP.SendAsApp."""
        return f"{self.introspection_url}/smtp"

    def _introspect(self, form: dict[str, str], role: str, scope: str) -> tuple[int, JSON]:
        # Dovecot's introspection request (RFC 7662, token=...) never names the login user,
        # and in 2.3.19 introspection_url is not %-expanded. Its password-grant mode
        # (use_grant_password = yes) does: it posts grant_type=password&username=<login
        # user>&password=<the XOAUTH2 token>. So that is what rig.dovecot configures, and
        # here the mailbox grant is checked like Exchange's Add-MailboxPermission. A refusal
        # must be 400 invalid_grant (Dovecot: password mismatch -> AUTHENTICATIONFAILED); any
        # other failure becomes [UNAVAILABLE]. Plain token=... requests are answered too, for
        # apps granted exactly one mailbox.
        with self.lock:
            self.introspection_requests += 1
        if (answer := self.delegated.introspect(form, scope)) is not None:
            return answer  # a token naming a user (rig.idp_delegated)
        grant = form.get("grant_type") == "password"
        token = form.get("password" if grant else "token", "")
        mailbox = form.get("username") if grant else None
        client_id: str | None = None
        try:
            claims = self._verify(token, role)
            client_id = claims["appid"]
            app = self.tenants.get(claims["tid"], {}).get(client_id)
            if app is None:
                raise _Reject("app no longer registered")
            if mailbox is None:
                if len(app.mailboxes) != 1:
                    raise _Reject("token names no mailbox and the app has not exactly one")
                mailbox = next(iter(app.mailboxes))
            if not app.may_open(mailbox):
                raise _Reject(f"app {client_id} has no permission on mailbox {mailbox}")
        except _Reject as exc:
            _LOGGER.debug("token check for %s refused: %s", mailbox, exc)
            with self.lock:
                self.introspections.append(Introspection(mailbox, client_id, False, str(exc)))
            if grant:
                return 400, {"error": "invalid_grant", "error_description": str(exc)}
            return 200, {"active": False}
        with self.lock:
            self.introspections.append(Introspection(mailbox, client_id, True, "ok"))
        reply: JSON = {"active": True, "username": mailbox, "client_id": client_id,
                       "exp": claims["exp"]}
        if grant:
            reply |= {"access_token": token, "token_type": "Bearer",
                      "expires_in": max(0, claims["exp"] - int(time.time()))}
        return 200, reply

    def _verify(self, token: str, role: str) -> JSON:
        """Check a token as Exchange would; return its claims or raise _Reject."""
        try:
            claims: JSON = jwt.decode(token, self._key.public_key(), algorithms=["RS256"],
                                      audience=OUTLOOK_RESOURCE,
                                      options={"require": ["exp", "aud", "tid", "appid"]})
        except jwt.InvalidTokenError as exc:
            raise _Reject(f"invalid token: {exc}") from exc
        if claims.get("uti") in self._revoked:
            raise _Reject("token revoked")
        if time.time() >= self.good_until(claims):
            raise _Reject("token invalidated before its expiry")
        if role not in claims.get("roles", []):
            raise _Reject(f"token lacks the {role} role")
        return claims


def _check_secret(app: App, secret: str) -> None:
    """Raise the EntraError Entra gives for a wrong or expired client secret."""
    if secret in app.secrets:
        return
    if secret in app.expired_secrets:
        raise EntraError(401, "invalid_client", 7000222,
                         f"The provided client secret keys for app '{app.client_id}' are "
                         "expired. Visit the Azure portal to create new keys for your app: "
                         "https://aka.ms/NewClientSecret, or consider using certificate "
                         "credentials for added security: https://aka.ms/certCreds.")
    raise EntraError(401, "invalid_client", 7000215,
                     "Invalid client secret provided. Ensure the secret being sent in the "
                     "request is the client secret value, not the client secret ID, for a "
                     f"secret added to app '{app.client_id}'.")


def _check_assertion(app: App, assertion: str, audiences: list[str]) -> None:
    """Verify a private_key_jwt client assertion against the app's registered certificates."""
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.InvalidTokenError as exc:
        raise EntraError(400, "invalid_request", 50027,
                         f"JWT token is invalid or malformed: {exc}") from exc
    app.assertion_headers.append({k: v for k, v in header.items() if k != "x5c"})
    alg = header.get("alg", "")
    if "x5t#S256" in header:
        wanted, index = str(header["x5t#S256"]).rstrip("="), 2
    else:
        # MSAL pads x5t with '=' (base64url of 20 bytes); Entra accepts both forms.
        wanted, index = str(header.get("x5t", "")).rstrip("="), 1
    found = [pem for pem in app.certificates if thumbprints(pem)[index] == wanted]
    if not found or alg not in ("RS256", "PS256"):
        raise EntraError(401, "invalid_client", 700027,
                         "The certificate with identifier used to sign the client assertion is "
                         f"not registered on application. [Reason - The key was not found., "
                         f"Thumbprint of key used by client: '{wanted}', Please visit the Azure "
                         f"Portal to see configured keys for app Id '{app.client_id}'.]")
    cert = x509.load_pem_x509_certificate(found[0])
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise EntraError(401, "invalid_client", 700027, "Only RSA keys are supported.")
    if cert.not_valid_after_utc < dt.datetime.now(dt.UTC):
        raise EntraError(401, "invalid_client", 700027,
                         "Client assertion contains an invalid signature. [Reason - The key "
                         f"used is expired., Thumbprint of key used by client: '{wanted}']")
    try:
        claims = jwt.decode(assertion, key, algorithms=[alg], audience=audiences,
                            options={"require": ["exp", "aud", "iss", "sub"]})
    except jwt.ExpiredSignatureError as exc:
        raise EntraError(400, "invalid_client", 700024,
                         "Client assertion is not within its valid time range.") from exc
    except jwt.InvalidSignatureError as exc:
        raise EntraError(401, "invalid_client", 700027,
                         "Client assertion contains an invalid signature. [Reason - The "
                         "provided signature value did not match the expected signature value., "
                         f"Thumbprint of key used by client: '{wanted}']") from exc
    except jwt.InvalidAudienceError as exc:
        raise EntraError(401, "invalid_client", 50012,
                         "Client assertion audience claim does not match Realm issuer.") from exc
    except jwt.InvalidTokenError as exc:
        raise EntraError(400, "invalid_request", 50027,
                         f"JWT token is invalid or malformed: {exc}") from exc
    if claims["iss"] != app.client_id or claims["sub"] != app.client_id:
        raise EntraError(401, "invalid_client", 50012,
                         "Client assertion iss and sub must be the client id "
                         f"'{app.client_id}'.")


def _resource(scope: str, tenant_id: str) -> str:
    """Map a client-credentials scope to the token audience, as Entra does."""
    if not scope.endswith("/.default") or " " in scope.strip():
        raise EntraError(400, "invalid_scope", 1002012,
                         f"The provided value for scope {scope} is not valid. Client credential "
                         "flows must have a scope value with /.default suffixed to the resource "
                         "identifier (application ID URI).")
    resource = scope.removesuffix("/.default")
    if resource not in _RESOURCES:
        raise EntraError(400, "invalid_resource", 500011,
                         f"The resource principal named {resource} was not found in the tenant "
                         f"named {tenant_id}. This can happen if the application has not been "
                         "installed by the administrator of the tenant or consented to by any "
                         "user in the tenant. You might have sent your authentication request "
                         "to the wrong tenant.")
    return resource

