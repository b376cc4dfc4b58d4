"""Content-Transfer-Encodings (RFC 2045 §6) of fetched parts: decoding, and decoded-size
bounds from the encoded size that BODYSTRUCTURE reports.

Pure: no I/O. Parts up to `STDLIB_MAX` bytes decode exactly as in a whole-message parse
(broken base64 included): valid base64 by pybase64 (SIMD; the stdlib's compat32 path
copies every line, which makes attachments the bulk of a backlog's work), anything else
by the stdlib's compat32 code path itself. Larger parts (attachments) are decoded by
`Decoder`, piece by piece as they are fetched. For valid input all give the same bytes.
"""

from __future__ import annotations

import binascii
import email.message
import quopri
from dataclasses import dataclass

import pybase64

STDLIB_MAX = 1 << 20
_SLICE = 1 << 20  # base64 is decoded this many encoded bytes at a time
_B64_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_NOT_B64 = bytes(sorted(set(range(256)) - set(_B64_CHARS)))
# RFC 2045 §6.8 allows lines of up to 76 characters; encoders write 76 (MIME), 72 or 64
# (PEM). The lower bound assumes at least 64 per line, the estimate 76.
_B64_MIN_LINE = 64
_UUENCODE = ("x-uuencode", "uuencode", "uue", "x-uue")


@dataclass(frozen=True)
class SizeBounds:
    """What the decoded size of a part can be, given its encoded size."""

    lower: int
    upper: int
    estimate: int


def size_bounds(encoding: str, encoded: int, declared: str | None = None) -> SizeBounds:
    """Bounds and an estimate of the decoded size of `encoded` octets in `encoding`.

    `declared` is Content-Disposition's `size` parameter (RFC 2183 §2.7; Outlook writes
    the exact decoded size): used as the estimate when it lies within the bounds.
    """
    if encoding == "base64":
        lines = -(-encoded // (_B64_MIN_LINE + 2))  # at most this many CRLFs
        lower = max(0, (encoded - 2 * lines) * 3 // 4 - 2)
        upper = encoded * 3 // 4
        estimate = (encoded - 2 * -(-encoded // 78)) * 3 // 4  # every line ends in CRLF
    elif encoding == "quoted-printable":
        lower, upper, estimate = encoded // 3, encoded, encoded
    elif encoding in _UUENCODE:
        lower, upper, estimate = 0, encoded, encoded * 3 // 4
    else:  # 7bit, 8bit, binary, or unknown (not decoded at all)
        return SizeBounds(encoded, encoded, encoded)
    if declared is not None and declared.strip().isdigit():
        size = int(declared.strip())
        if lower <= size <= upper:
            estimate = size
    return SizeBounds(lower, upper, min(max(estimate, lower), upper))


def decode(encoding: str, data: bytes) -> bytes:
    """Decode a whole part body as a whole-message parse would. (Large bodies come back as
    a bytearray: copying 25 MB to make it immutable would only raise the peak memory.)"""
    if encoding == "base64":
        strict = _strict_base64(data)
        if strict is not None:
            return strict
    if len(data) <= STDLIB_MAX or encoding in _UUENCODE:
        return _stdlib_decode(encoding, data)
    decoder = Decoder(encoding)
    view = memoryview(data)
    for start in range(0, len(data), _SLICE):
        decoder.feed(view[start : start + _SLICE])
    return decoder.finish()


def decode_prefix(encoding: str, data: bytes) -> bytes:
    """Decode the first bytes of a part (a partial fetch): only whole base64 quanta and
    whole quoted-printable lines, so the result is a prefix of the decoded part."""
    if encoding == "base64":
        clean = data.translate(None, _NOT_B64)
        clean = clean[: clean.find(b"=")] if b"=" in clean else clean
        return binascii.a2b_base64(clean[: len(clean) // 4 * 4])
    if encoding == "quoted-printable":
        return quopri.decodestring(data[: data.rfind(b"\n") + 1])
    return data


class Decoder:
    """Decodes a part fed in pieces (partial fetches of a large attachment).

    base64: characters outside the alphabet are skipped and decoding stops at padding, as
    binascii does in its lenient mode; a missing final padding is forgiven.
    quoted-printable: decoded line by line, which is how binascii decodes it anyway.
    """

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._out = bytearray()
        self._carry = b""
        self._done = False  # base64 padding seen: the rest is ignored

    def feed(self, data: bytes | memoryview) -> None:
        if self._done:
            return
        if self.encoding == "base64":
            chunk = self._carry + bytes(data).translate(None, _NOT_B64)
            pad = chunk.find(b"=")
            if pad >= 0:
                chunk, self._done = chunk[:pad], True
            whole = len(chunk) // 4 * 4
            self._out += pybase64.b64decode(chunk[:whole], validate=True)
            self._carry = chunk[whole:]
        elif self.encoding == "quoted-printable":
            chunk = self._carry + bytes(data)
            end = chunk.rfind(b"\n") + 1
            self._out += quopri.decodestring(chunk[:end])
            self._carry = chunk[end:]
        else:
            self._out += data

    def finish(self) -> bytes:
        """The decoded part (a bytearray, not copied)."""
        if self.encoding == "base64" and len(self._carry) > 1:
            # a trailing quantum of 2 or 3 characters carries 1 or 2 bytes
            self._out += binascii.a2b_base64(self._carry + b"=" * (4 - len(self._carry)))
        elif self.encoding == "quoted-printable" and self._carry:
            self._out += quopri.decodestring(self._carry)
        self._carry = b""
        return self._out  # type: ignore[return-value]


def _strict_base64(data: bytes) -> bytes | None:
    """`data` decoded if it is valid base64 once its line breaks are removed, padding
    forgiven, which is the first thing compat32 tries (`email._encoded_words.decode_b`)
    and what it returns then; None otherwise (compat32 has its own ways with the rest)."""
    clean = data.translate(None, b"\r\n")
    if len(clean) % 4:
        clean += b"==="[: 4 - len(clean) % 4]
    try:
        return pybase64.b64decode(clean, validate=True)
    except ValueError:  # binascii.Error
        return None


def _stdlib_decode(encoding: str, data: bytes) -> bytes:
    """compat32's own decoding (Message.get_payload(decode=True)) of one body."""
    part = email.message.Message()
    part["Content-Transfer-Encoding"] = encoding
    part.set_payload(data.decode("ascii", "surrogateescape"))
    decoded = part.get_payload(decode=True)
    return decoded if isinstance(decoded, bytes) else data
