"""The MQTT network thread: paho driven through its external-event-loop API, waiting in
poll().

paho's own thread (`loop_start`) waits in select(), which refuses descriptors from 1024
on: a bridge watching a thousand folders holds some 3000, and once a broker restart gives
paho a socket above 1024 it can never connect again. poll() has no such limit.

This thread makes every network call on the client: `reconnect`, `loop_read`,
`loop_write`, `loop_misc` and the final `disconnect`. Other threads only queue packets
(publish, subscribe); paho then calls `on_socket_register_write`, which wakes the poll.
`want_write()` is read before every poll, so `on_socket_unregister_write` is not needed.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho

from bridge.util.backoff import Backoff

# paho's own loop runs loop_misc (keepalive) at least once a second; a short keepalive
# needs it more often, as a PINGREQ is due `keepalive` seconds after the last packet
# and the broker gives up after 1.5 times that (MQTT 3.1.1 §3.1.2.10). The keepalive is
# read from the client each time: an MQTT 5 broker may set its own (§3.2.2.3.14).
MISC_INTERVAL = 1.0
# After stop: time for what is queued and the DISCONNECT to reach the broker.
DRAIN_TIMEOUT = 2.0

_LOGGER = logging.getLogger(__name__)

_READ = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP | select.POLLNVAL


class _Wake:
    """A socketpair whose reading end sits in the poll set; `set` from any thread."""

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)

    def fileno(self) -> int:
        return self._reader.fileno()

    def set(self) -> None:
        with contextlib.suppress(OSError):  # full (a wake-up is pending) or closed
            self._writer.send(b"\0")

    def drain(self) -> None:
        with contextlib.suppress(OSError):
            while self._reader.recv(4096):
                pass

    def close(self) -> None:
        self._reader.close()
        self._writer.close()


def _misc_interval(keepalive: int) -> float:
    """How often loop_misc must run for PINGREQs to leave in time."""
    return min(MISC_INTERVAL, keepalive / 4) if keepalive > 0 else MISC_INTERVAL


def _shut_down(sock: Any) -> None:
    """End both directions: the peer sees the connection end, whoever closes the socket."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _buffered(sock: Any) -> bool:
    """Whether TLS holds decrypted bytes that poll() cannot see."""
    return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0


class NetworkThread:
    """Keeps one paho client connected from a named thread: connects, serves the socket
    until it closes, waits (`wait_to_reconnect`) and connects again, until `stop`.

    `wait_to_reconnect(closing)` waits before each attempt but the first, on `closing`
    (an Event that `stop` sets); `connect_failed(exc)` hears why an attempt failed;
    `connection_lost(why)` hears of a connection this thread ended after an unexpected
    error (a bug here or in a paho callback), which paho does not report.

    Such an error ends the connection instead of the thread: the broker sees the
    connection end, and a new one is made after `wait_to_reconnect` and a backoff of its
    own, which grows while every connection ends that way."""

    def __init__(
        self,
        client: paho.Client,
        *,
        name: str,
        wait_to_reconnect: Callable[[threading.Event], None],
        connect_failed: Callable[[OSError], None],
        connection_lost: Callable[[str], None],
    ) -> None:
        self._client = client
        self._name = name
        self._wait_to_reconnect = wait_to_reconnect
        self._connect_failed = connect_failed
        self._connection_lost = connection_lost
        self._failures = Backoff(initial=1.0, cap=300.0)
        self.closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._poller = select.poll()
        self._wake: _Wake | None = None
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write

    def start(self) -> None:
        if self._thread is not None:
            return
        self.closing.clear()
        self._wake = _Wake()
        self._poller.register(self._wake, select.POLLIN)
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Disconnect cleanly (the broker drops the Last Will) and end the thread."""
        self.closing.set()
        thread, wake = self._thread, self._wake
        if thread is None or wake is None:
            return
        wake.set()
        if thread is not threading.current_thread():
            thread.join()
        self._thread = self._wake = None
        self._poller.unregister(wake)
        wake.close()

    # -- paho's socket callbacks (this thread, except register_write) -------------------

    def _on_socket_open(self, _c: paho.Client, _u: Any, sock: Any) -> None:
        self._poller.register(sock, _READ)

    def _on_socket_close(self, _c: paho.Client, _u: Any, sock: Any) -> None:
        # A closed descriptor left in the set would make every poll return at once.
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._poller.unregister(sock)

    def _on_socket_register_write(self, _c: paho.Client, _u: Any, _sock: Any) -> None:
        wake = self._wake
        if wake is not None and threading.current_thread() is not self._thread:
            wake.set()  # a publish or subscribe from another thread: write it now

    # -- the thread --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._connect_until_closing()
        finally:
            self._close_dropped()

    def _connect_until_closing(self) -> None:
        first = True
        while not self.closing.is_set():
            if not first:
                self._wait_to_reconnect(self.closing)
                if self.closing.is_set():
                    break
            first = False
            try:
                self._connect_and_serve()
                self._failures.reset()
            except Exception:  # a bug here or in a callback must not end MQTT for good
                _LOGGER.exception("MQTT network loop failed; connecting again")
                self._drop()
                self.closing.wait(self._failures.next_delay())

    def _connect_and_serve(self) -> None:
        try:
            self._client.reconnect()
        except OSError as exc:
            self._connect_failed(exc)
            return
        self._serve()

    def _serve(self) -> None:
        """Until the socket closes: poll, then let paho read, write and keep alive."""
        client = self._client
        drain_by: float | None = None
        while (sock := client.socket()) is not None:
            if self.closing.is_set():
                if drain_by is None:
                    drain_by = time.monotonic() + DRAIN_TIMEOUT
                    client.disconnect()  # queued; once written, paho closes the socket
                elif time.monotonic() >= drain_by:
                    self._abandon(sock)
                    return
            buffered = _buffered(sock)
            timeout = 0.0 if buffered else _misc_interval(client.keepalive)
            if drain_by is not None:
                timeout = min(timeout, max(0.0, drain_by - time.monotonic()))
            self._poller.modify(sock, _READ | (select.POLLOUT if client.want_write() else 0))
            readable, writable = buffered, False
            for fd, revents in self._poller.poll(timeout * 1000):
                if fd == sock.fileno():
                    readable = readable or bool(revents & _READ)
                    writable = writable or bool(revents & select.POLLOUT)
                elif self._wake is not None and fd == self._wake.fileno():
                    self._wake.drain()
                    writable = True  # packets queued elsewhere: try at once, as paho does
            if readable:
                try:
                    client.loop_read()
                except OSError as exc:  # a CONNACK refusing MQTT 3.1.1 makes paho reconnect
                    self._connect_failed(exc)
            if writable and client.want_write() and client.socket() is not None:
                client.loop_write()
            if client.socket() is not None:
                client.loop_misc()

    def _drop(self) -> None:
        """End the connection after a failure in the loop. paho must not read on: it would
        handle the packet it failed on again. The broker sees the end (and publishes the
        Last Will); paho's next `reconnect` closes the socket."""
        sock = self._client.socket()
        if sock is not None:
            _shut_down(sock)
        self._connection_lost("the network loop failed")

    def _close_dropped(self) -> None:
        """Close the socket a failure left to a `reconnect` that will not come."""
        sock = self._client.socket()
        if sock is not None:
            self._on_socket_close(self._client, None, sock)
            sock.close()

    def _abandon(self, sock: Any) -> None:
        """The DISCONNECT could not be written in time: shut the socket down so paho's next
        read sees the end and closes it (the broker then publishes the Last Will)."""
        _shut_down(sock)
        self._client.loop_read()
