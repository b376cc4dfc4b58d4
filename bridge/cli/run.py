"""`outlook2mqtt run`: the bridge in the foreground until SIGTERM/SIGINT; SIGHUP reloads
the configuration and keeps the old one if the new one is invalid."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Sequence
from typing import Any

from bridge import __version__
from bridge.cli import configuration
from bridge.cli.exits import EXIT_INVALID, EXIT_OK
from bridge.config.model import Config
from bridge.errors import ConfigError, InstanceConflict
from bridge.service import Bridge
from bridge.util.limits import open_files_needed, raise_open_files_limit
from bridge.util.signals import handle_signals

_LOGGER = logging.getLogger(__name__)


def add_parser(subparsers: Any, *, parents: Sequence[argparse.ArgumentParser]) -> None:
    configuration.add_command(
        subparsers, "run", "run the bridge in the foreground", parents, run,
        description="Run the bridge in the foreground until SIGTERM or Ctrl-C (SIGHUP "
        "reloads the config). Exit 0 on a clean stop, 2 on a config error, with every "
        "problem listed or when another running bridge serves one of the accounts.",
        default_log_level="info")


def run(args: argparse.Namespace, config: Config) -> int:
    """Run the bridge until SIGTERM/SIGINT; SIGHUP reloads the config."""
    reload = threading.Event()
    # Each Bridge gets its own stop event: a worker of the old one that is still winding
    # down must never see a cleared event.
    current = [threading.Event()]

    def on_signal(signum: int) -> None:
        if signum == signal.SIGHUP:
            _LOGGER.info("received SIGHUP, reloading the configuration")
            reload.set()
        else:
            _LOGGER.info("received %s, stopping", signal.Signals(signum).name)
            reload.clear()
        current[0].set()

    handle_signals(on_signal, (signal.SIGTERM, signal.SIGINT, signal.SIGHUP))
    while True:
        _LOGGER.info("outlook2mqtt %s starting: %d account(s)", __version__,
                     len(config.accounts))
        raise_open_files_limit(open_files_needed(
            sum(len(a.folders) for a in config.accounts), len(config.accounts)))
        try:
            Bridge(config, stop=current[0]).run(reload=reload)
        except InstanceConflict as exc:
            # a config mistake: restarting cannot fix it (the unit does not restart on 2)
            _LOGGER.error("not starting: %s", exc)
            return EXIT_INVALID
        if not reload.is_set():
            return EXIT_OK
        reload.clear()
        current[0] = threading.Event()
        config = _reloaded(args, config)


def _reloaded(args: argparse.Namespace, config: Config) -> Config:
    """The config file as it is now, or `config` when the new one is invalid."""
    try:
        return configuration.load(args)
    except ConfigError as exc:
        _LOGGER.error("new configuration rejected, keeping the old one: %s",
                      "; ".join(exc.problems))
        return config
