"""`check`'s SMTP step for an account that sends: EHLO, STARTTLS, AUTH XOAUTH2, QUIT, with
nothing sent, and the permission a refused app-only token lacks.
"""

from __future__ import annotations

from bridge.auth.tokens import Provider
from bridge.cli.steps import Step
from bridge.config.model import AccountConfig
from bridge.errors import AuthError, CommandError, SmtpError
from bridge.smtp.outbox import Outbox

SMTP_ROLE = "SMTP.SendAsApp"
CHECK_TIMEOUT = 20.0


def smtp_step(account: AccountConfig, provider: Provider) -> Step:
    """Log in to the account's SMTP host as the bridge would before sending."""
    name = "SMTP login"
    outbox = Outbox(account, provider, timeout=CHECK_TIMEOUT)
    where = f"{outbox.settings.smtp_host}:{outbox.settings.smtp_port}"
    try:
        outbox.login_check()
    except SmtpError as exc:
        return Step(account.name, name, False, str(exc), _role_hint(account, provider),
                    f"smtp_{exc.code}" if exc.code else "smtp")
    except CommandError as exc:  # no token
        return Step(account.name, name, False, str(exc), None, "smtp_token")
    return Step(account.name, name, True,
                f"{account.mailbox} on {where} (STARTTLS, AUTH XOAUTH2; nothing sent)")


def _role_hint(account: AccountConfig, provider: Provider) -> str | None:
    """The consent to give when an app-only token was refused for lack of SMTP.SendAsApp."""
    if account.auth == "device_code":
        return ("sign in again with `outlook2mqtt login` so the sign-in includes SMTP.Send, "
                "and check that SMTP AUTH is enabled for the mailbox")
    try:
        roles = provider.get_token().claims.get("roles") or []
    except AuthError:
        return None
    if SMTP_ROLE in roles:
        return None  # the reply's own hint (from the SMTP answer) says what else it can be
    return (f"the token has no {SMTP_ROLE} role: App registrations -> your app -> API "
            "permissions -> Add a permission -> APIs my organization uses -> Office 365 "
            f"Exchange Online -> Application permissions -> {SMTP_ROLE}; then 'Grant admin "
            "consent'")
