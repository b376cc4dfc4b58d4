"""Delegated sign-in for the identity-platform stand-in: device code, refresh tokens and
access tokens that name a user, as Entra ID does them for a public client app.

`IdentityPlatform` owns one `DelegatedSignIn` (`idp.delegated`) and routes the device-code
endpoint, the device-code and refresh-token grants and the token check of delegated
tokens here. A test plays the person at the browser: `approve(user_code, username)`.
"""

from __future__ import annotations

import json
import secrets
import string
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jwt

from rig.idp import IMAP_SCOPE, EntraError, Introspection
from rig.pki import b64url

if TYPE_CHECKING:
    from rig.idp import IdentityPlatform

JSON = dict[str, Any]

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
# Entra's tenant of personal Microsoft accounts; "consumers" is its alias
MSA_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"
WELL_KNOWN_TENANTS = ("consumers", "organizations", "common")
_RESOURCES = ("https://outlook.office.com", "https://outlook.office365.com")
_OIDC_SCOPES = {"openid", "profile", "offline_access", "email"}
_USER_CODE_ALPHABET = string.ascii_uppercase + string.digits


@dataclass(eq=False)
class PublicApp:
    """A public client app registration ("Allow public client flows"), no secret."""

    client_id: str
    display_name: str
    scopes: list[str]


@dataclass(eq=False)
class DeviceGrant:
    """One device-code sign-in in progress."""

    device_code: str
    user_code: str
    client_id: str
    tenant: str
    scope: str
    expires_at: float
    interval: int
    username: str | None = None  # set by approve()
    declined: bool = False
    last_poll: float = 0.0
    polls: int = 0


@dataclass(eq=False)
class RefreshGrant:
    """What a refresh token stands for."""

    username: str
    client_id: str
    tenant: str
    scope: str


@dataclass
class _Stats:
    device_polls: int = 0
    refreshes: int = 0
    slow_downs: int = 0
    # every raw token handed out (access, refresh, id), so tests can grep logs for them
    raw_tokens: list[str] = field(default_factory=list)


class DelegatedSignIn:
    """The delegated part of the stand-in; all state under `idp.lock`."""

    def __init__(self, idp: IdentityPlatform) -> None:
        self._idp = idp
        self._lock: threading.Lock = idp.lock
        self.apps: dict[str, PublicApp] = {}
        self.device_grants: dict[str, DeviceGrant] = {}
        self.refresh_tokens: dict[str, RefreshGrant] = {}
        self.revoked_users: set[str] = set()
        self.stats = _Stats()
        self.device_code_lifetime = 900
        self.interval = 1  # Entra says 5; tests want quick sign-ins
        for tenant in WELL_KNOWN_TENANTS:
            idp.add_tenant(tenant)

    # -- the test's side -------------------------------------------------------------------

    def register_public_app(
        self, *, client_id: str | None = None, display_name: str | None = None,
        scopes: tuple[str, ...] = (IMAP_SCOPE,),
    ) -> PublicApp:
        """Register a public client app for any directory and personal accounts."""
        client_id = client_id or str(uuid.uuid4())
        app = PublicApp(client_id, display_name or f"outlook2mqtt public {client_id[:8]}",
                        list(scopes))
        with self._lock:
            self.apps[client_id] = app
        return app

    def approve(self, user_code: str, username: str) -> None:
        """Sign in as `username` at the verification page and enter `user_code`."""
        with self._lock:
            grant = self._by_user_code(user_code)
            grant.username = username
            self.revoked_users.discard(username.casefold())

    def decline(self, user_code: str) -> None:
        """Press "Cancel" at the verification page."""
        with self._lock:
            self._by_user_code(user_code).declined = True

    def revoke_refresh_tokens(self, username: str) -> int:
        """Revoke every refresh token of `username` (Revoke-MgUserSignInSession); how many."""
        with self._lock:
            gone = [rt for rt, g in self.refresh_tokens.items()
                    if g.username.casefold() == username.casefold()]
            for rt in gone:
                del self.refresh_tokens[rt]
            self.revoked_users.add(username.casefold())
        return len(gone)

    def pending_user_codes(self) -> list[str]:
        """User codes of sign-ins nobody approved yet."""
        with self._lock:
            return [g.user_code for g in self.device_grants.values() if g.username is None]

    def _by_user_code(self, user_code: str) -> DeviceGrant:
        for grant in self.device_grants.values():
            if grant.user_code == user_code.strip().upper():
                return grant
        raise KeyError(f"no device sign-in with user code {user_code!r}")

    # -- endpoints -------------------------------------------------------------------------

    def device_code(self, tenant: str, form: dict[str, str], base: str) -> JSON:
        """POST /{tenant}/oauth2/v2.0/devicecode."""
        self._idp._tenant(tenant)
        app = self._app(form.get("client_id", ""), tenant)
        scope = self._scope(app, form.get("scope", ""))
        user_code = "".join(secrets.choice(_USER_CODE_ALPHABET) for _ in range(9))
        grant = DeviceGrant(
            device_code=b64url(secrets.token_bytes(48)), user_code=user_code,
            client_id=app.client_id, tenant=tenant, scope=scope,
            expires_at=time.time() + self.device_code_lifetime, interval=self.interval,
        )
        with self._lock:
            self.device_grants[grant.device_code] = grant
        uri = f"{base}/devicelogin"
        return {
            "user_code": user_code, "device_code": grant.device_code,
            "verification_uri": uri, "expires_in": self.device_code_lifetime,
            "interval": self.interval,
            "message": f"To sign in, use a web browser to open the page {uri} and enter the "
                       f"code {user_code} to authenticate.",
        }

    def token(self, tenant: str, form: dict[str, str], base: str) -> JSON:
        """The device-code and refresh-token grants of POST /{tenant}/oauth2/v2.0/token."""
        self._idp._tenant(tenant)
        with self._lock:
            self._idp.token_requests += 1
        app = self._app(form.get("client_id", ""), tenant)
        if "client_secret" in form or "client_assertion" in form:
            raise EntraError(401, "invalid_client", 700025,
                             "Client is public so neither 'client_assertion' nor "
                             "'client_secret' should be presented.")
        if form.get("grant_type") == DEVICE_CODE_GRANT:
            username, scope = self._redeem_device_code(app, form.get("device_code", ""))
        else:
            username, scope = self._redeem_refresh_token(app, form.get("refresh_token", ""))
            scope = self._scope(app, form.get("scope", "")) if form.get("scope") else scope
        return self._issue(app, tenant, username, scope, base)

    def _app(self, client_id: str, tenant: str) -> PublicApp:
        with self._lock:
            app = self.apps.get(client_id)
        if app is None:
            raise EntraError(400, "unauthorized_client", 700016,
                             f"Application with identifier '{client_id}' was not found in the "
                             f"directory '{tenant}'. This can happen if the application has "
                             "not been installed by the administrator of the tenant or "
                             "consented to by any user in the tenant.")
        return app

    def _scope(self, app: PublicApp, requested: str) -> str:
        scopes = requested.split()
        resource_scopes = [s for s in scopes if s not in _OIDC_SCOPES]
        for scope in resource_scopes:
            resource, _, name = scope.rpartition("/")
            if resource not in _RESOURCES or name not in app.scopes:
                raise EntraError(400, "invalid_scope", 70011,
                                 f"The provided value for the input parameter 'scope' is not "
                                 f"valid. The scope {scope} is not valid.")
        # Entra issues a token for one resource: several scopes of it (IMAP and SMTP of
        # Outlook) are fine, scopes of two resources are not.
        if len({s.rpartition("/")[0] for s in resource_scopes}) != 1:
            raise EntraError(400, "invalid_scope", 70011,
                             f"The provided value for the input parameter 'scope' is not "
                             f"valid: ask for scopes of exactly one resource, not "
                             f"{requested!r}.")
        return " ".join(scopes)

    def _redeem_device_code(self, app: PublicApp, device_code: str) -> tuple[str, str]:
        now = time.time()
        with self._lock:
            self.stats.device_polls += 1
            grant = self.device_grants.get(device_code)
            if grant is None or grant.client_id != app.client_id:
                raise EntraError(400, "invalid_grant", 70000,
                                 "The provided value for the 'device_code' is not valid.")
            too_soon = grant.last_poll and now - grant.last_poll < grant.interval - 0.5
            grant.last_poll, grant.polls = now, grant.polls + 1
            if now > grant.expires_at:
                del self.device_grants[device_code]
                raise EntraError(400, "expired_token", 70019,
                                 "Verification code expired.")
            if grant.declined:
                del self.device_grants[device_code]
                raise EntraError(400, "authorization_declined", 70020,
                                 "The user declined the authorization request.")
            if too_soon:
                self.stats.slow_downs += 1
                raise EntraError(400, "slow_down", 70023,
                                 "Polling too frequently: wait the interval between requests.")
            if grant.username is None:
                raise EntraError(400, "authorization_pending", 70016,
                                 "OAuth 2.0 device flow error. Authorization is pending. "
                                 "Continue polling.")
            del self.device_grants[device_code]  # a device code is redeemed once
            return grant.username, grant.scope

    def _redeem_refresh_token(self, app: PublicApp, refresh_token: str) -> tuple[str, str]:
        with self._lock:
            self.stats.refreshes += 1
            # Rotation: the old token is spent; the reply carries its successor.
            grant = self.refresh_tokens.pop(refresh_token, None)
        if grant is None or grant.client_id != app.client_id:
            raise EntraError(400, "invalid_grant", 70008,
                             "The provided authorization code or refresh token has expired "
                             "due to inactivity. Send a new interactive authorization request "
                             "for this user and resource.")
        if grant.username.casefold() in self.revoked_users:
            raise EntraError(400, "invalid_grant", 50173,
                             "The provided grant has expired due to it being revoked, a fresh "
                             "auth token is needed. The user might have changed or reset "
                             "their password.")
        return grant.username, grant.scope

    # -- tokens ----------------------------------------------------------------------------

    def _user_ids(self, username: str, tenant: str) -> tuple[str, str]:
        """(object id, tenant id) of a user: stable per name, MSA tenant for consumers."""
        oid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"user:{username.casefold()}"))
        tid = MSA_TENANT if tenant in ("consumers", "common") else (
            str(uuid.uuid5(uuid.NAMESPACE_URL, "organizations")) if tenant == "organizations"
            else tenant)
        return oid, tid

    def _issue(self, app: PublicApp, tenant: str, username: str, scope: str, base: str) -> JSON:
        idp = self._idp
        now = int(time.time())
        lifetime = idp.token_lifetime
        oid, tid = self._user_ids(username, tenant)
        resource_scopes = [s for s in scope.split() if s not in _OIDC_SCOPES]
        resource = resource_scopes[0].rpartition("/")[0]
        names = " ".join(s.rpartition("/")[2] for s in resource_scopes)
        claims: JSON = {
            "aud": resource, "iss": f"https://sts.windows.net/{tid}/", "iat": now, "nbf": now,
            "exp": now + lifetime, "app_displayname": app.display_name, "appid": app.client_id,
            "idtyp": "user", "name": username.partition("@")[0], "oid": oid, "puid": oid[:16],
            "preferred_username": username, "upn": username, "unique_name": username,
            "scp": names, "sub": b64url(oid.encode()), "tid": tid,
            "uti": b64url(secrets.token_bytes(16)), "ver": "1.0",
        }
        access_token = jwt.encode(claims, idp._key, algorithm="RS256",
                                  headers={"kid": idp.key_id, "x5t": idp.key_id})
        id_token = jwt.encode({
            "aud": app.client_id, "iss": f"{base}/{tid}/v2.0", "iat": now, "nbf": now,
            "exp": now + 3600, "name": claims["name"], "oid": oid,
            "preferred_username": username, "sub": claims["sub"], "tid": tid, "ver": "2.0",
        }, idp._key, algorithm="RS256", headers={"kid": idp.key_id})
        client_info = b64url(json.dumps({"uid": oid, "utid": tid}).encode())
        reply: JSON = {
            "token_type": "Bearer", "scope": f"{' '.join(resource_scopes)} openid profile"
            + (" offline_access" if "offline_access" in scope.split() else ""),
            "expires_in": lifetime, "ext_expires_in": lifetime,
            "access_token": access_token, "id_token": id_token, "client_info": client_info,
        }
        with self._lock:
            idp.issued.append(claims)
            self.stats.raw_tokens += [access_token, id_token]
            if "offline_access" in scope.split():
                refresh_token = "M.C5" + b64url(secrets.token_bytes(96))
                self.refresh_tokens[refresh_token] = RefreshGrant(
                    username, app.client_id, tenant, scope)
                self.stats.raw_tokens.append(refresh_token)
                reply["refresh_token"] = refresh_token
        return reply

    # -- Dovecot's token check -------------------------------------------------------------

    def introspect(self, form: dict[str, str], scope: str = IMAP_SCOPE
                   ) -> tuple[int, JSON] | None:
        """Answer Dovecot's check of a delegated token (which must carry `scope`), or None
        for any other token.

        A delegated token opens exactly one mailbox: that of the user it names.
        """
        grant = form.get("grant_type") == "password"
        token = form.get("password" if grant else "token", "")
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            return None
        if unverified.get("idtyp") != "user":
            return None
        mailbox = form.get("username") if grant else None
        idp = self._idp
        reason = "ok"
        try:
            claims: JSON = jwt.decode(token, idp._key.public_key(), algorithms=["RS256"],
                                      audience=list(_RESOURCES),
                                      options={"require": ["exp", "aud", "tid", "upn"]})
        except jwt.InvalidTokenError as exc:
            claims, reason = unverified, f"invalid token: {exc}"
        user = str(claims.get("upn", ""))
        if reason == "ok" and claims.get("uti") in idp._revoked:
            reason = "token revoked"
        elif reason == "ok" and scope not in str(claims.get("scp", "")).split():
            reason = f"token lacks the {scope} scope"
        elif reason == "ok" and mailbox is not None and mailbox.casefold() != user.casefold():
            reason = f"token of {user} cannot open mailbox {mailbox}"
        mailbox = mailbox or user
        active = reason == "ok"
        with self._lock:
            idp.introspections.append(
                Introspection(mailbox, str(claims.get("appid")), active, reason))
        if not active:
            if grant:
                return 400, {"error": "invalid_grant", "error_description": reason}
            return 200, {"active": False}
        reply: JSON = {"active": True, "username": mailbox, "client_id": claims.get("appid"),
                       "exp": claims["exp"]}
        if grant:
            reply |= {"access_token": token, "token_type": "Bearer",
                      "expires_in": max(0, int(claims["exp"]) - int(time.time()))}
        return 200, reply
