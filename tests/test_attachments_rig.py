"""Attachments as MQTT payloads, end to end: Dovecot -> `outlook2mqtt run` -> Mosquitto.

Raw bytes on `B/A/F/attachment/<uid>/<index>` with the MQTT 5 user properties
`filename`, `content_type` and `size`; the summary names each attachment's topic, or says
why it was not published. A 25 MB attachment goes through with a raised limit and is
skipped (without being fetched) with the default one. Fetching never marks mail read.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import Any

from rig.dovecot import Dovecot
from rig.mosquitto import Mosquitto
from rig.mqttsub import Collector, Received
from rig.samples import TINY_PDF, make_message
from tests.bridgeproc import BridgeProcess
from tests.conftest import wait_online

BIG = 25 * 1000 * 1000
FOLDERS = [
    {"name": "INBOX", "topic": "inbox"},  # the defaults: 10 MB limit, no inline images
    {"name": "Big", "topic": "big", "max_attachment_bytes": 30_000_000,
     "inline_attachments": True, "attachment_types": ["*/*", "!text/x-shellscript"]},
]


def attachment_mail(to: str) -> tuple[bytes, list[tuple[str, str, bytes]]]:
    rng = random.Random(3)
    files = [
        ("Rechnung März.pdf", "application/pdf", TINY_PDF),
        ("data.bin", "application/octet-stream", bytes(rng.randrange(256) for _ in range(70_000))),
        ("notes.txt", "text/plain", "Zeile 1\r\nZeile 2: ünïcödé\r\n".encode()),
        ("run.sh", "text/x-shellscript", b"#!/bin/sh\necho hi\n"),
    ]
    return make_message(subject="Attachments", to=to, text="See attached.",
                        attachments=files), files


def props(msg: Received) -> dict[str, str]:
    return dict(msg.user_properties)


def test_attachments_arrive_byte_identical_with_their_user_properties(
    make_bridge: Callable[..., BridgeProcess], secret_credential: dict[str, Any],
    collector: Collector, dovecot: Dovecot, mailbox: str, base_topic: str,
) -> None:
    dovecot.create_folder(mailbox, "Big")
    make_bridge(secret_credential, folders=FOLDERS).start()
    wait_online(collector, base_topic)
    raw, files = attachment_mail(mailbox)
    uid = dovecot.deliver(mailbox, raw, folder="Big")

    summary = collector.wait_topic(f"{base_topic}/home/big/message")[0].json()
    entries = summary["attachments"]
    assert [(e["filename"], e["content_type"], e["size"]) for e in entries] == [
        (name, ctype, len(data)) for name, ctype, data in files]
    assert entries[3]["topic"] is None and entries[3]["skipped"] == "type"
    for index, (name, ctype, data) in enumerate(files[:3]):
        topic = f"{base_topic}/home/big/attachment/{uid}/{index}"
        assert entries[index]["topic"] == topic
        msg = collector.wait_topic(topic)[0]
        assert msg.payload == data
        assert props(msg) == {"filename": name, "content_type": ctype, "size": str(len(data))}
        assert not msg.retain
    # Attachments are published before the summary that names them.
    order = [m.topic for m in collector.messages if "/big/" in m.topic]
    assert order.index(f"{base_topic}/home/big/message") > order.index(entries[2]["topic"])
    assert "\\Seen" not in dovecot.flags(mailbox, "Big")[uid]


def test_a_25_mb_attachment_is_published_with_a_raised_limit_and_skipped_by_default(
    make_bridge: Callable[..., BridgeProcess], secret_credential: dict[str, Any],
    collector: Collector, dovecot: Dovecot, mailbox: str, base_topic: str,
) -> None:
    dovecot.create_folder(mailbox, "Big")
    bridge = make_bridge(secret_credential, folders=FOLDERS, idle=True, poll_interval=300)
    bridge.start()
    wait_online(collector, base_topic)
    video = random.Random(25).randbytes(BIG)
    raw = make_message(subject="Holiday video", to=mailbox, text="25 MB, enjoy",
                       attachments=[("holiday.mp4", "video/mp4", video)])
    default_uid = dovecot.deliver(mailbox, raw)
    big_uid = dovecot.deliver(mailbox, raw, folder="Big")
    del raw

    skipped = collector.wait_topic(f"{base_topic}/home/inbox/message", timeout=30)[0].json()
    entry = skipped["attachments"][0]
    assert entry["topic"] is None and entry["skipped"] == "too_large"
    assert abs(entry["size"] - BIG) <= 4  # estimated from the encoded size, not fetched
    assert skipped["has_attachments"] is True and skipped["preview"] == "25 MB, enjoy"

    topic = f"{base_topic}/home/big/attachment/{big_uid}/0"
    published = collector.wait_topic(f"{base_topic}/home/big/message", timeout=60)[0].json()
    assert published["attachments"][0]["topic"] == topic
    assert published["attachments"][0]["size"] == BIG
    msg = collector.wait_topic(topic)[0]
    assert hashlib.sha256(msg.payload).digest() == hashlib.sha256(video).digest()
    assert props(msg) == {"filename": "holiday.mp4", "content_type": "video/mp4",
                          "size": str(BIG)}
    assert not [m for m in collector.messages if m.topic.startswith(
        f"{base_topic}/home/inbox/attachment/")]

    # INBOX fetched the metadata and the text, never the 34 MB of base64.
    assert f"home/INBOX: 1 messages (UID {default_uid}-{default_uid}) in 2 FETCH" in bridge.log()
    assert "\\Seen" not in dovecot.flags(mailbox)[default_uid]
    assert "\\Seen" not in dovecot.flags(mailbox, "Big")[big_uid]
    for folder in ("inbox", "big"):
        state = collector.wait_for(lambda m, f=folder: m.topic == f"{base_topic}/home/{f}/state"
                                   and m.json()["total"] == 1)[-1].json()
        assert state["unread"] == 1


def test_an_attachment_over_the_brokers_packet_limit_is_skipped_not_resent_for_ever(
    make_bridge: Callable[..., BridgeProcess], secret_credential: dict[str, Any],
    dovecot: Dovecot, mailbox: str, base_topic: str, tmp_path: Any,
) -> None:
    """A broker with max_packet_size drops a client that sends more; paho would resend the
    same packet after every reconnect. The bridge reads the limit from CONNACK instead."""
    with Mosquitto(tmp_path / "small", extra=["max_packet_size 200000"]) as broker:
        make_bridge(secret_credential, mqtt_port=broker.port,
                    folders=[{"name": "INBOX", "max_attachment_bytes": 10_000_000}]).start()
        with Collector("127.0.0.1", broker.port, [f"{base_topic}/#"]) as sub:
            wait_online(sub, base_topic)
            big = random.Random(7).randbytes(300_000)
            dovecot.deliver(mailbox, make_message(
                subject="too big for this broker", to=mailbox,
                attachments=[("big.bin", "application/octet-stream", big),
                             ("small.pdf", "application/pdf", TINY_PDF)]))
            dovecot.deliver(mailbox, make_message(subject="next one", to=mailbox))
            msgs = sub.wait_topic(f"{base_topic}/home/inbox/message", count=2)
            first = msgs[0].json()
            assert first["subject"] == "too big for this broker"
            big_entry, small_entry = first["attachments"]
            assert big_entry["topic"] is None and big_entry["skipped"] == "too_large"
            assert small_entry["topic"] is not None
            assert msgs[1].json()["subject"] == "next one"
