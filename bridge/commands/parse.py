"""Commands from MQTT (README, Commands over MQTT): parse and validate a payload, build the reply.

Pure functions, no I/O: `actions` carries a validated `Command` out on IMAP and
`command_worker` runs it on the account's own connection.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from bridge.config.model import AccountConfig
from bridge.errors import CommandError
from bridge.util import suggest

MAX_PAYLOAD = 64 * 1024
MAX_UIDS = 1000
MAX_NAME = 998  # RFC 5322 §2.1.1 line limit: no Message-ID or folder name is longer
# What Home Assistant buttons send: a plain string, not JSON.
PLAIN_ACTIONS = ("mark_all_read", "refresh")

_COMMON = frozenset({"action", "id", "folder"})
_SELECTING = _COMMON | {"uid", "uids", "message_id", "uidvalidity"}
# The fields each action accepts: a field that does not apply is an error, because a
# sender who adds one expects an effect it would not have.
ACTION_FIELDS: dict[str, frozenset[str]] = {
    "mark_read": _SELECTING,
    "mark_unread": _SELECTING,
    "flag": _SELECTING,
    "unflag": _SELECTING,
    "move": _SELECTING | {"to"},
    "copy": _SELECTING | {"to"},
    "archive": _SELECTING,
    "delete": _SELECTING | {"expunge"},
    "fetch": _SELECTING | {"include_body"},
    "mark_all_read": _COMMON,
    "refresh": _COMMON,
}
ACTIONS = tuple(ACTION_FIELDS)
FIELDS = frozenset().union(*ACTION_FIELDS.values())
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_EXAMPLE = '{"action": "mark_read", "folder": "INBOX", "uids": [4123]}'


@dataclass(frozen=True)
class Command:
    """A validated command; `folder` is a configured folder's name (None: every folder)."""

    action: str
    folder: str | None
    id: Any = None
    uids: tuple[int, ...] = ()
    message_id: str | None = None
    uidvalidity: int | None = None
    to: str | None = None
    include_body: bool | None = None
    expunge: bool = False


class InvalidCommand(CommandError):
    """A command refused before anything ran; carries the `id` and `action` to echo."""

    def __init__(self, message: str, *, command_id: Any = None, action: str | None = None):
        super().__init__(message)
        self.command_id = command_id
        self.action = action


class _Duplicate(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise _Duplicate(key)
        data[key] = value
    return data


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def decode(payload: bytes, limit: int = MAX_PAYLOAD) -> dict[str, Any]:
    """The payload as a JSON object (or a plain action string); raises InvalidCommand."""
    if len(payload) > limit:
        raise InvalidCommand(
            f"payload too large ({len(payload)} bytes, limit {limit}): "
            "send one command with only the fields it needs"
        )
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise InvalidCommand(
            f"payload is not UTF-8 text: send a JSON object like {_EXAMPLE}"
        ) from None
    if not text:
        raise InvalidCommand(f"empty payload: send a JSON object like {_EXAMPLE}")
    if text in PLAIN_ACTIONS:
        return {"action": text}
    try:
        data = json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant)
    except _Duplicate as exc:
        raise InvalidCommand(
            f"field {exc.args[0]!r} is given twice: give each field once"
        ) from None
    except json.JSONDecodeError as exc:
        raise InvalidCommand(
            f"payload is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): "
            f"send a JSON object like {_EXAMPLE}"
        ) from None
    except ValueError as exc:  # NaN / Infinity
        raise InvalidCommand(f"payload is not JSON ({exc}): send plain numbers") from None
    except RecursionError:
        raise InvalidCommand("payload is not JSON we accept (nested too deeply)") from None
    if not isinstance(data, dict):
        raise InvalidCommand(
            f"payload must be a JSON object like {_EXAMPLE}, not {_json_type(data)}"
        )
    return data


def parse_command(payload: bytes, *, account: AccountConfig, folder: str | None = None) -> Command:
    """Validate a command payload; `folder` is implied by a folder's command topic.

    Raises InvalidCommand with the reply text, and the `id`/`action` when readable.
    """
    data = decode(payload)
    command_id = data.get("id")
    action = data.get("action")
    try:
        return _validate(data, account, folder)
    except InvalidCommand as exc:
        raise InvalidCommand(
            str(exc), command_id=command_id, action=action if isinstance(action, str) else None
        ) from None


def peek(payload: bytes) -> tuple[Any, str | None]:
    """The `id` and `action` of a payload for replies that do not parse it fully; never raises."""
    try:
        data = decode(payload)
    except InvalidCommand:
        return None, None
    action = data.get("action")
    return data.get("id"), action if isinstance(action, str) else None


def _validate(data: dict[str, Any], account: AccountConfig, implied: str | None) -> Command:
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        names = ", ".join(repr(u[:40]) + did_you_mean(u, FIELDS) for u in unknown[:5])
        raise InvalidCommand(
            f"unknown field(s) {names}: known fields are {', '.join(sorted(FIELDS))}"
        )
    action = _action(data.get("action"), account)
    misplaced = sorted(set(data) - ACTION_FIELDS[action])
    if misplaced:
        field = misplaced[0]
        users = [a for a, fields in ACTION_FIELDS.items() if field in fields]
        raise InvalidCommand(
            f"{field!r} does not apply to {action} (only to {', '.join(users)}): leave it out"
        )
    folder = _folder(data, account, implied, action)
    uids = _uids(data)
    message_id = _message_id(data.get("message_id"))
    if uids and message_id is not None:
        raise InvalidCommand("give either 'uid'/'uids' or 'message_id', not both")
    if "uid" in ACTION_FIELDS[action] and not uids and message_id is None:
        raise InvalidCommand(f"{action} needs 'uid', 'uids' or 'message_id' to choose messages")
    uidvalidity = data.get("uidvalidity")
    if uidvalidity is not None and not _is_uid(uidvalidity):
        raise InvalidCommand(
            "'uidvalidity' must be a positive integer: the folder's UIDVALIDITY as the "
            "message summary shows it"
        )
    to = _target(data.get("to"), action)
    include_body = _boolean(data, "include_body", None)
    expunge = _boolean(data, "expunge", False)
    return Command(
        action=action,
        folder=folder,
        id=data.get("id"),
        uids=uids,
        message_id=message_id,
        uidvalidity=uidvalidity,
        to=to,
        include_body=include_body,
        expunge=bool(expunge),
    )


def _action(action: Any, account: AccountConfig) -> str:
    known = ", ".join(ACTIONS)
    if action is None:
        raise InvalidCommand(f"'action' is required: one of {known}")
    if not isinstance(action, str):
        raise InvalidCommand(f"'action' must be a string, one of {known}")
    if action not in ACTION_FIELDS:
        raise InvalidCommand(
            f"unknown action {action[:40]!r}{did_you_mean(action, ACTIONS)}: known are {known}"
        )
    if action not in account.commands:
        raise InvalidCommand(
            f"action {action!r} is not enabled for account {account.name!r}: "
            f"add it to the account's 'commands' to allow it"
        )
    return action


def _folder(
    data: dict[str, Any], account: AccountConfig, implied: str | None, action: str
) -> str | None:
    configured = ", ".join(f.name for f in account.folders)
    name = data.get("folder")
    if name is None:
        if implied is not None or action == "refresh":
            return implied  # refresh without a folder: every folder
        raise InvalidCommand(
            f"'folder' is required for {action}: one of {configured}, or publish to the "
            "folder's own command topic"
        )
    if not isinstance(name, str):
        raise InvalidCommand(f"'folder' must be a string: one of {configured}")
    folder = account.folder(name)
    if folder is None:
        hint = did_you_mean(name, [f.name for f in account.folders])
        raise InvalidCommand(
            f"unknown folder {name[:100]!r}{hint}: account {account.name!r} watches only "
            f"{configured}"
        )
    if implied is not None and folder.name != implied:
        raise InvalidCommand(
            f"'folder' {name[:100]!r} conflicts with the command topic's folder {implied!r}: "
            "leave 'folder' out"
        )
    return folder.name


def _is_uid(value: Any) -> bool:
    # UIDs and UIDVALIDITY are non-zero 32-bit unsigned numbers (RFC 3501 §2.3.1.1).
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**32


def _uids(data: dict[str, Any]) -> tuple[int, ...]:
    uids: list[Any] = []
    if "uid" in data:
        if not _is_uid(data["uid"]):
            raise InvalidCommand(f"'uid' must be a positive integer, not {_show(data['uid'])}")
        uids.append(data["uid"])
    if "uids" in data:
        listed = data["uids"]
        if not isinstance(listed, list):
            raise InvalidCommand(
                f"'uids' must be a list of positive integers like [4123], not {_show(listed)}"
            )
        if not listed:
            raise InvalidCommand("'uids' is empty: list at least one UID")
        if len(listed) > MAX_UIDS:
            raise InvalidCommand(
                f"too many uids ({len(listed)}, limit {MAX_UIDS}): split the command"
            )
        for uid in listed:
            if not _is_uid(uid):
                raise InvalidCommand(f"'uids' must hold positive integers only, not {_show(uid)}")
        uids.extend(listed)
    return tuple(sorted(set(uids)))


def _message_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip("<> \t"):
        raise InvalidCommand(
            "'message_id' must be a non-empty string like \"<abc@example.com>\" "
            "(the summary's message_id)"
        )
    text: str = value.strip()
    if len(text) > MAX_NAME or _CONTROL.search(text) or " " in text or not text.isascii():
        raise InvalidCommand(
            "'message_id' must be one Message-ID like \"<abc@example.com>\": printable "
            "ASCII without spaces or control characters"
        )
    return text


def _target(value: Any, action: str) -> str | None:
    if action not in ("move", "copy"):
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidCommand(
            f"{action} needs 'to': the full name of an existing folder, e.g. \"INBOX/Receipts\""
        )
    if len(value) > MAX_NAME or _CONTROL.search(value):
        raise InvalidCommand("'to' must be a folder name without control characters")
    if "*" in value or "%" in value:
        # LIST wildcards (RFC 3501 §6.3.8): a target must name exactly one folder.
        raise InvalidCommand("'to' must name one folder: '*' and '%' are IMAP wildcards")
    return value


def _boolean(data: dict[str, Any], key: str, default: bool | None) -> bool | None:
    value = data.get(key, default)
    if value is None or isinstance(value, bool):
        return value
    raise InvalidCommand(f"{key!r} must be true or false, not {_show(value)}")


def did_you_mean(name: str, names: Collection[str]) -> str:
    """' (did you mean 'a' or 'b'?)' for a mistyped name, '' when nothing is close."""
    suggestion = suggest.did_you_mean(name, names, most=3)
    return f" ({suggestion})" if suggestion else ""


def _show(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    return "a boolean" if isinstance(value, bool) else "a number"


def reply(
    command_id: Any,
    action: str | None,
    *,
    uids: Sequence[int] = (),
    error: str | None = None,
    to: str | None = None,
    message_id: str | None = None,
) -> bytes:
    """The reply payload (README, Commands over MQTT); `to` names the folder a move/copy went to,
    `message_id` the mail a sending command sent (§5b)."""
    body: dict[str, Any] = {}
    if command_id is not None:
        body["id"] = command_id
    if action is not None:
        body["action"] = action
    if error is None:
        body["status"] = "ok"
        body["uids"] = list(uids)
        if to is not None:
            body["to"] = to
        if message_id is not None:
            body["message_id"] = message_id
    else:
        body["status"] = "error"
        body["error"] = error
    return json.dumps(body).encode()


def response_topic_allowed(topic: str, subscribed: Sequence[str]) -> bool:
    """Whether a request's MQTT 5 Response Topic may be published to.

    Wildcards are not allowed in a topic name (MQTT 5 §3.3.2.3.5); a reply sent to a
    command topic the bridge listens on would be read back as a command.
    """
    return (
        bool(topic)
        and "+" not in topic
        and "#" not in topic
        and "\x00" not in topic
        and len(topic.encode()) <= 65535
        and topic not in subscribed
    )
