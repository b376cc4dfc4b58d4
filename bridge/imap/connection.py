"""IMAP connections to Exchange Online: TLS or STARTTLS, XOAUTH2, folder helpers.

A thin layer over imapclient, whose clients are not thread-safe: every worker opens
its own. Library exceptions are translated into the domain errors here.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import socket
import ssl
from dataclasses import dataclass
from typing import Any

import imapclient
from imapclient.exceptions import IMAPClientError, LoginError

from bridge.auth.tokens import Token
from bridge.config.model import AccountConfig, same_folder
from bridge.errors import FolderNotFound, ImapAuthError, ImapError, ImapThrottled
from bridge.imap.throttle import throttle_delay
from bridge.log import register_secret

_LOGGER = logging.getLogger(__name__)

# The connection is gone: a socket or TLS error, a timeout, BYE or EOF (imaplib's abort,
# which imapclient calls IMAPClientAbortError). Reconnect; what was in flight may or may
# not have been carried out.
CONNECTION_LOST: tuple[type[BaseException], ...] = (OSError, imapclient.imaplib.IMAP4.abort)
# The connection is gone, or the server answered NO or BAD (imaplib's error, the base
# class of abort, which imapclient calls IMAPClientError).
IMAP_FAILURES: tuple[type[BaseException], ...] = (*CONNECTION_LOST, IMAPClientError)


# Every read waits at most this long: a server that has not answered by then is treated
# as gone (a NAT or firewall that silently forgot the connection never answers).
ANSWER_TIMEOUT = 30.0
# TCP keepalive: probe after 45 s of silence, every 15 s, give up after 3 unanswered
# probes. It keeps NAT mappings alive and notices a peer that vanished within ~90 s.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_PROBES = 45, 15, 3


def ssl_context(account: AccountConfig) -> ssl.SSLContext:
    """Verifying TLS context; `ca_file` adds a CA to the system ones."""
    context = ssl.create_default_context()
    if account.ca_file is not None:
        context.load_verify_locations(cafile=str(account.ca_file))
    return context


def connect(account: AccountConfig, token: Token, *, timeout: float = ANSWER_TIMEOUT,
            context: ssl.SSLContext | None = None) -> imapclient.IMAPClient:
    """Open a logged-in connection to the account's mailbox (`context`: a shared one,
    from `bridge.imap.logins`)."""
    context = context or ssl_context(account)
    where = f"{account.imap_host}:{account.imap_port}"
    try:
        if account.imap_security == "starttls":
            client = imapclient.IMAPClient(
                account.imap_host, port=account.imap_port, ssl=False, timeout=timeout
            )
            client.starttls(context)
        else:
            client = imapclient.IMAPClient(
                account.imap_host,
                port=account.imap_port,
                ssl=True,
                ssl_context=context,
                timeout=timeout,
            )
    except ssl.SSLCertVerificationError as exc:
        raise ImapError(f"TLS certificate of {where} not trusted: {exc.verify_message}") from None
    except socket.gaierror as exc:
        raise ImapError(f"cannot resolve {account.imap_host}: {exc.strerror}") from None
    except IMAP_FAILURES as exc:
        raise _failure(f"cannot connect to {where}", exc) from None
    keep_alive(client.socket())
    # imaplib logs the base64 SASL response at debug level: redact that form too.
    sasl = f"user={account.mailbox}\1auth=Bearer {token.access_token}\1\1"
    register_secret(base64.b64encode(sasl.encode()).decode())
    try:
        client.oauth2_login(account.mailbox, token.access_token)
    except LoginError as exc:
        _safe_logout(client)
        raise _failure(f"IMAP login to {account.mailbox} refused", exc, ImapAuthError) from None
    except IMAP_FAILURES as exc:
        _safe_logout(client)
        raise _failure(f"IMAP login to {where} failed", exc) from None
    return client


def keep_alive(sock: socket.socket) -> None:
    """Turn on TCP keepalive with short timers, where the platform has them."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
                          ("TCP_KEEPCNT", KEEPALIVE_PROBES)):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def _failure(what: str, exc: BaseException, error: type[ImapError] = ImapError) -> ImapError:
    """`error`, or ImapThrottled when the server's words are a throttling answer."""
    delay = throttle_delay(_text(exc))
    if delay is not None:
        return ImapThrottled(f"{what}: {_text(exc)}", delay)
    return error(f"{what}: {_text(exc)}")


def _text(exc: BaseException) -> str:
    return str(exc).strip("b'\"") or type(exc).__name__


def _safe_logout(client: imapclient.IMAPClient) -> None:
    try:
        client.logout()
    except Exception:  # the connection is being abandoned anyway
        with contextlib.suppress(Exception):
            client.shutdown()


def close(client: imapclient.IMAPClient | None) -> None:
    """Log out, ignoring a connection that is already gone."""
    if client is not None:
        _safe_logout(client)


def abandon(client: imapclient.IMAPClient | None) -> None:
    """Close a connection known to be lost, without a LOGOUT that would wait for an
    answer that never comes."""
    if client is not None:
        with contextlib.suppress(Exception):
            client.shutdown()


def list_folders(client: imapclient.IMAPClient) -> list[tuple[tuple[bytes, ...], str]]:
    """(flags, name) for every folder the server lists."""
    return [(tuple(flags), str(name)) for flags, _delim, name in client.list_folders()]


def resolve_folder(client: imapclient.IMAPClient, name: str) -> str:
    """The server's spelling of `name`, compared by `same_folder` where not exact."""
    names = [n for _flags, n in list_folders(client)]
    if name in names:
        return name
    found = next((n for n in names if same_folder(n, name)), None)
    if found is None:
        raise FolderNotFound(name, sorted(names))
    return found


@dataclass(frozen=True)
class FolderStatus:
    """What the retained folder state shows, read with STATUS."""

    uidvalidity: int
    uidnext: int
    total: int
    unread: int


def folder_status(client: imapclient.IMAPClient, name: str) -> FolderStatus:
    """STATUS of a folder: counts and the UID numbers (RFC 3501 §6.3.10)."""
    status: dict[bytes, Any] = client.folder_status(
        name, [b"MESSAGES", b"UNSEEN", b"UIDVALIDITY", b"UIDNEXT"]
    )
    return FolderStatus(
        uidvalidity=int(status[b"UIDVALIDITY"]),
        uidnext=int(status[b"UIDNEXT"]),
        total=int(status[b"MESSAGES"]),
        unread=int(status[b"UNSEEN"]),
    )
