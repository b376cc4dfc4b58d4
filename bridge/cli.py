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
from types import FrameType

from . import __version__, certs, log, wizard
from .auth import TokenProvider
from .check import run_check
from .config import Config, config_search_path, load_config
from .errors import AuthError, ConfigError
from .service import Bridge
from .status import iso_ts

_LOGGER = logging.getLogger(__name__)

EXIT_OK, EXIT_FAIL, EXIT_CONFIG = 0, 1, 2


def _load(args: argparse.Namespace) -> Config:
    path = config_search_path(args.config, os.environ)
    config = load_config(path)
    for secret in config.secret_values():
        log.register_secret(secret)
    return config


def _config_error(exc: ConfigError) -> int:
    print("outlook2mqtt: invalid configuration:", file=sys.stderr)
    for problem in exc.problems:
        print(f"  - {problem}", file=sys.stderr)
    return EXIT_CONFIG


def cmd_run(args: argparse.Namespace) -> int:
    """Run the bridge until SIGTERM/SIGINT."""
    try:
        config = _load(args)
    except ConfigError as exc:
        return _config_error(exc)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        _LOGGER.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    bridge = Bridge(config, stop=stop)
    _LOGGER.info("outlook2mqtt %s starting: %d account(s)", __version__, len(config.accounts))
    bridge.run()
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    """Test every step from token to MQTT."""
    try:
        config = _load(args)
    except ConfigError as exc:
        if args.json:
            json.dump({"ok": False, "steps": [{"name": "config", "ok": False,
                                               "detail": p} for p in exc.problems]}, sys.stdout)
            print()
            return EXIT_CONFIG
        print("FAIL  config:")
        for problem in exc.problems:
            print(f"      {problem}")
        return EXIT_CONFIG
    return EXIT_OK if run_check(config, sys.stdout, as_json=args.json) else EXIT_FAIL


def cmd_token(args: argparse.Namespace) -> int:
    """Acquire a token and print its claims, never the token."""
    try:
        config = _load(args)
    except ConfigError as exc:
        return _config_error(exc)
    accounts = [a for a in config.accounts if args.account in (None, a.name)]
    if not accounts:
        print(f"no account named {args.account!r}", file=sys.stderr)
        return EXIT_FAIL
    status = EXIT_OK
    for account in accounts:
        try:
            token = TokenProvider(account).get_token()
        except AuthError as exc:
            print(f"[{account.name}] token: FAIL {exc}", file=sys.stderr)
            status = EXIT_FAIL
            continue
        claims = {k: token.claims.get(k) for k in
                  ("aud", "roles", "scp", "tid", "appid", "oid", "iss", "idtyp")
                  if k in token.claims}
        print(json.dumps({"account": account.name, "expires": iso_ts(token.expires_at),
                          "expires_in": int(token.expires_in), "claims": claims}, indent=2))
    return status


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", help="config file (default: $OUTLOOK2MQTT_CONFIG, "
                        "./config.toml, /etc/outlook2mqtt/config.toml)")
    common.add_argument("--log-level", choices=log.LEVELS, default="info")
    parser = argparse.ArgumentParser(
        prog="outlook2mqtt", description="Bridge Outlook / Exchange Online mailboxes to MQTT.")
    parser.add_argument("--version", action="version", version=f"outlook2mqtt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", parents=[common], help="run the bridge in the foreground")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("check", parents=[common], help="test token, IMAP, folders and MQTT")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("token", parents=[common], help="print the claims of a fresh token")
    p.add_argument("--account", help="only this account")
    p.set_defaults(func=cmd_token)
    certs.add_cert_parser(sub, parents=[common])
    wizard.add_init_parser(sub, parents=[common])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    log.setup(getattr(args, "log_level", "info"))
    code: int = args.func(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
