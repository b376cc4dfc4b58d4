"""Raw header fields by name: of a parsed message, or of a fetched header block.

Pure: no I/O. Values stay raw (8-bit bytes as surrogates, as the stdlib's compat32 parser
keeps them); `bridge.mail.mime` decodes them.
"""

from __future__ import annotations

import email
import email.policy
from email.message import Message

from bridge.mail import mime


def raw_headers(part: Message) -> dict[str, list[str]]:
    """Raw header values by lower-case name, in order (8-bit bytes as surrogates)."""
    out: dict[str, list[str]] = {}
    for name, value in part.raw_items():
        out.setdefault(str(name).strip().lower(), []).append(str(value))
    return out


def first_text(headers: dict[str, list[str]], name: str, notes: list[str],
               where: str) -> str | None:
    """The first `name` field decoded to text (RFC 2047), or None if there is none."""
    values = headers.get(name)
    return mime.header_text(values[0], notes, where) if values else None


def parse_message(raw: bytes) -> Message:
    """`raw` parsed by the stdlib with compat32: values kept raw, no access raises."""
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def _parse_headers_email(raw: bytes) -> dict[str, list[str]]:
    """`parse_headers` by the stdlib's feedparser: the reference the fast path must equal."""
    return raw_headers(parse_message(raw))


def _parse_headers_fast(raw: bytes) -> dict[str, list[str]] | None:
    """`parse_headers` for a plain header block, else None (the caller falls back).

    Plain: every line is a field ``name:value`` (name printable ASCII without space or
    colon, `email.feedparser.headerRE`) or a continuation (leading space or tab) of one,
    up to an empty line that ends the input, or the end of the input; no Content-Type
    (the feedparser reads the body by it). Lines are what the feedparser splits: at LF
    or CRLF (a lone CR also ends a line there: such input falls back), line endings
    kept; values as `Compat32.header_source_parse` makes them."""
    text = raw.decode("ascii", "surrogateescape")  # as `email.message_from_bytes`
    if "\r" in text and text.count("\r") != text.count("\r\n"):
        return None
    pieces = text.split("\n")
    last = pieces.pop()  # after the last LF: an unterminated last line, or nothing
    lines = [piece + "\n" for piece in pieces]
    if last:
        lines.append(last)
    out: dict[str, list[str]] = {}
    field: list[str] = []  # the source lines of the field being read
    for index, line in enumerate(lines):
        if line[0] in " \t":
            if not field:  # a continuation first: a defect the feedparser skips
                return None
            field.append(line)
            continue
        if line in ("\n", "\r\n"):  # the blank line that ends the block
            if index != len(lines) - 1:  # a body follows
                return None
            break
        colon = line.find(":")
        name = line[:colon]
        if colon <= 0 or not (name.isascii() and name.isprintable()) or " " in name:
            return None  # no field: the feedparser's body (or its "From " envelope line)
        if field and not _store_field(out, field):
            return None
        field = [line]
    if field and not _store_field(out, field):
        return None
    return out


def _store_field(out: dict[str, list[str]], lines: list[str]) -> bool:
    """Add a field's source lines to `out` as `Compat32.header_source_parse` and
    `raw_headers` do; False for a Content-Type, which the feedparser also acts on."""
    name, value = lines[0].split(":", 1)
    value = value.lstrip(" \t") + "".join(lines[1:])
    key = name.strip().lower()
    if key == "content-type":
        return False
    out.setdefault(key, []).append(value.rstrip("\r\n"))
    return True


def parse_headers(raw: bytes) -> dict[str, list[str]]:
    """Raw header values of a header block (e.g. a fetched HEADER.FIELDS) by name.

    A plain block is split directly, the feedparser being slow for the headers of every
    message of a backlog; anything else goes through the feedparser. Both give the same
    result (tests/test_fastpaths.py).
    """
    fast = _parse_headers_fast(raw)
    return fast if fast is not None else _parse_headers_email(raw)
