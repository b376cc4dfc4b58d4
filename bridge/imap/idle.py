"""Waiting for news on a selected folder: IDLE (RFC 2177) that wakes on events and
notices a dead connection, and the news a server slips into other answers.

No polling: the wait selects on the IMAP socket and a `Wakeup`. Every CHECK_INTERVAL
IDLE is ended and started again, and DONE must be answered within the connection's
read timeout: a connection that died without a FIN or RST (a NAT that forgot it, whose
TCP keepalive a middlebox may answer) is noticed within the sum.

imapclient 4.1.0 offers no public view of imaplib's buffered input or of the untagged
responses imaplib stashes; `has_unread_input` and `take_news` read them through
`client._imap`, and are the only functions here that do.
"""

from __future__ import annotations

import ssl
import threading
import time
from typing import Any

import imapclient
from imapclient.exceptions import IMAPClientAbortError

from bridge.util.wakeup import Wakeup

CHECK_INTERVAL = 60.0
# readable with nothing to read, this many times in a row: the server closed the socket
_EMPTY_READS_AT_EOF = 3


def idle(client: imapclient.IMAPClient, wake: Wakeup, stop: threading.Event, *,
         until: float) -> None:
    """IDLE until the server reports a change, `wake` or `stop` is set, or `until`
    (IDLE must be renewed well within the server's 30-minute timeout)."""
    while not (stop.is_set() or wake.is_set()):
        check_at = min(until, time.monotonic() + CHECK_INTERVAL)
        client.idle()
        changed = _wait(client, wake, stop, check_at)
        _text, responses = client.idle_done()
        raise_on_bye(responses)
        if changed or any(is_change(r) for r in responses) or time.monotonic() >= until:
            return


def _wait(client: imapclient.IMAPClient, wake: Wakeup, stop: threading.Event,
          deadline: float) -> bool:
    """Wait in IDLE until `deadline`, `wake` or `stop` (False), or a change (True)."""
    sock = client.socket()
    empty_reads = 0
    while not (stop.is_set() or wake.is_set()):
        if has_unread_input(client):
            return True  # DONE's answer collects what is buffered, and says more
        if not wake.wait_readable(sock, deadline - time.monotonic()):
            if time.monotonic() >= deadline:
                return False
            continue
        responses = client.idle_check(timeout=0)
        raise_on_bye(responses)
        if any(is_change(r) for r in responses):
            return True
        empty_reads = 0 if responses else empty_reads + 1
        if empty_reads >= _EMPTY_READS_AT_EOF:
            raise IMAPClientAbortError("connection closed by the server during IDLE")
    return False


def is_change(response: Any) -> bool:
    """EXISTS, EXPUNGE or FETCH (flags) in an IDLE response: something to sync."""
    return (
        isinstance(response, tuple)
        and len(response) >= 2
        and response[1] in (b"EXISTS", b"EXPUNGE", b"FETCH", b"RECENT")
    )


def raise_on_bye(responses: list[Any]) -> None:
    """A BYE ends the session, e.g. Exchange's "BYE Session invalidated - AccessTokenExpired"."""
    for response in responses:
        if isinstance(response, tuple) and response and response[0] == b"BYE":
            text = b" ".join(r for r in response[1:] if isinstance(r, bytes))
            raise IMAPClientAbortError(f"BYE {text.decode(errors='replace')}")


def has_unread_input(client: imapclient.IMAPClient) -> bool:
    """Whether bytes from the server wait in imaplib's or TLS's buffers, where select()
    on the socket cannot see them (a response that came with IDLE's continuation)."""
    sock = client.socket()
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return bool(client._imap.file.peek(1))
    except (BlockingIOError, ssl.SSLWantReadError):
        return False
    finally:
        sock.settimeout(timeout)


def take_news(client: imapclient.IMAPClient, handled: int) -> bool:
    """Whether an answer to any command since the last call reported a message count
    other than `handled`, or an expunge, in the selected folder; forgets the reports.

    A server may report EXISTS and EXPUNGE inside any response (RFC 3501 §7): mail that
    lands during a SEARCH is announced there, and only there. imaplib stashes such
    responses, and SELECT clears them. RECENT always comes with an EXISTS, so the count
    decides.
    """
    stash: dict[str, list[Any]] = client._imap.untagged_responses
    counts, expunged = stash.pop("EXISTS", []), stash.pop("EXPUNGE", [])
    stash.pop("RECENT", None)
    return any(int(count) != handled for count in counts) or bool(expunged)
