"""BODYSTRUCTURE parsing, transfer decoding and the part-wise walk, without a server.

The structures are what Dovecot sends (and Exchange's have the same shape), parsed by
imapclient's own response parser.
"""

from __future__ import annotations

import base64
import quopri

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from imapclient.response_parser import parse_fetch_response

from bridge.imap.bodystructure import MAX_PARTS, Unsupported, parse
from bridge.mail import message
from bridge.mail import transfer_encoding as transfer
from bridge.mail.mime import split_header
from bridge.mail.partwise import Chunk, PartWalk, Request
from bridge.mail.structure import Part
from tests.profile import examples

PROPERTY = settings(max_examples=examples(150), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def structure(text: bytes) -> object:
    """A BODYSTRUCTURE as imapclient hands it over."""
    response = parse_fetch_response([b"1 (UID 1 BODYSTRUCTURE " + text + b")"], True, None)
    return response[1][b"BODYSTRUCTURE"]


OUTLOOK = structure(
    b'((("text" "plain" ("charset" "iso-8859-1") NIL NIL "quoted-printable" 45 1 NIL NIL NIL '
    b'NIL)("text" "html" ("charset" "iso-8859-1") NIL NIL "quoted-printable" 78 1 NIL NIL NIL '
    b'NIL) "alternative" ("boundary" "_000_alt_") NIL NIL NIL)("application" "pdf" ("name" '
    b'"invoice-2026-11.pdf") NIL "invoice-2026-11.pdf" "base64" 108 NIL ("attachment" ('
    b'"filename" "invoice-2026-11.pdf" "size" "77")) NIL NIL)("image" "png" ("name" "chart.png")'
    b' "<chart@x>" NIL "base64" 98 NIL ("attachment" ("filename" "chart.png")) NIL NIL) "mixed" '
    b'("boundary" "_004_mixed_") NIL NIL NIL)'
)


# -- bodystructure.parse ------------------------------------------------------------------


def test_sections_follow_rfc_3501_numbering() -> None:
    root = parse(OUTLOOK)
    assert (root.section, root.content_type) == ("", "multipart/mixed")
    assert [(p.section, p.content_type) for p in root.walk()][1:] == [
        ("1", "multipart/alternative"), ("1.1", "text/plain"), ("1.2", "text/html"),
        ("2", "application/pdf"), ("3", "image/png"),
    ]
    pdf = root.children[1]
    assert (pdf.encoding, pdf.size, pdf.disposition) == ("base64", 108, "attachment")
    assert root.children[2].content_id == "<chart@x>"


def test_a_single_part_message_is_part_1() -> None:
    root = parse(structure(b'("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "8BIT" 15 1 NIL NIL NIL '
                           b'NIL)'))
    assert (root.section, root.content_type, root.encoding) == ("1", "text/plain", "8bit")
    assert root.params == (("charset", "utf-8"),)


def test_a_structure_without_extension_data_is_fine() -> None:
    root = parse(structure(b'(("text" "plain" NIL NIL NIL "7bit" 3 1)("application" "pdf" NIL NIL '
                           b'NIL "base64" 40) "mixed")'))
    assert [p.disposition for p in root.children] == [None, None]
    assert root.headers() == {"content-type": ["multipart/mixed"]}


@pytest.mark.parametrize("text", [
    b'(("text" "plain" NIL NIL NIL "7bit" 3 1)("message" "rfc822" NIL NIL NIL "7bit" 86 (NIL '
    b'"Lunch?" NIL NIL NIL NIL NIL NIL NIL NIL) ("text" "plain" NIL NIL NIL "7bit" 14 1) 5) '
    b'"mixed")',
    b'("message" "delivery-status" NIL NIL NIL "7bit" 142 NIL NIL NIL NIL)',
    b'("multipart" "mixed" ("boundary" "x") NIL NIL "7bit" 10 NIL NIL NIL NIL)',
], ids=["forwarded", "delivery-status", "multipart-leaf"])
def test_what_the_part_wise_path_leaves_to_the_whole_message_path(text: bytes) -> None:
    with pytest.raises(Unsupported):
        parse(structure(text))


FORWARDED = (
    b'(("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 11 1 NIL NIL NIL NIL)'
    b'("message" "rfc822" ("name" "fw.eml") NIL NIL "7bit" 16000000 ("Mon, 1 Jun 2026 10:00:00 '
    b'+0000" "Quarterly" NIL NIL NIL NIL NIL NIL NIL "<m@x>") ("text" "plain" NIL NIL NIL "7bit" '
    b'3 1 NIL NIL NIL NIL) 200 NIL ("attachment" ("filename" "fw.eml")) NIL NIL) "mixed" '
    b'("boundary" "b") NIL NIL NIL)'
)


def test_a_forwarded_message_can_be_a_leaf_like_an_attachment() -> None:
    """For messages too big to fetch whole (bridge.imap.partfetch.WHOLE_MAX)."""
    root = parse(structure(FORWARDED), message_leaves=True)
    forwarded = root.children[1]
    assert (forwarded.section, forwarded.content_type, forwarded.is_multipart) == (
        "2", "message/rfc822", False)
    assert (forwarded.size, forwarded.encoding, forwarded.disposition,
            forwarded.disposition_params) == (16000000, "7bit", "attachment",
                                              (("filename", "fw.eml"),))
    with pytest.raises(Unsupported):
        parse(structure(FORWARDED))


def test_in_a_big_message_other_message_parts_are_basic_leaves() -> None:
    """A bounce over WHOLE_MAX: its delivery-status is an attachment like any other
    (RFC 3501 §9 sends message/* other than rfc822/global as basic bodies)."""
    text = (b'(("text" "plain" NIL NIL NIL "7bit" 3 1)("message" "delivery-status" NIL NIL NIL '
            b'"7bit" 142 NIL ("attachment" ("filename" "status.txt")) NIL NIL)'
            b'("message" "disposition-notification" NIL NIL NIL "7bit" 90 NIL NIL NIL NIL) '
            b'"report" ("report-type" "delivery-status" "boundary" "r") NIL NIL NIL)')
    root = parse(structure(text), message_leaves=True)
    assert [(p.section, p.content_type, p.size, p.is_multipart, p.disposition)
            for p in root.children[1:]] == [
        ("2", "message/delivery-status", 142, False, "attachment"),
        ("3", "message/disposition-notification", 90, False, None)]
    with pytest.raises(Unsupported):
        parse(structure(text))
    with pytest.raises(Unsupported):  # the msg form where a basic body belongs: malformed
        parse(structure(b'("message" "delivery-status" NIL NIL NIL "7bit" 142 (NIL "s" NIL NIL '
                        b'NIL NIL NIL NIL NIL NIL) ("text" "plain" NIL NIL NIL "7bit" 3 1) 5 NIL '
                        b'("attachment" NIL) NIL NIL)'), message_leaves=True)


def test_exchange_bare_string_dispositions_are_read_not_rejected() -> None:
    """Exchange Online writes body-fld-dsp as a bare string ("inline") instead of
    ("inline" NIL) (MailKit#919, #1446); rejecting it would fetch every such mail whole."""
    root = parse(structure(
        b'(("text" "plain" ("charset" "ISO-8859-1") NIL NIL "QUOTED-PRINTABLE" 850 31 NIL '
        b'"inline" NIL NIL)("text" "html" ("charset" "ISO-8859-1") NIL NIL "QUOTED-PRINTABLE" '
        b'14692 502 NIL "inline" NIL NIL) "alternative" ("boundary" "b") NIL NIL NIL)'))
    assert [(p.content_type, p.disposition, p.disposition_params) for p in root.children] == [
        ("text/plain", "inline", ()), ("text/html", "inline", ())]


@pytest.mark.parametrize("body", [None, (), (b"text",), ([], b"mixed"), (b"text", b"plain", b"x"),
                                  (b"text", b"plain", None, None, None, b"7bit", b"many")])
def test_malformed_structures_are_unsupported_not_errors(body: object) -> None:
    with pytest.raises(Unsupported):
        parse(body)


def test_absurdly_many_parts_are_unsupported() -> None:
    leaf = b'("text" "plain" NIL NIL NIL "7bit" 1 1)'
    with pytest.raises(Unsupported, match="too many parts"):
        parse(structure(b"(" + leaf * (MAX_PARTS + 1) + b' "mixed")'))


@pytest.mark.parametrize(("params", "expected"), [
    ((b"filename", b'say "hi" \\ bye.txt'), 'say "hi" \\ bye.txt'),
    ((b"filename*", b"UTF-8''r%C3%A9sum%C3%A9.pdf"), "résumé.pdf"),
    ((b"filename", b"=?utf-8?B?QmV3ZXJidW5nIFrDvHJpY2guZG9jeA==?="), "Bewerbung Zürich.docx"),
    ((b"filename*0*", b"UTF-8''a%C3%A4", b"filename*1", b"b.txt"), "aäb.txt"),
    ((b"filename", b"caf\xc3\xa9.txt"), "café.txt"),  # raw 8-bit, as a literal
])
def test_rebuilt_disposition_decodes_like_the_original_header(
    params: tuple[bytes, ...], expected: str
) -> None:
    root = parse(("application", b"octet-stream", None, None, None, b"base64", 10, None,
                  (b"attachment", params), None, None))
    disposition, values = split_header(root.headers()["content-disposition"][0], [], "x")
    assert (disposition, values["filename"]) == ("attachment", expected)


# -- transfer -------------------------------------------------------------------------------


def fed(encoding: str, encoded: bytes, cuts: list[int]) -> bytes:
    """`encoded` decoded by a Decoder fed in pieces, cut where the fetches would cut it."""
    decoder = transfer.Decoder(encoding)
    for start, end in zip([0, *sorted(cuts)], [*sorted(cuts), len(encoded)], strict=True):
        decoder.feed(encoded[start:end])
    return bytes(decoder.finish())


@PROPERTY
@given(st.binary(max_size=3000), st.sampled_from([76, 72, 64, 4]),
       st.lists(st.integers(min_value=0, max_value=4200), max_size=5))
def test_base64_fed_in_pieces_decodes_like_the_stdlib(
    data: bytes, line: int, cuts: list[int]
) -> None:
    text = base64.b64encode(data)
    encoded = b"\r\n".join(text[i : i + line] for i in range(0, len(text), line)) + b"\r\n"
    cuts = [min(c, len(encoded)) for c in cuts]
    assert fed("base64", encoded, cuts) == transfer._stdlib_decode("base64", encoded) == data
    unpadded = encoded.rstrip(b"=\r\n")
    assert fed("base64", unpadded, cuts) == transfer._stdlib_decode("base64", unpadded)


@PROPERTY
@given(st.lists(st.sampled_from([b"A", b"QUJD", b"+/", b"=", b"==", b"\r\n", b"\n", b"\r",
                                 b" ", b"!", b"\xc3", b"-"]), max_size=60))
def test_base64_decodes_like_the_stdlib_valid_or_not(pieces: list[bytes]) -> None:
    """The pybase64 fast path must agree with compat32 on broken input too: it is taken
    only where compat32's own first attempt would succeed."""
    encoded = b"".join(pieces)
    assert transfer.decode("base64", encoded) == transfer._stdlib_decode("base64", encoded)


@PROPERTY
@given(st.binary(max_size=3000), st.lists(st.integers(min_value=0, max_value=9000), max_size=5))
def test_quoted_printable_fed_in_pieces_decodes_like_the_stdlib(
    data: bytes, cuts: list[int]
) -> None:
    encoded = quopri.encodestring(data).replace(b"\n", b"\r\n")
    cuts = [min(c, len(encoded)) for c in cuts]
    assert fed("quoted-printable", encoded, cuts) == transfer._stdlib_decode(
        "quoted-printable", encoded)


def test_large_parts_decode_like_the_stdlib() -> None:
    data = bytes(range(256)) * 9000  # over STDLIB_MAX once encoded
    for encoding, encoded in (("base64", base64.encodebytes(data)),
                              ("quoted-printable", quopri.encodestring(data)), ("8bit", data)):
        assert len(encoded) > transfer.STDLIB_MAX
        assert transfer.decode(encoding, encoded) == data


@PROPERTY
@given(st.binary(max_size=2000), st.sampled_from(["base64", "quoted-printable", "8bit"]),
       st.integers(min_value=0, max_value=4000))
def test_a_decoded_prefix_is_a_prefix_of_the_decoded_part(
    data: bytes, encoding: str, cut: int
) -> None:
    encoded = {"base64": lambda d: base64.encodebytes(d).replace(b"\n", b"\r\n"),
               "quoted-printable": lambda d: quopri.encodestring(d).replace(b"\n", b"\r\n"),
               "8bit": lambda d: d}[encoding](data)
    whole = transfer.decode(encoding, encoded)
    assert whole.startswith(transfer.decode_prefix(encoding, encoded[:cut]))


@pytest.mark.parametrize(("encoding", "decoded", "declared"), [
    ("base64", 25_000_000, None), ("base64", 1000, None), ("base64", 70, "70"),
    ("quoted-printable", 5000, None), ("7bit", 5000, None),
])
def test_size_bounds_hold_the_decoded_size(encoding: str, decoded: int,
                                           declared: str | None) -> None:
    data = bytes(range(256)) * (decoded // 256) + b"x" * (decoded % 256)
    encoded = {"base64": lambda d: base64.encodebytes(d).replace(b"\n", b"\r\n"),
               "quoted-printable": quopri.encodestring, "7bit": lambda d: d}[encoding](data)
    bounds = transfer.size_bounds(encoding, len(encoded), declared)
    assert bounds.lower <= decoded <= bounds.upper
    assert abs(bounds.estimate - decoded) <= (2 if encoding == "base64" else bounds.upper)
    if declared is not None:
        assert bounds.estimate == decoded


def test_the_25_mb_skip_decision_needs_no_fetch() -> None:
    """With the default limit (10 MB) a 25 MB attachment is certainly too large."""
    encoded = len(base64.encodebytes(b"\0" * 25_000_000).replace(b"\n", b"\r\n"))
    assert transfer.size_bounds("base64", encoded).lower > 10_000_000


# -- the part-wise walk: a prefix gives the preview of the whole part --------------------


def text_part(subtype: str, charset: str | None, encoding: str, encoded: bytes) -> Part:
    params = (("charset", charset),) if charset else ()
    return Part("1", "text", subtype, params, encoding=encoding, size=len(encoded))


def preview(walk: PartWalk, limit: int) -> str:
    return message._preview("\n\n".join(t.strip() for t in walk.texts if t.strip()), limit)


def encode(text: str, charset: str, encoding: str) -> bytes:
    """`text` in `charset` and `encoding`; a lone surrogate stands for a raw 8-bit byte."""
    text = text.replace("\n", "\r\n")
    if charset == "utf-16":
        raw = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace").encode(charset)
    else:
        raw = b"".join(c.encode("utf-8", "surrogateescape") if "\udc80" <= c <= "\udcff"
                       else c.encode(charset, "replace") for c in text)
    if encoding == "base64":
        return base64.encodebytes(raw).replace(b"\n", b"\r\n")
    if encoding == "quoted-printable":
        return quopri.encodestring(raw).replace(b"\n", b"\r\n")
    return raw


PIECES = st.sampled_from(["Grüße ", "東京 ", "café", " ", "\n", "\n\n", "naïve ", "x" * 7,
                          "\u200b", "word ", "€", "&amp;", "<b>", "</p><p>", "<!-- c -->",
                          "<style>p{}</style>", "\t", "\udce9"])


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(PIECES, min_size=1, max_size=40).map("".join),
       st.sampled_from([("plain", "utf-8"), ("plain", "iso-8859-1"), ("plain", "utf-16"),
                        ("plain", None), ("plain", "iso-2022-jp"), ("html", "utf-8"),
                        ("html", "windows-1252")]),
       st.sampled_from(["base64", "quoted-printable", "8bit"]), st.data())
def test_a_prefix_either_gives_the_whole_parts_preview_or_asks_for_the_whole_part(
    text: str, kind: tuple[str, str | None], encoding: str, data: st.DataObject
) -> None:
    subtype, charset = kind
    encoded = encode(text, charset or "utf-8", encoding)
    part = text_part(subtype, charset, encoding, encoded)
    whole = PartWalk(part, {"1": Chunk(encoded, True)}, preview_chars=10**6, include_body=False)
    drawn = data.draw(st.integers(min_value=1, max_value=len(preview(whole, 10**6)) + 1))
    for cut in range(len(encoded) + 1):  # every prefix the server could send
        chunk = {"1": Chunk(encoded[:cut], False)}
        # The drawn limit, and the largest one this prefix would claim to be enough for.
        longest = len(preview(PartWalk(part, chunk, preview_chars=10**6, include_body=False),
                              10**6))
        for limit in {drawn, max(1, longest - 1)}:
            walk = PartWalk(part, chunk, preview_chars=limit, include_body=False)
            if walk.needs:
                assert walk.needs == [Request("1")]  # the whole part, next
            else:
                assert preview(walk, limit) == preview(whole, limit), (cut, limit)


def test_the_first_walk_asks_for_a_prefix_of_the_text_only() -> None:
    root = parse(OUTLOOK)
    walk = PartWalk(root, {}, preview_chars=280, include_body=False)
    assert walk.needs == [Request("1.1", 4096)]  # the HTML alternative is not needed yet
    assert walk.needs[0].item == "BODY.PEEK[1.1]<0.4096>"
    assert walk.needs[0].key == b"BODY[1.1]<0>"
    assert Request("2", 100, 300).item == "BODY.PEEK[2]<300.100>"
    long = Part("1", "text", "html", size=100_000)
    assert PartWalk(long, {}, preview_chars=280, include_body=False).needs == [
        Request("1", 32768)]
    assert PartWalk(long, {}, preview_chars=280, include_body=True).needs == [Request("1")]


def test_an_empty_plain_alternative_makes_the_walk_ask_for_the_html() -> None:
    root = parse(OUTLOOK)
    walk = PartWalk(root, {"1.1": Chunk(b" \r\n", True)}, preview_chars=280, include_body=False)
    assert walk.needs == [Request("1.2", 32768)]
    html = b"<p>Hello <b>world</b></p>"
    walk = PartWalk(root, {"1.1": Chunk(b" \r\n", True), "1.2": Chunk(html, True)},
                    preview_chars=280, include_body=False)
    assert (walk.needs, preview(walk, 280)) == ([], "Hello world")
    assert [leaf.found.filename for leaf in walk.leaves] == ["invoice-2026-11.pdf", "chart.png"]
    assert walk.leaves[0].bounds.estimate == 77  # Outlook's size parameter
