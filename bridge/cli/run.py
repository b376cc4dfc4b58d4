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
    asked = _Asked()
    handle_signals(asked.received, (signal.SIGTERM, signal.SIGINT, signal.SIGHUP))
    while True:
        _LOGGER.info("outlook2mqtt %s starting: %d account(s)", __version__,
                     len(config.accounts))
        raise_open_files_limit(open_files_needed(
            sum(len(a.folders) for a in config.accounts), len(config.accounts)))
        try:
            Bridge(config, stop=asked.stop).run(reload=asked.reload)
        except InstanceConflict as exc:
            # a config mistake: restarting cannot fix it (the unit does not restart on 2)
            _LOGGER.error("not starting: %s", exc)
            return EXIT_INVALID
        if not asked.next_bridge():
            return EXIT_OK
        config = _reloaded(args, config)


class _Asked:
    """What the signals asked of the running Bridge, decided under one lock: a stop is
    final (a SIGHUP after it does not turn it into a restart), and a reload gives the next
    Bridge a fresh stop event, so a stop that comes meanwhile is not lost on the old one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stopping = False
        self.reload = threading.Event()
        # Each Bridge gets its own: a worker of the old one that is still winding down
        # must never see a cleared event.
        self.stop = threading.Event()

    def received(self, signum: int) -> None:
        with self._lock:
            if signum != signal.SIGHUP:
                _LOGGER.info("received %s, stopping", signal.Signals(signum).name)
                self._stopping = True
                self.reload.clear()
            elif self._stopping:
                return
            else:
                _LOGGER.info("received SIGHUP, reloading the configuration")
                self.reload.set()
            self.stop.set()

    def next_bridge(self) -> bool:
        """After a Bridge ended: whether a reload asked for another one."""
        with self._lock:
            if self._stopping or not self.reload.is_set():
                return False
            self.reload.clear()
            self.stop = threading.Event()
            return True


def _reloaded(args: argparse.Namespace, config: Config) -> Config:
    """The config file as it is now, or `config` when the new one is invalid."""
    try:
        return configuration.load(args)
    except ConfigError as exc:
        _LOGGER.error("new configuration rejected, keeping the old one: %s",
                      "; ".join(exc.problems))
        return config
