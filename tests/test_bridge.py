"""The bridge end to end on the rig: Dovecot -> bridge -> Mosquitto -> bridge -> Dovecot."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from rig.mqttsub import Collector
from rig.pki import make_client_certificate
from rig.samples import make_message
from tests.conftest import wait_online


@pytest.fixture(params=["secret", "certificate"])
def credential(request: pytest.FixtureRequest, idp: Any, tenant: str, mailbox: str,
               tmp_path: Path) -> dict[str, Any]:
    """Config keys for an app registered with a client secret or a client certificate."""
    if request.param == "secret":
        app = idp.register_app(tenant, secret=f"s3cr3t-{uuid.uuid4().hex}", mailboxes=[mailbox])
        return {"client_id": app.client_id, "secret": app.secrets[0]}
    cert = make_client_certificate(tmp_path, "app")
    app = idp.register_app(tenant, certificates=[cert.cert_pem], mailboxes=[mailbox])
    return {"client_id": app.client_id, "certificate_file": cert.cert_file,
            "private_key_file": cert.key_file}


def test_new_mail_is_published_and_mark_read_sets_seen(
    credential: dict[str, Any], mode: dict[str, Any], make_bridge: Any, collector: Collector,
    dovecot: Any, mailbox: str, base_topic: str,
) -> None:
    bridge = make_bridge(credential, **mode).start()
    wait_online(collector, base_topic)
    raw = make_message(subject="=?utf-8?q?Paket_f=C3=BCr_dich?=",
                       sender="Alice <alice@example.com>", to=mailbox,
                       text="Your parcel arrives today.", message_id="<p1@example.com>")
    dovecot.deliver(mailbox, raw)

    msg = collector.wait_topic(f"{base_topic}/home/inbox/message")[0]
    summary = msg.json()
    assert summary["subject"] == "Paket für dich"
    assert summary["from"] == {"name": "Alice", "address": "alice@example.com"}
    assert summary["message_id"] == "<p1@example.com>"
    assert summary["preview"].startswith("Your parcel arrives today.")
    assert summary["seen"] is False and summary["account"] == "home"
    assert summary["folder"] == "INBOX" and summary["uidvalidity"] > 0
    uid = summary["uid"]
    assert "\\Seen" not in dovecot.flags(mailbox)[uid]  # fetching never sets \Seen

    collector.wait_for(lambda m: m.topic == f"{base_topic}/home/inbox/state"
                       and m.json()["unread"] == 1)
    collector.publish(f"{base_topic}/home/command",
                      f'{{"action": "mark_read", "folder": "INBOX", "uids": [{uid}], "id": "r1"}}')
    reply = collector.wait_topic(f"{base_topic}/home/command/result")[0].json()
    assert reply == {"id": "r1", "action": "mark_read", "status": "ok", "uids": [uid]}
    assert "\\Seen" in dovecot.flags(mailbox)[uid]
    collector.wait_for(lambda m: m.topic == f"{base_topic}/home/inbox/state"
                       and m.json()["unread"] == 0, timeout=30)
    assert bridge.stop() == 0
    log = bridge.log()
    assert "AUTHENTICATE" in log  # debug logging really covered the login
    if "secret" in credential:
        secrets = [credential["secret"]]
    else:  # the private key, in whole or any of its lines
        pem = Path(credential["private_key_file"]).read_text()
        secrets = ["PRIVATE KEY", *(line for line in pem.splitlines() if "-----" not in line)]
    assert [s for s in secrets if s in log] == []
    assert "eyJ" not in log  # no JWT (access token, client assertion) in any form


def test_restart_republishes_nothing_acknowledged_and_misses_nothing(
    mode: dict[str, Any], make_bridge: Any, collector: Collector, dovecot: Any, mailbox: str,
    base_topic: str, idp: Any, tenant: str,
) -> None:
    app = idp.register_app(tenant, secret="first-secret-value", mailboxes=[mailbox])
    cred = {"client_id": app.client_id, "secret": "first-secret-value"}
    bridge = make_bridge(cred, **mode).start()
    wait_online(collector, base_topic)
    for i in range(3):
        dovecot.deliver(mailbox, make_message(subject=f"before {i}", to=mailbox))
    collector.wait_topic(f"{base_topic}/home/inbox/message", count=3)
    assert bridge.stop() == 0
    collector.wait_for(lambda m: m.topic == f"{base_topic}/bridge/state"
                       and m.payload == b"offline")

    for i in range(2):
        dovecot.deliver(mailbox, make_message(subject=f"while down {i}", to=mailbox))
    make_bridge(cred, **mode).start()
    subjects = [m.json()["subject"] for m in
                collector.wait_topic(f"{base_topic}/home/inbox/message", count=5, timeout=30)]
    assert subjects == ["before 0", "before 1", "before 2", "while down 0", "while down 1"]
    dovecot.deliver(mailbox, make_message(subject="after", to=mailbox))
    collector.wait_topic(f"{base_topic}/home/inbox/message", count=6)
    subjects = [m.json()["subject"] for m in collector.on(f"{base_topic}/home/inbox/message")]
    assert subjects[-1] == "after" and len(subjects) == 6


def test_first_start_publishes_old_mail_only_with_backfill(
    make_bridge: Any, collector: Collector, dovecot: Any, mailbox: str, base_topic: str,
    idp: Any, tenant: str,
) -> None:
    app = idp.register_app(tenant, secret="backfill-secret", mailboxes=[mailbox])
    for i in range(4):
        dovecot.deliver(mailbox, make_message(subject=f"old {i}", to=mailbox))
    cred = {"client_id": app.client_id, "secret": "backfill-secret"}
    make_bridge(cred, folders=[{"name": "INBOX", "backfill": 2}]).start()
    wait_online(collector, base_topic)
    msgs = collector.wait_topic(f"{base_topic}/home/inbox/message", count=2)
    assert [m.json()["subject"] for m in msgs] == ["old 2", "old 3"]
    state = collector.wait_topic(f"{base_topic}/home/inbox/state")[-1].json()
    assert state["total"] == 4 and state["unread"] == 4


def test_mail_read_elsewhere_updates_the_retained_unread_count(
    mode: dict[str, Any], make_bridge: Any, secret_credential: dict[str, Any],
    collector: Collector, dovecot: Any, mailbox: str, base_topic: str,
) -> None:
    make_bridge(secret_credential, **mode).start()
    wait_online(collector, base_topic)
    uid = dovecot.deliver(mailbox, make_message(subject="read me in Outlook", to=mailbox))
    state_topic = f"{base_topic}/home/inbox/state"
    collector.wait_for(lambda m: m.topic == state_topic and m.json()["unread"] == 1)
    dovecot.set_flags(mailbox, uid, ["\\Seen"])  # another client (Outlook) reads it
    state = collector.wait_for(lambda m: m.topic == state_topic and m.json()["unread"] == 0
                               and m.json()["total"] == 1, timeout=30)[0]
    assert state.retain


def test_changed_uidvalidity_resyncs_without_replaying_the_folder(
    make_bridge: Any, secret_credential: dict[str, Any], collector: Collector, dovecot: Any,
    mailbox: str, base_topic: str,
) -> None:
    for i in range(3):
        dovecot.deliver(mailbox, make_message(subject=f"old {i}", to=mailbox))
    bridge = make_bridge(secret_credential).start()
    wait_online(collector, base_topic)
    assert bridge.stop() == 0
    dovecot.set_uidvalidity(mailbox, "INBOX", 4242)  # Exchange rebuilt the folder
    make_bridge(secret_credential).start()
    collector.wait_for(lambda m: m.topic == f"{base_topic}/home/inbox/state"
                       and m.json()["uidvalidity"] == 4242)
    dovecot.deliver(mailbox, make_message(subject="new after rebuild", to=mailbox))
    msgs = collector.wait_topic(f"{base_topic}/home/inbox/message")
    assert [m.json()["subject"] for m in msgs] == ["new after rebuild"]
    assert msgs[0].json()["uidvalidity"] == 4242
