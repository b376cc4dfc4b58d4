"""OAuth2 tokens from the Microsoft identity platform, through MSAL.

One provider per account, made by `token_provider`: `TokenProvider` for app-only
credentials (client secret / certificate), `DelegatedTokenProvider` for `device_code`
accounts, whose sign-in `outlook2mqtt login` saved in a token cache file. MSAL caches the
token and renews it once fewer than five minutes are left; `get_token(force=True)` gets a
new one, for when Exchange ended the session with `BYE Session invalidated -
AccessTokenExpired` before MSAL thought so.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import msal
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from bridge.config.model import AccountConfig
from bridge.errors import AuthError, LoginRequired
from bridge.log import register_secret
from bridge.util.files import write_atomic

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
            except MSAL_ERRORS as exc:
                self._app = None
                raise network_error(exc, self._account.authority) from None
        if "access_token" not in result:
            raise error_from_result(result)
        return _token(self._account, result)

    def _drop_cached_tokens(self) -> None:
        cache = self._app.token_cache
        # search() is a generator over the cache's dict: collect before removing.
        for item in list(cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)):
            cache.remove_at(item)


def _token(account: AccountConfig, result: dict[str, Any], username: str | None = None) -> Token:
    access_token = str(result["access_token"])
    register_secret(access_token)
    expires_at = time.time() + float(result.get("expires_in", 3599))
    # Personal Microsoft accounts get opaque access tokens: no claims, expiry from expires_in.
    claims = decode_claims(access_token)
    if isinstance(claims.get("exp"), int | float):
        expires_at = float(claims["exp"])
    if result.get("token_source") == "identity_provider":
        _LOGGER.info("token acquired for account %s, expires in %d s", account.name,
                     expires_at - time.time())
    return Token(access_token, expires_at, claims, username)


class Provider(Protocol):
    """What workers need of a token provider."""

    @property
    def account(self) -> AccountConfig: ...

    def get_token(self, *, force: bool = False) -> Token: ...


def token_provider(account: AccountConfig) -> Provider:
    """The provider for the account's `auth` method."""
    if account.auth == "device_code":
        return DelegatedTokenProvider(account)
    return TokenProvider(account)


# -- delegated sign-in (auth = "device_code") ---------------------------------------------

# invalid_grant with AADSTS70008 (expired), 50173 (revoked), 700082 (inactive 90 days), and
# interaction_required (consent, MFA, password change): only a person can sign in again.
LOGIN_ERRORS = ("invalid_grant", "interaction_required")
Stamp = tuple[int, int, int]


def login_hint(account: AccountConfig) -> str:
    return f"run `outlook2mqtt login --account {account.name}`"


def cache_stamp(path: Path) -> Stamp | None:
    """Identity of the file's current content (inode, mtime, size); None if there is none."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def wait_for_new_login(path: Path, stamp: Stamp | None, stop: threading.Event,
                       interval: float = 2.0) -> bool:
    """Wait until the token cache file is no longer as `stamp` (a `login` saved a new
    sign-in) or `stop` is set; True in the first case. A local stat() every `interval`
    seconds: the identity platform is not asked until there is something new to try."""
    while not stop.wait(interval):
        if cache_stamp(path) != stamp:
            return True
    return False


class TokenCacheFile:
    """An MSAL token cache persisted in one file: mode 0600, replaced atomically, never
    logged. It holds the refresh token, the one secret the bridge ever writes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cache = msal.SerializableTokenCache()
        self.stamp: Stamp | None = None
        self._loaded = False

    def load(self) -> bool:
        """Read the file if it changed since the last load or save; True if it did.
        Raises OSError or ValueError for an unreadable file."""
        stamp = cache_stamp(self.path)
        if self._loaded and stamp == self.stamp:
            return False
        text = self.path.read_text("utf-8") if stamp is not None else ""
        self.cache.deserialize(text or None)
        self.stamp, self._loaded = stamp, True
        for item in self.cache.search(msal.TokenCache.CredentialType.REFRESH_TOKEN):
            register_secret(str(item.get("secret", "")))
        return True

    def save(self, *, force: bool = False) -> None:
        """Write the cache back if MSAL changed it (a rotated refresh token)."""
        if not (force or self.cache.has_state_changed):
            return
        if not force and self._loaded and cache_stamp(self.path) != self.stamp:
            # `login` replaced the file meanwhile: its new sign-in wins over this refresh.
            _LOGGER.info("token cache %s changed on disk; reloading it", self.path)
            return
        for item in self.cache.search(msal.TokenCache.CredentialType.REFRESH_TOKEN):
            register_secret(str(item.get("secret", "")))
        write_atomic(self.path, self.cache.serialize().encode(), 0o600)
        self.cache.has_state_changed = False
        self.stamp, self._loaded = cache_stamp(self.path), True


def public_client(account: AccountConfig, cache: msal.SerializableTokenCache,
                  app_factory: Callable[..., Any] = msal.PublicClientApplication) -> Any:
    """MSAL's PublicClientApplication for a delegated account (fetches discovery)."""
    kwargs: dict[str, Any] = {"authority": account.authority_url, "instance_discovery": False,
                              "token_cache": cache}
    session = _http_session(account)
    if session is not None:
        kwargs["http_client"] = session
    return app_factory(account.client_id, **kwargs)


def signed_in_user(claims: dict[str, Any]) -> str | None:
    """The user an id token (or delegated access token) names."""
    for key in ("preferred_username", "upn", "email", "unique_name"):
        if claims.get(key):
            return str(claims[key])
    return None


class DelegatedTokenProvider:
    """Hands out the signed-in user's tokens from the persisted cache; thread-safe.

    MSAL redeems the refresh token when the access token is due and rotates it; the
    cache is written back then. When no sign-in is usable it raises `LoginRequired`, and
    keeps raising it without asking the identity platform until the cache file changes.
    """

    def __init__(
        self,
        account: AccountConfig,
        *,
        app_factory: Callable[..., Any] = msal.PublicClientApplication,
    ) -> None:
        if account.token_cache is None:
            raise AuthError("token_cache is required with auth = \"device_code\"")
        self._account = account
        self._file = TokenCacheFile(account.token_cache)
        self._app_factory = app_factory
        self._app: Any = None
        self._lock = threading.Lock()
        self._login_required: LoginRequired | None = None

    @property
    def account(self) -> AccountConfig:
        return self._account

    def _needs_login(self, why: str, result: dict[str, Any] | None = None) -> LoginRequired:
        code, error = None, None
        if result is not None:
            found = error_from_result(result)
            code, error = found.code, found.error
        return LoginRequired(f"{why}: sign-in needed, {login_hint(self._account)}",
                             code=code, error=error, stamp=self._file.stamp)

    def get_token(self, *, force: bool = False) -> Token:
        """A token with at least five minutes left; `force` redeems the refresh token."""
        with self._lock:
            try:
                if self._file.load():
                    self._login_required = None  # a new sign-in (or the first load)
            except (OSError, ValueError) as exc:
                raise self._needs_login(f"cannot read the token cache {self._file.path} "
                                        f"({type(exc).__name__})") from None
            if self._login_required is not None:
                raise self._login_required
            try:
                return self._acquire(force)
            except LoginRequired as exc:
                self._login_required = exc
                raise
            except AuthError:
                raise
            except MSAL_ERRORS as exc:
                self._app = None
                raise network_error(exc, self._account.authority) from None

    def _acquire(self, force: bool) -> Token:
        account = self._account
        if self._file.stamp is None:
            raise self._needs_login(f"no sign-in saved yet ({self._file.path} does not exist)")
        if self._app is None:
            self._app = public_client(account, self._file.cache, self._app_factory)
        users = self._app.get_accounts()
        mine = [u for u in users if str(u.get("username", "")).casefold()
                == account.mailbox.casefold()]
        if not mine:
            names = ", ".join(str(u.get("username")) for u in users) or "nobody"
            raise self._needs_login(f"the token cache holds a sign-in for {names}, not for "
                                    f"{account.mailbox}")
        result = self._app.acquire_token_silent_with_error(
            [account.scope], account=mine[0], force_refresh=force)
        try:
            self._file.save()
        except OSError as exc:
            # The rotated refresh token is lost with the file: the next start needs a login.
            _LOGGER.error("cannot write the token cache %s: %s", self._file.path, exc)
        if not result:
            raise self._needs_login(f"the saved sign-in has no token for {account.scope}")
        if "access_token" not in result:
            error = error_from_result(result)
            if error.error in LOGIN_ERRORS:
                raise self._needs_login(f"the sign-in of {account.mailbox} is no longer valid "
                                        f"({error})", result)
            raise error
        return _token(account, result, str(mine[0].get("username")))
