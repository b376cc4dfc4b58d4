"""Tokens from the Microsoft identity platform through MSAL, and the app-only provider.

`Token` is what a provider hands out; `TokenProvider` gets app-only tokens (client secret
or certificate); `bridge.auth.delegated` holds the device-code sign-in's provider. MSAL
caches a token and renews it once fewer than five minutes are left; `get_token(force=True)`
gets a new one, for when Exchange ended the session with `BYE Session invalidated -
AccessTokenExpired` before MSAL thought so. MSAL's and requests' errors become `AuthError`
here.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msal
import requests
from cryptography.hazmat.primitives import serialization

from bridge.auth.certificates import CertificateError, describe_certificate, unencrypted_pem
from bridge.auth.hints import hint_for
from bridge.auth.http import PlatformSession
from bridge.config.model import AccountConfig
from bridge.errors import AuthError
from bridge.log import register_secret

_LOGGER = logging.getLogger(__name__)

@dataclass(frozen=True)
class Token:
    """An access token and what the bridge may show of it (never the token itself)."""

    access_token: str = field(repr=False)
    expires_at: float
    claims: dict[str, Any] = field(default_factory=dict)
    username: str | None = None  # the signed-in user of a delegated token

    @property
    def delegated(self) -> bool:
        return self.username is not None

    @property
    def expires_in(self) -> float:
        return self.expires_at - time.time()


def decode_claims(jwt: str) -> dict[str, Any]:
    """The payload of a JWT, unverified: for display and diagnostics only."""
    try:
        part = jwt.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (IndexError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def certificate_credential(account: AccountConfig) -> dict[str, str]:
    """MSAL's client_credential for a certificate account.

    RS256 with the SHA-1 `x5t` works with every Entra tenant; PS256 with `x5t#S256`
    (MSAL does this when given the public certificate) is chosen by
    `assertion_algorithm = "PS256"`.
    """
    if account.certificate_file is None or account.private_key_file is None:
        raise AuthError("certificate_file and private_key_file are required")
    try:
        thumbprint = describe_certificate(account.certificate_file).sha1_thumbprint
    except CertificateError as exc:
        raise AuthError(str(exc)) from None
    cert_pem = account.certificate_file.read_bytes()
    key_pem = account.private_key_file.read_bytes()
    passphrase = account.private_key_passphrase
    # Re-serialise unencrypted so MSAL never needs the passphrase (older MSALs ignore it).
    key = serialization.load_pem_private_key(key_pem, passphrase.encode() if passphrase else None)
    key_text = unencrypted_pem(key).decode()
    if account.assertion_algorithm == "PS256":
        return {"private_key": key_text, "public_certificate": cert_pem.decode()}
    return {"private_key": key_text, "thumbprint": thumbprint}


def msal_options(account: AccountConfig) -> dict[str, Any]:
    """The keyword arguments every MSAL application of the account is made with."""
    return {"authority": account.authority_url, "instance_discovery": False,
            "http_client": PlatformSession(account.ca_file)}


def network_error(exc: Exception, authority: str) -> AuthError:
    """MSAL's and requests' exceptions, as the AuthError the workers handle."""
    if isinstance(exc, msal.exceptions.MsalServiceError):
        return AuthError(f"identity platform error: {exc}", transient=True)
    if isinstance(exc, requests.RequestException):
        return AuthError(f"cannot reach the identity platform at {authority}: "
                         f"{type(exc).__name__}", transient=True)
    # MSAL raises ValueError for a discovery document it cannot use (e.g. 400).
    return AuthError(f"identity platform refused the authority: {exc}")


MSAL_ERRORS = (msal.exceptions.MsalServiceError, requests.RequestException, ValueError)


def error_from_result(result: dict[str, Any]) -> AuthError:
    codes = result.get("error_codes") or []
    code = int(codes[0]) if codes else None
    error = str(result.get("error", "unknown_error"))
    description = str(result.get("error_description", "")).split("\r\n")[0].split("\n")[0]
    hint = hint_for(code)
    text = description or error
    if hint:
        text = f"{text} ({hint})"
    return AuthError(text, code=code, error=error, transient=error == "temporarily_unavailable")


class TokenProvider:
    """Hands out valid app-only tokens of one app registration; thread-safe. Accounts that
    sign in with the same app and credential share one (`bridge.auth.providers`)."""

    def __init__(
        self,
        account: AccountConfig,
        *,
        app_factory: Callable[..., Any] = msal.ConfidentialClientApplication,
    ) -> None:
        self._account = account
        self._app_factory = app_factory
        self._app: Any = None
        self._http: PlatformSession | None = None
        self._lock = threading.Lock()
        self._users = [account.name]

    @property
    def account(self) -> AccountConfig:
        """The first account of those that use this provider."""
        return self._account

    def add_user(self, account: AccountConfig) -> None:
        """One more account signs in with this provider's tokens."""
        self._users.append(account.name)

    def _who(self) -> str:
        if len(self._users) == 1:
            return f"account {self._users[0]}"
        return f"app {self._account.client_id} ({len(self._users)} accounts)"

    def _make_app(self) -> Any:
        account = self._account
        if account.auth == "client_secret":
            credential: Any = account.client_secret
        elif account.auth == "client_certificate":
            credential = certificate_credential(account)
        else:
            raise AuthError(f"auth = {account.auth!r} is not an app-only credential")
        options = msal_options(account)
        self._http = options["http_client"]
        return self._app_factory(account.client_id, client_credential=credential, **options)

    def get_token(self, *, force: bool = False) -> Token:
        """A token with at least five minutes left; `force` fetches a new one."""
        with self._lock:
            try:
                if self._app is None:
                    # MSAL fetches the OpenID configuration here, so this can fail too.
                    self._app = self._make_app()
                if force:
                    self._drop_cached_tokens()
                result = self._app.acquire_token_for_client(scopes=[self._account.scope])
            except AuthError:
                raise
            except MSAL_ERRORS as exc:
                # Entra's 429 has a plain-text body, which MSAL fails to parse (ValueError).
                throttled = self._throttled()
                if throttled is not None:
                    raise throttled from None
                self._app = None
                raise network_error(exc, self._account.authority) from None
            if result.get("token_source") == "identity_provider" and self._http is not None:
                # The next request is an hour away: keep no TLS connection open for it.
                self._http.close()
        if "access_token" not in result:
            raise self._throttled() or error_from_result(result)
        return issued_token(self._who(), result)

    def _throttled(self) -> AuthError | None:
        """The identity platform's HTTP 429, while its Retry-After lasts."""
        left = self._http.throttled_for() if self._http is not None else None
        if left is None:
            return None
        return AuthError(f"the identity platform is throttling app {self._account.client_id} "
                         f"(HTTP 429, Retry-After {left:.0f} s)", retry_after=left)

    def _drop_cached_tokens(self) -> None:
        cache = self._app.token_cache
        for item in list(cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)):
            cache.remove_at(item)  # search() is a generator over the dict remove_at changes


def issued_token(who: str, result: dict[str, Any], username: str | None = None) -> Token:
    """The Token of an MSAL result that holds one; its expiry from the claims if it has any.
    `who` names whose it is in the log ("account home")."""
    access_token = str(result["access_token"])
    register_secret(access_token)
    expires_at = time.time() + float(result.get("expires_in", 3599))
    # Personal Microsoft accounts get opaque access tokens: no claims, expiry from expires_in.
    claims = decode_claims(access_token)
    if isinstance(claims.get("exp"), int | float):
        expires_at = float(claims["exp"])
    if result.get("token_source") == "identity_provider":
        _LOGGER.info("token acquired for %s, expires in %d s", who, expires_at - time.time())
    return Token(access_token, expires_at, claims, username)


class Provider(Protocol):
    """What workers need of a token provider."""

    @property
    def account(self) -> AccountConfig: ...

    def get_token(self, *, force: bool = False) -> Token: ...
