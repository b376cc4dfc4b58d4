"""The `search` field's rule: IMAP SEARCH criteria (RFC 3501 §6.4.4) as users write them.

Pure: a tokenizer and a check of every search key and its arguments, so that a typo is a
config error at load time, not a `BAD` from the server at every sync. The parsed tokens
are what `bridge.imap.search` sends. May import: `bridge.config.fields` (the hint).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from bridge.config.fields import did_you_mean

# search keys by their arguments (RFC 3501 §6.4.4)
NO_ARGUMENT = frozenset({
    "ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "NEW", "OLD", "RECENT", "SEEN",
    "UNANSWERED", "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN",
})
STRING_ARGUMENT = frozenset({"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"})
DATE_ARGUMENT = frozenset({"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"})
NUMBER_ARGUMENT = frozenset({"LARGER", "SMALLER"})
FLAG_ARGUMENT = frozenset({"KEYWORD", "UNKEYWORD"})
KEYS = NO_ARGUMENT | STRING_ARGUMENT | DATE_ARGUMENT | NUMBER_ARGUMENT | FLAG_ARGUMENT | {
    "HEADER", "NOT", "OR"}
# Gmail's extensions (Home Assistant users meet X-GM-RAW there); Exchange has none of them
GMAIL_KEYS = frozenset({"X-GM-RAW", "X-GM-MSGID", "X-GM-THRID", "X-GM-LABELS"})
# atom-specials a string without spaces may hold that imapclient would not quote
_NEEDS_QUOTES = re.compile(r'[(){%*\x00-\x1f\x7f]')
_SEQUENCE_SET = re.compile(r"[0-9*][0-9*:,]*")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class SearchSyntaxError(ValueError):
    """Criteria the server would refuse, or the bridge cannot send; the text says why."""


@dataclass(frozen=True)
class Token:
    """One lexical item: kind "atom", "string", "(" or ")"; `column` counts from 1."""

    kind: str
    text: str
    column: int


def parse_search(text: str) -> tuple[Token, ...]:
    """The tokens of `text`; SearchSyntaxError for anything the server would refuse."""
    tokens = tokenize(text)
    if not tokens:
        raise SearchSyntaxError("no search key; remove the key to publish all new mail")
    i = 0
    while i < len(tokens):
        if tokens[i].kind == ")":
            raise SearchSyntaxError(f"')' at column {tokens[i].column} has no '(' before it")
        i = _search_key(tokens, i)
    _check_sendable(tokens)
    return tuple(tokens)


def is_ascii(tokens: tuple[Token, ...]) -> bool:
    return all(t.text.isascii() for t in tokens)


def tokenize(text: str) -> list[Token]:
    """Atoms, quoted strings (with \\" and \\\\ escapes) and parentheses."""
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
        elif char in "()":
            tokens.append(Token(char, char, i + 1))
            i += 1
        elif char == '"':
            i = _quoted(text, i, tokens)
        else:
            end = i
            while end < len(text) and not text[end].isspace() and text[end] not in '()"':
                end += 1
            tokens.append(Token("atom", text[i:end], i + 1))
            i = end
    return tokens


def _quoted(text: str, start: int, tokens: list[Token]) -> int:
    value: list[str] = []
    i = start + 1
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in '"\\':
            value.append(text[i + 1])
            i += 2
        elif text[i] == '"':
            tokens.append(Token("string", "".join(value), start + 1))
            return i + 1
        else:
            value.append(text[i])
            i += 1
    raise SearchSyntaxError(f"unbalanced quotes: the string starting at column {start + 1} "
                            'is not closed; add the closing "')


def _search_key(tokens: list[Token], i: int) -> int:
    """Check the search key at `i` with its arguments; return the index after it."""
    token = tokens[i]
    if token.kind == "(":
        start, i = i, i + 1
        while i < len(tokens) and tokens[i].kind != ")":
            i = _search_key(tokens, i)
        if i == len(tokens):
            raise SearchSyntaxError(f"unbalanced parentheses: the '(' at column "
                                    f"{token.column} is not closed; add ')'")
        if i == start + 1:
            raise SearchSyntaxError(f"empty parentheses at column {token.column}")
        return i + 1
    if token.kind != "atom":
        raise SearchSyntaxError(f"{token.text!r} at column {token.column} is a string where a "
                                'search key belongs, e.g. FROM "alerts@example.com"')
    name = token.text.upper()
    if name in ("NOT", "OR"):
        i = _search_key(tokens, _need(tokens, i + 1, name, "a search key"))
        if name == "OR":
            i = _search_key(tokens, _need(tokens, i, name, "a second search key"))
        return i
    if name in NO_ARGUMENT:
        return i + 1
    if name == "HEADER":
        _argument(tokens, i + 1, name, "a header field name")
        _argument(tokens, i + 2, name, "a string")
        return i + 3
    if name not in KEYS:
        raise SearchSyntaxError(_unknown(token))
    value = _argument(tokens, i + 1, name, _ARGUMENT_NAMES[name])
    if name in DATE_ARGUMENT:
        _check_date(name, value)
    elif name in NUMBER_ARGUMENT and not (value.isdigit() and int(value) < 2**32):
        # RFC 3501 §9: a number is an unsigned 32-bit integer
        raise SearchSyntaxError(f"{name} takes a size in bytes below 4294967296, e.g. "
                                f"{name} 100000")
    elif name in FLAG_ARGUMENT and not re.fullmatch(r"[^\x00-\x20(){%*\"\\\]]+", value):
        raise SearchSyntaxError(f"{name} takes a keyword (flag name) such as $Label1")
    return i + 2


_ARGUMENT_NAMES = {
    **dict.fromkeys(STRING_ARGUMENT, "a string"),
    **dict.fromkeys(DATE_ARGUMENT, "a date such as 1-Dec-2026"),
    **dict.fromkeys(NUMBER_ARGUMENT, "a size in bytes"),
    **dict.fromkeys(FLAG_ARGUMENT, "a keyword (flag name)"),
}


def _need(tokens: list[Token], i: int, key: str, what: str) -> int:
    if i >= len(tokens) or tokens[i].kind == ")":
        raise SearchSyntaxError(f"{key} needs {what} after it")
    return i


def _argument(tokens: list[Token], i: int, key: str, what: str) -> str:
    if i >= len(tokens) or tokens[i].kind in "()":
        raise SearchSyntaxError(f"{key} needs {what} after it")
    return tokens[i].text


def _check_date(key: str, value: str) -> None:
    found = re.fullmatch(r"(\d{1,2})-([A-Za-z]{3})-(\d{4})", value)
    try:
        if not found:
            raise ValueError(value)
        dt.date(int(found[3]), _MONTHS.index(found[2].capitalize()) + 1, int(found[1]))
    except ValueError:
        raise SearchSyntaxError(f"{key} takes a date as d-Mon-yyyy, e.g. {key} 1-Dec-2026; "
                                f"got {value!r}") from None


def _unknown(token: Token) -> str:
    name = token.text.upper()
    if name in GMAIL_KEYS:
        return (f"{token.text} is a Gmail extension; Exchange (and the IMAP standard) has no "
                "such key: use FROM, TO, SUBJECT, BODY, TEXT, SINCE ...")
    if name == "CHARSET":
        return "leave out CHARSET: the bridge sends CHARSET UTF-8 itself when the text needs it"
    if name == "UID" or _SEQUENCE_SET.fullmatch(name):
        return (f"{token.text} selects messages by number; the bridge chooses the new "
                "messages itself, so leave it out")
    return (f"unknown search key {token.text!r} at column {token.column}"
            f"{did_you_mean(name, KEYS)} (known: " + ", ".join(sorted(KEYS)) + ")")


def _check_sendable(tokens: list[Token]) -> None:
    """Non-ASCII text goes as an RFC 3501 literal with CHARSET UTF-8; imapclient sends a
    literal only as a whole argument, not inside parentheses, and then quotes the other
    strings only when they hold a space or a quote."""
    if is_ascii(tuple(tokens)):
        return
    for token in tokens:
        if not token.text.isascii() and token.kind != "string":
            raise SearchSyntaxError(f"{token.text!r} at column {token.column}: put text with "
                                    'non-ASCII characters in quotes, e.g. SUBJECT "Grüße"')
        if token.kind in "()":
            raise SearchSyntaxError("criteria with non-ASCII text cannot use parentheses; "
                                    "OR and NOT take single keys without them")
        if token.kind == "string" and token.text.isascii() and (
                _NEEDS_QUOTES.search(token.text) and " " not in token.text):
            raise SearchSyntaxError(f"{token.text!r} at column {token.column}: with non-ASCII "
                                    "text elsewhere, a string cannot hold ( ) { % * without "
                                    "a space")
