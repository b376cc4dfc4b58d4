"""Forgiving decoders for header values, charsets, addresses, dates and MIME parameters.

Everything here is pure and takes the raw strings that `email` keeps under the compat32
policy: ASCII, with any 8-bit byte carried as a lone surrogate (``surrogateescape``).
Failures are appended to a caller's `notes` list instead of being raised.
"""

from __future__ import annotations

import binascii
import codecs
import email.utils
import re
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_to_bytes

# RFC 2047 §2: =?charset?encoding?encoded-text?=; the charset may carry an RFC 2231 §5
# language suffix (utf-8*en). The text is matched leniently (spaces seen in the wild).
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?]*)\?=")
_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/]*=*")
_CHARSET_NAME = re.compile(r"[a-z0-9._:+-]{1,40}")
_Q_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_SURROGATE = re.compile("[\ud800-\udfff]")
# Charsets that say nothing useful: decode as UTF-8 if valid, else as Windows-1252.
_GUESS_CHARSETS = frozenset({"", "us-ascii", "ascii", "unknown-8bit", "x-unknown", "unknown"})
# Of those, the ones that declare the charset unknown: the guess is noted, as for a name
# Python has no codec for (an absent or ASCII label is ordinary mail and not noted).
_UNKNOWN_CHARSETS = frozenset({"unknown-8bit", "x-unknown", "unknown"})
# Invisible characters that mail templates pad previews with.
ZERO_WIDTH = re.compile("[\u00ad\u034f\u200b-\u200d\u2060\ufeff]")

# Control, format (bidi overrides), surrogate and line/paragraph separator characters.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})

Address = dict[str, str]


def unfold(value: str) -> str:
    """Undo header folding (RFC 5322 §2.2.3): a line break followed by white space."""
    return _FOLD.sub("", value).replace("\r", "").replace("\n", "")


def scrub(value: str) -> str:
    """Replace lone surrogates (undecodable bytes) with U+FFFD so the text encodes as UTF-8."""
    return _SURROGATE.sub("\ufffd", value)


def guess_decode(data: bytes) -> str:
    """Decode bytes of unknown charset: UTF-8 when valid, else Windows-1252 (Outlook's default)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def from_raw(value: str) -> str:
    """Turn raw 8-bit header bytes (carried as surrogates) into text by guessing the charset."""
    if not _SURROGATE.search(value):
        return value
    return guess_decode(value.encode("utf-8", "surrogateescape"))


def decode_bytes(data: bytes, charset: str | None, notes: list[str], where: str) -> str:
    """Decode `data` in `charset`, best effort: bad bytes become U+FFFD, never an exception."""
    name = (charset or "").strip().strip("\"'").lower()
    if name in _GUESS_CHARSETS:
        if name in _UNKNOWN_CHARSETS:
            notes.append(f"{where}: unknown charset {name!r}")
        return guess_decode(data)
    try:
        if not _CHARSET_NAME.fullmatch(name):
            raise LookupError(name)
        return data.decode(name, "replace")
    except LookupError:
        notes.append(f"{where}: unknown charset {name[:40]!r}")
    except Exception as exc:  # some codecs (idna, utf-7) raise despite errors="replace"
        notes.append(f"{where}: cannot decode as {name[:40]!r} ({type(exc).__name__})")
    return guess_decode(data)


def declared_codec(charset: str | None) -> str | None:
    """The codec `decode_bytes` decodes `charset` with, or None where it guesses instead."""
    name = (charset or "").strip().strip("\"'").lower()
    if name in _GUESS_CHARSETS or not _CHARSET_NAME.fullmatch(name):
        return None
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def _decode_b(text: str) -> bytes:
    """Base64 of an encoded word, forgiving missing padding; ValueError if it is not base64."""
    if not _BASE64_TEXT.fullmatch(text):
        raise ValueError("not base64")
    clean = text.rstrip("=")
    if len(clean) % 4 == 1:  # a lone trailing sextet carries no whole byte
        clean = clean[:-1]
    return binascii.a2b_base64(clean + "=" * (-len(clean) % 4))


def _decode_q(text: str) -> bytes:
    """The "Q" encoding of RFC 2047 §4.2: underscore is space, =XX is a byte."""
    data = text.encode("utf-8", "surrogateescape").replace(b"_", b" ")
    return _Q_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), data)


def decode_words(value: str, notes: list[str], where: str) -> str:
    """Decode RFC 2047 encoded words anywhere in `value`; plain 8-bit text is guessed."""
    pieces: list[tuple[str | bytes, str]] = []
    pos = 0
    for match in _ENCODED_WORD.finditer(value):
        between = value[pos : match.start()]
        # RFC 2047 §6.2: white space between two adjacent encoded words is not displayed.
        if between and not (between.isspace() and pieces and isinstance(pieces[-1][0], bytes)):
            pieces.append((between, ""))
        charset = match.group(1).split("*", 1)[0].lower()
        try:
            if match.group(2) in "bB":
                data = _decode_b(match.group(3))
            else:
                data = _decode_q(match.group(3))
        except (binascii.Error, ValueError):
            notes.append(f"{where}: bad encoded word")
            pieces.append((match.group(0), ""))
        else:
            # A multi-byte character may be split across words: join same-charset bytes first.
            last = pieces[-1] if pieces else None
            if last is not None and isinstance(last[0], bytes) and last[1] == charset:
                pieces[-1] = (last[0] + data, charset)
            else:
                pieces.append((data, charset))
        pos = match.end()
    if pos < len(value):
        pieces.append((value[pos:], ""))
    out = []
    for chunk, charset in pieces:
        if isinstance(chunk, bytes):
            out.append(decode_bytes(chunk, charset, notes, where))
        else:
            out.append(from_raw(chunk))
    return "".join(out)


def header_text(value: str, notes: list[str], where: str) -> str:
    """A header value as display text: unfolded, RFC 2047-decoded, trimmed."""
    return decode_words(unfold(value), notes, where).strip()


# An address list element in one of the shapes `email.utils.getaddresses` parses trivially:
# ``local@domain``, or a display name of atoms and quoted strings (no backslash) then
# ``<local@domain>``; nothing else before the next comma. Atoms and address parts hold no
# RFC 5322 special but the dot, no backslash (comments, groups, routes, domain literals,
# quoted local parts, escapes all fall back to the full parser) and no white space: not even
# what only `str.strip` counts (\x0b, \x1c, ...; `\s` is `str.isspace`), as the parser drops
# a local part's atom that `str.strip` empties.
_ADDR_CHAR = r'[^()<>@,:;"\[\]\\\s]'
_SIMPLE_ADDRESS = re.compile(
    rf"""[ \t]*+(?:
        (?P<spec>{_ADDR_CHAR}++@{_ADDR_CHAR}++)
        |(?P<name>(?:[ \t]*+(?:"[^"\\\r\n]*+"|{_ADDR_CHAR}++))*+)[ \t]*+
            <(?P<angle>{_ADDR_CHAR}++@{_ADDR_CHAR}++)>
    )?[ \t]*+(?:,|\Z)""",
    re.VERBOSE,
)
_NAME_WORD = re.compile(rf'"([^"\\\r\n]*)"|({_ADDR_CHAR}+)')


def _simple_addresses(field: str) -> list[tuple[str, str]] | None:
    """`email.utils.getaddresses([field])` without its empty ``("", "")`` entries, for a
    list of simple elements (see `_SIMPLE_ADDRESS`); None for anything else.

    The stdlib joins a display name's words (atoms, quoted strings' contents) with one
    space and keeps an address part as written. Empty elements (``a@b,,c@d``, a trailing
    comma) next to addresses fall back too: Python 3.11.10+ / 3.12.6+ (``strict=True``)
    reject such a whole list where 3.11.7 skips them."""
    out: list[tuple[str, str]] = []
    empty = False
    pos, end = 0, len(field)
    while pos < end:
        match = _SIMPLE_ADDRESS.match(field, pos)
        if match is None:
            return None
        pos = match.end()
        spec, name, angle = match.group("spec", "name", "angle")
        if spec is not None:
            out.append(("", spec))
        elif angle is not None:
            words = [quoted or atom for quoted, atom in _NAME_WORD.findall(name)]
            out.append((" ".join(words), angle))
        else:
            empty = True
    if field.endswith(","):  # what the last element's comma leaves: an empty element
        empty = True
    return None if empty and out else out


def _address_entries(
    pairs: list[tuple[str, str]], notes: list[str], where: str
) -> list[Address]:
    out: list[Address] = []
    for name, addr in pairs:
        entry = {
            "name": header_text(name, notes, where),
            "address": from_raw(addr).strip(),
        }
        if entry["name"] or entry["address"]:
            out.append(entry)
    return out


def _addresses_email(values: list[str], notes: list[str], where: str) -> list[Address]:
    """`addresses` by the stdlib's parser: the reference the fast path must equal."""
    # Parse before decoding: a decoded display name may contain commas or angle brackets.
    return _address_entries(email.utils.getaddresses([unfold(v) for v in values]), notes, where)


def addresses(values: list[str], notes: list[str], where: str) -> list[Address]:
    """Parse address headers into ``{"name", "address"}`` objects, names decoded.

    Simple lists are split directly (`email._parseaddr` is slow for every message of a
    backlog), anything else by the stdlib; both give the same result
    (tests/test_fastpaths.py)."""
    pairs = _simple_addresses(", ".join([unfold(v) for v in values]))
    if pairs is None:
        return _addresses_email(values, notes, where)
    return _address_entries(pairs, notes, where)


def iso_date(value: str) -> str:
    """An RFC 5322 date as ISO 8601 with offset; raise ValueError when unparseable."""
    try:
        parsed = email.utils.parsedate_to_datetime(unfold(value).strip())
    except (TypeError, IndexError, OverflowError) as exc:
        raise ValueError(str(exc)) from exc
    if parsed.tzinfo is None:  # RFC 5322 §3.3: -0000 means "UTC, local zone unknown"
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.isoformat()


def iso_datetime(value: datetime) -> str:
    """An INTERNALDATE as ISO 8601 with offset; naive values are local time (imapclient)."""
    if value.tzinfo is None:
        value = value.astimezone()
    return value.isoformat()


def importance(headers: dict[str, list[str]]) -> str:
    """`low`, `normal` or `high` from Importance, X-Priority, Priority or X-MSMail-Priority."""
    levels = {
        "importance": {"high": "high", "normal": "normal", "low": "low"},
        "x-priority": {"1": "high", "2": "high", "3": "normal", "4": "low", "5": "low"},
        "priority": {"urgent": "high", "normal": "normal", "non-urgent": "low"},
        "x-msmail-priority": {"high": "high", "normal": "normal", "low": "low"},
    }
    for name, table in levels.items():
        for value in headers.get(name, []):
            word = unfold(value).strip().lower()
            if name == "x-priority":  # "1 (Highest)"
                word = word[:1]
            if word in table:
                return table[word]
    return "normal"


def _split_params(value: str) -> list[str]:
    """Split a header value on semicolons outside quoted strings."""
    parts: list[str] = []
    buf: list[str] = []
    quoted = escaped = False
    for ch in value:
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ";" and not quoted:
            parts.append("".join(buf))
            buf = []
            continue
        buf.append(ch)
    parts.append("".join(buf))
    return parts


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def split_header(value: str, notes: list[str], where: str) -> tuple[str, dict[str, str]]:
    """Split a Content-Type / Content-Disposition value into its lower-cased token and params.

    Parameter values are decoded: RFC 2231 (charset'lang'%XX, continuations ``name*0*``),
    RFC 2047 encoded words (used by Outlook in file names, against the RFC), raw 8-bit text.
    """
    first, *rest = _split_params(unfold(value))
    plain: dict[str, str] = {}
    # name -> section -> (extended, raw text); RFC 2231 §3 continuations and §4 charsets
    sections: dict[str, dict[int, tuple[bool, str]]] = {}
    for item in rest:
        key, sep, val = item.partition("=")
        key = key.strip().lower()
        if not sep or not key:
            continue
        match = re.fullmatch(r"([^*]+)(?:\*(\d+))?(\*)?", key)
        if match is None:
            continue
        name, number, star = match.groups()
        if number is None and star is None:
            plain.setdefault(name, _unquote(val))
        else:
            sections.setdefault(name, {}).setdefault(int(number or 0), (bool(star), _unquote(val)))
    params = {k: header_text(v, notes, where) for k, v in plain.items()}
    for name, parts in sections.items():
        charset = ""
        chunks: list[bytes] = []
        for number in sorted(parts):
            extended, text = parts[number]
            if extended:
                if not chunks and text.count("'") >= 2:  # the first section names the charset
                    charset, _lang, text = text.split("'", 2)
                chunks.append(unquote_to_bytes(text.encode("utf-8", "surrogateescape")))
            else:
                chunks.append(text.encode("utf-8", "surrogateescape"))
        params[name] = decode_bytes(b"".join(chunks), charset, notes, where).strip()
    return first.strip().lower(), params


def sanitize_filename(name: str | None) -> str | None:
    """A file name safe to display: no directories, no control or bidi characters."""
    if not name:
        return None
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(
        " " if cat == "Zs" else ch
        for ch in scrub(name)
        if (cat := unicodedata.category(ch)) not in _UNSAFE_CATEGORIES
    ).strip()
    if name in ("", ".", ".."):
        return None
    if len(name) > 255:
        stem, dot, ext = name.rpartition(".")
        name = stem[: 254 - len(ext)] + dot + ext if dot and len(ext) < 16 else name[:255]
    return name


def scrub_tree(value: Any) -> Any:
    """`scrub` every string in a JSON-like tree."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: scrub_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_tree(v) for v in value]
    return value


def header_params(
    headers: dict[str, list[str]], name: str, notes: list[str]
) -> tuple[str, dict[str, str]]:
    """The value and parameters of the first `name` header (e.g. content-type)."""
    values = headers.get(name)
    return split_header(values[0], notes, name) if values else ("", {})


def part_text(data: bytes, params: Mapping[str, str], notes: list[str], where: str) -> str:
    """A decoded text part in its declared charset, with normalised line ends."""
    text = decode_bytes(data, params.get("charset"), notes, where)
    return text.replace("\r\n", "\n").replace("\r", "\n")
