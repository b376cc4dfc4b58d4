"""The part-wise fetch against a real Dovecot: the same summaries as a whole-message parse,
from a few FETCH commands, never setting \\Seen.

Each test APPENDs its mail to a fresh mailbox and runs `MessagePublisher.publish_batches`
with a recording stand-in for the MQTT client; the reference is `summarize` on the whole
message (BODY.PEEK[]) as the server returns it.
"""

from __future__ import annotations

import base64
import dataclasses
import email
import email.message
import email.policy
import json
import quopri
import random
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import ProtocolError

from bridge.config.model import FolderConfig
from bridge.imap import partfetch
from bridge.mail.message import StoredMessage, summarize
from bridge.mailbox import publisher as fetch
from bridge.mqtt.client import Publication
from bridge.mqtt.topics import Topics
from rig.samples import make_message

MAIL = Path(__file__).parent / "data" / "mail"
CORPUS = sorted(MAIL.glob("*.eml"))
PREFIX = "o2m/home/inbox/attachment"
INBOX = FolderConfig(name="INBOX", topic="inbox")
FOLDERS = {
    "default": INBOX,
    "include_body": dataclasses.replace(INBOX, include_body=True),
    "short_preview": dataclasses.replace(INBOX, preview_chars=25),
    "inline_small_limit": dataclasses.replace(INBOX, inline_attachments=True,
                                              max_attachment_bytes=60),
    "no_attachments": dataclasses.replace(INBOX, attachments=False),
}


# -- the rig: an IMAP session and a recording MQTT client ----------------------------------


@pytest.fixture
def session(imap_session: IMAPClient) -> IMAPClient:
    """A logged-in IMAP connection to this test's (empty) mailbox."""
    return imap_session


class Recorder:
    """Stands in for bridge.mqtt.MqttClient: every publish is acknowledged at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, dict[str, str]]] = []
        self.connected = threading.Event()
        self.connected.set()
        self.max_packet_size: int | None = None  # the broker announced no limit

    def publish(self, topic: str, payload: bytes | str, **kwargs: Any) -> Publication:
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        self.sent.append((topic, data, dict(kwargs.get("user_properties") or ())))
        publication = Publication()
        publication._complete(True)
        return publication

    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(p) for t, p, _ in self.sent if t.endswith("/message")]

    def attachments(self) -> dict[str, tuple[bytes, dict[str, str]]]:
        return {t: (p, props) for t, p, props in self.sent if "/attachment/" in t}


@pytest.fixture
def items(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every FETCH the publisher sends: its list of items."""
    sent: list[list[str]] = []
    real = partfetch.imap_fetch

    def spy(client: IMAPClient, uids: Any, wanted: Any) -> Any:
        sent.append([i.decode() if isinstance(i, bytes) else i for i in wanted])
        return real(client, uids, wanted)

    monkeypatch.setattr(partfetch, "imap_fetch", spy)
    return sent


class Account:
    name = "home"


def append_all(session: IMAPClient, raws: list[bytes]) -> list[int]:
    for raw in raws:
        session.append("INBOX", raw)
    session.select_folder("INBOX", readonly=True)
    return sorted(session.search(["ALL"]))


def publish(session: IMAPClient, uids: list[int], folder: FolderConfig = INBOX,
            include_body: bool | None = None) -> tuple[Recorder, list[fetch.Published]]:
    recorder = Recorder()
    publisher = fetch.MessagePublisher(account=Account(), folder=folder,  # type: ignore[arg-type]
                                       mqtt=recorder, topics=Topics("o2m"))  # type: ignore[arg-type]
    results = [p for batch in publisher.publish_batches(
        session, uids, server_name="INBOX", uidvalidity=7, include_body=include_body)
        for p in batch]
    return recorder, results


def reference(session: IMAPClient, uids: list[int], folder: FolderConfig,
              include_body: bool | None = None) -> dict[int, Any]:
    """What the whole-message path makes of each message."""
    out = {}
    for uid, data in session.fetch(uids, ["FLAGS", "INTERNALDATE", "RFC822.SIZE",
                                          "BODY.PEEK[]"]).items():
        options = fetch.summary_options(folder, account="home", folder_name="INBOX",
                                        uidvalidity=7, attachment_topic_prefix=PREFIX,
                                        include_body=include_body)
        stored = StoredMessage(uid, flags=list(data[b"FLAGS"]),
                               internaldate=data[b"INTERNALDATE"], size=data[b"RFC822.SIZE"])
        out[uid] = summarize(data[b"BODY[]"], options, stored)
    return out


def assert_same(got: dict[str, Any], want: dict[str, Any], name: str) -> None:
    """Equal, except the decoded size of an attachment that was not fetched: an estimate
    from the encoded size (within a few bytes for base64, exact for 7bit/8bit)."""
    got, want = dict(got), dict(want)
    got_atts, want_atts = got.pop("attachments"), want.pop("attachments")
    assert got == want, name
    assert len(got_atts) == len(want_atts), name
    for g, w in zip(got_atts, want_atts, strict=True):
        if w["topic"] is None:  # not fetched: the size is estimated
            assert abs(g["size"] - w["size"]) <= max(4, w["size"] // 50), (name, g, w)
            g = {**g, "size": w["size"]}  # noqa: PLW2901
        assert g == w, name


def check_equivalence(session: IMAPClient, uids: list[int], names: list[str],
                      folder: FolderConfig, include_body: bool | None = None) -> Recorder:
    recorder, results = publish(session, uids, folder, include_body)
    want = reference(session, uids, folder, include_body)
    assert [r.uid for r in results] == uids
    published = recorder.attachments()
    for result, name in zip(results, names, strict=True):
        assert result.payload is not None, name
        assert_same(result.payload, want[result.uid].payload, name)
        for att in want[result.uid].attachments:
            if att.topic is not None:  # byte for byte what the whole parse decodes
                data, props = published[att.topic]
                assert data == att.data, (name, att.index)
                assert props == {"filename": att.filename or "", "size": str(att.size),
                                 "content_type": att.content_type}
    assert len(recorder.messages()) == len(uids)
    return recorder


# -- generated mail for the prefix logic ---------------------------------------------------


def mime(headers: str, body: bytes) -> bytes:
    return headers.replace("\n", "\r\n").encode() + b"\r\n\r\n" + body


def head(ctype: str, cte: str = "7bit", extra: str = "") -> str:
    return (f"From: Gen <gen@example.com>\nTo: me@contoso.com\nSubject: {ctype} {cte}\n"
            f"Date: Sat, 28 Nov 2026 09:00:00 +0100\nMIME-Version: 1.0\n"
            f"Content-Type: {ctype}\nContent-Transfer-Encoding: {cte}{extra}")


def b64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def multipart(kind: str, parts: list[tuple[str, bytes]], boundary: str = "b0") -> bytes:
    body = b"".join(f"--{boundary}\r\n{h.replace(chr(10), chr(13) + chr(10))}\r\n\r\n".encode()
                    + p + b"\r\n" for h, p in parts)
    return mime(head(f"multipart/{kind}; boundary={boundary}").rsplit("\nContent-Transfer", 1)[0],
                body + f"--{boundary}--\r\n".encode())


WORDS = ["Grüße", "aus", "München", "\u2013", "東京", "café", "naïve", "Ελλάδα", "résumé",
         "ünïcödé", "text"]
LONG = " ".join(WORDS[i % len(WORDS)] + ("\n" if i % 11 == 10 else "") for i in range(3000))
STYLE = "<style>" + "p.MsoNormal{margin:0cm;font-family:Calibri} " * 1200 + "</style>"
HTML = f"<html><head>{STYLE}</head><body>" + "".join(
    f"<p>Para {i}: <b>{WORDS[i % len(WORDS)]}</b> &amp; more &lt;text&gt;</p>" for i in range(400)
) + "</body></html>"


def generated() -> dict[str, bytes]:
    utf8 = LONG.encode()
    return {
        "plain_8bit_long": mime(head("text/plain; charset=utf-8", "8bit"), utf8),
        "plain_base64_long": mime(head("text/plain; charset=utf-8", "base64"), b64(utf8)),
        "plain_qp_latin1": mime(head("text/plain; charset=iso-8859-1", "quoted-printable"),
                                quopri.encodestring(LONG.encode("latin-1", "replace"))),
        "plain_utf16": mime(head("text/plain; charset=utf-16", "base64"),
                            b64(LONG.encode("utf-16"))),
        "html_big_head": mime(head("text/html; charset=utf-8", "quoted-printable"),
                              quopri.encodestring(HTML.encode())),
        "html_base64_no_head": mime(head("text/html; charset=utf-8", "base64"),
                                    b64(HTML.replace(STYLE, "").encode())),
        # No charset: UTF-8 while it is valid, Windows-1252 once a byte is not.
        "no_charset_8bit_latin1_late": mime(head("text/plain", "8bit"), "Grüße, ".encode()
                                            + b"word " * 3000 + b"\r\nfin\xe9\r\n"),
        "no_charset_ascii_long": mime(head("text/plain", "7bit"), b"word " * 3000),
        "one_long_word": mime(head("text/plain; charset=us-ascii"), b"x" * 9000 + b" end"),
        "alternative_blank_plain": multipart("alternative", [
            ("Content-Type: text/plain; charset=utf-8", b"\r\n" * 3000),
            ("Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: base64",
             b64(HTML.encode())),
        ]),
        "mixed_two_texts": multipart("mixed", [
            ("Content-Type: text/plain; charset=utf-8", b"Short first part."),
            ("Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64",
             b64(utf8)),
            ("Content-Type: application/pdf; name=a.pdf\nContent-Transfer-Encoding: base64\n"
             "Content-Disposition: attachment; filename=a.pdf",
             b64(b"%PDF-" + bytes(range(256)) * 9)),
        ]),
        "calendar_attached_and_big_attachment": multipart("mixed", [
            ("Content-Type: text/plain; charset=utf-8", utf8),
            ("Content-Type: text/calendar; charset=utf-8; method=REQUEST; name=invite.ics\n"
             "Content-Disposition: attachment; filename=invite.ics",
             b"BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nSUMMARY:Sync\r\n"
             b"DTSTART:20261130T090000Z\r\nDTEND:20261130T093000Z\r\nEND:VEVENT\r\n"
             b"END:VCALENDAR"),
            ("Content-Type: application/octet-stream; name=big.bin\n"
             "Content-Transfer-Encoding: base64\nContent-Disposition: attachment; filename=big.bin",
             b64(bytes(range(256)) * 6000)),
            ("Content-Type: image/png; name=logo.png\nContent-Transfer-Encoding: base64\n"
             "Content-Disposition: inline; filename=logo.png", b64(b"\x89PNG" + b"\0" * 900)),
        ]),
    }


GENERATED = generated()


# -- tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("config", list(FOLDERS), ids=list(FOLDERS))
def test_corpus_summaries_equal_the_whole_message_summaries(
    session: IMAPClient, config: str
) -> None:
    uids = append_all(session, [p.read_bytes() for p in CORPUS])
    check_equivalence(session, uids, [p.stem for p in CORPUS], FOLDERS[config])


@pytest.mark.parametrize("config", ["default", "include_body", "short_preview"])
def test_long_and_tricky_text_parts_give_the_same_summaries(
    session: IMAPClient, config: str, items: list[list[str]]
) -> None:
    uids = append_all(session, list(GENERATED.values()))
    check_equivalence(session, uids, list(GENERATED), FOLDERS[config])
    sent = [i for batch in items for i in batch]
    assert not any(i in ("BODY.PEEK[]", "BODY[]") for i in sent), items  # none went whole
    assert all("PEEK" in i or i in ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "BODYSTRUCTURE")
               for i in sent)
    if config != "include_body":
        assert any("<0." in i for i in sent)  # previews came from prefixes


def test_include_body_of_the_fetch_command_overrides_the_folder(session: IMAPClient) -> None:
    uids = append_all(session, [GENERATED["html_big_head"], GENERATED["mixed_two_texts"]])
    recorder = check_equivalence(session, uids, ["html", "mixed"], INBOX, include_body=True)
    bodies = [m["body"] for m in recorder.messages()]
    assert "Para 399" in bodies[0] and bodies[1].startswith("Short first part.")


def test_a_backlog_takes_a_few_fetch_commands_in_uid_order(
    session: IMAPClient, items: list[list[str]]
) -> None:
    simple = [mime(head("text/plain; charset=utf-8"), f"Message {i}. ".encode() * (i % 50 + 1))
              for i in range(240)]
    with_pdf = [GENERATED["mixed_two_texts"]] * 10
    uids = append_all(session, simple[:120] + with_pdf + simple[120:])
    recorder, results = publish(session, uids)
    assert [r.uid for r in results] == uids
    assert [m["uid"] for m in recorder.messages()] == uids
    # 2 metadata FETCHes (200 UIDs each); text parts: one FETCH per distinct list of
    # parts and batch; the PDFs come with their messages' texts.
    assert len(items) <= 8, items
    assert len(recorder.attachments()) == 10


def test_an_empty_type_list_publishes_no_attachment_part_wise(session: IMAPClient) -> None:
    folder = dataclasses.replace(INBOX, attachment_types=())
    uids = append_all(session, [(MAIL / "mixed_pdf.eml").read_bytes(),
                                GENERATED["mixed_two_texts"]])
    recorder = check_equivalence(session, uids, ["mixed_pdf", "mixed_two_texts"], folder)
    assert recorder.attachments() == {}
    skipped = [a["skipped"] for m in recorder.messages() for a in m["attachments"]]
    assert skipped == ["type", "type", "type"]


def test_fetching_never_sets_seen(session: IMAPClient) -> None:
    uids = append_all(session, [p.read_bytes() for p in CORPUS] + list(GENERATED.values()))
    publish(session, uids, FOLDERS["inline_small_limit"], include_body=True)
    flags = session.get_flags(uids)
    assert not any(b"\\Seen" in f for f in flags.values())


def test_nested_messages_are_fetched_whole_and_summarised_as_before(
    session: IMAPClient, items: list[list[str]]
) -> None:
    uids = append_all(session, [(MAIL / "forwarded.eml").read_bytes(),
                                (MAIL / "plain.eml").read_bytes()])
    check_equivalence(session, uids, ["forwarded", "plain"], INBOX)
    whole = [batch for batch in items if "BODY.PEEK[]" in batch]
    assert len(whole) == 1


def test_an_unreadable_bodystructure_falls_back_to_whole_messages(
    session: IMAPClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    uids = append_all(session, [p.read_bytes() for p in CORPUS[:5]])
    real = partfetch.imap_fetch

    def broken(client: IMAPClient, uids_: Any, wanted: Any) -> Any:
        if b"BODYSTRUCTURE" in wanted:
            raise ProtocolError("unexpected token")
        return real(client, uids_, wanted)

    monkeypatch.setattr(partfetch, "imap_fetch", broken)
    check_equivalence(session, uids, [p.stem for p in CORPUS[:5]], INBOX)


def test_an_expunged_uid_yields_no_summary(session: IMAPClient) -> None:
    uids = append_all(session, [(MAIL / "plain.eml").read_bytes()])
    recorder, results = publish(session, [uids[0], uids[0] + 50])
    assert [(r.uid, r.payload is None) for r in results] == [(uids[0], False),
                                                              (uids[0] + 50, True)]
    assert len(recorder.messages()) == 1


def test_big_parts_fetched_in_pieces_decode_like_whole_ones(
    session: IMAPClient, items: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shrunk limits: every attachment is "big", fetched in 999-byte partial FETCHes."""
    monkeypatch.setattr(partfetch, "BIG_PART", 100)
    monkeypatch.setattr(fetch, "BIG_PART", 100)
    monkeypatch.setattr(partfetch, "CHUNK", 999)
    raws = [(MAIL / f"{name}.eml").read_bytes() for name in ("outlook_html", "smime_signed")]
    uids = append_all(session, [*raws, GENERATED["calendar_attached_and_big_attachment"],
                                GENERATED["mixed_two_texts"]])
    check_equivalence(session, uids, ["outlook_html", "smime_signed", "calendar", "mixed"],
                      INBOX)
    pieces = [i for batch in items for i in batch if i.endswith(".999>")]
    assert any(i.endswith("<999.999>") for i in pieces)  # really in pieces


def test_an_abandoned_publish_stops_its_read_ahead_and_frees_the_connection(
    session: IMAPClient,
) -> None:
    """The watcher stops consuming (the broker went away, shutdown): the read-ahead thread
    ends before the generator is closed, and the IMAP connection is idle and usable."""
    uids = append_all(session, [p.read_bytes() for p in CORPUS] * 8)
    publisher = fetch.MessagePublisher(account=Account(), folder=INBOX,  # type: ignore[arg-type]
                                       mqtt=Recorder(), topics=Topics("o2m"))  # type: ignore[arg-type]
    batches = publisher.publish_batches(session, uids, server_name="INBOX", uidvalidity=7)
    first = next(batches)
    assert first[0].uid == uids[0] and first[-1].uid < uids[-1]  # more to come
    batches.close()
    assert not [t.name for t in threading.enumerate() if t.name.endswith("-fetch")]
    assert session.noop()[0] is not None
    again = session.fetch([uids[-1]], ["FLAGS"])
    assert uids[-1] in again


# -- forwarded mail above WHOLE_MAX: an attachment, memory bounded ------------------------------


def forwarded_mail(inner_attachment: bytes) -> bytes:
    inner = make_message(subject="Quarterly nümbers", text="inner text",
                         attachments=[("figures.bin", "application/octet-stream",
                                       inner_attachment)])
    outer = email.message.EmailMessage(policy=email.policy.SMTP)
    outer["From"], outer["To"], outer["Subject"] = "bob@example.com", "me@contoso.com", "FW: Q"
    outer.set_content("See below.")
    outer.add_attachment(email.message_from_bytes(inner, policy=email.policy.SMTP))
    return outer.as_bytes()


def test_a_big_forwarded_mail_is_an_attachment_skipped_unfetched_when_too_large(
    session: IMAPClient, items: list[list[str]],
) -> None:
    raw = forwarded_mail(random.Random(3).randbytes(12_000_000))  # ~16 MB encoded
    assert len(raw) > partfetch.WHOLE_MAX
    uids = append_all(session, [raw])
    recorder, results = publish(session, uids)
    payload = results[0].payload
    assert payload is not None and payload["preview"] == "See below."
    assert payload["attachments"] == [{
        "index": 0, "filename": "Quarterly nümbers.eml", "content_type": "message/rfc822",
        "size": payload["attachments"][0]["size"], "inline": False, "topic": None,
        "skipped": "too_large", "subject": "Quarterly nümbers",
    }]
    assert abs(payload["attachments"][0]["size"] - len(raw)) < 2000
    sent = [item for fetch_items in items for item in fetch_items]
    assert "BODY.PEEK[2.HEADER.FIELDS (SUBJECT)]" in sent
    assert not [i for i in sent if i.startswith(("BODY.PEEK[]", "BODY.PEEK[2]"))], sent
    assert recorder.attachments() == {}


def test_a_big_forwarded_mail_is_published_as_its_bytes_within_the_limit(
    session: IMAPClient,
) -> None:
    raw = forwarded_mail(random.Random(4).randbytes(9_000_000))
    uids = append_all(session, [raw])
    folder = dataclasses.replace(INBOX, max_attachment_bytes=30_000_000)
    recorder, results = publish(session, uids, folder)
    payload = results[0].payload
    assert payload is not None
    entry = payload["attachments"][0]
    assert (entry["topic"], entry["subject"]) == (f"{PREFIX}/{uids[0]}/0", "Quarterly nümbers")
    part = session.fetch(uids, ["BODY.PEEK[2]"])[uids[0]][b"BODY[2]"]
    data, props = recorder.attachments()[entry["topic"]]
    assert data == part and entry["size"] == len(part)
    assert props["filename"] == "Quarterly nümbers.eml"
    inner = email.message_from_bytes(data, policy=email.policy.default)
    assert str(inner["Subject"]) == "Quarterly nümbers"


def published_the_big_way(session: IMAPClient, monkeypatch: pytest.MonkeyPatch,
                          name: str) -> tuple[Recorder, list[int], dict[str, Any]]:
    """The corpus mail `name` published as if it were over WHOLE_MAX (message/* parts as
    attachments); its summary must be the whole-message one but for attachment sizes and
    topics (the bytes are the server's part here, a re-serialization there)."""
    monkeypatch.setattr(partfetch, "WHOLE_MAX", 0)
    uids = append_all(session, [(MAIL / f"{name}.eml").read_bytes()])
    recorder, results = publish(session, uids)
    want = reference(session, uids, INBOX)[uids[0]].payload
    got = results[0].payload
    assert got is not None
    strip = ("size", "topic")
    assert ({k: v for k, v in got.items() if k != "attachments"}
            == {k: v for k, v in want.items() if k != "attachments"})
    assert ([{k: v for k, v in a.items() if k not in strip} for a in got["attachments"]]
            == [{k: v for k, v in a.items() if k not in strip} for a in want["attachments"]])
    return recorder, uids, got


def test_a_forwarded_mail_as_an_attachment_lists_what_the_whole_parse_lists(
    session: IMAPClient, monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, _, got = published_the_big_way(session, monkeypatch, "forwarded")
    assert "message/rfc822" in [a["content_type"] for a in got["attachments"]]


def test_a_big_bounce_lists_its_report_parts_like_the_whole_parse(
    session: IMAPClient, items: list[list[str]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """message/delivery-status is an attachment with the part's bytes; nothing is
    fetched whole."""
    recorder, uids, got = published_the_big_way(session, monkeypatch, "bounce")
    assert not [i for batch in items for i in batch if i.startswith("BODY.PEEK[]")]
    status = got["attachments"][0]
    assert status["content_type"] == "message/delivery-status"
    part = session.fetch(uids, ["BODY.PEEK[2]"])[uids[0]][b"BODY[2]"]
    assert recorder.attachments()[status["topic"]][0] == part


# -- servers that answer partial fetches their own way (Exchange) ---------------------------------

_PARTIAL = re.compile(r"^(BODY\.PEEK\[[^\]]*\])<(\d+)\.\d+>$")


def _exchange_like(real: Any, how: str) -> Any:
    """`imap_fetch` as a server that answers a partial fetch with the whole part: from
    origin 0 under `BODY[n]` ("whole") or not at all ("missing"); from any origin under
    `BODY[n]<origin>`, more octets than asked ("oversize", what made a client that kept
    asking for the next piece loop for ever)."""

    def fetch_(client: IMAPClient, uids: Any, wanted: Any) -> Any:
        names = [i.decode() if isinstance(i, bytes) else i for i in wanted]
        partial = {m[1]: m[2] for m in map(_PARTIAL.match, names)
                   if m and (how == "oversize" or m[2] == "0")}
        response = real(client, uids, [_PARTIAL.sub(r"\1", n) if _PARTIAL.sub(r"\1", n)
                                       in partial else n for n in names])
        for data in response.values():
            for item, origin in partial.items():
                key = item.replace(".PEEK", "").encode()
                if how == "oversize":
                    data[key + b"<%s>" % origin.encode()] = data.pop(key)
                elif how == "missing":
                    del data[key]
        return response

    return fetch_


@pytest.mark.parametrize("how", ["whole", "oversize", "missing"])
def test_partial_fetches_answered_with_whole_parts_or_not_at_all_still_summarise_right(
    session: IMAPClient, monkeypatch: pytest.MonkeyPatch, how: str,
) -> None:
    """Exchange has been seen answering a partial FETCH with the whole part (a client that
    kept asking for the next piece never finished: jakartaee/mail-api#370). Whole parts
    count as whole; a part not sent at all sends the message down the whole path."""
    monkeypatch.setattr(partfetch, "BIG_PART", 100)  # every attachment "big": in pieces
    monkeypatch.setattr(fetch, "BIG_PART", 100)
    monkeypatch.setattr(partfetch, "CHUNK", 50)  # of 50 octets: every whole part is longer
    monkeypatch.setattr(partfetch, "imap_fetch", _exchange_like(partfetch.imap_fetch, how))
    names = ["outlook_html", "mixed_pdf", "alternative", "plain"]
    uids = append_all(session, [(MAIL / f"{name}.eml").read_bytes() for name in names])
    check_equivalence(session, uids, names, INBOX)
