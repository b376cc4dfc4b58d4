"""Signals delivered to a thread of their own, never handled between two bytecodes.

Imports only the standard library.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterable
from types import FrameType

_LOGGER = logging.getLogger(__name__)
# Never closed: the interpreter would write signal numbers to whatever reused the number.
_wakeup_sockets: list[socket.socket] = []


def handle_signals(on_signal: Callable[[int], None], signals: Iterable[signal.Signals]) -> None:
    """Call `on_signal(signum)` for each of `signals` the process gets, on a thread of its
    own.

    A Python signal handler runs in the main thread, and only once that thread runs Python
    code again: when the kernel hands the signal to another thread while the main thread
    waits without a timeout, never. It would also run between any two bytecodes, inside
    an `Event.set` of the very event it sets, whose lock is not reentrant. So the handlers
    do nothing; the interpreter's C handler writes each signal's number to a socket,
    whichever thread takes it, and the thread here reads them. Call from the main thread.
    """
    reader, writer = socket.socketpair()
    reader.setblocking(True)
    writer.setblocking(False)
    signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    _wakeup_sockets.append(writer)  # the interpreter writes to its number until exit
    wanted = set(signals)
    for signum in wanted:
        signal.signal(signum, _noted_by_the_wakeup_socket)

    def read() -> None:
        while received := reader.recv(64):
            for signum in received:
                if signum in wanted:
                    _call(on_signal, signum)

    threading.Thread(target=read, name="signals", daemon=True).start()


def _call(on_signal: Callable[[int], None], signum: int) -> None:
    try:
        on_signal(signum)
    except Exception:  # the next signal must still be heard
        _LOGGER.exception("handling signal %d failed", signum)


def _noted_by_the_wakeup_socket(_signum: int, _frame: FrameType | None) -> None:
    """The handler that must be set for the wakeup socket to hear of a signal."""
