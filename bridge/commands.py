"""Commands from MQTT (CONTRACT §5): parse and validate (pure), then execute on IMAP.

Each account has one `CommandWorker` thread with its own IMAP connection, fed by a
bounded queue from paho's `on_message`; every command gets exactly one reply.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import imapclient

from . import imap
from .auth import TokenProvider
from .config import AccountConfig
from .errors import AuthError, CommandError, ImapError
from .mqtt import Incoming
from .status import AccountStatus

_LOGGER = logging.getLogger(__name__)

MAX_PAYLOAD = 64 * 1024
MAX_UIDS = 1000
QUEUE_LIMIT = 100
FIELDS = {
    "action",
    "folder",
    "uid",
    "uids",
    "uidvalidity",
    "message_id",
    "id",
    "to",
    "include_body",
    "expunge",
}
SELECTING = {
    "mark_read",
    "mark_unread",
    "flag",
    "unflag",
    "move",
    "copy",
    "archive",
    "delete",
    "fetch",
}
# Actions whose IMAP side is built so far; the rest answer with a clear error.
IMPLEMENTED = {"mark_read", "mark_unread", "flag", "unflag", "mark_all_read", "refresh"}
FLAG_CHANGES: dict[str, tuple[bool, bytes]] = {
    "mark_read": (True, imapclient.SEEN),
    "mark_unread": (False, imapclient.SEEN),
    "flag": (True, imapclient.FLAGGED),
    "unflag": (False, imapclient.FLAGGED),
}


@dataclass(frozen=True)
class Command:
    """A validated command."""

    action: str
    folder: str
    id: Any = None
    uids: tuple[int, ...] = ()
    message_id: str | None = None
    uidvalidity: int | None = None
    to: str | None = None
    include_body: bool | None = None
    expunge: bool = False


def _is_uid(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**32


def parse_command(payload: bytes, *, account: AccountConfig, folder: str | None = None) -> Command:
    """Validate a command payload; `folder` is implied by a folder command topic.

    Raises CommandError with the reply text; `CommandError.args[1]` carries the id
    when one could be read, so the reply can echo it.
    """
    if len(payload) > MAX_PAYLOAD:
        raise CommandError(f"payload too large ({len(payload)} bytes, limit {MAX_PAYLOAD})")
    text = payload.decode("utf-8", errors="replace").strip()
    if not text:
        raise CommandError('empty payload: send JSON like {"action": "mark_read", ...}')
    data: Any
    if folder is not None and text in ("mark_all_read", "refresh"):
        data = {"action": text}  # Home Assistant buttons send a plain string
    else:
        try:
            data = json.loads(text)
        except ValueError:
            raise CommandError("payload is not JSON") from None
    if not isinstance(data, dict):
        raise CommandError("payload must be a JSON object")
    cmd_id = data.get("id")
    try:
        return _validate(data, account, folder)
    except CommandError as exc:
        raise CommandError(str(exc), cmd_id) from None


def _validate(data: dict[str, Any], account: AccountConfig, implied: str | None) -> Command:
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        raise CommandError(f"unknown field(s): {', '.join(unknown)}")
    action = data.get("action")
    if not isinstance(action, str) or not action:
        raise CommandError("'action' is required and must be a string")
    if action not in {*FLAG_CHANGES, *SELECTING, "mark_all_read", "refresh"}:
        raise CommandError(f"unknown action {action!r}")
    if action not in account.commands:
        raise CommandError(f"action {action!r} is not enabled for account {account.name!r}")
    folder_name = data.get("folder", implied)
    if implied is not None and folder_name != implied:
        raise CommandError(f"'folder' {folder_name!r} conflicts with the command topic's folder")
    if folder_name is None:
        if action == "refresh":
            folder_name = "*"
        else:
            raise CommandError("'folder' is required")
    if not isinstance(folder_name, str):
        raise CommandError("'folder' must be a string")
    if folder_name != "*":
        configured = account.folder(folder_name)
        if configured is None:
            raise CommandError(f"unknown folder {folder_name!r}: not configured for this account")
        folder_name = configured.name
    uids = _uids(data)
    message_id = data.get("message_id")
    if message_id is not None and (not isinstance(message_id, str) or not message_id.strip()):
        raise CommandError("'message_id' must be a non-empty string")
    if action in SELECTING and not uids and message_id is None:
        raise CommandError(f"{action} needs 'uid', 'uids' or 'message_id'")
    uidvalidity = data.get("uidvalidity")
    if uidvalidity is not None and not _is_uid(uidvalidity):
        raise CommandError("'uidvalidity' must be a positive integer")
    to = data.get("to")
    if action in ("move", "copy") and not isinstance(to, str):
        raise CommandError(f"{action} needs 'to' (a folder name)")
    include_body = data.get("include_body")
    if include_body is not None and not isinstance(include_body, bool):
        raise CommandError("'include_body' must be true or false")
    expunge = data.get("expunge", False)
    if not isinstance(expunge, bool):
        raise CommandError("'expunge' must be true or false")
    return Command(
        action,
        folder_name,
        data.get("id"),
        uids,
        message_id,
        uidvalidity,
        to,
        include_body,
        expunge,
    )


def _uids(data: dict[str, Any]) -> tuple[int, ...]:
    uids: list[Any] = []
    if "uid" in data:
        uids.append(data["uid"])
    if "uids" in data:
        if not isinstance(data["uids"], list):
            raise CommandError("'uids' must be a list of integers")
        uids.extend(data["uids"])
    if len(uids) > MAX_UIDS:
        raise CommandError(f"too many uids ({len(uids)}, limit {MAX_UIDS})")
    if not all(_is_uid(u) for u in uids):
        raise CommandError("uids must be positive integers")
    return tuple(sorted(set(uids)))


def reply(
    command_id: Any, action: str | None, *, uids: list[int] | None = None, error: str | None = None
) -> bytes:
    """The reply payload of CONTRACT §5."""
    body: dict[str, Any] = {}
    if command_id is not None:
        body["id"] = command_id
    if action is not None:
        body["action"] = action
    if error is None:
        body["status"] = "ok"
        body["uids"] = uids or []
    else:
        body["status"] = "error"
        body["error"] = error
    return json.dumps(body).encode()


Replier = Callable[[Incoming, bytes], None]


class CommandWorker(threading.Thread):
    """Runs an account's commands in order on its own IMAP connection."""

    def __init__(
        self,
        *,
        account: AccountConfig,
        provider: TokenProvider,
        status: AccountStatus,
        reply: Replier,
        on_changed: Callable[[str], None],
        stop: threading.Event,
    ) -> None:
        super().__init__(name=f"commands-{account.name}", daemon=True)
        self.account = account
        self._provider = provider
        self._status = status
        self._reply = reply
        self._on_changed = on_changed  # folder name ("*" = all) whose state changed
        self._stopping = stop
        self._queue: queue.Queue[tuple[Incoming, str | None]] = queue.Queue(QUEUE_LIMIT)
        self._client: imapclient.IMAPClient | None = None

    def submit(self, msg: Incoming, folder: str | None) -> None:
        """Called on paho's thread: validate cheaply, queue, never block."""
        if msg.retain:
            self._reply(
                msg,
                reply(
                    None,
                    None,
                    error="retained command ignored: publish commands without the retain flag",
                ),
            )
            return
        try:
            self._queue.put_nowait((msg, folder))
        except queue.Full:
            self._reply(msg, reply(None, None, error="busy: too many queued commands"))

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                msg, folder = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            self._reply(msg, self.handle(msg.payload, folder))
        imap.close(self._client)

    def handle(self, payload: bytes, folder: str | None) -> bytes:
        """Parse and execute one command; return its reply."""
        try:
            command = parse_command(payload, account=self.account, folder=folder)
        except CommandError as exc:
            cmd_id = exc.args[1] if len(exc.args) > 1 else None
            return reply(cmd_id, _action_of(payload), error=str(exc.args[0]))
        try:
            uids = self._execute_with_retry(command)
        except CommandError as exc:
            return reply(command.id, command.action, error=str(exc))
        except (AuthError, ImapError) as exc:
            return reply(command.id, command.action, error=f"mailbox unavailable: {exc}")
        return reply(command.id, command.action, uids=uids)

    def _execute_with_retry(self, command: Command) -> list[int]:
        if command.action == "refresh":
            self._on_changed(command.folder)
            return []
        if command.action not in IMPLEMENTED:
            raise CommandError(f"action {command.action!r} is not supported yet")
        for attempt in (1, 2):
            try:
                return self._execute(self._connection(), command)
            except imap.CONNECTION_ERRORS as exc:
                # A dropped idle connection is normal: reconnect once and retry.
                _LOGGER.info("command connection lost (%s), reconnecting", type(exc).__name__)
                imap.close(self._client)
                self._client = None
                if attempt == 2:
                    raise ImapError(f"IMAP connection failed: {exc}") from None
        raise AssertionError("unreachable")

    def _connection(self) -> imapclient.IMAPClient:
        if self._client is None:
            try:
                token = self._provider.get_token()
                self._client = imap.connect(self.account, token)
            except AuthError as exc:
                self._status.failed("commands", str(exc), auth=True)
                raise
        return self._client

    def _execute(self, client: imapclient.IMAPClient, command: Command) -> list[int]:
        name = imap.resolve_folder(client, command.folder)
        selected = client.select_folder(name)
        if command.uidvalidity is not None and command.uidvalidity != selected[b"UIDVALIDITY"]:
            raise CommandError(
                f"stale uidvalidity {command.uidvalidity} for {command.folder} "
                f"(now {selected[b'UIDVALIDITY']}): look the message up again"
            )
        if command.action == "mark_all_read":
            uids = sorted(client.search(["UNSEEN"]))
            if uids:
                client.add_flags(uids, [imapclient.SEEN])
        else:
            uids = self._select(client, command)
            add, flag = FLAG_CHANGES[command.action]
            if add:
                client.add_flags(uids, [flag])
            else:
                client.remove_flags(uids, [flag])
        self._on_changed(command.folder)
        return uids

    @staticmethod
    def _select(client: imapclient.IMAPClient, command: Command) -> list[int]:
        if command.message_id is not None:
            found = sorted(client.search(["HEADER", "Message-ID", command.message_id]))
            if not found:
                raise CommandError(
                    f"no message with Message-ID {command.message_id} in {command.folder}"
                )
            if command.uids:
                found = sorted(set(found) & set(command.uids))
            return found
        existing = set(client.search(["UID", ",".join(map(str, command.uids))]))
        missing = [u for u in command.uids if u not in existing]
        if missing:
            listed = ", ".join(map(str, missing[:10]))
            raise CommandError(f"unknown uid {listed} in {command.folder}")
        return list(command.uids)


def _action_of(payload: bytes) -> str | None:
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    action = data.get("action") if isinstance(data, dict) else None
    return action if isinstance(action, str) else None
