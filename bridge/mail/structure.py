"""A message's MIME structure as the server describes it (IMAP BODYSTRUCTURE), as a tree.

Pure data: `bridge.imap.bodystructure` builds it from a FETCH response, the part-wise walk
(`bridge.mail.partwise`) reads it. Each part carries its section number for
``BODY.PEEK[section]`` and its MIME fields as raw header text (8-bit bytes as lone
surrogates, like the stdlib's compat32 parser keeps them), so that `bridge.mail.mime`
decodes them exactly as it decodes the headers of a whole message.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

ParamList = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Part:
    """One MIME part: a leaf, or a multipart with children."""

    section: str  # "1", "2.1"; "" for a top-level multipart (RFC 3501 §6.4.5)
    maintype: str  # lower case
    subtype: str
    params: ParamList = ()  # Content-Type parameters, raw, in order
    content_id: str | None = None
    encoding: str = "7bit"  # Content-Transfer-Encoding, lower case
    size: int = 0  # octets of the encoded body (leaves)
    disposition: str | None = None  # raw disposition token
    disposition_params: ParamList = ()
    children: tuple[Part, ...] = ()

    @property
    def content_type(self) -> str:
        return f"{self.maintype}/{self.subtype}"

    @property
    def is_multipart(self) -> bool:
        return bool(self.children)

    def headers(self) -> dict[str, list[str]]:
        """The part's MIME header fields rebuilt as raw values, keyed like
        `bridge.mail.message`'s header maps: content-type, content-disposition, content-id."""
        out = {"content-type": [_header_value(self.content_type, self.params)]}
        if self.disposition is not None:
            out["content-disposition"] = [_header_value(self.disposition,
                                                        self.disposition_params)]
        if self.content_id is not None:
            out["content-id"] = [self.content_id]
        return out

    def walk(self) -> Iterator[Part]:
        """This part and every part below it, in MIME (document) order."""
        yield self
        for child in self.children:
            yield from child.walk()


def _header_value(token: str, params: ParamList) -> str:
    """`token; name="value"; ...` with quoted-string escapes (RFC 2045 §5.1); the server
    already removed the original quoting, so quoting again keeps every value intact."""
    return "; ".join([token, *(f'{name}="{_escape(value)}"' for name, value in params)])


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
