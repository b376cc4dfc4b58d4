"""A TCP relay for fault injection between the bridge and a rig server.

It can hold the server's bytes (a broker whose PUBACKs are late), slow them down (IMAP far
away, so a backlog takes seconds) and cut a connection right after a client sent a given
command, before the server's answer gets back (a drop in mid-command). With `tls`, it ends
TLS on both sides so that it sees IMAP in clear, as the server does.

asyncio, in a thread of its own: an SSL socket must not be read and written by two threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Self

from rig.pki import TestPKI


@dataclass(frozen=True)
class RelayTLS:
    """TLS toward the client (`server`: what the relay presents) and the server (`client`)."""

    server: ssl.SSLContext
    client: ssl.SSLContext


def relay_tls(pki: TestPKI) -> RelayTLS:
    """The rig's server certificate toward the client, the rig's CA toward the server."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(pki.server_cert_file, pki.server_key_file)
    return RelayTLS(server=server, client=ssl.create_default_context(cafile=str(pki.ca_file)))


class Relay:
    """Listens on 127.0.0.1:`port`, forwards each connection to 127.0.0.1:`target_port`."""

    def __init__(self, target_port: int, *, tls: RelayTLS | None = None) -> None:
        self.target_port = target_port
        self.tls = tls
        self.port = 0
        self.rate: float | None = None  # bytes per second from the server, None: unlimited
        self.up_rate: float | None = None  # bytes per second from the client
        self.cut_on: bytes | None = None  # cut after forwarding a client chunk holding this
        self.hold_on: bytes | None = None  # `hold` from forwarding a client chunk holding this
        # After the client of one connection has had `pattern` passed on `count` times, that
        # connection passes nothing more from it (its network died; once, the first to get there).
        self.stop_after: tuple[bytes, int] | None = None
        self.sent: list[tuple[float, bytes]] = []  # every chunk clients sent, timed, in order
        self.passed: list[bytes] = []  # what of it went on to the server
        self.cuts = 0
        self._loop = asyncio.new_event_loop()
        self._open: asyncio.Event | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._serving: set[asyncio.Task[None]] = set()  # one per relayed connection
        self._thread = threading.Thread(target=self._loop.run_forever, name="relay", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *_exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def hold(self) -> None:
        """Stop passing the server's bytes on (they wait in the relay) until `release`."""
        self._loop.call_soon_threadsafe(self._gate().clear)

    def release(self) -> None:
        self._loop.call_soon_threadsafe(self._gate().set)

    def commands(self) -> list[bytes]:
        """The client's lines so far (IMAP commands, with `tls` or a plain server)."""
        return b"".join(data for _t, data in self.sent).splitlines()

    @property
    def open_connections(self) -> int:
        """Client connections not yet closed (all they sent has been passed on)."""
        return len(self._writers) // 2

    def count(self, pattern: bytes) -> int:
        """How often the server got `pattern` (e.g. a topic: the PUBLISHes to it)."""
        return b"".join(self.passed).count(pattern)

    def times_of(self, pattern: bytes) -> list[float]:
        """When (time.monotonic) clients sent a chunk holding `pattern`."""
        return [t for t, data in self.sent if pattern in data]

    def _gate(self) -> asyncio.Event:
        assert self._open is not None, "the relay is not running"
        return self._open

    async def _start(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", 0, ssl=self.tls.server if self.tls else None)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._serving:  # let them end: a task still pending when the loop goes is an error
            await asyncio.wait(list(self._serving), timeout=5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._serving.add(task)
            task.add_done_callback(self._serving.discard)
        try:
            up_reader, up_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port, ssl=self.tls.client if self.tls else None,
                server_hostname="127.0.0.1" if self.tls else None)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self._writers.update(pair)
        cut = asyncio.Event()
        try:
            await asyncio.gather(self._upstream(reader, up_writer, pair, cut),
                                 self._downstream(up_reader, writer, cut))
        finally:
            for w in pair:
                w.transport.abort()
                self._writers.discard(w)

    async def _upstream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        pair: tuple[asyncio.StreamWriter, ...], cut: asyncio.Event) -> None:
        stopped = False
        with contextlib.suppress(OSError, ConnectionError):
            while data := await reader.read(4096):
                self.sent.append((time.monotonic(), data))
                if stopped:
                    continue
                if self.stop_after is not None:
                    pattern, limit = self.stop_after
                    if b"".join(self.passed).count(pattern) + data.count(pattern) >= limit:
                        self.stop_after, stopped = None, True
                cutting = self.cut_on is not None and self.cut_on in data
                if cutting:  # once: the server gets the command, the client no answer
                    self.cut_on = None
                    cut.set()
                if self.up_rate:
                    await asyncio.sleep(len(data) / self.up_rate)
                if self.hold_on is not None and self.hold_on in data:
                    self._gate().clear()  # before the server can answer it
                writer.write(data)
                self.passed.append(data)
                await writer.drain()
                if cutting:
                    self.cuts += 1
                    await asyncio.sleep(0.5)  # the server reads and carries it out
                    for w in pair:
                        w.transport.abort()
                    return
        with contextlib.suppress(OSError, RuntimeError):
            writer.close()

    async def _downstream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          cut: asyncio.Event) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await reader.read(4096):
                await self._gate().wait()
                if self.rate:
                    await asyncio.sleep(len(data) / self.rate)
                if cut.is_set():
                    return
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError, RuntimeError):
            writer.close()
