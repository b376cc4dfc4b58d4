"""Exchange's IMAP throttling, played in front of the rig's Dovecot (which never throttles).

`ThrottlingImap` listens with implicit TLS and relays each connection to Dovecot's plain
port (loopback counts as secure for XOAUTH2 there). It reads the client's commands until
the login, so it knows the mailbox, and can answer as Exchange does when it sheds load:
- `refuse_logins = k`: each mailbox's first k logins get `NO [THROTTLED] Request is
  throttled. Suggested Backoff Time: <suggest_ms> milliseconds`;
- `bye_every = k`: every k-th connection is greeted `* BYE Server Unavailable. 15` and closed;
- `bye(mailbox)`: the mailbox's open sessions get `* BYE Server Unavailable. 15` and close.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import select
import socket
import ssl
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Self

from rig.pki import TestPKI

_LOGGER = logging.getLogger(__name__)

UNAVAILABLE = b"* BYE Server Unavailable. 15\r\n"


@dataclass(eq=False)
class _Session:
    mailbox: str
    bye: threading.Event = field(default_factory=threading.Event)


class ThrottlingImap:
    """An IMAP relay on 127.0.0.1:`port` (TLS) to Dovecot's plain port `upstream_port`."""

    def __init__(self, pki: TestPKI, upstream_port: int) -> None:
        self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._tls.load_cert_chain(pki.server_cert_file, pki.server_key_file)
        self._upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self.port: int = self._listener.getsockname()[1]
        self.refuse_logins = 0
        self.suggest_ms = 2000
        self.bye_every = 0
        self.refused: Counter[str] = Counter()  # mailbox -> logins answered THROTTLED
        self.logins: Counter[str] = Counter()  # mailbox -> logins relayed to Dovecot
        self._connections = 0
        self._sessions: list[_Session] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()

    def __enter__(self) -> Self:
        threading.Thread(target=self._accept, name=f"throttle-{self.port}", daemon=True).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._closed.set()
        self._listener.close()

    def bye(self, mailbox: str) -> int:
        """End the mailbox's open sessions with Exchange's `Server Unavailable`; how many."""
        with self._lock:
            sessions = [s for s in self._sessions if s.mailbox == mailbox.lower()]
        for session in sessions:
            session.bye.set()
        return len(sessions)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _addr = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        with self._lock:
            self._connections += 1
            bye_now = bool(self.bye_every) and self._connections % self.bye_every == 0
        try:
            client = self._tls.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            return
        with contextlib.ExitStack() as stack:
            stack.callback(client.close)
            if bye_now:
                client.sendall(UNAVAILABLE)
                return
            upstream = socket.create_connection(("127.0.0.1", self._upstream_port))
            stack.callback(upstream.close)
            try:
                session = self._login_phase(client, upstream)
                if session is not None:
                    with self._lock:
                        self._sessions.append(session)
                    stack.callback(self._forget, session)
                    _pump(client, upstream, session)
            except OSError:  # either side went away: so does the relayed connection
                return

    def _forget(self, session: _Session) -> None:
        with self._lock:
            self._sessions.remove(session)

    def _login_phase(self, client: ssl.SSLSocket, upstream: socket.socket) -> _Session | None:
        """Relay command by command until a login is relayed; refuse it when throttling."""
        up, down = upstream.makefile("rb"), client.makefile("rb")
        client.sendall(up.readline())  # the greeting
        while line := down.readline():
            tag, _, rest = line.partition(b" ")
            words = rest.split()
            mailbox = _sasl_user(words[2]) if len(words) == 3 else None  # SASL-IR
            if mailbox is not None and self._refuse(mailbox):
                client.sendall(self._throttled(tag))
                continue
            upstream.sendall(line)
            while answer := up.readline():
                if answer.startswith(b"+"):  # the SASL response follows (RFC 3501 6.2.2)
                    client.sendall(answer)
                    response = down.readline()
                    mailbox = _sasl_user(response.strip())
                    if mailbox is not None and self._refuse(mailbox):
                        upstream.sendall(b"*\r\n")  # cancel the exchange upstream
                        while not up.readline().startswith(tag + b" "):
                            pass
                        client.sendall(self._throttled(tag))
                        break
                    upstream.sendall(response)
                    continue
                client.sendall(answer)
                if answer.startswith(tag + b" "):
                    if mailbox is not None and answer.startswith(tag + b" OK"):
                        with self._lock:
                            self.logins[mailbox] += 1
                        return _Session(mailbox)
                    break
        return None

    def _throttled(self, tag: bytes) -> bytes:
        return (tag + b" NO [THROTTLED] Request is throttled. Suggested Backoff Time: "
                + f"{self.suggest_ms} milliseconds\r\n".encode())

    def _refuse(self, mailbox: str) -> bool:
        with self._lock:
            if self.refused[mailbox] < self.refuse_logins:
                self.refused[mailbox] += 1
                return True
        return False


def _sasl_user(response: bytes) -> str | None:
    """The mailbox of an XOAUTH2 response (`user=...^Aauth=Bearer ...^A^A`), lower-cased."""
    try:
        sasl = base64.b64decode(response, validate=True).decode()
    except ValueError:
        return None
    fields = dict(p.split("=", 1) for p in sasl.split("\x01") if "=" in p)
    return fields.get("user", "").lower() or None


def _pump(client: ssl.SSLSocket, upstream: socket.socket, session: _Session) -> None:
    """Relay both ways until either side closes or the session is to be ended."""
    while not session.bye.is_set():
        ready = [client] if client.pending() else select.select(
            [client, upstream], [], [], 0.2)[0]
        for sock in ready:
            try:
                data = sock.recv(65536)
            except ssl.SSLWantReadError:
                continue
            except OSError:
                return
            if not data:
                return
            (upstream if sock is client else client).sendall(data)
    with contextlib.suppress(OSError):
        client.sendall(UNAVAILABLE)
