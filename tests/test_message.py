"""Message summaries: a corpus of raw mails with expected fields, rules tables, and fuzzing."""

from __future__ import annotations

import dataclasses
import json
import random
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.config.model import FolderConfig
from bridge.mail import message, walk
from bridge.mail.htmltext import html_to_text
from bridge.mail.ical import parse_calendar
from bridge.mail.message import StoredMessage, Summary, summarize
from bridge.mail.mime import decode_words, sanitize_filename, split_header
from bridge.mail.policy import skip_reason, type_allowed
from bridge.mailbox.publisher import summary_options
from tests.profile import examples

MAIL = Path(__file__).parent / "data" / "mail"
CORPUS = sorted(MAIL.glob("*.eml"))
PREFIX = "outlook2mqtt/home/inbox/attachment"
INBOX = FolderConfig(name="INBOX", topic="inbox")
KEY_ORDER = [
    "account", "folder", "uid", "uidvalidity", "message_id", "date", "received", "from", "to",
    "cc", "reply_to", "subject", "flags", "seen", "flagged", "importance", "size", "preview",
    "has_attachments", "attachments",
]
FUZZ = settings(max_examples=examples(200), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
# The notes bad mail is expected to cause; any other `errors` entry names an exception that
# a step raised (`guard` records its type), which is a bug even though no exception escapes.
EXPECTED_NOTES = re.compile(
    r"[\w/.+-]+: (unknown charset '.*'|bad encoded word|unparseable"
    r"|cannot decode as '.*' \(Unicode\w*Error\))"
    r"|mime: nesting too deep|\.\.\. and \d+ more",
    re.DOTALL,
)


def run(raw: bytes, folder: FolderConfig = INBOX, include_body: bool | None = None,
        **stored: Any) -> Summary:
    """`summarize` as the publisher calls it; `stored` overrides the message's UID, flags,
    INTERNALDATE or size."""
    options = summary_options(folder, account="home", folder_name="INBOX", uidvalidity=14,
                              attachment_topic_prefix=PREFIX, include_body=include_body)
    facts: dict[str, Any] = {
        "uid": 4123, "flags": [b"\\Seen"],
        "internaldate": datetime(2026, 11, 28, 9, 15, 4, tzinfo=UTC), "size": None,
    }
    facts.update(stored)
    return summarize(raw, options, StoredMessage(**facts))


def check_invariants(summary: Summary, preview_chars: int = INBOX.preview_chars, *,
                     bug_expected: bool = False) -> None:
    """What holds for every summary, whatever the input (`bug_expected`: a test made a step
    raise, so its note is allowed)."""
    payload = summary.payload
    if not bug_expected:
        unexpected = [e for e in payload.get("errors", []) if not EXPECTED_NOTES.fullmatch(e)]
        assert not unexpected, f"a step raised: {unexpected}"
    assert list(payload)[: len(KEY_ORDER)] == KEY_ORDER
    json.dumps(payload, ensure_ascii=False).encode("utf-8")  # no lone surrogates
    assert len(payload["preview"]) <= preview_chars
    entries = payload["attachments"]
    assert [e["index"] for e in entries] == list(range(len(entries)))
    assert [a.index for a in summary.attachments] == list(range(len(entries)))
    for a, entry in zip(summary.attachments, entries, strict=True):
        assert entry["size"] == a.size
        assert (a.topic is None) == (a.skipped is not None) == ("skipped" in entry)
        assert a.data == b"" or a.topic is not None
        assert a.filename is None or ("/" not in a.filename and "\\" not in a.filename)


# --- the corpus ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_corpus_message_summarizes_as_expected(path: Path) -> None:
    expected = json.loads(path.with_suffix(".json").read_text("utf-8"))
    raw = path.read_bytes()
    summary = run(
        raw, flags=expected.get("flags", [b"\\Seen"]), include_body=expected.get("include_body"),
    )
    payload = summary.payload
    check_invariants(summary)
    assert payload["size"] == len(raw)
    for key, value in expected["summary"].items():
        assert payload[key] == value, key
    for index, start in expected.get("data_startswith", {}).items():
        assert summary.attachments[int(index)].data.startswith(start.encode("latin-1"))
    for fragment in expected.get("body_contains", []):
        assert fragment in payload["body"]
    for fragment in expected.get("body_excludes", []):
        assert fragment not in payload["body"]
    if "body" in expected:
        assert payload["body"] == expected["body"]
    if expected.get("no_errors"):
        assert "errors" not in payload
    if "to_count" in expected:
        assert len(payload["to"]) == expected["to_count"]
        assert payload["to"][-1] == expected["to_last"]


def test_corpus_has_an_expectation_for_every_sample() -> None:
    assert len(CORPUS) >= 18
    assert all(p.with_suffix(".json").exists() for p in CORPUS)


def test_published_attachment_data_is_byte_identical_to_the_decoded_part() -> None:
    summary = run((MAIL / "mixed_pdf.eml").read_bytes())
    pdf = summary.attachments[0]
    assert pdf.data == (
        b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
    )
    assert pdf.size == len(pdf.data)


def test_forwarded_message_is_published_as_a_parseable_eml() -> None:
    summary = run((MAIL / "forwarded.eml").read_bytes())
    inner = run(summary.attachments[0].data)
    assert inner.payload["subject"] == "Vertragsentwurf \u2013 v2"
    assert inner.payload["from"] == {"name": "Legal", "address": "legal@example.net"}
    assert inner.payload["preview"] == "Draft attached in the next mail."


def test_body_is_added_when_the_folder_or_the_call_asks_for_it() -> None:
    raw = (MAIL / "plain.eml").read_bytes()
    assert "body" not in run(raw).payload
    assert "body" in run(raw, folder=dataclasses.replace(INBOX, include_body=True)).payload
    assert "body" not in run(
        raw, folder=dataclasses.replace(INBOX, include_body=True), include_body=False,
    ).payload
    assert run(raw, include_body=True).payload["body"].startswith("Hi,\n\nyour order")


@pytest.mark.parametrize("limit", [0, 1, 5, 17, 280])
def test_preview_is_cut_to_the_folders_limit(limit: int) -> None:
    raw = (MAIL / "utf8_header.eml").read_bytes() + "ä😀 ".encode() * 200
    preview = run(raw, folder=dataclasses.replace(INBOX, preview_chars=limit)).payload["preview"]
    full = "Hej då 🍣" + " ä😀" * 200
    assert preview == full[:limit].rstrip()


def test_envelope_fields_come_from_the_fetch() -> None:
    raw = (MAIL / "plain.eml").read_bytes()
    payload = run(
        raw, flags=["\\Flagged", b"$Green category", "Junk"], size=99999,
        internaldate=datetime(2026, 11, 28, 10, 0, 0, tzinfo=timezone(timedelta(hours=1))),
    ).payload
    assert payload["flags"] == ["\\Flagged", "$Green category", "Junk"]
    assert (payload["seen"], payload["flagged"]) == (False, True)
    assert payload["size"] == 99999
    assert payload["received"] == "2026-11-28T10:00:00+01:00"
    assert run(raw, internaldate=None).payload["received"] is None


def test_naive_internaldate_is_taken_as_local_time() -> None:
    naive = datetime(2026, 11, 28, 10, 0, 0)
    received = run(b"Subject: x\n\ny", internaldate=naive).payload["received"]
    assert datetime.fromisoformat(received) == naive.astimezone()


# --- attachment rules ------------------------------------------------------------------------

SEL = FolderConfig(name="INBOX", topic="inbox", max_attachment_bytes=100)


@pytest.mark.parametrize(
    ("folder", "content_type", "size", "inline", "reason"),
    [
        (SEL, "application/pdf", 100, False, None),
        (SEL, "application/pdf", 101, False, "too_large"),
        (SEL, "application/pdf", 0, False, None),
        (dataclasses.replace(SEL, attachments=False), "application/pdf", 1, False, "disabled"),
        (dataclasses.replace(SEL, attachments=False), "image/png", 1, True, "disabled"),
        (SEL, "image/png", 1, True, "inline"),
        (SEL, "image/png", 1000, True, "inline"),
        (dataclasses.replace(SEL, inline_attachments=True), "image/png", 1, True, None),
        (dataclasses.replace(SEL, inline_attachments=True), "image/png", 101, True, "too_large"),
        (dataclasses.replace(SEL, attachment_types=("application/pdf",)), "image/png", 1,
         False, "type"),
        (dataclasses.replace(SEL, attachment_types=("application/pdf",)), "image/png", 1000,
         False, "type"),
        (dataclasses.replace(SEL, attachment_types=("image/*", "!image/gif")), "image/gif", 1,
         False, "type"),
        (dataclasses.replace(SEL, attachment_types=("image/*", "!image/gif")), "image/jpeg", 1,
         False, None),
    ],
)
def test_skip_reason_rules(
    folder: FolderConfig, content_type: str, size: int, inline: bool, reason: str | None,
) -> None:
    rules = summary_options(folder, account="home", folder_name="INBOX", uidvalidity=1,
                            attachment_topic_prefix=PREFIX).attachments
    assert skip_reason(rules, content_type=content_type, size=size, inline=inline) == reason


@pytest.mark.parametrize(
    ("patterns", "content_type", "allowed"),
    [
        (("*/*",), "application/pdf", True),
        (("application/PDF",), "Application/Pdf", True),
        (("image/*",), "application/pdf", False),
        (("*/*", "!application/x-msdownload"), "application/x-msdownload", False),
        (("!application/x-msdownload", "*/*"), "application/x-msdownload", False),
        (("!image/*",), "application/pdf", True),
        (("!image/*",), "image/png", False),
        ((), "application/pdf", False),
        (("application/vnd.*",), "application/vnd.ms-excel", True),
        (("image/*",), "image/png", True),
        (("image/*", "!image/gif"), "image/gif", False),
        (("image/*", "!image/gif"), "IMAGE/PNG", True),
        (("!image/*",), "image/jpeg", False),
    ],
)
def test_type_allowed_globs_with_denials_winning(
    patterns: tuple[str, ...], content_type: str, allowed: bool,
) -> None:
    assert type_allowed(content_type, patterns) is allowed


def test_rules_apply_to_a_whole_message_and_keep_data_only_when_published() -> None:
    raw = (MAIL / "mixed_pdf.eml").read_bytes()
    folder = dataclasses.replace(INBOX, max_attachment_bytes=76)  # pdf is 77, png 70 bytes
    pdf, png = run(raw, folder=folder).attachments
    assert (pdf.skipped, pdf.topic, pdf.data, pdf.size) == ("too_large", None, b"", 77)
    assert (png.skipped, png.topic) == (None, f"{PREFIX}/4123/1")
    assert png.data.startswith(b"\x89PNG")
    entry = run(raw, folder=folder).payload["attachments"][0]
    assert entry == {
        "index": 0, "filename": "invoice-2026-11.pdf", "content_type": "application/pdf",
        "size": 77, "inline": False, "topic": None, "skipped": "too_large",
    }
    skipped = run(raw, folder=dataclasses.replace(INBOX, attachments=False)).attachments
    assert [a.skipped for a in skipped] == ["disabled", "disabled"]


def test_an_empty_type_list_publishes_no_attachment() -> None:
    raw = (MAIL / "mixed_pdf.eml").read_bytes()
    folder = dataclasses.replace(INBOX, attachment_types=())
    summary = run(raw, folder=folder)
    assert [(a.skipped, a.topic, a.data) for a in summary.attachments] == [
        ("type", None, b""), ("type", None, b"")]
    assert summary.payload["has_attachments"] is True


def test_inline_images_are_published_when_the_folder_wants_them() -> None:
    raw = (MAIL / "related_inline.eml").read_bytes()
    folder = dataclasses.replace(INBOX, inline_attachments=True)
    logo, spacer = run(raw, folder=folder).attachments
    assert (logo.inline, logo.topic, logo.data[:4]) == (True, f"{PREFIX}/4123/0", b"\x89PNG")
    assert (spacer.inline, spacer.data[:6]) == (True, b"GIF89a")


def test_related_image_without_content_id_or_inline_disposition_is_not_inline() -> None:
    raw = (
        b"Content-Type: multipart/related; boundary=r\n\n--r\nContent-Type: text/html\n\n"
        b"<p>hi</p>\n--r\nContent-Type: image/png\n\nPNG\n--r\nContent-Type: text/css\n"
        b"Content-ID: <css>\n\nbody{}\n--r--\n"
    )
    summary = run(raw)
    assert [(a.content_type, a.inline) for a in summary.attachments] == [
        ("image/png", False), ("text/css", False),
    ]
    assert summary.payload["preview"] == "hi"


def test_inline_disposition_marks_an_image_inline_outside_related_too() -> None:
    raw = (
        b"Content-Type: multipart/mixed; boundary=m\n\n--m\nContent-Type: text/plain\n\nhi\n"
        b"--m\nContent-Type: image/jpeg; name=photo.jpg\nContent-Disposition: inline\n\nJPG\n"
        b"--m\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\n"
        b"Content-Disposition: attachment; filename=smime.p7m\n\nP7M\n--m--\n"
    )
    payload = run(raw).payload
    assert [(a["filename"], a["inline"], a.get("skipped")) for a in payload["attachments"]] == [
        ("photo.jpg", True, "inline"), ("smime.p7m", False, None),
    ]
    assert payload["has_attachments"] is True


# --- header and text decoding ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ("=?utf-8?q?caf=C3=A9?=", "café"),
        ("=?UTF-8?B?Y2Fmw6k=?=", "café"),
        ("=?utf-8?B?Y2Fmw6k?=", "café"),  # missing padding
        ("=?utf-8?Q?a?= =?utf-8?Q?b?=", "ab"),  # RFC 2047 §6.2
        ("=?utf-8?Q?a?= x =?utf-8?Q?b?=", "a x b"),
        ("=?utf-8?B?4pg=?= =?utf-8?B?lQ==?=", "☕"),  # a character split across two words
        ("=?utf-8*en?Q?hi?=", "hi"),  # RFC 2231 §5 language
        ("=?x-bogus?Q?caf=E9?=", "café"),
        ("=?utf-8?Q?broken", "=?utf-8?Q?broken"),
        ("plain \udcfcber", "plain über"),  # raw Latin-1 byte
    ],
)
def test_decode_words(raw: str, text: str) -> None:
    assert decode_words(raw, [], "subject") == text


def test_split_header_decodes_rfc2231_and_rfc2047_parameters() -> None:
    notes: list[str] = []
    value = 'attachment; filename*0*=utf-8\'\'a%20b; filename*1="; c"; size=3'
    assert split_header(value, notes, "cd") == ("attachment", {"filename": "a b; c", "size": "3"})
    value = 'Application/PDF; name="=?utf-8?Q?r=C3=A9sum=C3=A9.pdf?="'
    assert split_header(value, notes, "ct") == ("application/pdf", {"name": "résumé.pdf"})
    assert notes == []


@pytest.mark.parametrize(
    ("name", "clean"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\x\\a.txt", "a.txt"),
        ("in\x00voice\u202egpj.exe", "invoicegpj.exe"),
        ("line\nbreak\r.txt", "linebreak.txt"),
        ("..", None),
        ("/", None),
        ("", None),
        (None, None),
        ("  spaced\u00a0name.pdf  ", "spaced name.pdf"),
        ("x" * 300 + ".pdf", "x" * 251 + ".pdf"),
    ],
)
def test_sanitize_filename(name: str | None, clean: str | None) -> None:
    assert sanitize_filename(name) == clean


@pytest.mark.parametrize(
    ("headers", "importance"),
    [
        ("Importance: High", "high"),
        ("Importance: low", "low"),
        ("X-Priority: 1 (Highest)", "high"),
        ("X-Priority: 3", "normal"),
        ("X-Priority: 5", "low"),
        ("Priority: non-urgent", "low"),
        ("X-MSMail-Priority: High", "high"),
        ("Importance: bogus\nX-Priority: 2", "high"),
        ("Importance: normal\nX-Priority: 1", "normal"),
        ("Subject: none", "normal"),
    ],
)
def test_importance_from_headers(headers: str, importance: str) -> None:
    raw = f"{headers}\nSubject: x\n\nbody\n".encode()
    assert run(raw).payload["importance"] == importance


def test_html_rendering_keeps_text_and_drops_markup() -> None:
    markup = (
        "<html><head><title>t</title><style>p{color:red}</style></head><body>"
        "<p>A&nbsp;&amp;&nbsp;B</p><p>&nbsp;</p><div>C<br>D</div>"
        "<script>var x = '<p>no</p>';</script><table><tr><td>E</td><td>F</td></tr></table>"
        "<pre>keep\nlines</pre><p>caf&eacute; &#x2603;</p></body></html>"
    )
    assert html_to_text(markup) == "A & B\n\nC\nD\nE F\nkeep\nlines\ncafé ☃"


def test_html_with_an_unclosed_head_still_shows_the_body() -> None:
    assert html_to_text("<head><title>x<body><p>visible</p>") == "visible"
    assert html_to_text("<![if !supportLists]>- <![endif]>item <!-- c --> & <x") == "- item & <x"


@pytest.mark.parametrize(
    ("lines", "start"),
    [
        (["DTSTART:20261130T090000Z"], "2026-11-30T09:00:00+00:00"),
        (["DTSTART;VALUE=DATE:20261130"], "2026-11-30"),
        (["DTSTART;TZID=Europe/Berlin:20260701T090000"], "2026-07-01T09:00:00+02:00"),
        (["DTSTART;TZID=Pacific Standard Time:20261130T090000"], "2026-11-30T09:00:00-08:00"),
        (["DTSTART;TZID=Mars/Olympus:20261130T090000"], "2026-11-30T09:00:00"),
        (["DTSTART;TZID=../../etc/passwd:20261130T090000"], "2026-11-30T09:00:00"),
        (["DTSTART:20261345T990000"], "20261345T990000"),
        (["DTSTART:next tuesday"], "next tuesday"),
    ],
)
def test_calendar_dates(lines: list[str], start: str) -> None:
    text = "\r\n".join(["BEGIN:VCALENDAR", "BEGIN:VEVENT", *lines, "END:VEVENT", "END:VCALENDAR"])
    assert parse_calendar(text)["start"] == start


def test_calendar_reads_the_first_event_only_and_tolerates_junk() -> None:
    text = (
        "garbage line\nBEGIN:VCALENDAR\nMETHOD:cancel\nBEGIN:VEVENT\nSUMMARY:One\n"
        "ORGANIZER:MAILTO:a@b.c\nBEGIN:VALARM\nSUMMARY:alarm\nEND:VALARM\nEND:VEVENT\n"
        "BEGIN:VEVENT\nSUMMARY:Two\nLOCATION:x\nEND:VEVENT\nEND:VCALENDAR\nEND:VCALENDAR\n"
    )
    assert parse_calendar(text) == {
        "method": "CANCEL", "summary": "One", "start": None, "end": None, "location": None,
        "organizer": {"name": "", "address": "a@b.c"},
    }


def test_calendar_attachment_is_listed_and_parsed() -> None:
    raw = (
        b"Content-Type: multipart/mixed; boundary=m\n\n--m\nContent-Type: text/plain\n\nSee\n"
        b"--m\nContent-Type: text/calendar; method=REQUEST\n"
        b"Content-Disposition: attachment; filename=invite.ics\n\n"
        b"BEGIN:VCALENDAR\nMETHOD:REQUEST\nBEGIN:VEVENT\nSUMMARY:Standup\nEND:VEVENT\n"
        b"END:VCALENDAR\n--m--\n"
    )
    payload = run(raw).payload
    assert payload["calendar"]["summary"] == "Standup"
    assert [a["filename"] for a in payload["attachments"]] == ["invite.ics"]


# --- robustness ------------------------------------------------------------------------------


def test_nesting_beyond_the_limit_is_reported_not_followed() -> None:
    depth = walk.MAX_DEPTH + 5
    head = b"".join(
        b"--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n" % (i, i + 1) for i in range(depth)
    )
    raw = b"Content-Type: multipart/mixed; boundary=b0\n\n" + head + b"--b%d\n\nx\n" % depth
    payload = run(raw).payload
    assert "mime: nesting too deep" in payload["errors"]


def test_a_failing_step_is_recorded_and_the_rest_still_returned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def boom(*args: object, **kwargs: object) -> list[str]:
        raise RuntimeError("bug")

    monkeypatch.setattr(walk.MimeWalk, "walk", boom)
    payload = run((MAIL / "plain.eml").read_bytes()).payload
    assert payload["errors"] == ["mime: RuntimeError"]
    assert payload["subject"] == "Your order has shipped"


def test_even_an_internal_bug_yields_a_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> Summary:
        raise ValueError("bug")

    monkeypatch.setattr(message, "_summarize", boom)
    summary = run(b"Subject: x\n\ny", size=12)
    check_invariants(summary, bug_expected=True)
    assert summary.payload["errors"] == ["summary: ValueError"]
    assert (summary.payload["uid"], summary.payload["size"]) == (4123, 12)
    assert summary.attachments == ()


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\r\n\r\n",
        b"\xff\xfe\x00garbage",
        b"Content-Type: multipart/mixed; boundary=x\n\n--x\n",
        b"Content-Type: text/plain; charset=idna\n\n\xff\xfe",
        b"Content-Type: text/plain; charset=utf-7\n\n+\xff-",
        b"Content-Type: message/rfc822\n\n",
        b"Content-Type: message/delivery-status\n\nStatus: 5.0.0\n\nAction: failed\n",
        b"Content-Transfer-Encoding: base64\n\n!!!!",
        b"Content-Transfer-Encoding: x-uuencode\n\nbegin 644 x\n!!!\n",
        b"Date: \nFrom: \nTo: ,,,\nSubject: =?utf-8?B?====?=\n\n",
        b"Content-Type: /\nContent-Disposition: ;;;=\n\n",
    ],
)
def test_odd_inputs_never_raise(raw: bytes) -> None:
    check_invariants(run(raw))


def test_multipart_without_boundary_is_shown_as_text() -> None:
    payload = run(b"Content-Type: multipart/mixed\n\nno boundary").payload
    assert (payload["preview"], payload["attachments"]) == ("no boundary", [])


@FUZZ
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    check_invariants(run(raw))


def _mutate(raw: bytes, rng: random.Random, edits: int) -> bytes:
    data = bytearray(raw)
    tokens = [b"\n", b"\r\n", b"--", b"=?", b"?=", b";", b"\"", b"\x00", b"\xff", b"=", b":"]
    for _ in range(edits):
        pos = rng.randrange(len(data) + 1)
        kind = rng.randrange(4)
        if kind == 0 and data:
            del data[pos : pos + rng.randrange(1, 40)]
        elif kind == 1:
            data[pos:pos] = rng.choice(tokens)
        elif kind == 2 and pos < len(data):
            data[pos] = rng.randrange(256)
        else:
            data[pos:pos] = bytes(data[pos : pos + rng.randrange(1, 200)])
    return bytes(data)


@FUZZ
@given(
    st.sampled_from(CORPUS),
    st.randoms(use_true_random=False),
    st.integers(1, 30),
    st.integers(0, 300),
)
def test_mutated_messages_never_raise(
    path: Path, rng: random.Random, edits: int, limit: int,
) -> None:
    raw = _mutate(path.read_bytes(), rng, edits)
    folder = dataclasses.replace(INBOX, preview_chars=limit, inline_attachments=True)
    check_invariants(run(raw, folder=folder, include_body=True), preview_chars=limit)


@FUZZ
@given(st.text(max_size=300), st.integers(0, 50))
def test_preview_never_exceeds_its_limit(text: str, limit: int) -> None:
    raw = b"Content-Type: text/plain; charset=utf-8\n\n" + text.encode("utf-8", "surrogatepass")
    folder = dataclasses.replace(INBOX, preview_chars=limit)
    check_invariants(run(raw, folder=folder), preview_chars=limit)


@FUZZ
@given(st.text(max_size=200))
def test_any_header_text_decodes(value: str) -> None:
    raw = f"Subject: {value}\nFrom: {value}\nTo: {value}\nDate: {value}\n\n".encode(
        "utf-8", "surrogatepass",
    )
    check_invariants(run(raw))


@pytest.mark.parametrize("charset", ["x-unknown", "unknown-8bit", "unknown", "x-klingon"])
def test_an_unknown_charset_is_guessed_and_noted(charset: str) -> None:
    raw = (f"Subject: =?{charset}?Q?Caf=E9?= and =?{charset}?Q?Caf=C3=A9?=\n"
           f"Content-Type: text/plain; charset={charset}\n\nCaf\xe9 ok\n").encode("latin-1")
    payload = run(raw).payload
    assert (payload["subject"], payload["preview"]) == ("Café and Café", "Café ok")
    assert payload["errors"] == [f"text/plain: unknown charset '{charset}'",
                                 f"subject: unknown charset '{charset}'"]


@pytest.mark.parametrize("charset", ["", "; charset=us-ascii"])
def test_8bit_text_without_a_useful_label_is_guessed_silently(charset: str) -> None:
    raw = f"Content-Type: text/plain{charset}\n\nCaf\xe9\n".encode("latin-1")
    payload = run(raw).payload
    assert payload["preview"] == "Café"
    assert "errors" not in payload


def test_errors_are_deduplicated_and_capped() -> None:
    words = " ".join(f"=?x-bogus{i}?Q?a?=" for i in range(50))
    errors = run(f"Subject: {words} =?x-bogus0?Q?b?=\n\nx".encode()).payload["errors"]
    assert errors[0] == "subject: unknown charset 'x-bogus0'"
    assert len(errors) == message.MAX_ERRORS + 1
    assert errors[-1] == f"... and {50 - message.MAX_ERRORS} more"


@pytest.mark.timeout(60)  # linear takes well under a second; quadratic, minutes
@pytest.mark.parametrize(
    "markup",
    ["<!--" * 100_000, "<a " * 100_000, "</" * 100_000, "<![CDATA[" * 50_000, "<?" * 100_000],
    ids=["comments", "tags", "end-tags", "cdata", "pi"],
)
def test_hostile_html_renders_in_linear_time(markup: str) -> None:
    raw = b"Content-Type: text/html\n\n" + markup.encode()
    check_invariants(run(raw))  # quadratic parsing would take minutes


@FUZZ
@given(st.text(alphabet=st.sampled_from("ab \n\t\u200b\u00ad\u3000xé"), max_size=3000),
       st.integers(min_value=0, max_value=1200))
def test_a_collapsed_prefix_gives_the_same_preview(text: str, limit: int) -> None:
    whole = message.collapse(text)
    head = message.collapse(text, limit)
    assert whole.startswith(head)
    assert head[:limit] == whole[:limit]
    assert (len(head) > limit) == (len(whole) > limit)
