"""A wake-up flag that a thread can wait on, or wait on beside a socket."""

from __future__ import annotations

import contextlib
import select
import socket
import threading

# A socket that reports an error or a hang-up is readable too: the read then tells which.
_READABLE = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP


class Wakeup:
    """`set` from any thread; the owning thread waits with `wait` or `wait_readable`.

    Beside the flag, `set` writes a byte to a socketpair, so a poll() on a network socket
    wakes at once too (no timed polling). poll(), not select(): a bridge watching a
    thousand folders holds descriptors above select()'s limit of 1024."""

    def __init__(self) -> None:
        self._flag = threading.Event()
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)

    def set(self) -> None:
        self._flag.set()  # before the byte: a waiter woken by the byte sees the flag
        with contextlib.suppress(BlockingIOError, OSError):  # full: a wake-up is pending
            self._writer.send(b"\0")

    def clear(self) -> None:
        self._flag.clear()
        self._drain()

    def is_set(self) -> bool:
        return self._flag.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._flag.wait(timeout)

    def wait_readable(self, sock: socket.socket, timeout: float) -> bool:
        """Wait until `sock` is readable (True), or until set or `timeout` (False)."""
        if self._flag.is_set():
            return False
        poller = select.poll()
        poller.register(sock, _READABLE)
        poller.register(self._reader, select.POLLIN)
        ready = dict(poller.poll(max(0.0, timeout) * 1000))
        if ready.get(self._reader.fileno()):
            self._drain()
        return bool(ready.get(sock.fileno()))

    def close(self) -> None:
        self._reader.close()
        self._writer.close()

    def _drain(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while self._reader.recv(4096):
                pass
