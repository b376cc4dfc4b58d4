"""Commands without servers: parsing and validation, replies, folder choice, the queue."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from bridge.commands.actions import special_folder, uid_set
from bridge.commands.parse import (
    MAX_PAYLOAD,
    Command,
    InvalidCommand,
    parse_command,
    peek,
    reply,
    response_topic_allowed,
)
from bridge.commands.worker import CommandWorker
from bridge.config.model import DEFAULT_COMMANDS, AccountConfig, FolderConfig
from bridge.mqtt.client import Incoming

ACCOUNT = AccountConfig(
    name="home",
    mailbox="me@contoso.test",
    tenant_id="tenant",
    client_id="client",
    auth="client_secret",
    authority="https://login.microsoftonline.com",
    scope="https://outlook.office365.com/.default",
    imap_host="outlook.office365.com",
    folders=(FolderConfig("INBOX", "inbox"), FolderConfig("INBOX/Receipts", "receipts")),
    commands=(*DEFAULT_COMMANDS, "delete"),
)
NO_DELETE = AccountConfig(**{**ACCOUNT.__dict__, "commands": DEFAULT_COMMANDS})


def parse(payload: Any, folder: str | None = None, account: AccountConfig = ACCOUNT) -> Command:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return parse_command(raw, account=account, folder=folder)


# -- what is accepted ---------------------------------------------------------------------


def test_uid_and_uids_are_merged_sorted_and_deduplicated() -> None:
    cmd = parse({"action": "mark_read", "folder": "INBOX", "uid": 7, "uids": [9, 7, 3]})
    assert cmd.uids == (3, 7, 9)


def test_inbox_is_matched_case_insensitively_and_named_as_configured() -> None:
    assert parse({"action": "flag", "folder": "inbox", "uid": 1}).folder == "INBOX"


def test_folders_below_inbox_are_matched_case_insensitively_as_on_the_server() -> None:
    assert parse({"action": "flag", "folder": "inbox/receipts", "uid": 1}).folder == (
        "INBOX/Receipts")


def test_folder_topic_implies_the_folder() -> None:
    cmd = parse({"action": "mark_read", "uid": 1}, folder="INBOX/Receipts")
    assert cmd.folder == "INBOX/Receipts"


def test_folder_may_repeat_the_topic_folder() -> None:
    assert parse({"action": "mark_read", "folder": "Inbox", "uid": 1}, folder="INBOX").uids == (1,)


@pytest.mark.parametrize("payload", [b"mark_all_read", b" mark_all_read\n"])
def test_home_assistant_button_strings_are_commands(payload: bytes) -> None:
    cmd = parse(payload, folder="INBOX")
    assert (cmd.action, cmd.folder) == ("mark_all_read", "INBOX")


def test_refresh_without_folder_means_every_folder() -> None:
    assert parse(b"refresh").folder is None
    assert parse({"action": "refresh", "folder": "INBOX"}).folder == "INBOX"


def test_message_id_selects_instead_of_uids() -> None:
    cmd = parse({"action": "archive", "folder": "INBOX", "message_id": " <a@b.example> "})
    assert cmd.message_id == "<a@b.example>" and cmd.uids == ()


@pytest.mark.parametrize("command_id", ["r1", 42, {"nested": [1]}, None])
def test_any_json_id_is_kept_for_the_reply(command_id: Any) -> None:
    cmd = parse({"action": "refresh", "id": command_id})
    assert cmd.id == command_id


def test_action_specific_fields_are_read() -> None:
    move = parse({"action": "move", "folder": "INBOX", "uid": 1, "to": "Deleted Items"})
    fetch = parse({"action": "fetch", "folder": "INBOX", "uid": 1, "include_body": True})
    delete = parse({"action": "delete", "folder": "INBOX", "uid": 1, "expunge": True})
    guarded = parse({"action": "flag", "folder": "INBOX", "uid": 1, "uidvalidity": 14})
    assert move.to == "Deleted Items" and fetch.include_body is True and delete.expunge
    assert guarded.uidvalidity == 14


def test_payload_of_exactly_the_limit_is_read() -> None:
    body = json.dumps({"action": "refresh", "id": ""})
    padded = body.replace('""', '"' + "x" * (MAX_PAYLOAD - len(body)) + '"').encode()
    assert len(padded) == MAX_PAYLOAD
    assert parse(padded).action == "refresh"


# -- what is refused ----------------------------------------------------------------------

OK = {"action": "mark_read", "folder": "INBOX", "uid": 1}

# (id, payload, folder implied by the topic, account, words the error must contain)
REFUSED: list[tuple[str, Any, str | None, AccountConfig, str]] = [
    ("empty", b"", None, ACCOUNT, "empty payload"),
    ("whitespace", b" \r\n\t", None, ACCOUNT, "empty payload"),
    ("binary garbage", b"\xff\xfe\x00\x81garbage", None, ACCOUNT, "not UTF-8"),
    ("not json", b"{action: mark_read}", None, ACCOUNT, "not JSON"),
    ("truncated json", b'{"action": "mark_read"', None, ACCOUNT, "not JSON"),
    ("too large", b'{"id": "' + b"x" * MAX_PAYLOAD + b'"}', None, ACCOUNT, "too large"),
    ("nested too deep", b"[" * 50_000, None, ACCOUNT, "nested too deeply"),
    ("nan", b'{"action": "mark_read", "folder": "INBOX", "uid": NaN}', None, ACCOUNT, "NaN"),
    ("huge number", b'{"action": "refresh", "id": 1' + b"0" * 5000 + b"}", None, ACCOUNT,
     "not JSON"),
    ("array", [OK], None, ACCOUNT, "must be a JSON object"),
    ("json string", "mark_read", None, ACCOUNT, "must be a JSON object"),
    ("plain string not a button", b"mark_read", "INBOX", ACCOUNT, "not JSON"),
    ("duplicate field", b'{"action": "refresh", "action": "delete"}', None, ACCOUNT,
     "given twice"),
    ("unknown field", {**OK, "shell": "rm -rf /"}, None, ACCOUNT, "unknown field(s) 'shell'"),
    ("typo field", {**OK, "fodler": "INBOX"}, None, ACCOUNT, "did you mean 'folder'"),
    ("no action", {"folder": "INBOX"}, None, ACCOUNT, "'action' is required"),
    ("action number", {"action": 1}, None, ACCOUNT, "'action' must be a string"),
    ("unknown action", {"action": "expunge_all", "folder": "INBOX"}, None, ACCOUNT,
     "unknown action 'expunge_all'"),
    ("typo action", {**OK, "action": "mark_raed"}, None, ACCOUNT, "did you mean 'mark_read'"),
    ("disabled action", {**OK, "action": "delete"}, None, NO_DELETE,
     "'delete' is not enabled for account 'home'"),
    ("no folder", {"action": "mark_read", "uid": 1}, None, ACCOUNT, "'folder' is required"),
    ("folder list", {**OK, "folder": ["INBOX"]}, None, ACCOUNT, "'folder' must be a string"),
    ("unknown folder", {**OK, "folder": "Secret"}, None, ACCOUNT, "unknown folder 'Secret'"),
    ("wildcard folder", {**OK, "folder": "*"}, None, ACCOUNT, "unknown folder '*'"),
    ("percent folder", {**OK, "folder": "%"}, None, ACCOUNT, "unknown folder '%'"),
    ("traversal folder", {**OK, "folder": "INBOX/../Deleted Items"}, None, ACCOUNT,
     "unknown folder"),
    ("folder conflicts with topic", OK, "INBOX/Receipts", ACCOUNT, "conflicts"),
    ("uid null", {**OK, "uid": None}, None, ACCOUNT, "'uid' must be a positive integer"),
    ("uids sequence set", {"action": "flag", "folder": "INBOX", "uids": "1:*"}, None, ACCOUNT,
     "'uids' must be a list"),
    ("uids empty", {"action": "flag", "folder": "INBOX", "uids": []}, None, ACCOUNT,
     "'uids' is empty"),
    ("uid zero", {**OK, "uid": 0}, None, ACCOUNT, "positive integer"),
    ("uid negative", {**OK, "uid": -5}, None, ACCOUNT, "positive integer"),
    ("uid float", {**OK, "uid": 1.5}, None, ACCOUNT, "positive integer"),
    ("uid bool", {**OK, "uid": True}, None, ACCOUNT, "positive integer"),
    ("uid text", {**OK, "uid": "5"}, None, ACCOUNT, "positive integer"),
    ("uid above 32 bits", {**OK, "uid": 2**32}, None, ACCOUNT, "positive integer"),
    ("uids with null", {"action": "flag", "folder": "INBOX", "uids": [1, None]}, None, ACCOUNT,
     "positive integers only, not null"),
    ("too many uids", {"action": "flag", "folder": "INBOX", "uids": list(range(1, 1002))},
     None, ACCOUNT, "too many uids (1001, limit 1000)"),
    ("no selection", {"action": "mark_read", "folder": "INBOX"}, None, ACCOUNT,
     "needs 'uid', 'uids' or 'message_id'"),
    ("uids and message id", {**OK, "message_id": "<a@b>"}, None, ACCOUNT, "not both"),
    ("message id injection", {"action": "delete", "folder": "INBOX",
                              "message_id": "<a@b>\r\nA1 EXPUNGE"}, None, ACCOUNT,
     "control characters"),
    ("message id empty", {"action": "flag", "folder": "INBOX", "message_id": "<>"}, None,
     ACCOUNT, "non-empty string"),
    ("uidvalidity text", {**OK, "uidvalidity": "14"}, None, ACCOUNT, "'uidvalidity' must be"),
    ("move without to", {**OK, "action": "move"}, None, ACCOUNT, "move needs 'to'"),
    ("move to wildcard", {**OK, "action": "move", "to": "*"}, None, ACCOUNT, "IMAP wildcards"),
    ("copy to control chars", {**OK, "action": "copy", "to": "A\r\nB"}, None, ACCOUNT,
     "control characters"),
    ("to on mark_read", {**OK, "to": "Archive"}, None, ACCOUNT,
     "'to' does not apply to mark_read"),
    ("include_body on flag", {**OK, "action": "flag", "include_body": True}, None, ACCOUNT,
     "'include_body' does not apply"),
    ("uids on mark_all_read", {"action": "mark_all_read", "folder": "INBOX", "uids": [1]},
     None, ACCOUNT, "'uids' does not apply to mark_all_read"),
    ("expunge text", {**OK, "action": "delete", "expunge": "yes"}, None, ACCOUNT,
     "'expunge' must be true or false"),
    ("include_body number", {**OK, "action": "fetch", "include_body": 1}, None, ACCOUNT,
     "'include_body' must be true or false"),
]


@pytest.mark.parametrize(
    ("payload", "folder", "account", "expected"),
    [case[1:] for case in REFUSED],
    ids=[case[0] for case in REFUSED],
)
def test_malformed_command_is_refused_with_a_reason(
    payload: Any, folder: str | None, account: AccountConfig, expected: str
) -> None:
    with pytest.raises(InvalidCommand) as caught:
        parse(payload, folder=folder, account=account)
    assert expected in str(caught.value)


def test_refusal_carries_the_id_and_action_to_echo() -> None:
    with pytest.raises(InvalidCommand) as caught:
        parse({"action": "move", "folder": "INBOX", "uid": 1, "id": "m1"})
    assert (caught.value.command_id, caught.value.action) == ("m1", "move")


def test_refusal_of_an_unreadable_payload_has_no_id() -> None:
    with pytest.raises(InvalidCommand) as caught:
        parse(b"{broken")
    assert (caught.value.command_id, caught.value.action) == (None, None)


# -- replies ------------------------------------------------------------------------------


def test_ok_reply_lists_the_uids_and_echoes_the_id() -> None:
    assert json.loads(reply("r1", "mark_read", uids=(4123,))) == {
        "id": "r1", "action": "mark_read", "status": "ok", "uids": [4123]
    }


def test_move_reply_names_the_target_folder() -> None:
    body = json.loads(reply(None, "archive", uids=(1, 2), to="Archive"))
    assert body == {"action": "archive", "status": "ok", "uids": [1, 2], "to": "Archive"}


def test_error_reply_carries_the_error_and_no_uids() -> None:
    body = json.loads(reply(7, "flag", error="unknown uid 99 in INBOX"))
    assert body == {"id": 7, "action": "flag", "status": "error",
                    "error": "unknown uid 99 in INBOX"}


@pytest.mark.parametrize("payload", [b"", b"\xff", b"[1]", b'{"id": 1, "action": 5}', b"[" * 9999])
def test_peek_never_raises(payload: bytes) -> None:
    _command_id, action = peek(payload)
    assert action is None


def test_peek_reads_id_and_action() -> None:
    assert peek(b'{"id": "x", "action": "move", "bogus": 1}') == ("x", "move")


@pytest.mark.parametrize(
    ("topic", "allowed"),
    [("app/replies/42", True), ("", False), ("app/+/x", False), ("app/#", False),
     ("o2m/home/command", False), ("o2m/home/command/result", True)],
)
def test_response_topic_must_be_a_plain_topic_we_do_not_listen_on(
    topic: str, allowed: bool
) -> None:
    assert response_topic_allowed(topic, ["o2m/home/command", "o2m/home/inbox/command"]) is allowed


# -- IMAP helpers without a server --------------------------------------------------------


@pytest.mark.parametrize(
    ("uids", "expected"),
    [([1], "1"), ([3, 1, 2], "1:3"), ([1, 2, 3, 7, 9, 10], "1:3,7,9:10"), ([5, 5], "5")],
)
def test_uid_sets_are_compact(uids: list[int], expected: str) -> None:
    assert uid_set(uids) == expected


LISTING = [((b"\\HasNoChildren",), "INBOX"), ((b"\\HasNoChildren", b"\\Trash"), "Papierkorb"),
           ((), "Deleted Items"), ((), "archive")]


def test_trash_is_the_folder_marked_trash_before_one_named_deleted_items() -> None:
    assert special_folder(LISTING, b"\\Trash", "Deleted Items") == "Papierkorb"


def test_trash_falls_back_to_the_name_deleted_items() -> None:
    assert special_folder(LISTING[:1] + LISTING[2:], b"\\Trash", "Deleted Items") == "Deleted Items"


def test_archive_falls_back_to_a_name_ignoring_case() -> None:
    assert special_folder(LISTING, b"\\Archive", "Archive") == "archive"


def test_no_special_folder_when_neither_attribute_nor_name_exists() -> None:
    assert special_folder(LISTING[:1], b"\\Archive", "Archive") is None


# -- the queue in front of the worker -----------------------------------------------------


class Replies:
    def __init__(self) -> None:
        self.sent: list[tuple[Incoming, dict[str, Any]]] = []
        self.changed: list[str] = []

    def __call__(self, msg: Incoming, payload: bytes) -> None:
        self.sent.append((msg, json.loads(payload)))


def worker(replies: Replies, queue_limit: int = 100) -> CommandWorker:
    return CommandWorker(
        account=ACCOUNT, provider=None, publishers={},  # type: ignore[arg-type]
        reply=replies, on_changed=replies.changed.append, stop=threading.Event(),
        queue_limit=queue_limit,
    )


def command(payload: bytes, *, retain: bool = False) -> Incoming:
    return Incoming("o2m/home/command", payload, retain)


def test_retained_command_is_answered_with_an_error_and_never_queued() -> None:
    replies = Replies()
    w = worker(replies)
    w.submit(command(b'{"action": "refresh", "id": "old"}', retain=True), None)
    assert w._queue.empty()
    (_msg, body), = replies.sent
    assert body["status"] == "error" and body["id"] == "old" and "retain" in body["error"]


def test_empty_retained_message_clears_a_command_silently() -> None:
    replies = Replies()
    w = worker(replies)
    w.submit(command(b"", retain=True), None)
    assert w._queue.empty() and replies.sent == []


def test_flood_beyond_the_queue_limit_is_answered_busy() -> None:
    replies = Replies()
    w = worker(replies, queue_limit=3)
    for i in range(5):
        w.submit(command(json.dumps({"action": "refresh", "id": i}).encode()), None)
    assert w._queue.qsize() == 3
    assert [(b["id"], b["status"]) for _m, b in replies.sent] == [(3, "error"), (4, "error")]
    assert all(b["error"].startswith("busy") for _m, b in replies.sent)


def test_malformed_command_is_answered_without_touching_imap() -> None:
    replies = Replies()
    body = json.loads(worker(replies).handle(b'{"action": "flag", "id": 3}', None))
    assert body == {"id": 3, "action": "flag", "status": "error",
                    "error": body["error"]}
    assert "'folder' is required" in body["error"]


def test_refresh_asks_the_watchers_to_sync_without_imap() -> None:
    replies = Replies()
    w = worker(replies)
    assert json.loads(w.handle(b"refresh", None))["status"] == "ok"
    assert json.loads(w.handle(b"refresh", "INBOX/Receipts"))["status"] == "ok"
    assert replies.changed == ["*", "INBOX/Receipts"]
