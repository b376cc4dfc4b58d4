"""The sending commands (docs/sending.md): `send`, `reply`, `forward`, and `notify` (Home
Assistant's notify entity), parsed and validated into a `SendCommand`.

Pure, like `bridge.commands.parse`, whose selection rules (folder, uid, message_id) it reuses.
Every field is checked here, so hostile input (CR/LF in a header value, a malformed
address, bad base64, too many recipients) is refused before a message is built.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from email.headerregistry import Address
from typing import Any

from bridge.commands.parse import (
    MAX_NAME,
    MAX_PAYLOAD,
    Command,
    InvalidCommand,
    _folder,
    _message_id,
    _show,
    _uids,
    decode,
    parse_command,
)
from bridge.config.model import AccountConfig
from bridge.config.send import is_address
from bridge.smtp.compose import IMPORTANCE, Attachment, Content, Recipients
from bridge.smtp.outbox import MAX_RECIPIENTS

_COMMON = frozenset({"action", "id"})
_SELECTING = _COMMON | {"folder", "uid", "message_id", "uidvalidity"}
SEND_FIELDS: dict[str, frozenset[str]] = {
    "send": _COMMON | {"to", "cc", "bcc", "subject", "text", "html", "attachments",
                       "reply_to", "importance"},
    "reply": _SELECTING | {"text", "html", "all"},
    "forward": _SELECTING | {"to", "cc", "text"},
    "notify": _COMMON | {"text", "subject"},
}
SEND_ACTIONS = tuple(SEND_FIELDS)
MAX_ATTACHMENTS = 100
MAX_DISPLAY_NAME = 200
_HEADER_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")  # CR/LF would start a new header line
_BODY_UNSAFE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_MIME_NAME = r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}"  # RFC 6838 §4.2 type and subtype names
_CONTENT_TYPE = re.compile(f"{_MIME_NAME}/{_MIME_NAME}")
_FILENAME_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")


@dataclass(frozen=True)
class SendCommand:
    """A validated sending command; `original` selects the message a reply or forward uses."""

    action: str
    id: Any
    recipients: Recipients
    content: Content
    original: Command | None = None
    reply_all: bool = False


def payload_limit(account: AccountConfig) -> int:
    """The largest command payload: room for `max_bytes` of base64 attachments when sending."""
    if account.send is None or not account.sending:
        return MAX_PAYLOAD
    return MAX_PAYLOAD + account.send.max_bytes * 4 // 3


def parse_send(data: dict[str, Any], account: AccountConfig, implied: str | None) -> SendCommand:
    """Validate a decoded sending command; raises InvalidCommand with the reply text."""
    action = str(data["action"])
    if not account.sending:
        raise InvalidCommand(
            f"sending is off for account {account.name!r}: add [accounts.send] with "
            "enabled = true and allowed_recipients to the account"
        )
    misplaced = sorted(set(data) - SEND_FIELDS[action])
    if misplaced:
        names = ", ".join(repr(m[:40]) for m in misplaced[:5])
        raise InvalidCommand(f"{names} does not apply to {action}: leave it out (it takes "
                             f"{', '.join(sorted(SEND_FIELDS[action]))})")
    if action == "notify":
        return _notify(data, account)
    if action == "send":
        return _send(data)
    original = _original(data, account, implied, action)
    if action == "reply":
        text, html = _bodies(data, required=True)
        return SendCommand(action, data.get("id"), Recipients(), Content(text=text, html=html),
                           original, reply_all=_flag(data, "all"))
    text, _html = _bodies(data, required=False)
    recipients = Recipients(to=_addresses(data, "to"), cc=_addresses(data, "cc"))
    _count(recipients)
    if not recipients.to:
        raise InvalidCommand("forward needs 'to': a list of addresses")
    return SendCommand(action, data.get("id"), recipients, Content(text=text), original)


def _send(data: dict[str, Any]) -> SendCommand:
    recipients = Recipients(to=_addresses(data, "to"), cc=_addresses(data, "cc"),
                            bcc=_addresses(data, "bcc"))
    _count(recipients)
    if not recipients.addresses():
        raise InvalidCommand("send needs at least one recipient in 'to', 'cc' or 'bcc'")
    text, html = _bodies(data, required=True)
    importance = data.get("importance")
    if importance is not None and importance not in IMPORTANCE:
        raise InvalidCommand(f"'importance' must be one of {', '.join(IMPORTANCE)}, not "
                             f"{_show(importance)}")
    content = Content(subject=_subject(data.get("subject", "")), text=text, html=html,
                      attachments=_attachments(data.get("attachments", [])),
                      importance=importance, reply_to=_addresses(data, "reply_to"))
    return SendCommand("send", data.get("id"), recipients, content)


def _notify(data: dict[str, Any], account: AccountConfig) -> SendCommand:
    assert account.send is not None  # noqa: S101 - checked by parse_send
    if not account.send.default_to:
        raise InvalidCommand("notify needs default_to in the account's [accounts.send]")
    text, _html = _bodies(data, required=True)
    subject = _subject(data.get("subject", account.send.default_subject))
    to = tuple(Address(addr_spec=a) for a in account.send.default_to)
    return SendCommand("notify", data.get("id"), Recipients(to=to),
                       Content(subject=subject, text=text))


def _original(data: dict[str, Any], account: AccountConfig, implied: str | None,
              action: str) -> Command:
    """Which message a reply or forward uses: one `uid` or a `message_id` in a folder."""
    uids = _uids(data)
    message_id = _message_id(data.get("message_id"))
    if (len(uids) == 1) == (message_id is not None):
        raise InvalidCommand(f"{action} needs exactly one of 'uid' or 'message_id' to choose "
                             "the original message")
    uidvalidity = data.get("uidvalidity")
    if uidvalidity is not None and not (
        isinstance(uidvalidity, int) and not isinstance(uidvalidity, bool) and uidvalidity > 0
    ):
        raise InvalidCommand("'uidvalidity' must be a positive integer")
    return Command(action=action, folder=_folder(data, account, implied, action),
                   id=data.get("id"), uids=uids, message_id=message_id,
                   uidvalidity=uidvalidity)


def _count(recipients: Recipients) -> None:
    count = len(recipients.to) + len(recipients.cc) + len(recipients.bcc)
    if count > MAX_RECIPIENTS:
        raise InvalidCommand(f"too many recipients ({count}, limit {MAX_RECIPIENTS} per "
                             "message): nothing was sent")


def _addresses(data: dict[str, Any], key: str) -> tuple[Address, ...]:
    """A list of addresses, each "a@b.example" or {"address": ..., "name": ...}; a single
    string is a list of one."""
    value = data.get(key, [])
    items = [value] if isinstance(value, str | dict) else value
    if not isinstance(items, list):
        raise InvalidCommand(f"{key!r} must be a list of addresses, not {_show(value)}")
    if len(items) > MAX_RECIPIENTS:
        raise InvalidCommand(f"too many recipients in {key!r} ({len(items)}, limit "
                             f"{MAX_RECIPIENTS} per message): nothing was sent")
    return tuple(_address(item, key) for item in items)


def _address(item: Any, key: str) -> Address:
    name: Any = ""
    address: Any = item
    if isinstance(item, dict):
        unknown = sorted(set(item) - {"address", "name"})
        if unknown:
            raise InvalidCommand(f"an address in {key!r} takes only 'address' and 'name'")
        address, name = item.get("address"), item.get("name") or ""
    if not isinstance(address, str) or not isinstance(name, str):
        raise InvalidCommand(f"{key!r} must hold addresses as strings, not {_show(item)}")
    if _HEADER_UNSAFE.search(address) or _HEADER_UNSAFE.search(name):
        raise InvalidCommand(f"an address in {key!r} contains a line break or control "
                             "character: refused (header injection)")
    if not is_address(address.strip()):
        raise InvalidCommand(f"{_show(address)} in {key!r} is not an e-mail address such as "
                             "\"alice@example.com\" (ASCII, no display name: use "
                             "{\"address\": ..., \"name\": ...} for a name)")
    if len(name) > MAX_DISPLAY_NAME:
        raise InvalidCommand(f"a name in {key!r} is longer than {MAX_DISPLAY_NAME} characters")
    return Address(display_name=name.strip(), addr_spec=address.strip())


def _subject(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidCommand(f"'subject' must be a string, not {_show(value)}")
    if _HEADER_UNSAFE.search(value):
        raise InvalidCommand("'subject' contains a line break or control character: refused "
                             "(header injection); send it as one line")
    if len(value) > MAX_NAME:
        raise InvalidCommand(f"'subject' is longer than {MAX_NAME} characters")
    return value


def _bodies(data: dict[str, Any], *, required: bool) -> tuple[str | None, str | None]:
    found: dict[str, str] = {}
    for key in ("text", "html"):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise InvalidCommand(f"{key!r} must be a string, not {_show(value)}")
        if _BODY_UNSAFE.search(value):
            raise InvalidCommand(f"{key!r} contains control characters other than tab and "
                                 "line breaks")
        found[key] = value
    if required and not found:
        raise InvalidCommand(f"{data['action']} needs 'text' or 'html'")
    return found.get("text"), found.get("html")


def _flag(data: dict[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise InvalidCommand(f"{key!r} must be true or false, not {_show(value)}")
    return value


def _attachments(value: Any) -> tuple[Attachment, ...]:
    if not isinstance(value, list):
        raise InvalidCommand("'attachments' must be a list of {\"filename\", \"content_type\", "
                             "\"data\"} objects")
    if len(value) > MAX_ATTACHMENTS:
        raise InvalidCommand(f"too many attachments ({len(value)}, limit {MAX_ATTACHMENTS})")
    return tuple(_attachment(i, item) for i, item in enumerate(value))


def _attachment(index: int, item: Any) -> Attachment:
    where = f"attachments[{index}]"
    if not isinstance(item, dict) or set(item) - {"filename", "content_type", "data"}:
        raise InvalidCommand(f"{where} must be an object with 'filename', 'content_type' "
                             "and 'data' (base64)")
    filename = item.get("filename")
    if not isinstance(filename, str) or not filename.strip() or len(filename) > 255:
        raise InvalidCommand(f"{where}.filename must be a file name of 1 to 255 characters")
    if _FILENAME_UNSAFE.search(filename):
        raise InvalidCommand(f"{where}.filename must not contain '/', '\\' or control "
                             "characters")
    content_type = item.get("content_type", "application/octet-stream")
    if not isinstance(content_type, str) or not _CONTENT_TYPE.fullmatch(content_type.lower()):
        raise InvalidCommand(f"{where}.content_type must be a MIME type such as "
                             "\"image/jpeg\"")
    data = item.get("data")
    if not isinstance(data, str):
        raise InvalidCommand(f"{where}.data must be the file's bytes as a base64 string")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidCommand(f"{where}.data is not valid base64 (RFC 4648 §4, no line "
                             "breaks)") from None
    return Attachment(filename.strip(), content_type.lower(), raw)


def parse_request(payload: bytes, *, account: AccountConfig,
                  folder: str | None = None) -> Command | SendCommand:
    """Any command payload: a sending command here, the rest by `parse_command`."""
    data = decode(payload, payload_limit(account))
    action = data.get("action")
    if action not in SEND_ACTIONS:
        return parse_command(payload, account=account, folder=folder)
    try:
        return parse_send(data, account, folder)
    except InvalidCommand as exc:
        raise InvalidCommand(str(exc), command_id=data.get("id"), action=str(action)) from None
