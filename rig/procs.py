"""Process helpers shared by the rig's servers: ports, child daemons, readiness."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import random
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Self

_LOGGER = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


# The rig's servers listen below Linux's ephemeral range (32768-60999), where no outgoing
# connection takes a port between free_port and the server's bind, or while a server
# restarts on its port. Each pytest-xdist worker draws from a band of its own, at random,
# so that other test runs on the machine rarely draw the same port at the same time.
_PORTS = range(10000, 32768)
_handed_out: set[int] = set()
_draw = random.SystemRandom()


def _band() -> range:
    """This process's share of _PORTS: its worker's band, or all of it."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1" ...
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker.startswith("gw") or count <= 1:
        return _PORTS
    size = len(_PORTS) // count
    start = _PORTS.start + int(worker[2:]) % count * size
    return range(start, start + size)


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on host that was free a moment ago, never the same one twice."""
    band = _band()
    for _attempt in range(1000):
        port = _draw.choice(band)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port on {host} in {band}")


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the thread that forked us exits (PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def spawn(argv: Sequence[str], log_file: Path) -> subprocess.Popen[bytes]:
    """Start a foreground daemon, output appended to log_file, killed when we die."""
    # PR_SET_PDEATHSIG fires when the *thread* that forked exits: spawn from a thread
    # that outlives the daemon (the main thread, as pytest fixtures do).
    _LOGGER.debug("starting %s", " ".join(argv))
    with log_file.open("ab") as log:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - prctl must run in the child
            start_new_session=True,
        )


def terminate(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> int | None:
    """Stop a daemon with SIGTERM, SIGKILL if it does not exit within timeout; its exit
    code, None when it had to be killed (or there was none)."""
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    proc.terminate()
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _LOGGER.warning("pid %d ignored SIGTERM, killing it", proc.pid)
        proc.kill()
        proc.wait()
        return None


def log_tail(path: Path, lines: int = 30) -> str:
    """Return the last lines of a log file, or a note that there is none."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def can_connect(host: str, port: int) -> bool:
    """Tell whether a TCP connection to host:port succeeds right now."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def wait_until_ready(
    proc: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    *,
    what: str,
    log_file: Path,
    timeout: float = 30.0,
    interval: float = 0.02,
) -> None:
    """Poll ready() every `interval` s until true; raise RuntimeError with the log tail if
    proc dies or times out."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{what} exited with {proc.returncode} while starting:\n{log_tail(log_file)}"
            )
        if ready():
            # A daemon can bind its port and then die of a config error: look once more.
            time.sleep(0.05)
            if proc.poll() is None:
                return
            continue
        if time.monotonic() > deadline:
            terminate(proc)
            raise RuntimeError(f"{what} not ready after {timeout:.0f} s:\n{log_tail(log_file)}")
        time.sleep(interval)


def read_greeting(
    host: str, port: int, prefix: bytes, tls: ssl.SSLContext | None = None
) -> bool:
    """Tell whether a server on host:port (TLS when tls given) greets with prefix."""
    try:
        with contextlib.ExitStack() as stack:
            sock = stack.enter_context(socket.create_connection((host, port), timeout=2.0))
            if tls is not None:
                sock = stack.enter_context(tls.wrap_socket(sock, server_hostname=host))
            data = b""
            while b"\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
            return data.startswith(prefix)
    except OSError:
        return False



class Service:
    """start/stop/restart and `with` for a rig server; `close` is what `with` ends with."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop and release what the server keeps between restarts (default: just stop)."""
        self.stop()

    def restart(self) -> None:
        """Stop and start again on the same ports, keeping the server's data."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class ChildService(Service):
    """A Service that runs as a child process in `_proc`."""

    _proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        """Tell whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The server process's id, while it runs."""
        return self._proc.pid if self.running and self._proc is not None else None
