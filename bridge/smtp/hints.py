"""What to do about an SMTP refusal: Exchange Online's answers to client submission, mapped to
the fix, as `bridge.auth.tokens` does for AADSTS codes. Pure.
"""

from __future__ import annotations

import re

_SET_CAS = "Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled $false"
_PERMISSIONS = (
    "the app needs the SMTP.SendAsApp application permission (Office 365 Exchange Online) "
    "with admin consent, a service principal in Exchange (New-ServicePrincipal -AppId "
    "<client id> -ObjectId <enterprise application object id>) and FullAccess on the mailbox "
    "(Add-MailboxPermission -Identity <mailbox> -User <service principal id> -AccessRights "
    "FullAccess); a token issued before the consent lacks the permission for its lifetime"
)

# (pattern searched in "<code> <text>", hint), most specific first.
SMTP_HINTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"5\.7\.139"),
     "SMTP AUTH is disabled for the tenant or the mailbox: enable it with "
     f"`{_SET_CAS}` (and `Set-TransportConfig -SmtpClientAuthenticationDisabled $false` "
     "for the whole tenant), or under Microsoft 365 admin -> the user -> Mail -> Manage "
     "email apps -> Authenticated SMTP"),
    (re.compile(r"5\.7\.30"),
     "the server wants OAuth2, not a password: check that the account's auth is an OAuth2 "
     "credential"),
    (re.compile(r"^535\b.*5\.7\.3\b"),
     f"Exchange refused the app: {_PERMISSIONS}"),
    (re.compile(r"^535\b"),
     "the token was refused for SMTP: for an app-only account, " + _PERMISSIONS + "; for a "
     "device_code account, sign in again with `outlook2mqtt login` to grant SMTP.Send"),
    (re.compile(r"4\.3\.2|sender thread limit", re.IGNORECASE),
     "more than 3 SMTP connections to this mailbox at once (Exchange's limit): another "
     "client is sending as this mailbox; send again in a minute"),
    (re.compile(r"STOREDRV\.Submission|SubmissionQuotaExceeded|5\.2\.0", re.IGNORECASE),
     "the mailbox reached Exchange's sending limit (10,000 recipients a day, 30 messages "
     "a minute): wait up to 24 hours before sending again"),
    (re.compile(r"5\.7\.60|SendAsDenied|5\.7\.1\b.*send as", re.IGNORECASE),
     "the mailbox may not send as this From address: the bridge always sends as the "
     "account's mailbox, so check that `mailbox` is the address the app may send as"),
    (re.compile(r"^5\d\d\b.*5\.1\.[0-9]\b"),
     "a recipient address was refused: check the spelling"),
)


def smtp_hint(code: int | None, text: str) -> str | None:
    """A concrete fix for an SMTP reply, when one is known."""
    line = f"{code or ''} {text}".strip()
    for pattern, hint in SMTP_HINTS:
        if pattern.search(line):
            return hint
    return None


def describe(code: int | None, text: str) -> str:
    """`<code> <text>` of a reply, with its hint in parentheses when one is known."""
    answer = f"{code} {text}".strip() if code else text
    hint = smtp_hint(code, text)
    return f"{answer} ({hint})" if hint else answer
