"""The command line: parse args -> load config -> validate or exit 2 -> run."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import asdict
from types import FrameType

from bridge import __version__, log
from bridge.auth.providers import token_provider
from bridge.cli import cert as certs
from bridge.cli import init as wizard
from bridge.cli import login
from bridge.cli.check import Step, format_step, run_check, token_step
from bridge.config.load import config_search_path, load_config
from bridge.config.model import Config
from bridge.errors import ConfigError
from bridge.service import Bridge
from bridge.util.times import iso_ts

_LOGGER = logging.getLogger(__name__)

EXIT_OK, EXIT_FAIL, EXIT_CONFIG = 0, 1, 2
# what `token` shows of a token: never the token itself, nor its signature
TOKEN_CLAIMS = ("aud", "roles", "scp", "upn", "preferred_username", "tid", "appid",
                "app_displayname", "oid", "idtyp", "iss", "iat", "nbf", "exp")


def _load(args: argparse.Namespace) -> Config:
    path = config_search_path(args.config, os.environ)
    config = load_config(path)
    for secret in config.secret_values():
        log.register_secret(secret)
    for account in config.accounts:
        log.register_private_key_file(account.private_key_file)
    return config


def _config_error(exc: ConfigError) -> int:
    # under systemd each line is its own journal entry: mark them all as errors (<3>)
    prefix = "<3>" if log.under_journald() else ""
    print(f"{prefix}outlook2mqtt: invalid configuration:", file=sys.stderr)
    for problem in exc.problems:
        print(f"{prefix}  - {log.redact(problem)}", file=sys.stderr)
    return EXIT_CONFIG


def cmd_run(args: argparse.Namespace) -> int:
    """Run the bridge until SIGTERM/SIGINT; SIGHUP reloads the config."""
    try:
        config = _load(args)
    except ConfigError as exc:
        return _config_error(exc)
    reload = threading.Event()
    # Each Bridge gets its own stop event: a worker of the old one that is still winding
    # down must never see a cleared event.
    current = [threading.Event()]

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        _LOGGER.info("received %s, stopping", signal.Signals(signum).name)
        reload.clear()
        current[0].set()

    def on_hup(_signum: int, _frame: FrameType | None) -> None:
        _LOGGER.info("received SIGHUP, reloading the configuration")
        reload.set()
        current[0].set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hup)
    while True:
        _LOGGER.info("outlook2mqtt %s starting: %d account(s)", __version__,
                     len(config.accounts))
        Bridge(config, stop=current[0]).run(reload=reload)
        if not reload.is_set():
            return EXIT_OK
        reload.clear()
        current[0] = threading.Event()
        try:
            config = _load(args)
        except ConfigError as exc:
            # Keep serving with the configuration that worked.
            _LOGGER.error("new configuration rejected, keeping the old one: %s",
                          "; ".join(exc.problems))


def cmd_check(args: argparse.Namespace) -> int:
    """Test every step from token to MQTT; exit 0 only if all passed."""
    try:
        config = _load(args)
    except ConfigError as exc:
        steps = [Step(None, "config", False, p, None, "config") for p in exc.problems]
        if args.json:
            print(json.dumps({"ok": False, "steps": [asdict(s) for s in steps]}, indent=2))
        else:
            sys.stdout.write("".join(format_step(s) for s in steps))
        return EXIT_CONFIG
    return EXIT_OK if run_check(config, sys.stdout, as_json=args.json) else EXIT_FAIL


def cmd_token(args: argparse.Namespace) -> int:
    """Acquire a token per account and print its claims as JSON, never the token."""
    try:
        config = _load(args)
    except ConfigError as exc:
        return _config_error(exc)
    accounts = [a for a in config.accounts if args.account in (None, a.name)]
    if not accounts:
        known = ", ".join(a.name for a in config.accounts)
        print(f"outlook2mqtt: no account named {args.account!r} (configured: {known})",
              file=sys.stderr)
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
        claims = {k: token.claims[k] for k in TOKEN_CLAIMS if k in token.claims}
        entry: dict[str, object] = {"expires": iso_ts(token.expires_at),
                                    "expires_in": int(token.expires_in), "claims": claims}
        if token.delegated:  # a personal account's opaque token has no claims to show
            entry["user"] = token.username
        shown[account.name] = entry
    if shown:
        print(log.redact(json.dumps(shown, indent=2)))
    return status


def cmd_login(args: argparse.Namespace) -> int:
    """Sign a device_code account in (device-code flow) and save its token cache."""
    try:
        config = _load(args)
    except ConfigError as exc:
        return _config_error(exc)
    account = login.choose_account(config, args.account)
    if isinstance(account, str):
        print(f"outlook2mqtt: {account}", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK if login.login(config, account, sys.stdout) else EXIT_FAIL


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", help="config file (default: $OUTLOOK2MQTT_CONFIG, "
                        "./config.toml, /etc/outlook2mqtt/config.toml)")
    common.add_argument("--log-level", choices=log.LEVELS,
                        help="default: info for run, warning for the other commands")
    parser = argparse.ArgumentParser(
        prog="outlook2mqtt", description="Bridge Outlook / Exchange Online mailboxes to MQTT.")
    parser.add_argument("--version", action="version", version=f"outlook2mqtt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", parents=[common], help="run the bridge in the foreground")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("check", parents=[common], help="test token, IMAP, folders and MQTT")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_check, default_log_level="warning")
    p = sub.add_parser("token", parents=[common], help="print the claims of a fresh token")
    p.add_argument("--account", help="only this account")
    p.set_defaults(func=cmd_token, default_log_level="warning")
    p = sub.add_parser("login", parents=[common],
                       help="sign in a device_code account (personal Outlook.com)")
    p.add_argument("--account", help="the account (needed when several use device_code)")
    p.set_defaults(func=cmd_login, default_log_level="warning")
    certs.add_cert_parser(sub, parents=[common])
    wizard.add_init_parser(sub, parents=[common])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # a person running check/token/init wants its report, not the info log around it
    log.setup(str(getattr(args, "log_level", None)
                  or getattr(args, "default_log_level", "info")))
    code: int = args.func(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
