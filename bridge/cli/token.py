"""`outlook2mqtt token`: a fresh token per account, its claims printed as JSON (never the
token itself), and why it would not do for IMAP."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from bridge import log
from bridge.auth.providers import token_provider
from bridge.auth.tokens import Token
from bridge.cli.configuration import add_command, unknown_account
from bridge.cli.exits import EXIT_FAIL, EXIT_OK
from bridge.cli.steps import format_step
from bridge.cli.token_checks import token_step
from bridge.config.model import Config
from bridge.util.times import iso_ts

# what `token` shows of a token: never the token itself, nor its signature
TOKEN_CLAIMS = ("aud", "roles", "scp", "upn", "preferred_username", "tid", "appid",
                "app_displayname", "oid", "idtyp", "iss", "iat", "nbf", "exp")


def add_parser(subparsers: Any, *, parents: Sequence[argparse.ArgumentParser]) -> None:
    p = add_command(subparsers, "token", "print the claims of a fresh token", parents, run,
                    description="Acquire a token for each account and print its expiry and "
                    "claims (aud, roles, tid, appid, oid ...) as JSON; never the token "
                    "itself. Exit 1 if a token could not be acquired.")
    p.add_argument("--account", help="only this account")


def run(args: argparse.Namespace, config: Config) -> int:
    """Acquire a token per account and print its claims as JSON, never the token."""
    accounts = [a for a in config.accounts if args.account in (None, a.name)]
    if not accounts:
        print(f"outlook2mqtt: {unknown_account(config, args.account)}", file=sys.stderr)
        return EXIT_FAIL
    status = EXIT_OK
    shown: dict[str, object] = {}
    for account in accounts:
        step, token = token_step(account, token_provider(account))
        if not step.ok:
            # acquired but unfit for IMAP (Graph audience, no role), or refused: say why
            sys.stderr.write(format_step(step))
        if token is None:
            status = EXIT_FAIL
            continue
        shown[account.name] = _shown(token)
    if shown:
        print(log.redact(json.dumps(shown, indent=2)))
    return status


def _shown(token: Token) -> dict[str, object]:
    """What is printed of a token: its expiry, the claims in TOKEN_CLAIMS, the user."""
    claims = {k: token.claims[k] for k in TOKEN_CLAIMS if k in token.claims}
    entry: dict[str, object] = {"expires": iso_ts(token.expires_at),
                                "expires_in": int(token.expires_in), "claims": claims}
    if token.delegated:  # a personal account's opaque token has no claims to show
        entry["user"] = token.username
    return entry
