"""What an AADSTS error code means and what to change: one row per code, a short summary
for the error text and the worked-out fix, with the account's own values, for `check`."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from bridge.auth.certificates import CertificateError, describe_certificate
from bridge.config.fields import is_guid
from bridge.config.model import CLOUDS, AccountConfig

PORTAL_SECRETS = "App registrations -> your app -> Certificates & secrets"


def outlook_scope(account: AccountConfig) -> str:
    """The app-only IMAP scope of the account's cloud."""
    return f"https://{CLOUDS[account.cloud][1]}/.default"


def _wrong_secret(account: AccountConfig, _text: str) -> str:
    fix = ("client secret is wrong: copy the secret's Value (shown once, ~40 characters),"
           f" not its Secret ID, from {PORTAL_SECRETS} -> Client secrets")
    # a Secret ID is a GUID; a secret's Value never is
    if is_guid(account.client_secret or ""):
        fix += "; client_secret looks like a Secret ID (a GUID)"
    return fix


def _certificate_refused(account: AccountConfig, text: str) -> str:
    thumbprint = "?"
    if account.certificate_file is not None:
        with contextlib.suppress(CertificateError):
            thumbprint = describe_certificate(account.certificate_file).sha1_thumbprint
    cer = (account.certificate_file.with_suffix(".cer").name
           if account.certificate_file else "the .cer file")
    if re.search(r"expired", text, re.IGNORECASE):
        return ("the registered certificate has expired: make a new one with "
                f"`outlook2mqtt cert new`, upload its .cer under {PORTAL_SECRETS} -> "
                "Certificates, and point certificate_file/private_key_file at it")
    if re.search(r"signature", text, re.IGNORECASE):
        return (f"a certificate with thumbprint {thumbprint} is registered, but the assertion "
                "was not signed by its key: private_key_file must be the key generated "
                "together with that certificate (outlook2mqtt cert new writes both)")
    return (f"certificate {thumbprint} is not registered on the app: upload {cer} under "
            f"{PORTAL_SECRETS} -> Certificates -> Upload certificate; the portal must then "
            f"list thumbprint {thumbprint} (`outlook2mqtt cert show` prints it)")


def _invalid_scope(account: AccountConfig, _text: str) -> str:
    scope = outlook_scope(account)
    return (f"scope {account.scope!r} is not valid for IMAP: remove scope (the default for "
            f"cloud = \"{account.cloud}\" is {scope}) or set scope = \"{scope}\"")


@dataclass(frozen=True)
class AadstsHint:
    """`summary` follows the identity platform's own words in an error; `fix` is the
    step-by-step version: a template of the account's fields (`{account.client_id}`), or
    `fix(account, error text)`, or None when the summary says it all."""

    summary: str
    fix: str | Callable[[AccountConfig, str], str] | None = None


# The codes people actually hit when setting up IMAP.
AADSTS_HINTS: dict[int, AadstsHint] = {
    7000215: AadstsHint("client secret is wrong or expired: copy the secret's Value (not its "
                        "ID) from App registration -> Certificates & secrets", _wrong_secret),
    7000222: AadstsHint("client secret has expired: create a new one under Certificates & "
                        "secrets",
                        f"client secret has expired: create a new one under {PORTAL_SECRETS} "
                        "-> New client secret and put its Value in client_secret (or switch to "
                        "a certificate: `outlook2mqtt cert new`)"),
    700016: AadstsHint("application (client) id not found in this tenant: check client_id and "
                       "tenant_id, and that the app registration exists in that directory",
                       "no application {account.client_id} in tenant {account.tenant_id}: "
                       "client_id must be the Application (client) ID from the app's Overview "
                       "page (not its Object ID), tenant_id the Directory (tenant) ID of the "
                       "tenant the app is registered in (or has admin consent in)"),
    700027: AadstsHint("certificate not accepted: upload the .cer of this key pair under "
                       "Certificates & secrets (outlook2mqtt cert show <file> prints its "
                       "thumbprint), and check that private_key_file belongs to "
                       "certificate_file", _certificate_refused),
    700024: AadstsHint("client assertion expired: check the system clock"),
    90002: AadstsHint("tenant not found: check tenant_id (Directory (tenant) ID on the app's "
                      "Overview)",
                      "tenant {account.tenant_id} not found at {account.authority}: tenant_id "
                      "must be the Directory (tenant) ID from the app's Overview page (or a "
                      "verified domain); for a government or China tenant set cloud = "
                      '"usgov", "usgov-dod" or "china"'),
    1002012: AadstsHint("invalid scope: use https://outlook.office365.com/.default for IMAP",
                        _invalid_scope),
    70011: AadstsHint("invalid scope: use https://outlook.office365.com/.default for IMAP",
                      _invalid_scope),
    500011: AadstsHint("resource not found in the tenant: use the Outlook scope, not a custom "
                       "one", _invalid_scope),
}


def hint_for(code: int | None) -> str | None:
    """The short fix for an AADSTS code, when one is known."""
    hint = AADSTS_HINTS.get(code) if code is not None else None
    return hint.summary if hint else None


def fix_for(code: int | None, account: AccountConfig, text: str) -> str | None:
    """The fix for an AADSTS code worked out for `account`; `text` is the error's text."""
    hint = AADSTS_HINTS.get(code) if code is not None else None
    if hint is None:
        return None
    if hint.fix is None:
        return hint.summary
    if isinstance(hint.fix, str):
        return hint.fix.format(account=account)
    return hint.fix(account, text)
