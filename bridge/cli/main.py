"""The command line: parse args -> load config -> validate or exit 2 -> run the subcommand.

Each subcommand lives in its own module and adds its own parser; one that works on the
configuration sets `with_config` and gets it loaded, or `on_invalid` says why not.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bridge import __version__, log
from bridge.cli import cert, check, configuration, init, login, run, service, token
from bridge.errors import ConfigError


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
    for command in (run, check, token, login):
        command.add_parser(sub, parents=[common])
    cert.add_cert_parser(sub, parents=[common])
    init.add_init_parser(sub, parents=[common])
    service.add_service_parser(sub, parents=[common])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # a person running check/token/init wants its report, not the info log around it
    log.setup(str(getattr(args, "log_level", None)
                  or getattr(args, "default_log_level", "info")))
    if not getattr(args, "with_config", False):
        code: int = args.func(args)
        return code
    try:
        config = configuration.load(args)
    except ConfigError as exc:
        on_invalid = getattr(args, "on_invalid", configuration.report_invalid)
        code = on_invalid(exc, args)
        return code
    code = args.func(args, config)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
