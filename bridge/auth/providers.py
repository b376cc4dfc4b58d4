"""Which token provider an account gets: app-only providers shared per app registration
and credential, delegated ones per account. May import `bridge.auth` and `bridge.config`.
"""

from __future__ import annotations

import threading
from pathlib import Path

from bridge.auth.delegated import DelegatedTokenProvider
from bridge.auth.tokens import Provider, TokenProvider
from bridge.config.model import AccountConfig

# What an app-only token depends on. The mailbox is not part of it: Exchange decides
# which mailboxes the app may open, the token names none.
AppKey = tuple[str, str, str, str, str | None, Path | None, Path | None, str | None, str,
               Path | None]


def app_key(account: AccountConfig) -> AppKey:
    """The app registration and credential an app-only account signs in with."""
    return (account.auth, account.authority_url, account.client_id, account.scope,
            account.client_secret, account.certificate_file, account.private_key_file,
            account.private_key_passphrase, account.assertion_algorithm, account.ca_file)


def token_provider(account: AccountConfig) -> Provider:
    """A provider of the account's own (for the command line's one-account checks)."""
    if account.auth == "device_code":
        return DelegatedTokenProvider(account)
    return TokenProvider(account)


class TokenProviders:
    """Hands out providers: one per app registration and credential for app-only accounts,
    so N mailboxes of one app cost one MSAL app and one token; one per delegated account
    (a signed-in user's token is that user's)."""

    def __init__(self) -> None:
        self._apps: dict[AppKey, TokenProvider] = {}
        self._lock = threading.Lock()

    def for_account(self, account: AccountConfig) -> Provider:
        if account.auth == "device_code":
            return DelegatedTokenProvider(account)
        with self._lock:
            provider = self._apps.get(app_key(account))
            if provider is None:
                provider = self._apps[app_key(account)] = TokenProvider(account)
            else:
                provider.add_user(account)
            return provider

    def __len__(self) -> int:
        return len(self._apps)
