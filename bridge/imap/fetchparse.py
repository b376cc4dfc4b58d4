"""FETCH responses parsed by one regex into imapclient's results.

imapclient's lexer (`imapclient.response_lexer`) walks a response one byte at a time in
Python, which is slow for the BODYSTRUCTURE and header literals of a backlog. Here a
compiled regex cuts each line into tokens and a small stack builds the tuples; the result
is what `imapclient.response_parser.parse_fetch_response(data, normalise_times,
uid_is_key=True)` returns, with the same lexing rules (tests/test_fetchparse.py compares
the two), except that every malformed response raises `ProtocolError`, never another
exception, and lists nested deeper than Python's recursion limit parse.

imapclient has no public API for two things done here: the imaplib connection under an
`IMAPClient` and the conversion of an ENVELOPE. Each is used in one function below,
checked against imapclient 4.1.0; tests/test_fetchparse.py fails if either changes.
"""

from __future__ import annotations

import contextlib
import imaplib
import re
import reprlib  # short messages, even for deeply nested tuples
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import imapclient
from imapclient import response_parser
from imapclient.datetime_util import parse_to_datetime
from imapclient.exceptions import IMAPClientError, ProtocolError
from imapclient.response_types import BodyData, Envelope
from imapclient.util import to_unicode

Item = bytes | tuple[bytes, bytes]  # imaplib's: a line, or a line ending {N} and the literal

# imapclient's lexer rules: whitespace is SP, TAB, CR, LF; a word is bytes >= 32 other than
# SP ( ) % " [, and a "[" takes everything up to the next "]" into the word (BODY[...]);
# a quoted string has backslash escapes; ( ) % and other control characters stand alone.
_TOKEN = re.compile(
    rb"[ \t\r\n]*+("
    rb'"(?:[^"\\]++|\\.)*+"'  # a quoted string
    rb"|[()]"
    rb'|(?:[^\x00-\x20()%"\[]++|\[[^\]]*+\])++"?'  # a word (a quote glued to it is an error)
    rb"|.)",  # one character: % or a control character; or an unclosed [ or quoted string
    re.DOTALL,
)
_ESCAPE = re.compile(rb'\\([\\"])')  # other backslashes are kept, as imapclient does
_OPEN, _CLOSE, _LITERAL = object(), object(), object()  # what these tokens stand for


def parse_fetch(data: Sequence[Item] | Sequence[None], *,
                normalise_times: bool = False) -> dict[int, dict[bytes, Any]]:
    """imaplib's untagged FETCH data by UID, each message's items by upper-cased name
    (b"SEQ": its sequence number), typed as `IMAPClient.fetch` types them."""
    if len(data) == 1 and data[0] is None:
        return {}
    atoms = _atoms(data)
    messages: dict[int, dict[bytes, Any]] = {}
    for i in range(0, len(atoms), 2):
        uid = seq = _int(atoms[i], "invalid message ID")
        if i + 1 == len(atoms):
            raise ProtocolError("unexpected EOF")
        response = atoms[i + 1]
        if not isinstance(response, tuple):
            raise ProtocolError(f"bad response type: {reprlib.repr(response)}")
        if len(response) % 2:
            raise ProtocolError(f"uneven number of response items: {reprlib.repr(response)}")
        fields: dict[bytes, Any] = {b"SEQ": seq}
        for name, value in zip(response[::2], response[1::2], strict=True):
            if not isinstance(name, bytes):
                raise ProtocolError(f"bad item name: {reprlib.repr(name)}")
            word = name.upper()
            if word == b"UID":
                uid = _int(value, "invalid UID")
            else:
                fields[word] = _convert(word, value, normalise_times)
        messages.setdefault(uid, {}).update(fields)
    return messages


def fetch(client: imapclient.IMAPClient, uids: Sequence[int],
          items: Sequence[bytes | str]) -> dict[int, dict[bytes, Any]]:
    """`client.fetch(uids, items)` (only the UIDs asked for), parsed by `parse_fetch`."""
    if not uids:
        return {}
    # imaplib sends bytes arguments as they are; its stubs only admit str
    uid_command: Callable[..., tuple[str, list[Any]]] = imaplib_connection(client).uid
    with literals_unlogged(client):
        status, data = uid_command(
            "FETCH", b",".join(b"%d" % uid for uid in uids),
            b"(" + b" ".join(i if isinstance(i, bytes) else i.encode() for i in items) + b")")
    if status != "OK":
        raise IMAPClientError(f"fetch failed: {to_unicode(data[0])}")
    response = parse_fetch(data, normalise_times=client.normalise_times)
    return {uid: response[uid] for uid in uids if uid in response}


def imaplib_connection(client: imapclient.IMAPClient) -> imaplib.IMAP4:
    """The imaplib connection an `IMAPClient` runs on: its `_imap` (imapclient 4.1.0), for
    sending a UID FETCH whose response `parse_fetch` parses, not imapclient's lexer."""
    imap: imaplib.IMAP4 = client._imap
    return imap


@contextlib.contextmanager
def literals_unlogged(client: imapclient.IMAPClient) -> Iterator[None]:
    """imaplib's debug level at most 4 for a block. imapclient (4.1.0) sets it to 5, where
    imaplib formats every literal received (whole attachments) with repr() for the debug
    log, whether or not debug logging is on; level 4 still logs every line and command."""
    imap = imaplib_connection(client)
    saved = getattr(imap, "debug", 0)
    if saved > 4:
        imap.debug = 4
    try:
        yield
    finally:
        if saved > 4:
            imap.debug = saved


def convert_envelope(value: Any, normalise: bool) -> Envelope:
    """An ENVELOPE's tuple as imapclient types it (`response_parser._convert_ENVELOPE`,
    imapclient 4.1.0: there is no public function for it)."""
    envelope: Envelope = response_parser._convert_ENVELOPE(value, normalise)
    return envelope


def _atoms(data: Sequence[Item] | Sequence[None]) -> list[Any]:
    """The responses' top-level values: tuples, None (NIL), ints, bytes."""
    values = _Values()
    stack: list[list[Any]] = []  # the tuples still open around `out`
    out: list[Any] = []
    for item in data:
        if isinstance(item, bytes):
            text, literal = item, None
        elif (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], bytes)
              and isinstance(item[1], bytes) and item[0].endswith(b"}")):
            text, literal = item
        else:
            raise ProtocolError(f"bad response line: {reprlib.repr(item)}")
        for token in _TOKEN.findall(text):
            value = values[token]
            if value is _OPEN:
                stack.append(out)
                out = []
            elif value is _CLOSE and stack:
                done = tuple(out)
                out = stack.pop()
                out.append(done)
            elif value is _LITERAL:
                out.append(_literal(token, literal))
            else:  # a stray ")" at the top level is a value, as in imapclient
                out.append(b")" if value is _CLOSE else value)
    if stack:
        raise ProtocolError(f"tuple incomplete: {reprlib.repr(out)}")
    return out


class _Values(dict[bytes, Any]):
    """Each distinct token's value, worked out once (BODYSTRUCTURE repeats NIL, "text" ...)."""

    def __missing__(self, token: bytes) -> Any:
        first = token[0]
        if token == b"(":
            value: Any = _OPEN
        elif token == b")":
            value = _CLOSE
        elif first == 0x22:  # '"'
            if len(token) == 1:
                raise ProtocolError("no closing '\"'")
            value = token[1:-1]
            if b"\\" in value:
                value = _ESCAPE.sub(rb"\1", value)
        elif token == b"[":
            raise ProtocolError("no closing ']'")
        elif token.endswith(b'"'):
            raise ProtocolError(f"quote after {reprlib.repr(token[:-1])}")
        elif first == 0x7B:  # "{N}": the literal that ends this line (RFC 3501 §4.3)
            value = _LITERAL
        elif token == b"NIL":
            value = None
        elif token.isdigit() and (first != 0x30 or len(token) == 1):  # 0123 stays bytes
            try:
                value = int(token)
            except ValueError as exc:  # more digits than int() takes
                raise ProtocolError(str(exc)) from None
        else:
            value = token
        self[token] = value
        return value


def _literal(token: bytes, literal: bytes | None) -> bytes:
    try:
        size = int(token[1:-1])
    except ValueError:
        raise ProtocolError(f"bad literal size: {reprlib.repr(token)}") from None
    if literal is None:
        raise ProtocolError(f"no literal corresponds to {reprlib.repr(token)}")
    if len(literal) != size:
        raise ProtocolError(f"expecting literal of size {size}, got {len(literal)}")
    return literal


def _int(value: Any, error: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ProtocolError(f"{error}: {reprlib.repr(value)}") from None


def _convert(word: bytes, value: Any, normalise: bool) -> Any:
    try:
        if word == b"INTERNALDATE":
            if value is None:
                return None
            if not isinstance(value, bytes):
                raise ProtocolError(f"bad INTERNALDATE: {reprlib.repr(value)}")
            try:
                return parse_to_datetime(value, normalise=normalise)
            except ValueError:
                return None
        if word == b"ENVELOPE":
            return convert_envelope(value, normalise)
        if word in {b"BODY", b"BODYSTRUCTURE"}:
            return BodyData.create(value)
    except (AttributeError, LookupError, TypeError, OverflowError, RecursionError) as exc:
        raise ProtocolError(f"bad {word.decode('latin-1')}: {reprlib.repr(value)}") from exc
    return value
