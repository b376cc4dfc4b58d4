"""Content-Transfer-Encodings (RFC 2045 §6) of fetched parts: decoding, and decoded-size
bounds from the encoded size that BODYSTRUCTURE reports.

Pure: no I/O. Parts up to `STDLIB_MAX` bytes are decoded by the stdlib's compat32 code
path itself, so they decode exactly as in a whole-message parse (broken base64 included).
Larger parts (attachments) are decoded without the stdlib's per-line copies: base64 in
slices, quoted-printable in one pass. For valid input both give the same bytes.
"""

from __future__ import annotations

import binascii
import email.message
import quopri
from dataclasses import dataclass

STDLIB_MAX = 1 << 20
_SLICE = 1 << 20  # base64 is decoded this many encoded bytes at a time
_B64_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_NOT_B64 = bytes(sorted(set(range(256)) - set(_B64_CHARS)))
# RFC 2045 §6.8 allows lines of up to 76 characters; encoders write 76 (MIME), 72 or 64
# (PEM). The lower bound assumes at least 64 per line, the estimate 76.
_B64_MIN_LINE = 64


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
        lines = encoded // (_B64_MIN_LINE + 2)
        lower = max(0, (encoded - 2 * lines) * 3 // 4 - 2)
        upper = encoded * 3 // 4
        estimate = (encoded - 2 * (encoded // 78)) * 3 // 4
    elif encoding == "quoted-printable":
        lower, upper, estimate = encoded // 3, encoded, encoded
    elif encoding in ("x-uuencode", "uuencode", "uue", "x-uue"):
        lower, upper, estimate = 0, encoded, encoded * 3 // 4
    else:  # 7bit, 8bit, binary, or unknown (not decoded at all)
        return SizeBounds(encoded, encoded, encoded)
    if declared is not None and declared.strip().isdigit():
        size = int(declared.strip())
        if lower <= size <= upper:
            estimate = size
    return SizeBounds(lower, upper, min(max(estimate, lower), upper))


def decode(encoding: str, data: bytes) -> bytes:
    """Decode a whole part body as a whole-message parse would."""
    if len(data) <= STDLIB_MAX:
        return _stdlib_decode(encoding, data)
    if encoding == "base64":
        return _decode_base64(data)
    if encoding == "quoted-printable":
        return quopri.decodestring(data)  # what compat32 does, in one pass
    if encoding in ("x-uuencode", "uuencode", "uue", "x-uue"):
        return _stdlib_decode(encoding, data)
    return data


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


def _stdlib_decode(encoding: str, data: bytes) -> bytes:
    """compat32's own decoding (Message.get_payload(decode=True)) of one body."""
    part = email.message.Message()
    part["Content-Transfer-Encoding"] = encoding
    part.set_payload(data.decode("ascii", "surrogateescape"))
    decoded = part.get_payload(decode=True)
    return decoded if isinstance(decoded, bytes) else data


def _decode_base64(data: bytes) -> bytes:
    """Base64 in slices: characters outside the alphabet are skipped, decoding stops at
    padding (as binascii does in its lenient mode), missing padding is forgiven."""
    out = bytearray()
    carry = b""
    view = memoryview(data)
    for start in range(0, len(data), _SLICE):
        chunk = carry + bytes(view[start : start + _SLICE]).translate(None, _NOT_B64)
        pad = chunk.find(b"=")
        if pad >= 0:  # the end of the data as far as a lenient decoder is concerned
            carry = chunk[:pad]
            break
        whole = len(chunk) // 4 * 4
        out += binascii.a2b_base64(chunk[:whole])
        carry = chunk[whole:]
    whole = len(carry) // 4 * 4
    out += binascii.a2b_base64(carry[:whole])
    rest = carry[whole:]
    if len(rest) > 1:  # a trailing quantum of 2 or 3 characters carries 1 or 2 bytes
        out += binascii.a2b_base64(rest + b"=" * (4 - len(rest)))
    return bytes(out)
