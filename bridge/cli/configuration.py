"""The configuration as the subcommands get it: found (-c, $OUTLOOK2MQTT_CONFIG, ...),
loaded, its secrets registered for redaction; and a rejected one listed for the user."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from bridge import log
from bridge.cli.exits import EXIT_INVALID
from bridge.config.load import config_search_path, load_config
from bridge.config.model import Config
from bridge.errors import ConfigError


def add_command(subparsers: Any, name: str, help_text: str,
                parents: Sequence[argparse.ArgumentParser], func: Callable[..., int],
                *, description: str, **defaults: Any) -> argparse.ArgumentParser:
    """Add subcommand `name`, run as `func(args, config)` with the configuration loaded;
    `description` is what `name --help` says; its log level is warning unless `defaults`
    say otherwise."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, parents=list(parents), help=help_text, description=description)
    parser.set_defaults(func=func, with_config=True,
                        **{"default_log_level": "warning", **defaults})
    return parser


def load(args: argparse.Namespace) -> Config:
    """The config `-c` names (or the default one); raises ConfigError listing every problem."""
    config = load_config(config_search_path(args.config, os.environ))
    register_secrets(config)
    return config


def register_secrets(config: Config) -> None:
    """Keep the config's secrets and private key out of every log line and error text."""
    for secret in config.secret_values():
        log.register_secret(secret)
    for account in config.accounts:
        log.register_private_key_file(account.private_key_file)


def unknown_account(config: Config, name: str) -> str:
    """What to say about an --account that names none of the configured accounts."""
    known = ", ".join(a.name for a in config.accounts)
    return f"no account named {name!r} (configured: {known})"


def report_invalid(exc: ConfigError, _args: argparse.Namespace) -> int:
    """List the problems on stderr; the exit code for an invalid configuration."""
    # under systemd each line is its own journal entry: mark them all as errors (<3>)
    prefix = "<3>" if log.under_journald() else ""
    print(f"{prefix}outlook2mqtt: invalid configuration:", file=sys.stderr)
    for problem in exc.problems:
        print(f"{prefix}  - {log.redact(problem)}", file=sys.stderr)
    return EXIT_INVALID
