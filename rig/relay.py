"""An IMAP relay between a client and the rig's Dovecot that can misbehave on cue.

It terminates TLS on both sides (the rig's server certificate towards the client, the
rig's CA towards Dovecot), so it sees the commands: a test can run an action just
before a command reaches the server (`before_command`), to land mail at an exact point
of a client's conversation. `drop_existing` plays a NAT or firewall that forgot the
connections: their bytes are no longer forwarded and the client is sent nothing (no FIN,
no RST), while new connections are relayed as before. TCP keepalive is answered by the
relay's own kernel, as by a real middlebox, so only an IMAP-level exchange notices.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Self

from rig.pki import TestPKI

_LOGGER = logging.getLogger(__name__)


@dataclass(eq=False)
class _Link:
    """One relayed connection; `dropped` stops its forwarding in both directions."""

    client: socket.socket
    server: socket.socket
    dropped: threading.Event = field(default_factory=threading.Event)


class ImapRelay:
    """Listens on 127.0.0.1:`port` (implicit TLS) and relays to Dovecot's TLS port."""

    def __init__(self, pki: TestPKI, upstream_port: int, upstream_host: str = "127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self._server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server_tls.load_cert_chain(pki.server_cert_file, pki.server_key_file)
        self._client_tls = ssl.create_default_context(cafile=str(pki.ca_file))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._hooks: list[tuple[bytes, Callable[[], None]]] = []
        self.connections = 0

    def __enter__(self) -> Self:
        threading.Thread(target=self._accept, name=f"relay-{self.port}", daemon=True).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._listener.close()
        with self._lock:
            links = list(self._links)
        for link in links:
            for sock in (link.client, link.server):
                with contextlib.suppress(OSError):
                    sock.close()

    def before_command(self, marker: bytes, action: Callable[[], None]) -> None:
        """Once: run `action` when a client sends a command containing `marker`, before
        the command is forwarded (the client waits meanwhile)."""
        with self._lock:
            self._hooks.append((marker, action))

    def drop_existing(self) -> int:
        """Stop forwarding on every open connection, silently; return how many."""
        with self._lock:
            links = [link for link in self._links if not link.dropped.is_set()]
        for link in links:
            link.dropped.set()
        return len(links)

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._open, args=(raw,), name="relay-open",
                             daemon=True).start()

    def _open(self, raw: socket.socket) -> None:
        try:
            client = self._server_tls.wrap_socket(raw, server_side=True)
            upstream = socket.create_connection(self.upstream, timeout=10)
            server = self._client_tls.wrap_socket(upstream, server_hostname=self.upstream[0])
            server.settimeout(None)
        except OSError as exc:
            _LOGGER.debug("relay: cannot open a connection: %s", exc)
            raw.close()
            return
        link = _Link(client, server)
        with self._lock:
            self._links.append(link)
            self.connections += 1
        threading.Thread(target=self._pipe, args=(link, client, server, True),
                         name="relay-up", daemon=True).start()
        threading.Thread(target=self._pipe, args=(link, server, client, False),
                         name="relay-down", daemon=True).start()

    def _pipe(self, link: _Link, src: socket.socket, dst: socket.socket, commands: bool) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if link.dropped.is_set():
                if data:
                    continue  # swallowed: the forgotten connection carries nothing
                if commands:
                    # The client gave up on it: let the server's session go too, as a
                    # server's own timeouts would, instead of holding one of the
                    # mailbox's connection slots. The client hears nothing either way.
                    with contextlib.suppress(OSError):
                        dst.close()
                return
            if not data:
                with contextlib.suppress(OSError):
                    dst.close()
                return
            if commands:
                self._run_hooks(data)
            try:
                dst.sendall(data)
            except OSError:
                return

    def _run_hooks(self, data: bytes) -> None:
        with self._lock:
            due = [hook for hook in self._hooks if hook[0] in data]
            for hook in due:
                self._hooks.remove(hook)
        for _marker, action in due:
            action()
