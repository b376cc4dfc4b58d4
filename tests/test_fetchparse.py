"""bridge.imap.fetchparse gives imapclient's FETCH results: on a table of Dovecot-style responses,
on generated and mangled ones (Hypothesis), and against a real Dovecot.

The reference is `imapclient.response_parser.parse_fetch_response(data, normalise, True)`;
where it trips over garbage with an exception other than ProtocolError, ours must raise
ProtocolError.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import imaplib
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, ProtocolError
from imapclient.response_parser import parse_fetch_response, parse_response
from imapclient.response_types import BodyData, Envelope

from bridge.imap.fetchparse import (
    convert_envelope,
    fetch,
    imaplib_connection,
    literals_unlogged,
    parse_fetch,
)
from rig.samples import TINY_PDF, make_message
from tests.profile import examples

MAIL = Path(__file__).parent / "data" / "mail"
PROPERTY = settings(max_examples=examples(300), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def canonical(value: Any) -> Any:
    """`value` with its types spelled out (BodyData is a tuple, so == would not tell them
    apart), BodyData's is_multipart, and datetimes comparable whatever their offset."""
    if isinstance(value, BodyData):
        return ("BodyData", value.is_multipart, [canonical(v) for v in value])
    if isinstance(value, tuple | list):
        return (type(value).__name__, [canonical(v) for v in value])
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, dt.datetime):
        offset = value.tzinfo.utcoffset(None) if value.tzinfo else None
        return ("datetime", value.replace(tzinfo=None), offset)
    if dataclasses.is_dataclass(value):
        return (type(value).__name__,
                [canonical(getattr(value, f.name)) for f in dataclasses.fields(value)])
    return value


def assert_same(data: list[Any], normalise_times: bool = False) -> dict[int, dict[bytes, Any]]:
    """Both parsers give the same result, or both fail (ours with ProtocolError)."""
    try:
        expected = parse_fetch_response(data, normalise_times, True)
    except ProtocolError:
        with pytest.raises(ProtocolError):
            parse_fetch(data, normalise_times=normalise_times)
        return {}
    except Exception:  # imapclient trips over the garbage (AttributeError, TypeError ...)
        with pytest.raises(ProtocolError):
            parse_fetch(data, normalise_times=normalise_times)
        return {}
    actual = parse_fetch(data, normalise_times=normalise_times)
    assert type(actual) is dict
    assert canonical(actual) == canonical(dict(expected))
    return actual


# -- a table of responses as Dovecot sends them ---------------------------------------------

HEADER = (b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= (and \"quotes\")\r\n"
          b"From: Alice <alice@example.com>\r\n\r\n")
MIXED = (
    rb'BODYSTRUCTURE ((("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 120 4'
    rb' NIL NIL NIL NIL)("text" "html" ("charset" "utf-8") NIL NIL "quoted-printable" 420 10'
    rb' NIL NIL NIL NIL) "alternative" ("boundary" "==b2==") NIL NIL NIL)("message" "rfc822"'
    rb' NIL NIL NIL "7bit" 900 ("Mon, 15 Jun 2026 10:00:00 +0000" "Fwd: \"quoted\" subject"'
    rb' (("Bob \\ Smith" NIL "bob" "example.com")) (("Bob \\ Smith" NIL "bob" "example.com"))'
    rb' (("Bob \\ Smith" NIL "bob" "example.com")) ((NIL NIL "me" "contoso.com")) NIL NIL NIL'
    rb' "<x@example.com>") ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 20 1 NIL NIL'
    rb' NIL NIL) 30 NIL ("inline" NIL) NIL NIL)("application" "pdf" ("name" "INV 42.pdf") NIL'
    rb' NIL "base64" 4000 NIL ("attachment" ("filename" "INV 42.pdf" "size" "2921")) NIL NIL)'
    rb' "mixed" ("boundary" "==b1==") NIL NIL NIL)'
)
ALTERNATIVE = (
    rb'BODYSTRUCTURE (("text" "plain" ("charset" "utf-8" "format" "flowed") NIL NIL "8bit" 61'
    rb' 2 NIL NIL NIL NIL)("text" "html" ("charset" "utf-8") NIL NIL "base64" 3020 39 NIL NIL'
    rb' NIL NIL) "alternative" ("boundary" "b") NIL NIL NIL)'
)
ENVELOPE = (
    rb'ENVELOPE ("Tue, 16 Jun 2026 09:00:00 +0200" "Invoice \"INV-42\"" (("Contoso Billing"'
    rb' NIL "billing" "contoso.example")) NIL NIL ((NIL NIL "team" NIL)(NIL NIL "me"'
    rb' "contoso.com")(NIL NIL NIL NIL)) NIL NIL NIL "<invoice-42@contoso.example>")'
)

TABLE: dict[str, list[Any]] = {
    "flags_keywords": [rb"12 (UID 5 FLAGS (\Seen \Answered $Forwarded Junk NonJunk \*)"
                       rb" RFC822.SIZE 2048)"],
    "flags_empty": [rb"1 (FLAGS () UID 77)"],
    "internaldate": [rb'3 (UID 9 INTERNALDATE "16-Jun-2026 09:00:00 +0200")',
                     rb'4 (UID 10 INTERNALDATE " 1-Jan-2026 23:59:59 -0530")',
                     rb'5 (UID 11 INTERNALDATE "no date at all")',
                     rb"6 (UID 12 INTERNALDATE NIL)"],
    "header_literal": [(rb"1 (UID 4 FLAGS (\Seen) BODY[HEADER.FIELDS (SUBJECT FROM)] {%d}"
                        % len(HEADER), HEADER), b")"],
    "multipart_mixed_rfc822": [rb"2 (UID 8 " + MIXED + b")"],
    "alternative": [rb"2 (UID 8 RFC822.SIZE 3300 " + ALTERNATIVE + b")"],
    "single_part": [rb'2 (UID 8 BODYSTRUCTURE ("text" "plain" ("charset" "us-ascii") NIL NIL'
                    rb' "7bit" 12 1 NIL NIL NIL NIL))'],
    "body_no_extensions": [rb'2 (UID 8 BODY (("text" "plain" NIL NIL NIL "7bit" 3 1)'
                           rb'("image" "png" NIL NIL NIL "base64" 40) "related"))'],
    "envelope": [rb"9 (UID 90 " + ENVELOPE + b")"],
    "body_partial": [(b"3 (UID 9 BODY[1]<0> {100}", b"x" * 100), b")"],
    "nil_values": [rb'1 (UID 2 BODY[2] NIL X-EMPTY "" BODY[1] NIL)'],
    "quoted_escapes": [rb'1 (UID 2 X-QUOTED "a \"b\" c\\d \x\\" X-PLAIN "(not a tuple)")'],
    "empty_literal": [(b"3 (UID 9 BODY[1]<0> {0}", b""), b" FLAGS (\\Seen))"],
    "literal_with_specials": [(b"3 (UID 9 BODY[] {12}", b'(")\r\n[{3}\\%'), b")"],
    "several_messages": [rb"1 (UID 101 FLAGS (\Seen) RFC822.SIZE 10)",
                         (b"2 (UID 102 BODY[1] {3}", b"abc"), b")",
                         rb"3 (UID 103 FLAGS () RFC822.SIZE 30)"],
    "split_across_literals": [(b"1 (UID 1 BODY[1] {3}", b"abc"), (b" BODY[2] {2}", b"de"),
                              rb" FLAGS (\Seen))"],
    "unsolicited_without_uid": [rb"7 (FLAGS (\Seen))", rb"8 (UID 80 FLAGS ())"],
    "lower_case_names": [rb"1 (uid 5 flags (\seen) rfc822.size 7)"],
    "numbers": [rb'1 (UID 5 MODSEQ (12345) X-GM-MSGID 0123 X-ZERO 0 X-QUOTED-NUMBER "42")'],
    "same_uid_twice": [rb"1 (UID 5 FLAGS ())", rb"1 (UID 5 RFC822.SIZE 9 FLAGS (\Seen))"],
    "whitespace": [b"1\t(UID 5  FLAGS\t(\\Seen )  RFC822.SIZE 9 )  "],
    "no_responses": [None],
    "empty": [],
}

MALFORMED: dict[str, list[Any]] = {
    "unclosed_tuple": [rb"1 (UID 5 FLAGS (\Seen)"],
    "unterminated_quote": [rb'1 (UID 5 X "abc)'],
    "unclosed_bracket": [rb"1 (UID 5 BODY[HEADER 3)"],
    "quote_after_word": [rb'1 (UID 5 X a"b")'],
    "literal_size_mismatch": [(b"1 (UID 5 BODY[] {4}", b"abc"), b")"],
    "literal_marker_without_literal": [b"1 (UID 5 BODY[] {3})"],
    "odd_number_of_items": [rb"1 (UID 5 FLAGS)"],
    "message_id_not_int": [rb"x (UID 5)"],
    "uid_not_int": [rb"1 (UID x)"],
    "missing_response": [rb"1"],
    "response_not_tuple": [rb"1 UID"],
    "stray_close": [rb"1 (UID 5))"],
    "literal_line_without_marker": [(b"1 (UID 5 BODY[] ", b"abc"), b")"],
    # imapclient raises AttributeError, TypeError or IndexError on these
    "item_name_not_bytes": [rb"1 (UID 5 7 8)"],
    "internaldate_not_string": [rb"1 (UID 5 INTERNALDATE 7)"],
    "bodystructure_nil": [rb"1 (UID 5 BODYSTRUCTURE NIL)"],
    "body_empty_tuple": [rb"1 (UID 5 BODY ())"],
    "envelope_short": [rb'1 (UID 5 ENVELOPE ("date"))'],
    "not_a_line": [b"1 (UID 5)", None],
    "deep_bodystructure": [b"1 (UID 5 BODYSTRUCTURE " + b"(" * 3000 + b")" * 3000 + b")"],
}


@pytest.mark.parametrize("normalise_times", [False, True], ids=["aware", "normalised"])
@pytest.mark.parametrize("data", TABLE.values(), ids=TABLE.keys())
def test_parses_responses_as_imapclient_does(data: list[Any], normalise_times: bool) -> None:
    assert_same(data, normalise_times)


def test_table_covers_what_it_claims() -> None:
    mixed = parse_fetch(TABLE["multipart_mixed_rfc822"])[8][b"BODYSTRUCTURE"]
    assert mixed.is_multipart and mixed[0][0].is_multipart and mixed[1] == b"mixed"
    header = parse_fetch(TABLE["header_literal"])[4]
    assert header == {b"SEQ": 1, b"FLAGS": (b"\\Seen",),
                      b"BODY[HEADER.FIELDS (SUBJECT FROM)]": HEADER}
    quoted = parse_fetch(TABLE["quoted_escapes"])[2][b"X-QUOTED"]
    assert quoted == b'a "b" c\\d \\x\\'
    numbers = parse_fetch(TABLE["numbers"])[5]
    assert numbers[b"X-GM-MSGID"] == b"0123" and numbers[b"X-QUOTED-NUMBER"] == b"42"
    assert set(parse_fetch(TABLE["unsolicited_without_uid"])) == {7, 80}
    date = parse_fetch(TABLE["internaldate"])[10][b"INTERNALDATE"]
    assert date.utcoffset() == -dt.timedelta(hours=5, minutes=30)


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_responses_raise_protocol_error(data: list[Any]) -> None:
    with pytest.raises(ProtocolError):
        parse_fetch(data)
    with pytest.raises(Exception):  # noqa: B017 - imapclient rejects them too, somehow
        parse_fetch_response(data, False, True)


def test_deep_nesting_parses_where_imapclient_runs_out_of_stack() -> None:
    data = [b"1 (UID 5 X-DEEP " + b"(" * 3000 + b"NIL" + b")" * 3000 + b")"]
    with pytest.raises(RecursionError):
        parse_fetch_response(data, False, True)
    value = parse_fetch(data)[5][b"X-DEEP"]
    for _ in range(3000):
        (value,) = value
    assert value is None


# -- generated responses --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Literal:
    data: bytes


Value = bytes | Literal | list["Value"]  # bytes: a token as sent; list: a parenthesised list

WORD_CHARS = bytes(c for c in range(33, 256) if c not in b'()%"[{').decode("latin-1")
words = st.text(WORD_CHARS, min_size=1, max_size=8).map(lambda s: s.encode("latin-1"))
brackets = st.tuples(words, st.binary(max_size=12), st.text(WORD_CHARS, max_size=4)).map(
    lambda t: t[0] + b"[" + t[1].replace(b"]", b"") + b"]" + t[2].encode("latin-1"))
quoted = st.lists(st.one_of(
    st.binary(min_size=1, max_size=6).map(lambda b: b.replace(b"\\", b"").replace(b'"', b"")),
    st.binary(min_size=1, max_size=1).map(lambda b: b"\\" + b),  # \" \\ and kept \x
)).map(lambda parts: b'"' + b"".join(parts) + b'"')
numbers = st.one_of(st.integers(0, 10**15).map(b"%d".__mod__),
                    st.integers(0, 999).map(b"0%d".__mod__))
leaves: st.SearchStrategy[Value] = st.one_of(
    words, brackets, quoted, numbers, st.just(b"NIL"), st.sampled_from([b"%", b"\x01"]),
    st.binary(max_size=20).map(Literal),
)
values = st.recursive(leaves, lambda children: st.lists(children, max_size=5), max_leaves=25)


MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@st.composite
def imap_dates(draw: st.DrawFn) -> bytes:
    when = draw(st.datetimes(dt.datetime(1971, 1, 1), dt.datetime(2099, 12, 31)))
    minutes = draw(st.integers(-14 * 60, 14 * 60))
    hours, rest = divmod(abs(minutes), 60)
    sign = "-" if minutes < 0 else "+"
    stamp = f"{when.day:2d}-{MONTHS[when.month - 1]}-{when:%Y %H:%M:%S} {sign}{hours:02d}{rest:02d}"
    return b'"' + stamp.encode() + b'"'


@st.composite
def body_parts(draw: st.DrawFn, depth: int = 0) -> Value:
    """A BODYSTRUCTURE-shaped list: a leaf part, or 1-3 parts and a subtype."""
    if depth < 2 and draw(st.booleans()):
        parts = draw(st.lists(body_parts(depth + 1), min_size=1, max_size=3))
        return [*parts, draw(quoted), *draw(st.lists(values, max_size=3))]
    return [draw(quoted), draw(quoted), *draw(st.lists(values, max_size=8))]


NAMES = [b"FLAGS", b"RFC822.SIZE", b"X-GM-LABELS", b"BODY[1]<0>", b"MODSEQ", b"x-custom",
         b"BODY[HEADER.FIELDS (SUBJECT FROM)]", b"BODY[]", b"SEQ"]


@st.composite
def messages(draw: st.DrawFn) -> tuple[int, list[Value]]:
    items: list[Value] = []
    if draw(st.booleans()):
        items += [b"UID", b"%d" % draw(st.integers(1, 2**32))]
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["plain", "plain", "date", "structure"]))
        if kind == "date":
            items += [b"INTERNALDATE", draw(imap_dates() | quoted | st.just(b"NIL"))]
        elif kind == "structure":
            items += [draw(st.sampled_from([b"BODYSTRUCTURE", b"BODY"])), draw(body_parts())]
        else:
            items += [draw(st.sampled_from(NAMES)), draw(values)]
    return draw(st.integers(1, 10**6)), items


def render(value: Value, seps: Iterator[bytes]) -> list[bytes | Literal]:
    if isinstance(value, list):
        inner: list[bytes | Literal] = []
        for i, element in enumerate(value):
            inner += ([next(seps)] if i else []) + render(element, seps)
        return [b"(", *inner, b")"]
    return [value]


def imaplib_items(lines: list[list[bytes | Literal]]) -> list[Any]:
    """What imaplib makes of these lines: a literal ends an item as ({N} line, literal)."""
    items: list[Any] = []
    for line in lines:
        text = b""
        for piece in line:
            if isinstance(piece, Literal):
                items.append((text + b"{%d}" % len(piece.data), piece.data))
                text = b""
            else:
                text += piece
        items.append(text)
    return items


@st.composite
def responses(draw: st.DrawFn) -> list[Any]:
    seps = itertools.cycle(draw(st.lists(st.sampled_from([b" ", b"  ", b"\t", b" \r\n"]),
                                         min_size=1, max_size=4)))
    lines = []
    for seq, items in draw(st.lists(messages(), max_size=4)):
        lines.append([b"%d" % seq, next(seps), *render(items, seps)])
    return imaplib_items(lines)


@PROPERTY
@given(responses(), st.booleans())
def test_generated_responses_parse_as_imapclient_does(data: list[Any], normalise: bool) -> None:
    expected = parse_fetch_response(data, normalise, True)
    assert canonical(parse_fetch(data, normalise_times=normalise)) == canonical(dict(expected))


SOUP = [b"(", b")", b" ", b" ", b'"', b"\\", b"[", b"]", b"{3}", b"{0}", b"NIL", b"1", b"0",
        b"07", b"UID", b"FLAGS", b"BODY", b"BODYSTRUCTURE", b"INTERNALDATE", b"ENVELOPE", b"%",
        b"\x01", b"\t", b"\r\n", b"abc", b"12", b"\xff", b'"16-Jun-2026 09:00:00 +0200"']
soup = st.lists(st.sampled_from(SOUP), max_size=30).map(b"".join)


@PROPERTY
@given(st.lists(st.one_of(soup, st.binary(max_size=40),
                          st.tuples(soup.map(lambda b: b + b"{3}"), st.binary(max_size=4))),
                max_size=4))
def test_garbage_is_parsed_or_rejected_as_imapclient_does(data: list[Any]) -> None:
    assert_same(data)


@PROPERTY
@given(responses().filter(bool), st.data())
def test_mangled_responses_are_parsed_or_rejected_as_imapclient_does(
        data: list[Any], picks: st.DataObject) -> None:
    for _ in range(picks.draw(st.integers(1, 3))):
        index = picks.draw(st.integers(0, len(data) - 1))
        item = data[index]
        text = item[0] if isinstance(item, tuple) else item
        at = picks.draw(st.integers(0, len(text)))
        cut = picks.draw(st.integers(0, 2))
        text = text[:at] + picks.draw(st.sampled_from([b"", *SOUP])) + text[at + cut:]
        data[index] = (text, item[1]) if isinstance(item, tuple) else text
    assert_same(data)


# -- against Dovecot ------------------------------------------------------------------------

META = [b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE", b"BODYSTRUCTURE",
        b"BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)]"]


@pytest.fixture
def session(imap_session: IMAPClient) -> IMAPClient:
    """A logged-in IMAP connection to this test's INBOX, holding a few messages."""
    client = imap_session
    raws = [
        make_message(subject="Invoice (42) \"final\"", text="See attached.",
                     attachments=[("INV 42.pdf", "application/pdf", TINY_PDF)]),
        make_message(subject="Grüße", html="<p>Hallo</p>",
                     attachments=[("a.bin", "application/octet-stream", bytes(range(256)) * 40),
                                  ("notes.txt", "text/plain", b"line\r\n" * 30)]),
        make_message(subject="plain"),
        (MAIL / "forwarded.eml").read_bytes(),
    ]
    for i, raw in enumerate(raws):
        client.append("INBOX", raw, flags=[b"\\Seen", b"$Forwarded"] if i % 2 else [])
    client.select_folder("INBOX")
    return client


@pytest.mark.parametrize("normalise_times", [False, True], ids=["aware", "normalised"])
@pytest.mark.parametrize("items", [META, [b"BODY.PEEK[1]<0.100>"], [b"BODY.PEEK[]"],
                                   [b"ENVELOPE", b"BODY", b"UID"]],
                         ids=["metadata", "partial", "whole", "envelope"])
def test_fetch_from_dovecot_matches_imapclient(session: IMAPClient, items: list[bytes],
                                               normalise_times: bool) -> None:
    session.normalise_times = normalise_times
    uids = sorted(session.search(["ALL"]))
    expected = session.fetch(uids, items)
    assert len(expected) == 4
    assert canonical(fetch(session, uids, items)) == canonical(expected)
    assert canonical(fetch(session, uids[1:3], items)) == canonical(session.fetch(uids[1:3], items))


def test_fetch_of_an_unknown_item_fails_as_imapclient_does(session: IMAPClient) -> None:
    with pytest.raises(IMAPClientError):
        session.fetch([1], [b"NO-SUCH-ITEM"])
    with pytest.raises(IMAPClientError):
        fetch(session, [1], [b"NO-SUCH-ITEM"])
    assert fetch(session, [1], [b"FLAGS"]) == session.fetch([1], [b"FLAGS"])  # still usable


# -- imapclient internals without a public API: still as relied on -------------------------


def test_the_imaplib_connection_is_reached_and_its_literal_logging_lowered(
    session: IMAPClient,
) -> None:
    imap = imaplib_connection(session)
    assert isinstance(imap, imaplib.IMAP4)
    assert imap.debug == 5  # imapclient's level, at which imaplib repr()s every literal
    with literals_unlogged(session):
        assert imap.debug == 4
    assert imap.debug == 5
    uid = min(session.search(["ALL"]))
    assert fetch(session, [uid], [b"FLAGS"]) == session.fetch([uid], [b"FLAGS"])


def test_an_envelope_is_converted_as_imapclient_converts_it() -> None:
    text = (b'("Sat, 28 Nov 2026 09:00:00 +0100" "Hi" (("Ann" NIL "ann" "example.com")) '
            b'NIL NIL (("Bob" NIL "bob" "example.com")) NIL NIL NIL "<id@example.com>")')
    expected = parse_fetch_response([b"1 (UID 3 ENVELOPE " + text + b")"], True, True)
    envelope = convert_envelope(parse_response([text])[0], True)
    assert isinstance(envelope, Envelope)
    assert envelope == expected[3][b"ENVELOPE"]
    assert envelope.subject == b"Hi" and envelope.to[0].mailbox == b"bob"


# -- fetch() with a stand-in for imaplib ------------------------------------------------------


class StubImap:
    """Answers every UID command with one canned reply, recording the call."""

    def __init__(self, status: str, data: list[Any]) -> None:
        self.status, self.data = status, data
        self.debug = 5  # as imapclient sets it
        self.calls: list[tuple[tuple[Any, ...], int]] = []

    def uid(self, *args: Any) -> tuple[str, list[Any]]:
        self.calls.append((args, self.debug))
        return self.status, self.data


class StubClient:
    normalise_times = False

    def __init__(self, imap: StubImap) -> None:
        self._imap = imap


def test_fetch_sends_uid_fetch_at_debug_level_4_and_keeps_only_the_uids_asked_for() -> None:
    imap = StubImap("OK", [rb"1 (UID 5 FLAGS (\Seen))", rb"2 (UID 6 FLAGS ())",
                           rb"3 (UID 99 FLAGS ())"])
    result = fetch(StubClient(imap), [5, 6, 7], [b"FLAGS", "BODY.PEEK[1]<0.10>"])
    assert result == {5: {b"SEQ": 1, b"FLAGS": (b"\\Seen",)}, 6: {b"SEQ": 2, b"FLAGS": ()}}
    assert imap.calls == [(("FETCH", b"5,6,7", b"(FLAGS BODY.PEEK[1]<0.10>)"), 4)]
    assert imap.debug == 5


def test_fetch_raises_imapclient_error_on_no() -> None:
    imap = StubImap("NO", [b"Some messages could not be FETCHed (Failure)"])
    with pytest.raises(IMAPClientError, match=r"^fetch failed: Some messages could not"):
        fetch(StubClient(imap), [5], [b"FLAGS"])
    assert imap.debug == 5


def test_fetch_of_no_uids_sends_nothing() -> None:
    imap = StubImap("OK", [None])
    assert fetch(StubClient(imap), [], [b"FLAGS"]) == {}
    assert imap.calls == []
