"""The token provider for an account's `auth` method."""

from __future__ import annotations

from bridge.auth.delegated import DelegatedTokenProvider
from bridge.auth.tokens import Provider, TokenProvider
from bridge.config.model import AccountConfig


def token_provider(account: AccountConfig) -> Provider:
    """The provider for the account's `auth` method."""
    if account.auth == "device_code":
        return DelegatedTokenProvider(account)
    return TokenProvider(account)
