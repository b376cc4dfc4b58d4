"""OAuth2 app-only tokens from the Microsoft identity platform, through MSAL.

One `TokenProvider` per account. MSAL caches the token and renews it once fewer than
five minutes are left; `get_token(force=True)` drops the cache, for when Exchange ended
the session with `BYE Session invalidated - AccessTokenExpired` before MSAL thought so.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msal
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from .config import AccountConfig
from .errors import AuthError
from .log import register_secret

_LOGGER = logging.getLogger(__name__)

# AADSTS code -> what to do about it. The codes people actually hit when setting up IMAP.
AADSTS_HINTS: dict[int, str] = {
    7000215: "client secret is wrong or expired: copy the secret's Value (not its ID) "
    "from App registration -> Certificates & secrets",
    7000222: "client secret has expired: create a new one under Certificates & secrets",
    700016: "application (client) id not found in this tenant: check client_id and "
    "tenant_id, and that the app registration exists in that directory",
    700027: "certificate not accepted: upload the .cer of this key pair under "
    "Certificates & secrets (outlook2mqtt cert show <file> prints its thumbprint), "
    "and check that private_key_file belongs to certificate_file",
    700024: "client assertion expired: check the system clock",
    90002: "tenant not found: check tenant_id (Directory (tenant) ID on the app's Overview)",
    1002012: "invalid scope: use https://outlook.office365.com/.default for IMAP",
    70011: "invalid scope: use https://outlook.office365.com/.default for IMAP",
    500011: "resource not found in the tenant: use the Outlook scope, not a custom one",
}


def hint_for(code: int | None) -> str | None:
    """A concrete fix for an AADSTS code, when one is known."""
    return AADSTS_HINTS.get(code) if code is not None else None


@dataclass(frozen=True)
class Token:
    """An access token and what the bridge may show of it (never the token itself)."""

    access_token: str = field(repr=False)
    expires_at: float
    claims: dict[str, Any] = field(default_factory=dict)

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
    cert_pem = account.certificate_file.read_bytes()
    key_pem = account.private_key_file.read_bytes()
    passphrase = account.private_key_passphrase
    # Re-serialise unencrypted so MSAL never needs the passphrase (older MSALs ignore it).
    key = serialization.load_pem_private_key(key_pem, passphrase.encode() if passphrase else None)
    key_text = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    cert = x509.load_pem_x509_certificate(cert_pem)
    if account.assertion_algorithm == "PS256":
        return {"private_key": key_text, "public_certificate": cert_pem.decode()}
    return {"private_key": key_text, "thumbprint": cert.fingerprint(hashes.SHA1()).hex()}  # noqa: S303 - x5t is SHA-1 by definition (RFC 7515 §4.1.7)


def _http_session(account: AccountConfig) -> requests.Session | None:
    if account.ca_file is None:
        return None
    # REQUESTS_CA_BUNDLE would override verify= on a session that trusts the environment.
    session = requests.Session()
    session.trust_env = False
    session.verify = str(account.ca_file)
    return session


def _error_from_result(result: dict[str, Any]) -> AuthError:
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
    """Hands out valid app-only tokens for one account; thread-safe."""

    def __init__(
        self,
        account: AccountConfig,
        *,
        app_factory: Callable[..., Any] = msal.ConfidentialClientApplication,
    ) -> None:
        self._account = account
        self._app_factory = app_factory
        self._app: Any = None
        self._lock = threading.Lock()

    @property
    def account(self) -> AccountConfig:
        return self._account

    def _make_app(self) -> Any:
        account = self._account
        if account.auth == "client_secret":
            credential: Any = account.client_secret
        elif account.auth == "client_certificate":
            credential = certificate_credential(account)
        else:
            raise AuthError(f"auth = {account.auth!r} is not an app-only credential")
        kwargs: dict[str, Any] = {
            "client_credential": credential,
            "authority": account.authority_url,
            "instance_discovery": False,
        }
        session = _http_session(account)
        if session is not None:
            kwargs["http_client"] = session
        return self._app_factory(account.client_id, **kwargs)

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
            except msal.exceptions.MsalServiceError as exc:
                self._app = None
                raise AuthError(f"identity platform error: {exc}", transient=True) from None
            except requests.RequestException as exc:
                self._app = None
                raise AuthError(
                    f"cannot reach the identity platform at {self._account.authority}: "
                    f"{type(exc).__name__}",
                    transient=True,
                ) from None
            except ValueError as exc:
                # MSAL raises ValueError for a discovery document it cannot use (e.g. 400).
                self._app = None
                raise AuthError(f"identity platform refused the authority: {exc}") from None
        if "access_token" not in result:
            raise _error_from_result(result)
        access_token = str(result["access_token"])
        register_secret(access_token)
        expires_at = time.time() + float(result.get("expires_in", 3599))
        claims = decode_claims(access_token)
        if isinstance(claims.get("exp"), int | float):
            expires_at = float(claims["exp"])
        if result.get("token_source") == "identity_provider":
            _LOGGER.info(
                "token acquired for account %s, expires in %d s",
                self._account.name,
                expires_at - time.time(),
            )
        return Token(access_token, expires_at, claims)

    def _drop_cached_tokens(self) -> None:
        cache = self._app.token_cache
        for item in cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN):
            cache.remove_at(item)
