"""A TCP proxy on loopback that delays every byte by a fixed time each way.

Exchange Online is not on loopback: a round trip costs 10-40 ms from a home or an
office, where the rig's costs 0.1 ms. Putting this between a client and Dovecot adds
`rtt / 2` in each direction (order kept, bandwidth not limited), so a benchmark can show
what round trips cost when they are real.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from types import TracebackType


class DelayProxy:
    """Listens on 127.0.0.1:`port` and forwards to `target_port`, `rtt` seconds round trip."""

    def __init__(self, target_port: int, rtt: float) -> None:
        self.target_port = target_port
        self.delay = rtt / 2
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._stop = threading.Event()

    def __enter__(self) -> DelayProxy:
        threading.Thread(target=self._accept, name="delay-accept", daemon=True).start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._server.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sockets += [client, upstream]
            self._pipe(client, upstream)
            self._pipe(upstream, client)

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        """Two threads per direction: one reads and stamps, one sends when due."""
        pending: queue.Queue[tuple[float, bytes]] = queue.Queue()

        def read() -> None:
            while True:
                try:
                    data = src.recv(1 << 16)
                except OSError:
                    data = b""
                pending.put((time.monotonic() + self.delay, data))
                if not data:
                    return

        def send() -> None:
            while True:
                due, data = pending.get()
                time.sleep(max(0.0, due - time.monotonic()))
                try:
                    if not data:
                        dst.shutdown(socket.SHUT_WR)
                        return
                    dst.sendall(data)
                except OSError:
                    return

        threading.Thread(target=read, name="delay-read", daemon=True).start()
        threading.Thread(target=send, name="delay-send", daemon=True).start()
