"""Every command end to end: MQTT in -> the bridge -> IMAP state on Dovecot -> the reply.

One bridge serves the whole module, with three accounts on three Dovecots:
`home` (Exchange-like, with MOVE, special-use folders, `delete` enabled), `legacy`
(no MOVE, no special-use attributes) and `strict` (neither MOVE nor UIDPLUS, `delete`
not enabled). Its poll interval is long, so state that follows a command within
seconds can only have been triggered by the command.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.enums import MQTTProtocolVersion

from rig.bridgecfg import rig_config
from rig.dovecot import EXCHANGE_CAPABILITIES, Dovecot
from rig.idp import random_secret
from rig.mailstate import snapshot
from rig.mqttsub import Collector, Received
from rig.pki import TestPKI
from rig.samples import TINY_PDF, make_message
from tests.bridgeproc import BridgeProcess
from tests.conftest import wait_online
from tests.relay import Relay, relay_tls

POLL = 300  # seconds: far longer than any wait below
ALL_COMMANDS = ["mark_read", "mark_unread", "flag", "unflag", "move", "copy", "archive",
                "delete", "mark_all_read", "refresh", "fetch"]
HOME_FOLDERS = [
    {"name": "INBOX", "topic": "inbox"},
    {"name": "INBOX/Receipts", "topic": "receipts"},
    {"name": "Deleted Items", "topic": "deleted"},
]


@dataclass
class Rig:
    """The module's bridge, its mailboxes and a client that sends commands."""

    base: str
    collector: Collector
    dovecot: Dovecot
    legacy_server: Dovecot
    strict_server: Dovecot
    home: str
    legacy: str
    strict: str
    bridge: BridgeProcess

    def results(self, account: str = "home") -> list[Received]:
        return self.collector.on(f"{self.base}/{account}/command/result")

    def send(
        self,
        payload: dict[str, Any] | bytes | str,
        *,
        account: str = "home",
        folder_topic: str | None = None,
        retain: bool = False,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
    ) -> dict[str, Any]:
        """Publish a command and return the reply it got on the result topic."""
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        topic = f"{self.base}/{account}/{folder_topic + '/' if folder_topic else ''}command"
        seen = len(self.results(account))
        self.collector.publish(topic, payload, retain=retain, response_topic=response_topic,
                               correlation_data=correlation_data)
        replies = self.collector.wait_topic(f"{self.base}/{account}/command/result",
                                            count=seen + 1)
        return replies[seen].json()

    def mark(self) -> int:
        """A position in the record: `state_after` looks only at what came later."""
        return len(self.collector.messages)

    def state_after(self, mark: int, folder_topic: str, check: Callable[[dict[str, Any]], bool],
                    account: str = "home") -> dict[str, Any]:
        """The first retained folder state published after `mark` that passes `check`."""
        topic = f"{self.base}/{account}/{folder_topic}/state"
        found = self.collector.wait_for(lambda m: m.topic == topic and check(m.json()),
                                        since=mark)
        return found[0].json()  # type: ignore[no-any-return]


def message_ids(server: Dovecot, user: str, folder: str) -> list[str]:
    """The Message-ID header of every message in a folder."""
    return [row["hdr.message-id"].strip() for row in server.fetch(user, "hdr.message-id", folder)]


def deliver(server: Dovecot, user: str, folder: str = "INBOX", *, flags: tuple[str, ...] = (),
            **kw: Any) -> tuple[int, str]:
    """Deliver a fresh message; its UID and Message-ID."""
    message_id = kw.pop("message_id", None) or f"<{uuid.uuid4().hex}@example.com>"
    uid = server.deliver(user, make_message(to=user, message_id=message_id, **kw), folder,
                         flags=flags)
    return uid, message_id


@pytest.fixture(scope="module")
def rig(idp: Any, pki: Any, dovecot: Dovecot, mosquitto: Any,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    workdir = tmp_path_factory.mktemp("commands")
    tenant = idp.add_tenant()
    home, legacy, strict = (f"{name}-{uuid.uuid4().hex[:8]}@contoso.test"
                            for name in ("home", "legacy", "strict"))
    secret = random_secret()
    app = idp.register_app(tenant, secret=secret, mailboxes=[home, legacy, strict])
    no_move = EXCHANGE_CAPABILITIES.replace(" MOVE", "")
    legacy_server = Dovecot(pki, idp.introspection_url, workdir / "legacy",
                            capabilities=no_move, special_folders={})
    strict_server = Dovecot(pki, idp.introspection_url, workdir / "strict",
                            capabilities=no_move.replace(" UIDPLUS", ""), special_folders={})
    with legacy_server, strict_server:
        for name in ("INBOX/Receipts", "INBOX/Paid Bills", "Deleted Items", "Archive"):
            dovecot.create_folder(home, name)
        for name in ("INBOX/Receipts", "Deleted Items", "Archive"):
            legacy_server.create_folder(legacy, name)
        strict_server.create_folder(strict, "Archive")
        base = f"o2m-{uuid.uuid4().hex[:8]}"
        config = rig_config(
            authority=idp.authority, ca_file=pki.ca_file, imap_port=dovecot.port,
            mqtt_port=mosquitto.port, tenant_id=tenant, client_id=app.client_id, secret=secret,
            mailbox=home, state_dir=workdir / "state", base_topic=base, poll_interval=POLL,
            folders=HOME_FOLDERS, extra_account={"commands": ALL_COMMANDS},
        )
        first = config["accounts"][0]
        config["accounts"] += [
            {**first, "name": "legacy", "mailbox": legacy, "imap_port": legacy_server.port,
             "folders": [{"name": "INBOX"}]},
            {**first, "name": "strict", "mailbox": strict, "imap_port": strict_server.port,
             "folders": [{"name": "INBOX"}], "commands": ["mark_read", "move", "copy", "delete"]},
        ]
        bridge = BridgeProcess(workdir, config)
        with Collector("127.0.0.1", mosquitto.port, [f"{base}/#"]) as collector:
            bridge.start()
            try:
                collector.wait_for(lambda m: m.topic == f"{base}/bridge/state"
                                   and m.payload == b"online", timeout=30)
                yield Rig(base, collector, dovecot, legacy_server, strict_server, home, legacy,
                          strict, bridge)
            finally:
                bridge.stop()


# -- flags ----------------------------------------------------------------------------------


def test_mark_read_and_mark_unread_change_seen_and_the_state_follows(rig: Rig) -> None:
    a, _ = deliver(rig.dovecot, rig.home)
    b, _ = deliver(rig.dovecot, rig.home)
    uidvalidity = rig.dovecot.status(rig.home)["uidvalidity"]
    mark = rig.mark()
    reply = rig.send({"action": "mark_read", "folder": "INBOX", "uids": [b, a], "id": "r1",
                      "uidvalidity": uidvalidity})
    assert reply == {"id": "r1", "action": "mark_read", "status": "ok", "uids": [a, b]}
    flags = rig.dovecot.flags(rig.home)
    assert "\\Seen" in flags[a] and "\\Seen" in flags[b]
    unread = rig.dovecot.status(rig.home)["unseen"]
    rig.state_after(mark, "inbox", lambda s: s["unread"] == unread)

    mark = rig.mark()
    reply = rig.send({"action": "mark_unread", "folder": "INBOX", "uid": a})
    assert reply == {"action": "mark_unread", "status": "ok", "uids": [a]}
    assert "\\Seen" not in rig.dovecot.flags(rig.home)[a]
    rig.state_after(mark, "inbox", lambda s: s["unread"] == unread + 1)


def test_flag_and_unflag_by_message_id_touch_only_that_exact_message(rig: Rig) -> None:
    target, message_id = deliver(rig.dovecot, rig.home, message_id="<flag-1@example.com>")
    # Contains the Message-ID as a substring: SEARCH HEADER would match it too.
    lookalike, _ = deliver(rig.dovecot, rig.home, message_id="<xflag-1@example.com.evil>")
    reply = rig.send({"action": "flag", "folder": "INBOX", "message_id": message_id})
    assert reply == {"action": "flag", "status": "ok", "uids": [target]}
    flags = rig.dovecot.flags(rig.home)
    assert "\\Flagged" in flags[target] and "\\Flagged" not in flags[lookalike]

    reply = rig.send({"action": "unflag", "message_id": "flag-1@example.com"},
                     folder_topic="inbox")
    assert reply["status"] == "ok" and reply["uids"] == [target]
    assert "\\Flagged" not in rig.dovecot.flags(rig.home)[target]


def test_mark_all_read_from_a_home_assistant_button_reads_the_whole_folder(rig: Rig) -> None:
    for _ in range(3):
        deliver(rig.dovecot, rig.home, "INBOX/Receipts")
    unread = sorted(u for u, f in rig.dovecot.flags(rig.home, "INBOX/Receipts").items()
                    if "\\Seen" not in f)
    mark = rig.mark()
    reply = rig.send(b"mark_all_read", folder_topic="receipts")
    assert reply == {"action": "mark_all_read", "status": "ok", "uids": unread}
    assert rig.dovecot.status(rig.home, "INBOX/Receipts")["unseen"] == 0
    rig.state_after(mark, "receipts", lambda s: s["unread"] == 0 and s["total"] >= 3)


# -- moving messages ------------------------------------------------------------------------


def test_move_to_a_nested_folder_replies_with_the_source_uids(rig: Rig) -> None:
    uid, message_id = deliver(rig.dovecot, rig.home)
    mark = rig.mark()
    reply = rig.send({"action": "move", "folder": "INBOX", "uid": uid, "to": "INBOX/Receipts",
                      "id": 5})
    assert reply == {"id": 5, "action": "move", "status": "ok", "uids": [uid],
                     "to": "INBOX/Receipts"}
    assert uid not in rig.dovecot.uids(rig.home)
    assert message_id in message_ids(rig.dovecot, rig.home, "INBOX/Receipts")
    total = rig.dovecot.status(rig.home, "INBOX/Receipts")["messages"]
    rig.state_after(mark, "receipts", lambda s: s["total"] == total)  # the target follows too


def test_copy_to_a_folder_with_a_space_keeps_the_original(rig: Rig) -> None:
    uid, message_id = deliver(rig.dovecot, rig.home)
    reply = rig.send({"action": "copy", "folder": "INBOX", "uids": [uid],
                      "to": "INBOX/Paid Bills"})
    assert reply == {"action": "copy", "status": "ok", "uids": [uid], "to": "INBOX/Paid Bills"}
    assert uid in rig.dovecot.uids(rig.home)
    assert message_ids(rig.dovecot, rig.home, "INBOX/Paid Bills").count(message_id) == 1


def test_archive_moves_to_the_folder_marked_archive(rig: Rig) -> None:
    uid, message_id = deliver(rig.dovecot, rig.home, "INBOX/Receipts")
    reply = rig.send({"action": "archive", "uid": uid}, folder_topic="receipts")
    assert reply == {"action": "archive", "status": "ok", "uids": [uid], "to": "Archive"}
    assert uid not in rig.dovecot.uids(rig.home, "INBOX/Receipts")
    assert message_id in message_ids(rig.dovecot, rig.home, "Archive")


def test_delete_moves_to_deleted_items_whose_state_follows(rig: Rig) -> None:
    uid, message_id = deliver(rig.dovecot, rig.home)
    mark = rig.mark()
    reply = rig.send({"action": "delete", "folder": "INBOX", "uid": uid})
    assert reply == {"action": "delete", "status": "ok", "uids": [uid], "to": "Deleted Items"}
    assert uid not in rig.dovecot.uids(rig.home)
    assert message_id in message_ids(rig.dovecot, rig.home, "Deleted Items")
    total = rig.dovecot.status(rig.home, "Deleted Items")["messages"]
    rig.state_after(mark, "deleted", lambda s: s["total"] == total)


def test_delete_in_deleted_items_needs_expunge_and_removes_only_those_uids(rig: Rig) -> None:
    doomed, _ = deliver(rig.dovecot, rig.home, "Deleted Items")
    # Another client's message marked \Deleted but not expunged: a bare EXPUNGE would take it.
    bystander, _ = deliver(rig.dovecot, rig.home, "Deleted Items", flags=("\\Deleted",))
    before = snapshot(rig.dovecot, rig.home)
    reply = rig.send({"action": "delete", "folder": "Deleted Items", "uid": doomed})
    assert reply["status"] == "error"
    assert reply["error"] == ("the messages are already in Deleted Items: send \"expunge\": "
                              "true to delete them permanently")
    assert snapshot(rig.dovecot, rig.home) == before

    reply = rig.send({"action": "delete", "folder": "Deleted Items", "uid": doomed,
                      "expunge": True})
    assert reply == {"action": "delete", "status": "ok", "uids": [doomed]}
    flags = rig.dovecot.flags(rig.home, "Deleted Items")
    assert doomed not in flags and "\\Deleted" in flags[bystander]


# -- fetch and refresh ----------------------------------------------------------------------


def test_fetch_republishes_summary_attachment_and_body_without_setting_seen(rig: Rig) -> None:
    uid, _ = deliver(rig.dovecot, rig.home, text="The invoice is attached.",
                     attachments=[("inv.pdf", "application/pdf", TINY_PDF)])
    reply = rig.send({"action": "fetch", "folder": "INBOX", "uids": [uid], "include_body": True})
    assert reply == {"action": "fetch", "status": "ok", "uids": [uid]}
    summaries = rig.collector.wait_for(
        lambda m: m.topic == f"{rig.base}/home/inbox/message" and m.json()["uid"] == uid
        and "body" in m.json())
    assert summaries[0].json()["body"].startswith("The invoice is attached.")
    attachment = rig.collector.wait_topic(f"{rig.base}/home/inbox/attachment/{uid}/0")[0]
    assert attachment.payload == TINY_PDF
    assert "\\Seen" not in rig.dovecot.flags(rig.home)[uid]


def test_refresh_publishes_new_mail_now_instead_of_at_the_next_poll(rig: Rig) -> None:
    uid, _ = deliver(rig.dovecot, rig.home, subject="arrived between polls")
    reply = rig.send(b"refresh")
    assert reply == {"action": "refresh", "status": "ok", "uids": []}
    rig.collector.wait_for(lambda m: m.topic == f"{rig.base}/home/inbox/message"
                           and m.json()["uid"] == uid)


# -- replies --------------------------------------------------------------------------------


def test_reply_also_goes_to_the_response_topic_with_the_correlation_data(rig: Rig) -> None:
    uid, _ = deliver(rig.dovecot, rig.home)
    response_topic = f"{rig.base}/replies/{uuid.uuid4().hex[:6]}"
    reply = rig.send({"action": "flag", "folder": "INBOX", "uid": uid}, folder_topic=None,
                     response_topic=response_topic, correlation_data=b"\x00req-7\xff")
    response = rig.collector.wait_topic(response_topic)[0]
    assert response.json() == reply == {"action": "flag", "status": "ok", "uids": [uid]}
    assert response.correlation_data == b"\x00req-7\xff"


def test_error_reply_also_goes_to_the_response_topic(rig: Rig) -> None:
    response_topic = f"{rig.base}/replies/{uuid.uuid4().hex[:6]}"
    reply = rig.send(b"{oops", response_topic=response_topic, correlation_data=b"c1")
    response = rig.collector.wait_topic(response_topic)[0]
    assert response.json() == reply and reply["status"] == "error"
    assert response.correlation_data == b"c1"


def test_every_command_of_a_burst_gets_exactly_one_reply_in_order(rig: Rig) -> None:
    uid, _ = deliver(rig.dovecot, rig.home)
    seen = len(rig.results())
    count = 120
    for i in range(count):
        action = "flag" if i % 2 == 0 else "unflag"
        rig.collector.publish(f"{rig.base}/home/command", json.dumps(
            {"action": action, "folder": "INBOX", "uid": uid, "id": i}))
    replies = [m.json() for m in rig.collector.wait_topic(
        f"{rig.base}/home/command/result", count=seen + count, timeout=30)[seen:]]
    assert sorted(r["id"] for r in replies) == list(range(count))
    done = [r["id"] for r in replies if r["status"] == "ok"]
    assert done == sorted(done)  # one worker, in arrival order
    assert all(r["error"].startswith("busy") for r in replies if r["status"] != "ok")


@pytest.mark.slow
def test_a_flood_beyond_the_queue_gets_busy_replies_and_every_command_one_reply(
    make_bridge: Callable[..., BridgeProcess], secret_credential: dict[str, Any],
    collector: Collector, dovecot: Dovecot, pki: TestPKI, mailbox: str, base_topic: str,
) -> None:
    """The worker is held on its first command (a relay keeps the server's answer to its
    STORE) while 249 more arrive: 100 wait in the queue, the other 149 are answered `busy`
    at once, nothing is dropped silently, and once released the worker does what was
    queued, in order."""
    uid = dovecot.deliver(mailbox, make_message(to=mailbox))
    count, queue_limit = 250, 100
    command, results = f"{base_topic}/home/command", f"{base_topic}/home/command/result"

    def publish(command_id: int | str, action: str = "flag") -> None:
        collector.publish(command, json.dumps({"action": action, "folder": "INBOX", "uid": uid,
                                               "id": command_id}))

    with Relay(dovecot.port, tls=relay_tls(pki)) as relay:
        make_bridge(secret_credential, imap_port=relay.port, poll_interval=POLL,
                    extra_account={"commands": ["flag", "unflag"]}).start()
        wait_online(collector, base_topic)
        relay.hold_on = b"UID STORE"
        publish(0)
        deadline = time.monotonic() + 30
        while not relay.count(b"UID STORE") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert relay.count(b"UID STORE") == 1  # the worker is busy with command 0
        for i in range(1, count):
            publish(i, "flag" if i % 2 == 0 else "unflag")
        # The last one is refused at once: by then each command was queued or refused.
        collector.wait_for(lambda m: m.topic == results and m.json()["id"] == count - 1)
        relay.hold_on = None
        relay.release()
        replies = [m.json() for m in collector.wait_topic(results, count=count, timeout=90)]
        publish("last")  # its reply comes after any stray one for the flood
        collector.wait_for(lambda m: m.topic == results and m.json()["id"] == "last")
    assert len(collector.on(results)) == count + 1
    assert sorted(r["id"] for r in replies) == list(range(count))
    busy = [r for r in replies if r["status"] != "ok"]
    assert [r["id"] for r in busy] == list(range(queue_limit + 1, count))
    assert all(r["error"].startswith("busy: 100 commands are waiting") for r in busy)
    assert [r["id"] for r in replies if r["status"] == "ok"] == list(range(queue_limit + 1))


# -- servers without MOVE -------------------------------------------------------------------


def test_move_without_move_copies_then_expunges_only_the_moved_uids(rig: Rig) -> None:
    server, user = rig.legacy_server, rig.legacy
    uid, message_id = deliver(server, user)
    bystander, _ = deliver(server, user, flags=("\\Deleted",))
    reply = rig.send({"action": "move", "folder": "INBOX", "uid": uid, "to": "INBOX/Receipts"},
                     account="legacy")
    assert reply == {"action": "move", "status": "ok", "uids": [uid], "to": "INBOX/Receipts"}
    flags = server.flags(user)
    assert uid not in flags and "\\Deleted" in flags[bystander]
    # imapclient refuses MOVE on a server that does not advertise it: the "ok" above
    # came from COPY + UID EXPUNGE.
    assert message_ids(server, user, "INBOX/Receipts") == [message_id]


def test_archive_and_delete_find_folders_by_name_when_none_is_marked(rig: Rig) -> None:
    server, user = rig.legacy_server, rig.legacy
    archived, archived_id = deliver(server, user)
    deleted, deleted_id = deliver(server, user)
    reply = rig.send({"action": "archive", "folder": "INBOX", "uid": archived},
                     account="legacy")
    assert reply == {"action": "archive", "status": "ok", "uids": [archived], "to": "Archive"}
    reply = rig.send({"action": "delete", "folder": "INBOX", "uid": deleted}, account="legacy")
    assert reply == {"action": "delete", "status": "ok", "uids": [deleted],
                     "to": "Deleted Items"}
    assert message_ids(server, user, "Archive") == [archived_id]
    assert message_ids(server, user, "Deleted Items") == [deleted_id]
    assert not {archived, deleted} & set(server.uids(user))


def test_move_is_refused_without_move_and_uidplus_but_copy_works(rig: Rig) -> None:
    server, user = rig.strict_server, rig.strict
    uid, message_id = deliver(server, user)
    deliver(server, user, flags=("\\Deleted",))
    before = snapshot(server, user)
    reply = rig.send({"action": "move", "folder": "INBOX", "uid": uid, "to": "Archive"},
                     account="strict")
    assert reply["status"] == "error" and "neither MOVE nor UIDPLUS" in reply["error"]
    assert snapshot(server, user) == before

    reply = rig.send({"action": "copy", "folder": "INBOX", "uid": uid, "to": "Archive"},
                     account="strict")
    assert reply == {"action": "copy", "status": "ok", "uids": [uid], "to": "Archive"}
    assert message_ids(server, user, "Archive") == [message_id]


def test_delete_with_expunge_is_refused_without_uidplus_and_changes_nothing(rig: Rig) -> None:
    """Without UIDPLUS, EXPUNGE would also remove other clients' \\Deleted messages."""
    server, user = rig.strict_server, rig.strict
    uid, _ = deliver(server, user)
    deliver(server, user, flags=("\\Deleted",))
    before = snapshot(server, user)
    reply = rig.send({"action": "delete", "folder": "INBOX", "uid": uid, "expunge": True},
                     account="strict")
    assert reply["status"] == "error" and "lacks UIDPLUS" in reply["error"], reply
    assert snapshot(server, user) == before


# -- malformed and hostile commands ---------------------------------------------------------


@dataclass(frozen=True)
class Hostile:
    """A command that must be refused: what to send, where, and the words of the error."""

    payload: Callable[[int], bytes | str] | bytes | str
    error: str
    account: str = "home"
    folder_topic: str | None = None
    retain: bool = False

    def render(self, uid: int) -> bytes | str:
        return self.payload(uid) if callable(self.payload) else self.payload


def _json(**fields: Any) -> Callable[[int], str]:
    """A JSON payload; the value "UID" stands for the victim message's UID."""
    def fill(value: Any, uid: int) -> Any:
        if isinstance(value, list):
            return [fill(v, uid) for v in value]
        return uid if value == "UID" else value

    return lambda uid: json.dumps({k: fill(v, uid) for k, v in fields.items()})


HOSTILE: dict[str, Hostile] = {
    "empty payload": Hostile(b"", "empty payload"),
    "binary garbage": Hostile(bytes(range(256)), "not UTF-8"),
    "not json": Hostile("{'action': 'mark_read'}", "not JSON"),
    "json array": Hostile(lambda uid: json.dumps([{"action": "mark_read", "uid": uid}]),
                          "must be a JSON object"),
    "too large": Hostile(b'{"id": "' + b"x" * 70_000 + b'"}', "too large"),
    "nested too deep": Hostile(b"[" * 60_000, "nested too deeply"),
    "duplicate action": Hostile(
        lambda uid: f'{{"action": "mark_read", "action": "delete", "folder": "INBOX", '
                    f'"uid": {uid}}}', "given twice"),
    "unknown field": Hostile(_json(action="mark_read", folder="INBOX", uid="UID", sql="1;--"),
                             "unknown field(s) 'sql'"),
    "unknown action": Hostile(_json(action="expunge", folder="INBOX"), "unknown action"),
    "action not a string": Hostile(_json(action=["delete"], folder="INBOX"),
                                   "'action' must be a string"),
    "disabled action": Hostile(_json(action="archive", folder="INBOX", uid="UID"),
                               "'archive' is not enabled for account 'strict'", account="strict"),
    "unknown folder": Hostile(_json(action="mark_all_read", folder="Secret"),
                              "unknown folder 'Secret'"),
    "wildcard folder": Hostile(_json(action="mark_all_read", folder="*"),
                               "unknown folder '*'"),
    "percent folder": Hostile(_json(action="mark_all_read", folder="INBOX/%"),
                              "unknown folder 'INBOX/%'"),
    "folder of another topic": Hostile(_json(action="mark_all_read", folder="INBOX"),
                                       "conflicts", folder_topic="receipts"),
    "uids as a sequence set": Hostile(_json(action="delete", folder="INBOX", uids="1:*"),
                                      "'uids' must be a list"),
    "uid as text": Hostile(_json(action="mark_read", folder="INBOX", uid="7"),
                           "'uid' must be a positive integer"),
    "negative uid": Hostile(_json(action="mark_read", folder="INBOX", uids=[-1]),
                            "positive integers only"),
    "huge uids list": Hostile(_json(action="mark_read", folder="INBOX",
                                    uids=list(range(1, 5001))), "too many uids"),
    "unknown uid": Hostile(_json(action="mark_read", folder="INBOX", uids=["UID", 999_999]),
                           "unknown uid 999999 in INBOX"),
    "stale uidvalidity": Hostile(_json(action="flag", folder="INBOX", uid="UID", uidvalidity=1),
                                 "stale uidvalidity 1 for INBOX"),
    "unknown message id": Hostile(_json(action="archive", folder="INBOX",
                                        message_id="<nobody@nowhere>"),
                                  "no message with Message-ID <nobody@nowhere> in INBOX"),
    "message id injection": Hostile(_json(action="archive", folder="INBOX",
                                          message_id="<a@b>\r\nx UID EXPUNGE 1:*"),
                                    "control characters"),
    "move to a missing folder": Hostile(_json(action="move", folder="INBOX", uid="UID",
                                              to="Deleted Item"),
                                        "'to' folder 'Deleted Item' does not exist (did you "
                                        "mean 'Deleted Items'?)"),
    "move to a wildcard": Hostile(_json(action="move", folder="INBOX", uid="UID", to="%"),
                                  "IMAP wildcards"),
    "move into its own folder": Hostile(_json(action="move", folder="INBOX", uid="UID",
                                              to="inbox"), "already in INBOX"),
    "move without uids": Hostile(_json(action="move", folder="INBOX", to="Archive"),
                                 "needs 'uid', 'uids' or 'message_id'"),
    "expunge not a boolean": Hostile(_json(action="delete", folder="INBOX", uid="UID",
                                           expunge="yes"), "'expunge' must be true or false"),
    "field of another action": Hostile(_json(action="mark_read", folder="INBOX", uid="UID",
                                             expunge=True), "'expunge' does not apply"),
    "retained command": Hostile(_json(action="mark_read", folder="INBOX", uid="UID"),
                                "retained command ignored", retain=True),
}


@pytest.fixture(scope="module")
def victim(rig: Rig) -> int:
    """An unread message in home's INBOX that every hostile command aims at."""
    uid, _ = deliver(rig.dovecot, rig.home, subject="do not touch")
    return uid


@pytest.mark.parametrize("case", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_command_gets_an_error_and_changes_nothing(
    rig: Rig, victim: int, case: Hostile
) -> None:
    mailboxes = [(rig.dovecot, rig.home), (rig.strict_server, rig.strict)]
    before = [snapshot(server, user) for server, user in mailboxes]
    reply = rig.send(case.render(victim), account=case.account, folder_topic=case.folder_topic,
                     retain=case.retain)
    if case.retain:  # take it off the broker again
        topic = f"{rig.base}/{case.account}/command"
        rig.collector.publish(topic, b"", retain=True)
    assert reply["status"] == "error"
    assert case.error in reply["error"]
    assert "uids" not in reply
    assert [snapshot(server, user) for server, user in mailboxes] == before


# -- the connection -------------------------------------------------------------------------


def test_commands_work_again_after_the_server_dropped_the_connection(rig: Rig) -> None:
    uid, _ = deliver(rig.dovecot, rig.home)
    assert rig.send({"action": "flag", "folder": "INBOX", "uid": uid})["status"] == "ok"
    rig.dovecot.kick(rig.home)  # as Exchange does when the session's token expires
    reply = rig.send({"action": "unflag", "folder": "INBOX", "uid": uid})
    assert reply == {"action": "unflag", "status": "ok", "uids": [uid]}
    assert "\\Flagged" not in rig.dovecot.flags(rig.home)[uid]


# -- MQTT 3.1.1 -----------------------------------------------------------------------------


def test_mqtt_311_replies_on_the_result_topic_and_skips_a_replayed_retained_command(
    idp: Any, pki: Any, dovecot: Dovecot, mosquitto: Any, tmp_path: Path
) -> None:
    tenant = idp.add_tenant()
    mailbox = f"v311-{uuid.uuid4().hex[:8]}@contoso.test"
    secret = random_secret()
    app = idp.register_app(tenant, secret=secret, mailboxes=[mailbox])
    uid, _ = deliver(dovecot, mailbox)
    base = f"o2m-{uuid.uuid4().hex[:8]}"
    command_topic, result_topic = f"{base}/home/command", f"{base}/home/command/result"
    config = rig_config(
        authority=idp.authority, ca_file=pki.ca_file, imap_port=dovecot.port,
        mqtt_port=mosquitto.port, tenant_id=tenant, client_id=app.client_id, secret=secret,
        mailbox=mailbox, state_dir=tmp_path / "state", base_topic=base, protocol="3.1.1",
    )
    bridge = BridgeProcess(tmp_path, config)
    with Collector("127.0.0.1", mosquitto.port, [f"{base}/#"],
                   protocol=MQTTProtocolVersion.MQTTv311) as collector:
        # Left on the broker from earlier: replayed to the bridge when it subscribes.
        stale = json.dumps({"action": "mark_read", "folder": "INBOX", "uid": uid, "id": "old"})
        collector.publish(command_topic, stale, retain=True)
        bridge.start()
        try:
            refused = collector.wait_topic(result_topic, timeout=30)[0].json()
            assert refused["id"] == "old" and "retained command ignored" in refused["error"]
            collector.wait_for(lambda m: m.topic == f"{base}/bridge/state"
                               and m.payload == b"online", timeout=30)
            assert "\\Seen" not in dovecot.flags(mailbox)[uid]
            # MQTT 3.1.1 forwards it with the retain flag cleared (§3.3.1.3): to the
            # bridge it is an empty command, answered with an error.
            collector.publish(command_topic, b"", retain=True)
            cleared = collector.wait_topic(result_topic, count=2)[1].json()
            assert cleared["error"].startswith("empty payload")

            collector.publish(command_topic, json.dumps(
                {"action": "mark_read", "folder": "INBOX", "uid": uid, "id": "live"}))
            live = collector.wait_topic(result_topic, count=3)[2]
            assert live.json() == {"id": "live", "action": "mark_read", "status": "ok",
                                   "uids": [uid]}
            assert "\\Seen" in dovecot.flags(mailbox)[uid]
            assert [m.topic for m in collector.messages if m.payload == live.payload] \
                == [result_topic]
        finally:
            assert bridge.stop() == 0
