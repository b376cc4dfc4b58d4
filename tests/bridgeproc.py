"""Run `python -m bridge` as a child process, the way a user or systemd does."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rig.bridgecfg import write_config

ROOT = Path(__file__).resolve().parent.parent


class BridgeProcess:
    """`outlook2mqtt <command>` with its own config file and log."""

    def __init__(self, workdir: Path, config: dict[str, Any], command: str = "run") -> None:
        self.workdir = workdir
        self.config_path = write_config(workdir / "config.toml", config)
        self.log_path = workdir / f"bridge-{command}.log"
        self.command = command
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str, env: dict[str, str] | None = None) -> BridgeProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        env.pop("OUTLOOK2MQTT_CONFIG", None)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bridge", self.command, "-c", str(self.config_path),
                 "--log-level", "debug", *extra],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        return self

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait; the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def rewrite_config(self, config: dict[str, Any]) -> None:
        write_config(self.config_path, config)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, wanted: str | re.Pattern[str], timeout: float = 30) -> str:
        """The log, once it holds `wanted` (text, or a pattern to search)."""
        deadline = time.monotonic() + timeout
        pattern = wanted if isinstance(wanted, re.Pattern) else re.compile(re.escape(wanted))
        while not pattern.search(log := self.log()):
            assert time.monotonic() < deadline, f"no {wanted!r} in:\n{log}"
            time.sleep(0.1)
        return log


def run_cli(*args: str, cwd: Path = ROOT, timeout: float = 60,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m bridge ARGS` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True,
        timeout=timeout, check=False,
    )

