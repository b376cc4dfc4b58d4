"""An account's outbox: the safety rules of docs/sending.md, checked before any connection, then
one SMTP session per message.

Refusals (recipient not allowed, too many recipients, too large, rate limit) raise
`SendRefused` and send nothing. Used from the account's command worker thread only.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from collections.abc import Callable

from bridge.auth.delegated import DelegatedTokenProvider
from bridge.auth.tokens import Provider, Token
from bridge.config.model import AccountConfig, SendConfig
from bridge.errors import AuthError, CommandError, SmtpError
from bridge.smtp import submit
from bridge.smtp.compose import Outgoing

_LOGGER = logging.getLogger(__name__)

# Exchange Online takes at most 500 recipients per message; more is a mistake or abuse.
MAX_RECIPIENTS = 500
RATE_WINDOW = 60.0  # seconds: max_per_minute counts the sends of the last minute


class SendRefused(CommandError):
    """The bridge refused to send (policy or limits); nothing was sent."""


def smtp_scope(account: AccountConfig) -> str:
    """The scope of an SMTP token: app-only accounts use their `/.default` token (the
    SMTP.SendAsApp role rides in it); delegated ones need the SMTP.Send scope of the same
    resource as their IMAP scope."""
    if account.auth != "device_code":
        return account.scope
    return f"{account.scope.rpartition('/')[0]}/SMTP.Send"


def login_scopes(account: AccountConfig) -> list[str]:
    """What a delegated sign-in asks for: IMAP, and SMTP.Send when the account sends."""
    return [account.scope, smtp_scope(account)] if account.sending else [account.scope]


def smtp_token_provider(account: AccountConfig, provider: Provider) -> Provider:
    """The provider of SMTP tokens: the account's own, or a delegated one for SMTP.Send
    from the same sign-in (`login` asks for both scopes)."""
    if account.auth != "device_code":
        return provider
    return DelegatedTokenProvider(dataclasses.replace(account, scope=smtp_scope(account)))


class Outbox:
    """Sends an account's messages within its `[accounts.send]` rules."""

    def __init__(
        self,
        account: AccountConfig,
        provider: Provider,
        *,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = submit.SMTP_TIMEOUT,
    ) -> None:
        if account.send is None:
            raise ValueError(f"account {account.name} has no [accounts.send]")
        self.account = account
        self.settings: SendConfig = account.send
        self._provider = smtp_token_provider(account, provider)
        self._clock = clock
        self._timeout = timeout
        self._sends: collections.deque[float] = collections.deque()
        self._force_token = False
        self.sent = 0

    def refused_recipients(self, addresses: tuple[str, ...]) -> list[str]:
        """The addresses `allowed_recipients` does not allow."""
        return [a for a in addresses if not self.settings.allows(a)]

    def check(self, outgoing: Outgoing) -> bytes:
        """Apply every rule that needs no connection; return the message's bytes."""
        count = len(outgoing.recipients)
        if not count:
            raise SendRefused("no recipients: give 'to', 'cc' or 'bcc'; nothing was sent")
        if count > MAX_RECIPIENTS:
            raise SendRefused(f"too many recipients ({count}, limit {MAX_RECIPIENTS} per "
                              "message); nothing was sent")
        refused = self.refused_recipients(outgoing.recipients)
        if refused:
            listed = ", ".join(refused[:10]) + (", ..." if len(refused) > 10 else "")
            raise SendRefused(f"recipient(s) not allowed by allowed_recipients: {listed}; "
                              "nothing was sent")
        data = outgoing.as_bytes()
        if len(data) > self.settings.max_bytes:
            raise SendRefused(f"message too large ({len(data)} bytes, max_bytes = "
                              f"{self.settings.max_bytes}); nothing was sent")
        self._check_rate()
        return data

    def _check_rate(self) -> None:
        now = self._clock()
        while self._sends and now - self._sends[0] >= RATE_WINDOW:
            self._sends.popleft()
        limit = self.settings.max_per_minute
        if len(self._sends) >= limit:
            wait = RATE_WINDOW - (now - self._sends[0])
            raise SendRefused(f"rate limit: {limit} messages in the last minute "
                              f"(max_per_minute = {limit}); nothing was sent: send again in "
                              f"{max(1, round(wait))} s")

    def send(self, outgoing: Outgoing) -> str:
        """Check, then submit the message once; return its Message-ID."""
        data = self.check(outgoing)
        token = self._token()
        self._sends.append(self._clock())  # an attempt counts, as it does at Exchange
        try:
            with submit.session(self.account, self.settings, token,
                                timeout=self._timeout) as smtp:
                submit.deliver(smtp, self.account.mailbox, outgoing.recipients, data)
        except SmtpError as exc:
            if exc.code == 535:
                self._force_token = True  # never offer a refused token again
            raise
        self.sent += 1
        _LOGGER.info("%s: sent %s to %d recipient(s), %d bytes", self.account.name,
                     outgoing.message_id, len(outgoing.recipients), len(data))
        return outgoing.message_id

    def _token(self) -> Token:
        try:
            token = self._provider.get_token(force=self._force_token)
        except AuthError as exc:
            raise CommandError(f"cannot get a token for SMTP: {exc}; nothing was sent"
                               ) from None
        self._force_token = False
        return token

    def login_check(self) -> None:
        """EHLO, STARTTLS, AUTH and QUIT: nothing is sent (for `check`)."""
        token = self._token()
        with submit.session(self.account, self.settings, token, timeout=self._timeout):
            pass
