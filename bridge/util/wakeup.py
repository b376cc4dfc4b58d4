"""A wake-up flag that a thread can wait on, or select() on beside a socket."""

from __future__ import annotations

import contextlib
import select
import socket
import threading


class Wakeup:
    """`set` from any thread; the owning thread waits with `wait` or `wait_readable`.

    Beside the flag, `set` writes a byte to a socketpair, so a select() on a network
    socket wakes at once too (no timed polling)."""

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
        readable, _, _ = select.select([sock, self._reader], [], [], max(0.0, timeout))
        if self._reader in readable:
            self._drain()
        return sock in readable

    def close(self) -> None:
        self._reader.close()
        self._writer.close()

    def _drain(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while self._reader.recv(4096):
                pass
