"""IMAP BODYSTRUCTURE (RFC 3501 §7.4.2), as imapclient returns it, as a tree of parts.

Pure: no I/O. The tree is `bridge.mail.structure.Part`, which the part-wise walk reads.
What the part-wise fetch does not handle raises `Unsupported`; the caller then fetches
that message whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bridge.mail.structure import ParamList, Part
from bridge.mail.walk import FORWARDED

MAX_PARTS = 500  # more parts than this: fetch the message whole (hostile or absurd mail)


class Unsupported(ValueError):
    """A structure the part-wise fetch does not handle (the message is fetched whole)."""


def _text(value: Any) -> str | None:
    """An IMAP string (bytes from imapclient) as raw header text; NIL is None."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("ascii", "surrogateescape")
    if isinstance(value, str | int):
        return str(value)
    raise Unsupported(f"unexpected string {type(value).__name__}")


def _params(value: Any) -> ParamList:
    """body-fld-param: NIL or a flat list of alternating names and values."""
    if value is None:
        return ()
    if not isinstance(value, tuple | list) or len(value) % 2:
        raise Unsupported("malformed parameter list")
    items = [_text(v) or "" for v in value]
    return tuple((items[i].strip().lower(), items[i + 1]) for i in range(0, len(items), 2))


def _disposition(ext: Sequence[Any], index: int) -> tuple[str | None, ParamList]:
    """body-fld-dsp at `index` of the extension data: NIL or (token, params)."""
    value = ext[index] if len(ext) > index else None
    if value is None:
        return None, ()
    if isinstance(value, bytes | str):  # Exchange Online sends a bare "inline"
        return _text(value), ()
    if not isinstance(value, tuple | list) or not value:
        raise Unsupported("malformed disposition")
    return _text(value[0]), _params(value[1] if len(value) > 1 else None)


def _number(value: Any) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, bytes) and value.isdigit():
        return int(value)
    raise Unsupported("malformed size")


def parse(body: Any, *, message_leaves: bool = False) -> Part:
    """The part tree of a BODYSTRUCTURE; raise `Unsupported` for anything the part-wise
    fetch does not handle: nested messages (message/*), empty or malformed structures.

    With `message_leaves` (a message too big to fetch whole), every message/* part is a leaf
    like an attachment: a forwarded message (message/rfc822, message/global) with its own
    parts not walked, and the others (a bounce's message/delivery-status, a read receipt's
    message/disposition-notification), which RFC 3501 §9 sends as basic bodies.
    """
    counter = [0]
    try:
        return _parse(body, "", counter, message_leaves)
    except (IndexError, TypeError, AttributeError, UnicodeError) as exc:
        raise Unsupported(f"malformed BODYSTRUCTURE: {type(exc).__name__}") from None


def _parse(body: Any, section: str, counter: list[int], message_leaves: bool) -> Part:
    counter[0] += 1
    if counter[0] > MAX_PARTS:
        raise Unsupported("too many parts")
    if not isinstance(body, tuple | list) or not body:
        raise Unsupported("malformed BODYSTRUCTURE")
    if isinstance(body[0], list | tuple):  # multipart: children, subtype, extension data
        children = tuple(
            _parse(child, f"{section}.{i}" if section else str(i), counter, message_leaves)
            for i, child in enumerate(body[0], start=1)
        )
        if not children:
            raise Unsupported("multipart without parts")
        ext = body[1:]
        subtype = (_text(ext[0]) or "mixed").lower()
        disposition, dparams = _disposition(ext, 2)
        return Part(section, "multipart", subtype, _params(ext[1] if len(ext) > 1 else None),
                    disposition=disposition, disposition_params=dparams, children=children)
    maintype = (_text(body[0]) or "text").lower()
    subtype = (_text(body[1]) or "plain").lower()
    if message_leaves and f"{maintype}/{subtype}" in FORWARDED:
        # body-type-msg: body-fields, envelope, body, body-fld-lines, then the extension
        # data (RFC 3501 §9): md5, disposition, ...
        disposition, dparams = _disposition(body[10:], 1)
        return Part(
            section or "1", maintype, subtype, _params(body[2]), content_id=_text(body[3]),
            encoding=(_text(body[5]) or "7bit").strip().lower(), size=_number(body[6]),
            disposition=disposition, disposition_params=dparams,
        )
    if maintype == "multipart" or (maintype == "message" and not message_leaves):
        # message/*: the stdlib parses the nested message (a forwarded mail's subject, the
        # re-serialized bytes); a multipart leaf has no usable boundary. Both: fetch whole.
        raise Unsupported(f"{maintype}/{subtype} part")
    # A non-multipart message has only part 1 (RFC 3501 §6.4.5).
    section = section or "1"
    # Extension data starts after body-fld-lines for text/* (RFC 3501 §9, body-type-text).
    ext = body[8:] if maintype == "text" else body[7:]
    disposition, dparams = _disposition(ext, 1)
    return Part(
        section, maintype, subtype, _params(body[2]), content_id=_text(body[3]),
        encoding=(_text(body[5]) or "7bit").strip().lower(), size=_number(body[6]),
        disposition=disposition, disposition_params=dparams,
    )
