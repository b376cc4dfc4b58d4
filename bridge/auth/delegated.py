"""Delegated sign-in (auth = "device_code"): the token cache file `outlook2mqtt login`
writes, and the provider that serves the signed-in user's tokens from it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msal

from bridge.auth.tokens import (
    MSAL_ERRORS,
    Token,
    error_from_result,
    issued_token,
    msal_options,
    network_error,
)
from bridge.config.model import AccountConfig
from bridge.errors import AuthError, LoginRequired
from bridge.log import register_secret
from bridge.util.files import write_atomic

_LOGGER = logging.getLogger(__name__)

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
    return app_factory(account.client_id, token_cache=cache, **msal_options(account))


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
        return issued_token(f"account {account.name}", result, str(mine[0].get("username")))
