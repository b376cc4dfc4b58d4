"""A folder's `search` criteria on the wire: which UIDs of a range match them.

The criteria were checked at config load (`bridge.config.search`); here they are encoded
for imapclient and run. ASCII criteria go as one argument, every string quoted
(RFC 3501 §4.3); criteria with non-ASCII text go with CHARSET UTF-8 as separate
arguments, which imapclient sends as literals where they are 8-bit. May import:
`bridge.config`, `bridge.errors`.
"""

from __future__ import annotations

import imapclient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from bridge.config.search import Token, is_ascii, parse_search
from bridge.errors import ImapError


class Criteria:
    """Parsed `search` criteria, ready to be ANDed with a UID range."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._tokens = parse_search(text)
        self._ascii = is_ascii(self._tokens)
        self._wire = encode_ascii(self._tokens) if self._ascii else b""

    def arguments(self, uid_range: str) -> tuple[bytes | list[bytes], str | None]:
        """imapclient's `search` arguments (criteria, charset) for the UIDs in `uid_range`."""
        prefix = f"UID {uid_range}".encode()
        if self._ascii:
            return prefix + b" " + self._wire, None
        return [b"UID", uid_range.encode(), *(t.text.encode() for t in self._tokens)], "UTF-8"

    def matching(self, client: imapclient.IMAPClient, uid_range: str) -> list[int]:
        """The UIDs in `uid_range` of the selected folder that match, ascending.

        A server that refuses the criteria (NO/BAD) raises SearchRefused; a lost
        connection raises as from any other command."""
        criteria, charset = self.arguments(uid_range)
        try:
            return sorted(int(u) for u in client.search(criteria, charset))
        except IMAPClientAbortError:
            raise
        except IMAPClientError as exc:
            raise SearchRefused(f"the server refused search = {self.text!r}: {exc}; change "
                                "it (outlook2mqtt check runs it)") from None


class SearchRefused(ImapError):
    """The server answered the criteria with NO or BAD."""


def encode_ascii(tokens: tuple[Token, ...]) -> bytes:
    """ASCII tokens as one argument: atoms as written, strings always quoted."""
    out: list[str] = []
    previous = ""
    for token in tokens:
        # no space after "(" or before ")" (RFC 3501 §9: "(" search-key *(SP search-key) ")")
        if out and previous != "(" and token.kind != ")":
            out.append(" ")
        if token.kind == "string":
            escaped = token.text.replace("\\", "\\\\").replace('"', '\\"')
            out.append(f'"{escaped}"')
        else:
            out.append(token.text)
        previous = token.kind
    return "".join(out).encode("ascii")
