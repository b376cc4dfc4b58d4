"""The token step of `check` and `token`: a token acquired, or why not with the fix, and
whether it fits IMAP (the Outlook audience, and the IMAP role or scope)."""

from __future__ import annotations

import re
from collections.abc import Iterator

from bridge.auth.delegated import login_hint
from bridge.auth.hints import fix_for, hint_for, outlook_scope
from bridge.auth.tokens import Provider, Token
from bridge.cli.steps import Step
from bridge.config.model import AccountConfig
from bridge.errors import AuthError, LoginRequired
from bridge.util.times import iso_ts

IMAP_ROLE = "IMAP.AccessAsApp"
IMAP_SCOPE = "IMAP.AccessAsUser.All"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and every exception it was raised from or while handling."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _chain_text(exc: BaseException) -> str:
    return " | ".join(f"{type(e).__name__}: {e}" for e in _chain(exc))


def _auth_hint(account: AccountConfig, exc: AuthError, code: int | None, text: str) -> str | None:
    """What to change for a token request the identity platform refused."""
    fix = fix_for(code, account, text)
    if fix is not None:
        return fix
    if "CERTIFICATE_VERIFY_FAILED" in text or "SSLCertVerificationError" in text:
        return (f"the TLS certificate of {account.authority} is not trusted: behind a "
                "TLS-inspecting proxy set ca_file to its CA bundle; else check the system CAs "
                "(ca-certificates) and authority")
    if "NameResolutionError" in text or "gaierror" in text:
        return (f"cannot resolve the host of {account.authority}: check DNS, and authority / "
                "cloud in the config")
    if re.search(r"ConnectionRefused|ConnectTimeout|NewConnectionError|ProxyError", text):
        return (f"cannot connect to {account.authority}: outbound HTTPS (443) must be allowed; "
                "set HTTPS_PROXY if a proxy is required")
    if exc.transient:
        return "the identity platform is unavailable: try again in a few minutes"
    return None


def auth_failure(account: AccountConfig, exc: AuthError) -> Step:
    text = _chain_text(exc)
    code = exc.code
    detail = str(exc)
    # MSAL raises ValueError for a tenant its discovery request could not find: Entra's own
    # words (AADSTS90002) are only in the exception it was raised while handling
    if code is None and (found := re.search(r"(AADSTS(\d+): [^\"\\]*?\.)(?=\s|\\|\"|$)",
                                            text)):
        code, detail = int(found[2]), found[1]
    if code is None and "double check your tenant" in text:
        code = 90002
    generic = hint_for(code)
    if generic and detail.endswith(f" ({generic})"):
        detail = detail.removesuffix(f" ({generic})")  # the hint gets its own line
    if code and f"AADSTS{code}" not in detail:
        detail = f"AADSTS{code}: {detail}"
    error = f"AADSTS{code}" if code else (
        "tls" if "CERTIFICATE_VERIFY_FAILED" in text else
        "dns" if "NameResolutionError" in text or "gaierror" in text else "token")
    return Step(account.name, "token acquired", False, detail,
                _auth_hint(account, exc, code, text), error)


def _expiry(token: Token) -> str:
    minutes = max(0, int(token.expires_in // 60))
    return f"expires {iso_ts(token.expires_at)} (in {minutes} min)"


def _outlook_audience(aud: str) -> bool:
    """Whether a token's `aud` is Exchange Online's (the Outlook resource of any cloud)."""
    return bool(re.search(r"outlook|office365", aud))


def _delegated_step(account: AccountConfig, token: Token) -> Step:
    """Judge a delegated token: the signed-in user, the Outlook audience, the IMAP scope.
    A personal account's access token is opaque: then only the user and expiry show."""
    name = "token acquired"
    claims = token.claims
    user = str(claims.get("upn") or claims.get("preferred_username") or token.username)
    detail = f"{_expiry(token)}, user {user}"
    if not claims:
        return Step(account.name, name, True, detail + " (opaque token)")
    aud = str(claims.get("aud", "?"))
    scopes = str(claims.get("scp", "")).split()
    detail += f", aud {aud}, scp {','.join(scopes) or '-'}"
    if user.casefold() != account.mailbox.casefold():
        hint = (f"the token is for {user}, but mailbox is {account.mailbox}: "
                f"{login_hint(account)} and sign in as {account.mailbox}")
        return Step(account.name, name, False, detail, hint, "wrong_user")
    if not _outlook_audience(aud):
        hint = "unexpected audience: remove scope (the default is the Outlook IMAP scope)"
        return Step(account.name, name, False, detail, hint, "audience")
    if IMAP_SCOPE not in scopes:
        hint = (f"the token has no {IMAP_SCOPE} scope: App registrations -> your app -> API "
                "permissions -> Add a permission -> APIs my organization uses -> Office 365 "
                f"Exchange Online -> Delegated permissions -> {IMAP_SCOPE}; then "
                f"{login_hint(account)} again")
        return Step(account.name, name, False, detail, hint, "no_imap_scope")
    return Step(account.name, name, True, detail)


def token_step(account: AccountConfig, provider: Provider) -> tuple[Step, Token | None]:
    """Acquire a token and judge its claims: Outlook audience and the IMAP role (app-only)
    or scope (delegated)."""
    name = "token acquired"
    try:
        token = provider.get_token()
    except LoginRequired as exc:
        return Step(account.name, name, False, str(exc), login_hint(account),
                    "login_required"), None
    except AuthError as exc:
        return auth_failure(account, exc), None
    if token.delegated:
        return _delegated_step(account, token), token
    aud = str(token.claims.get("aud", "?"))
    roles = [str(r) for r in token.claims.get("roles") or []]
    detail = f"{_expiry(token)}, aud {aud}, roles {','.join(roles) or '-'}"
    scope = outlook_scope(account)
    if "graph.microsoft" in aud:
        hint = ("this is a Microsoft Graph token; IMAP needs an Outlook token: remove scope "
                f"or set scope = \"{scope}\"")
        return Step(account.name, name, False, detail, hint, "graph_audience"), token
    if not _outlook_audience(aud):
        hint = f"unexpected audience: remove scope or set scope = \"{scope}\""
        return Step(account.name, name, False, detail, hint, "audience"), token
    if IMAP_ROLE not in roles:
        hint = (f"the token has no {IMAP_ROLE} role (admin consent missing): App registrations"
                " -> your app -> API permissions -> Add a permission -> APIs my organization "
                f"uses -> Office 365 Exchange Online -> Application permissions -> {IMAP_ROLE};"
                " then 'Grant admin consent'. The delegated IMAP.AccessAsUser.All does not "
                "count for app-only access")
        return Step(account.name, name, False, detail, hint, "no_imap_role"), token
    return Step(account.name, name, True, detail), token
