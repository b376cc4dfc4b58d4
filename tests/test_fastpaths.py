"""Fast paths for header blocks and address lists: always equal to the stdlib parsers.

`headers.parse_headers` and `mime.addresses` split the common, simple shapes directly and
fall back to `email`'s parsers (`headers._parse_headers_email`, `mime._addresses_email`)
for anything else. These are differential tests: generated inputs biased to the common
shapes and to the edge cases, explicit tables and the mail corpus, all compared against the
stdlib reference; and checks that typical inputs really take the fast path.
"""

from __future__ import annotations

import email.utils
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bridge.mail import headers, mime
from tests.profile import examples

MAIL = Path(__file__).parent / "data" / "mail"
CORPUS = sorted(MAIL.glob("*.eml"))
FUZZ = settings(max_examples=examples(300), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
# The fields a summary fetches (BODY[HEADER.FIELDS (...)] in bridge.imap.partfetch).
SUMMARY_FIELDS = (
    "message-id", "date", "from", "to", "cc", "reply-to", "subject", "importance",
    "x-priority", "priority", "x-msmail-priority",
)
TYPICAL_BLOCK = (
    b"Message-ID: <CAF+1x2y3z@mail.example.com>\r\n"
    b"Date: Sat, 28 Nov 2026 10:15:04 +0100\r\n"
    b'From: "Doe, Jane" <jane.doe@example.com>\r\n'
    b"To: Bob Builder <bob@example.org>,\r\n \"Carol K.\" <carol@example.net>\r\n"
    b"Cc: =?utf-8?q?J=C3=A9r=C3=B4me_Dupont?= <jerome@example.fr>, ann@example.com\r\n"
    b"Subject: =?utf-8?b?SMOpbGxv?= world\r\n"
    b"\r\n"
)
TYPICAL_TO = ['Bob Builder <bob@example.org>, "Doe, Jane" <jane.doe@example.com>,\r\n'
              " =?utf-8?q?J=C3=A9r=C3=B4me?= <jerome@example.fr>"]


def check_headers(raw: bytes) -> dict[str, list[str]] | None:
    """Assert `parse_headers(raw)` equals the feedparser's result; the fast path's result."""
    fast = headers._parse_headers_fast(raw)
    reference = headers._parse_headers_email(raw)
    if fast is not None:
        assert fast == reference
    assert headers.parse_headers(raw) == reference
    return fast


def check_addresses(values: list[str]) -> list[tuple[str, str]] | None:
    """Assert `addresses(values)` equals the stdlib-based reference, notes included, and the
    fast split equals `getaddresses` (but for the empty entries it drops); the split."""
    notes: list[str] = []
    reference_notes: list[str] = []
    result = mime.addresses(values, notes, "to")
    assert result == mime._addresses_email(values, reference_notes, "to")
    assert notes == reference_notes
    field = ", ".join(mime.unfold(v) for v in values)
    split = mime._simple_addresses(field)
    if split is not None:
        assert split == [p for p in email.utils.getaddresses([field]) if p != ("", "")]
    return split


def header_block(raw: bytes) -> bytes:
    """A message's header block, up to and including the first blank line."""
    blank = re.search(rb"\r?\n\r?\n", raw)
    return raw[: blank.end()] if blank else raw


def fetched_fields(block: bytes, eol: bytes) -> bytes:
    """What an IMAP server returns for BODY[HEADER.FIELDS (SUMMARY_FIELDS)] of `block`."""
    out: list[bytes] = []
    keep = False
    for line in re.split(rb"\r?\n", block):
        if line[:1] in (b" ", b"\t"):
            if keep:
                out.append(line + eol)
            continue
        name = line.partition(b":")[0].strip().lower().decode("ascii", "replace")
        keep = bool(line) and name in SUMMARY_FIELDS
        if keep:
            out.append(line + eol)
    return b"".join(out) + eol


# ---------------------------------------------------------------------------- header blocks

CLEAN_EOL = st.sampled_from([b"\r\n", b"\r\n", b"\n"])
EOL = st.sampled_from([b"\r\n"] * 6 + [b"\n"] * 3 + [b"\r", b""])
CLEAN_NAME = st.sampled_from([
    b"From", b"To", b"Cc", b"Reply-To", b"Subject", b"Date", b"Message-ID", b"X-Priority",
    b"Importance", b"X-MSMail-Priority", b"FROM", b"x-odd!#$%&'*+-.^_`|~",
])
FIELD_NAME = st.one_of(
    CLEAN_NAME,
    st.sampled_from([b"Content-Type", b"content-type", b"", b"From ", b"Bad Name", b"N\xe9"]),
    st.binary(max_size=6).filter(lambda b: b"\n" not in b and b"\r" not in b),
    st.text(st.sampled_from("aB-_.1!~#\x7f :\x00"), max_size=6).map(str.encode),
)
CLEAN_PIECES = [
    b"a", b"Bob", b" ", b"  ", b"\t", b":", b",", b"<x@y.z>", b'"', b"(c)", b"\\", b"\xe9",
    b"\xc3\xa9", b"\x00", b"\x0b", b"\x0c", b"\x1c", b"\x7f", b"\x85", b"=?utf-8?q?h=C3=A9?=",
    b"From ",
]
CLEAN_VALUE = st.lists(st.sampled_from(CLEAN_PIECES), max_size=8).map(b"".join)
VALUE = st.lists(st.sampled_from([*CLEAN_PIECES, b"\r", b"\n"]), max_size=8).map(b"".join)
CLEAN_LINE = st.one_of(
    st.tuples(CLEAN_NAME, st.sampled_from([b":", b": ", b":\t", b"::"]), CLEAN_VALUE),
    st.tuples(st.sampled_from([b" ", b"\t", b"  ", b" \t"]), CLEAN_VALUE),  # continuation
)
ODD_LINE = st.one_of(
    st.tuples(FIELD_NAME, st.sampled_from([b":", b": ", b" :", b""]), VALUE),
    st.tuples(st.sampled_from([b" ", b"\t"]), VALUE),
    st.tuples(st.sampled_from([b"From ", b"From", b">From ", b""]), VALUE),
)
CLEAN_END = st.sampled_from([b"\r\n", b"\n", b""])
BLOCK_END = st.sampled_from([
    b"\r\n", b"\n", b"", b"\r", b"\r\n\r\n", b"\r\nbody\r\n", b"\n\nbody", b"\r\n ",
])


@st.composite
def header_blocks(draw: st.DrawFn) -> bytes:
    """Header blocks: half of them plain (fast path), the others with some odd lines."""
    mode = draw(st.integers(0, 9))
    if mode == 0:  # raw noise over a header-ish alphabet
        pieces = st.sampled_from([b"A", b":", b" ", b"\t", b"\r", b"\n", b"\r\n", b"From ",
                                  b"\x80", b"\x00", b"Content-Type: multipart/mixed", b"x"])
        return b"".join(draw(st.lists(pieces, max_size=30)))
    if mode <= 5:  # plain: only the first line may be a continuation
        lines = draw(st.lists(st.tuples(CLEAN_LINE, CLEAN_EOL), max_size=8))
        return b"".join(b"".join(parts) + eol for parts, eol in lines) + draw(CLEAN_END)
    line = st.one_of(*[st.tuples(CLEAN_LINE, CLEAN_EOL)] * 4, st.tuples(ODD_LINE, EOL))
    lines = draw(st.lists(line, max_size=8))
    return b"".join(b"".join(parts) + eol for parts, eol in lines) + draw(BLOCK_END)


@FUZZ
@given(header_blocks())
@example(TYPICAL_BLOCK)
@example(b"From nobody Mon Jan  1 00:00:00 2026\r\nSubject: x\r\n\r\n")
@example(b" leading: continuation\r\nSubject: x\r\n")
@example(b"Subject: x\r\n\r\nFrom: body\r\n")
@example(b"Content-Type: multipart/mixed; boundary=b\r\n\r\n")
def test_parse_headers_equals_feedparser(raw: bytes) -> None:
    check_headers(raw)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(SUMMARY_FIELDS), CLEAN_VALUE), max_size=6), EOL)
def test_parse_headers_plain_blocks_take_the_fast_path(
    fields: list[tuple[str, bytes]], eol: bytes
) -> None:
    """A block as a server sends it (CRLF or LF lines, no CR in values) is never a fallback."""
    eol = eol if eol in (b"\r\n", b"\n") else b"\r\n"
    raw = b"".join(name.encode() + b": " + value + eol for name, value in fields) + eol
    assert check_headers(raw) is not None


HEADER_CASES: list[tuple[bytes, bool]] = [  # (block, fast path taken)
    (TYPICAL_BLOCK, True),
    (TYPICAL_BLOCK.replace(b"\r\n", b"\n"), True),
    (b"", True),
    (b"\r\n", True),
    (b"Subject: x", True),  # no line end at all
    (b"Subject:\r\n\r\n", True),
    (b"Subject: \t \r\n\r\n", True),
    (b"Subject:x\r\n", True),
    (b"Subject: a\r\n \r\n\r\n", True),  # fold to a blank continuation
    (b"Subject: a\r\n\tb\r\n  c\r\n\r\n", True),
    (b"Subject: a\r\n b\n\r\n", True),  # mixed line ends
    (b"Subject: caf\xc3\xa9 \xe9\r\n\r\n", True),  # 8-bit: surrogates
    (b"Subject: a\x00b\x0bc\x0cd\x1ce\r\n\r\n", True),  # not line breaks for the feedparser
    (b"X-Odd!#$%&'*+-.^_`|~: v\r\n\r\n", True),
    (b"To: a@b\r\nTO: c@d\r\nto: e@f\r\n\r\n", True),  # repeated, any case
    (b"Subject: a\rb\r\n\r\n", False),  # lone CR: a line break for the feedparser
    (b"Subject: a\r", False),
    (b"From nobody Mon Jan  1 00:00:00 2026\r\nSubject: x\r\n\r\n", False),  # envelope
    (b"Subject: x\r\nFrom nobody\r\n", False),
    (b" x\r\nSubject: y\r\n\r\n", False),  # continuation first
    (b": x\r\nSubject: y\r\n\r\n", False),  # empty name
    (b"Bad Name: x\r\nSubject: y\r\n\r\n", False),  # space in the name: the body starts
    (b"Subject : x\r\n\r\n", False),
    (b"Subject: y\r\nno colon\r\n\r\n", False),
    (b"Na\xe9me: x\r\n\r\n", False),
    (b"Na\x7fme: x\r\n\r\n", False),
    (b"Subject: y\r\n\r\nbody\r\n", False),  # a body
    (b"Subject: y\r\n\r\n\r\n", False),
    (b"Content-Type: text/plain\r\n\r\n", False),  # the feedparser acts on it
    (b"Content-Type: multipart/mixed; boundary=x\r\n\r\n", False),
    (b"Subject: " + b"x" * 20000 + b"\r\n \xff" + b"y" * 9000 + b"\r\n\r\n", True),
]


@pytest.mark.parametrize(("raw", "fast"), HEADER_CASES)
def test_parse_headers_cases(raw: bytes, fast: bool) -> None:
    assert (check_headers(raw) is not None) == fast


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_parse_headers_corpus(path: Path) -> None:
    block = header_block(path.read_bytes())
    check_headers(block)  # whole blocks have Content-Type: the fallback
    for eol in (b"\r\n", b"\n"):
        assert check_headers(fetched_fields(block, eol)) is not None


def test_parse_headers_typical_block_is_not_a_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    def fallback(raw: bytes) -> Any:
        raise AssertionError("fell back")

    expected = headers._parse_headers_email(TYPICAL_BLOCK)
    monkeypatch.setattr(headers, "_parse_headers_email", fallback)
    assert headers.parse_headers(TYPICAL_BLOCK) == expected
    assert expected["to"] == ['Bob Builder <bob@example.org>,\r\n "Carol K." <carol@example.net>']


# ---------------------------------------------------------------------------- address lists

ATOM_CHARS = "abcxyzABZ019-_+=?!#$%&'*/^`{|}~é\udce9"
SPACY = "\x0b\x0c\x1c\x1f\x85\xa0\u3000"  # white space to str.strip only: the parser's atoms
CLEAN_LOCAL = st.one_of(
    st.sampled_from(["jane.doe", "bob", "a", "x_y+tag", "first.last", "o'neil", "\udce9t\xe9"]),
    st.text(st.sampled_from(ATOM_CHARS + "."), min_size=1, max_size=6),
)
LOCAL = st.one_of(
    CLEAN_LOCAL, st.text(st.sampled_from(ATOM_CHARS + SPACY + '." ()\\[]<>:;,@\t'), max_size=6)
)
CLEAN_DOMAIN = st.one_of(
    st.sampled_from(["example.com", "mail.example.co.uk", "b", "xn--bcher-kva.example"]),
    st.text(st.sampled_from(ATOM_CHARS + "."), min_size=1, max_size=6),
)
DOMAIN = st.one_of(
    CLEAN_DOMAIN,
    st.sampled_from(["[127.0.0.1]", "", "a .b", "a@b", "ex(comment).com", "\xa0", "a.\x0b"]),
)
AT = st.sampled_from([" @", "@ ", " @ ", "@@", ""])


@st.composite
def addr_specs(draw: st.DrawFn, clean: bool = True) -> str:
    if clean:
        return draw(CLEAN_LOCAL) + "@" + draw(CLEAN_DOMAIN)
    local, at, domain = draw(LOCAL), draw(st.one_of(st.just("@"), AT)), draw(DOMAIN)
    return ('"' + local + '"' if draw(st.booleans()) else local) + at + domain


CLEAN_WORD = st.one_of(
    st.sampled_from(["Jane", "Doe", "J.", "Bob", "Builder", "O'Neil", "Dr.", "."]),
    st.sampled_from(["=?utf-8?q?J=C3=A9r=C3=B4me?=", "=?utf-8?b?SMOpbGxv?=", "=?bad?q?x?=",
                     "=?iso-8859-1?q?=E9?=", "\udce9t\xe9", "caf\xe9"]),
    st.text(st.sampled_from(ATOM_CHARS + "."), min_size=1, max_size=5),
)
WORD = st.one_of(CLEAN_WORD, st.text(st.sampled_from(ATOM_CHARS + SPACY), min_size=1, max_size=3))
CLEAN_QUOTED = st.one_of(
    st.lists(WORD, max_size=3).map(" ".join),
    st.text(st.sampled_from("ab ,<>@().;:[]\té\udce9" + SPACY), max_size=8),  # verbatim
).map(lambda s: '"' + s + '"')
QUOTED = st.one_of(
    CLEAN_QUOTED, st.text(st.sampled_from('ab ,<\\"\udce9'), max_size=8).map(lambda s: f'"{s}"')
)
ODD_WORD = st.sampled_from(["(comment)", "<", ">", ",", ":", "\\", "@", "[x]", ";", '"', "x@y"])


def names(word: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.lists(word, max_size=4).flatmap(
        lambda words: st.sampled_from([" ", "  ", "", "\t"]).map(lambda sep: sep.join(words))
    )


CLEAN_NAME_TEXT = names(st.one_of(CLEAN_WORD, CLEAN_WORD, CLEAN_QUOTED))
NAME = names(st.one_of(WORD, QUOTED, ODD_WORD))
SPACE = st.sampled_from(["", "", " ", "  ", "\t", "\r\n ", " \r\n\t"])


@st.composite
def elements(draw: st.DrawFn) -> str:
    """One address list element: mostly the common shapes, sometimes anything odd."""
    kind = draw(st.integers(0, 20))
    spec = draw(addr_specs(clean=kind < 17))
    if kind <= 5:
        return spec
    if kind <= 13:
        return draw(CLEAN_NAME_TEXT) + draw(SPACE) + "<" + spec + ">"
    if kind <= 16:  # white space or odd words in the name or the angle-addr
        name = draw(NAME)
        return name + draw(SPACE) + "<" + draw(SPACE) + spec + draw(SPACE) + ">"
    if kind == 17:  # a group
        members = draw(st.lists(addr_specs(), max_size=2))
        return draw(NAME) + ":" + ",".join(members) + draw(st.sampled_from([";", ""]))
    if kind == 18:  # a comment
        return spec + " (" + draw(NAME) + ")"
    if kind == 19:  # a route, an empty or a bare angle-addr
        return draw(st.sampled_from(["<@route:" + spec + ">", "<>", "<" + spec]))
    return draw(st.one_of(NAME, st.text(st.sampled_from('ab@<>,"() :;\\.'), max_size=10)))


@st.composite
def address_values(draw: st.DrawFn) -> list[str]:
    """Raw address header values (folded, 8-bit as surrogates), one or a few of them."""
    values = []
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
        items = draw(st.lists(elements(), min_size=1, max_size=4))
        sep = st.sampled_from([", "] * 6 + [",", " , ", ",\r\n ", "\r\n ,"] * 2 + [",,", ", ,"])
        seps = draw(st.lists(sep, min_size=len(items), max_size=len(items)))
        value = "".join(item + sep for item, sep in zip(items, seps, strict=True))
        value = value if draw(st.integers(0, 5)) == 0 else value[: -len(seps[-1])]
        values.append(draw(SPACE) + value + draw(SPACE))
    return values


@FUZZ
@given(address_values())
@example(TYPICAL_TO)
@example(['"Doe, Jane" <a@b>, c@d,, ,e@f,'])
@example(["a@b (Jane Doe)", 'Group: a@b, "x" <c@d>;'])
def test_addresses_equal_getaddresses(values: list[str]) -> None:
    check_addresses(values)


@FUZZ
@given(st.lists(st.tuples(st.lists(CLEAN_WORD, max_size=3), st.booleans(), CLEAN_LOCAL,
                          CLEAN_DOMAIN), min_size=1, max_size=5))
def test_addresses_common_shapes_take_the_fast_path(
    entries: list[tuple[list[str], bool, str, str]],
) -> None:
    def element(words: list[str], quoted: bool, local: str, domain: str) -> str:
        spec = f"{local}@{domain}"
        if not words:
            return spec
        name = " ".join(words)
        return f'"{name}" <{spec}>' if quoted else f"{name} <{spec}>"

    values = [", ".join(element(*entry) for entry in entries)]
    assert check_addresses(values) is not None


ADDRESS_CASES: list[tuple[list[str], bool]] = [  # (values, fast path taken)
    (TYPICAL_TO, True),
    ([], True),
    ([""], True),
    (["a@b"], True),
    (["  a@b  ,  c@d  "], True),
    ([" , , ", "", "  "], True),  # only empty elements
    (["a@b,"], False),  # empty elements next to addresses: strict=True (3.12.6+) rejects it
    ([",a@b"], False),
    (["a@b,,c@d"], False),
    (["a@b", ""], False),
    (["Jane   Doe <a@b>"], True),  # white space collapsed
    (["Jane\tQ.  Doe<a@b>"], True),
    (['"Doe,  Jane" <a@b>'], True),  # a quoted name keeps its spaces and commas
    (['"" <a@b>', '"" "" <c@d>', "<e@f>"], True),
    (['"A"B <a@b>', 'A"B" <c@d>'], True),  # quoted string and atom adjacent: two words
    (['"a <b@c>" <d@e>'], True),
    (["=?utf-8?q?J=C3=A9r=C3=B4me?= <a@b>", "=?bad?q?x?= <c@d>"], True),  # notes too
    (["caf\udce9 <caf\udce9@b>"], True),  # 8-bit bytes
    (["x\x0by <a@b>", "\xa0 <c@d>"], False),  # white space to str.strip, not to the parser
    (["\xa0@b", "a.\x0b.b@c", "\x1c@d"], False),  # dropped from a local part by the parser
    (["a.b.@.c..d"], True),  # dots as written
    (["a @ b"], False),  # white space around the @: dropped by the parser
    (["a b@c"], False),
    (["< a@b >"], False),
    (["a@b (Jane)"], False),  # a comment
    (["Jane (x) <a@b>"], False),
    (['"Doe \\"J\\"" <a@b>'], False),  # an escape
    (["a\\b@c"], False),
    (["Group: a@b, c@d;"], False),
    (["undisclosed-recipients:;"], False),
    (["<@route:a@b>"], False),
    (["a@[127.0.0.1]"], False),
    (['"a b"@c'], False),
    (["a@b@c"], False),
    (["Jane"], False),  # no address
    (["a@"], False),
    (["@b"], False),
    (["<>"], False),
    (["<a@b"], False),
    (["a@b <c@d>"], False),
    (["<a@b> junk"], False),
    (["<a@b><c@d>"], False),
    (['"unterminated <a@b>'], False),
]


@pytest.mark.parametrize(("values", "fast"), ADDRESS_CASES)
def test_addresses_cases(values: list[str], fast: bool) -> None:
    assert (check_addresses(values) is not None) == fast


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_addresses_corpus(path: Path) -> None:
    fields = headers._parse_headers_email(header_block(path.read_bytes()))
    for name in ("from", "to", "cc", "reply-to", "sender", "bcc"):
        if name in fields:
            check_addresses(fields[name])


def test_addresses_typical_list_is_not_a_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = mime._addresses_email(TYPICAL_TO, [], "to")

    def fallback(*args: Any) -> Any:
        raise AssertionError("fell back")

    monkeypatch.setattr(mime, "_addresses_email", fallback)
    monkeypatch.setattr(email.utils, "getaddresses", fallback)
    assert mime.addresses(TYPICAL_TO, [], "to") == expected
    assert expected == [
        {"name": "Bob Builder", "address": "bob@example.org"},
        {"name": "Doe, Jane", "address": "jane.doe@example.com"},
        {"name": "Jérôme", "address": "jerome@example.fr"},
    ]
