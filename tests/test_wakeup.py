"""`Wakeup.wait_readable` with descriptors numbered above select()'s limit of 1024, as a
bridge watching a thousand folders holds them."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from bridge.util.wakeup import Wakeup

HIGH_FD = 1500


@pytest.fixture
def high_socketpair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected socket pair whose reading end is descriptor HIGH_FD."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft <= HIGH_FD:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    a, b = socket.socketpair()
    os.dup2(a.fileno(), HIGH_FD)
    a.close()
    high = socket.socket(fileno=HIGH_FD)
    yield high, b
    high.close()
    b.close()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_socket_above_1024_becomes_readable(
    high_socketpair: tuple[socket.socket, socket.socket],
) -> None:
    high, peer = high_socketpair
    wake = Wakeup()
    peer.send(b"* 3 EXISTS\r\n")
    assert wake.wait_readable(high, 30) is True
    wake.close()


def test_a_set_wakes_a_wait_on_a_socket_above_1024(
    high_socketpair: tuple[socket.socket, socket.socket],
) -> None:
    high, _peer = high_socketpair
    wake = Wakeup()
    threading.Timer(0.1, wake.set).start()
    assert wake.wait_readable(high, 60) is False
    assert wake.is_set()
    wake.close()


def test_a_closed_peer_reads_as_readable(
    high_socketpair: tuple[socket.socket, socket.socket],
) -> None:
    high, peer = high_socketpair
    peer.close()
    assert Wakeup().wait_readable(high, 30) is True


def test_the_open_files_limit_is_raised_to_what_the_accounts_need() -> None:
    """A thousand folders under systemd's default soft limit of 1024: raised, up to the
    hard limit, in a child so this process keeps its own limit."""
    code = (
        "import resource\n"
        "from bridge.util.limits import open_files_needed, raise_open_files_limit\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))\n"
        "needed = open_files_needed(1000, 1000)\n"
        "print(needed, raise_open_files_limit(needed), "
        "resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    needed, returned, now = map(int, out)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert needed > 3000
    assert returned == now == (needed if hard == resource.RLIM_INFINITY else min(hard, needed))
