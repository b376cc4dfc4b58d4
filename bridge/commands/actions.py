"""The IMAP side of commands: choose the messages, then change flags, move, copy, delete
or re-publish them, on a connection the caller owns.

Every check that can refuse a command (folder, UIDVALIDITY, unknown UIDs, target,
server capabilities) runs before the first change, so a refused command changes nothing.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import imapclient

from bridge.commands.parse import Command, did_you_mean
from bridge.errors import CommandError, FolderNotFound
from bridge.imap.connection import list_folders, resolve_folder
from bridge.mailbox.publisher import MessagePublisher
from bridge.mqtt.client import Publication

_LOGGER = logging.getLogger(__name__)

ACK_TIMEOUT = 30.0  # how long `fetch` waits for the broker to take the re-published messages
TRASH_NAME = "Deleted Items"  # Exchange's name, used when no folder is marked \Trash
ARCHIVE_NAME = "Archive"
FLAG_CHANGES: dict[str, tuple[bool, bytes]] = {
    "mark_read": (True, imapclient.SEEN),
    "mark_unread": (False, imapclient.SEEN),
    "flag": (True, imapclient.FLAGGED),
    "unflag": (False, imapclient.FLAGGED),
}
# BODY.PEEK never sets \Seen (RFC 3501 §6.4.5); the answer comes back under BODY[...].
_MESSAGE_ID_FETCH = b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"
_MESSAGE_ID_HEADER = b"BODY[HEADER.FIELDS (MESSAGE-ID)]"


@dataclass(frozen=True)
class Outcome:
    """What a command did: the UIDs acted on, the folders (server names) whose state
    changed, and where messages went."""

    uids: tuple[int, ...]
    changed: tuple[str, ...] = ()
    to: str | None = None


@dataclass(frozen=True)
class Selection:
    """The messages a command acts on, all checked to exist."""

    command: Command
    folder: str  # the source folder's name on the server
    uids: tuple[int, ...]


def uid_set(uids: Iterable[int]) -> str:
    """A compact UID set, e.g. "1:3,7" (RFC 3501 §9 sequence-set): short command lines."""
    ordered = sorted(set(uids))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}:{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def special_folder(
    listing: Sequence[tuple[tuple[bytes, ...], str]], attribute: bytes, fallback: str
) -> str | None:
    """The folder LIST marks with `attribute` (RFC 6154), else one named `fallback`
    (exactly, then ignoring case), else None."""
    wanted = attribute.lower()
    for flags, name in listing:
        if any(flag.lower() == wanted for flag in flags):
            return name
    names = [name for _flags, name in listing]
    if fallback in names:
        return fallback
    return next((n for n in names if n.lower() == fallback.lower()), None)


def execute(
    client: imapclient.IMAPClient,
    command: Command,
    publishers: Mapping[str, MessagePublisher],
) -> Outcome:
    """Carry out a validated command (not `refresh`) in its folder."""
    if command.folder is None:  # parse_command sets it for every action but refresh
        raise CommandError(f"{command.action} needs 'folder'")
    source = _resolve(client, command.folder, "folder")
    selected = client.select_folder(source, readonly=command.action == "fetch")
    uidvalidity = int(selected[b"UIDVALIDITY"])
    if command.uidvalidity is not None and command.uidvalidity != uidvalidity:
        raise CommandError(
            f"stale uidvalidity {command.uidvalidity} for {command.folder} (now {uidvalidity}): "
            "the folder was rebuilt, so its UIDs changed; look the message up again"
        )
    if command.action == "mark_all_read":
        unseen = tuple(sorted(client.search(["UNSEEN"])))
        if unseen:
            client.add_flags(uid_set(unseen), [imapclient.SEEN], silent=True)
        return Outcome(unseen, (source,))
    selection = Selection(command, source, _choose(client, command))
    if command.action == "fetch":
        return _fetch(client, selection, publishers[command.folder], uidvalidity)
    return _HANDLERS[command.action](client, selection)


def _resolve(client: imapclient.IMAPClient, name: str, what: str) -> str:
    try:
        return resolve_folder(client, name)
    except FolderNotFound as exc:
        raise CommandError(
            f"{what} {name[:100]!r} does not exist{did_you_mean(name, exc.existing)}: give an "
            "existing folder's full name, with '/' between levels"
        ) from None


def _choose(client: imapclient.IMAPClient, command: Command) -> tuple[int, ...]:
    if command.message_id is not None:
        return _by_message_id(client, command)
    existing = set(client.search(["UID", uid_set(command.uids)]))
    missing = [u for u in command.uids if u not in existing]
    if missing:
        listed = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        plural = "s" if len(missing) > 1 else ""
        raise CommandError(
            f"unknown uid{plural} {listed} in {command.folder}: moved, deleted, or from another "
            "folder; nothing was changed"
        )
    return command.uids


def _by_message_id(client: imapclient.IMAPClient, command: Command) -> tuple[int, ...]:
    wanted = _bare(command.message_id or "")
    # SEARCH HEADER matches substrings (RFC 3501 §6.4.4): confirm each hit exactly.
    hits = client.search(["HEADER", "Message-ID", wanted])
    found: list[int] = []
    if hits:
        parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)
        for uid, data in client.fetch(sorted(hits), [_MESSAGE_ID_FETCH]).items():
            header = parser.parsebytes(data.get(_MESSAGE_ID_HEADER, b"")).get("Message-ID", "")
            if _bare(str(header)) == wanted:
                found.append(uid)
    if not found:
        raise CommandError(
            f"no message with Message-ID {command.message_id} in {command.folder}: check the id "
            "(the summary's message_id) and the folder"
        )
    return tuple(sorted(found))


def _bare(message_id: str) -> str:
    return "".join(message_id.split()).strip("<>")


def _flags(client: imapclient.IMAPClient, sel: Selection) -> Outcome:
    add, flag = FLAG_CHANGES[sel.command.action]
    change = client.add_flags if add else client.remove_flags
    change(uid_set(sel.uids), [flag], silent=True)
    return Outcome(sel.uids, (sel.folder,))


def _move_or_copy(client: imapclient.IMAPClient, sel: Selection) -> Outcome:
    target = _resolve(client, sel.command.to or "", "'to' folder")
    if sel.command.action == "copy":
        client.copy(uid_set(sel.uids), target)
        return Outcome(sel.uids, (target,), target)
    return _move(client, sel, target)


def _archive(client: imapclient.IMAPClient, sel: Selection) -> Outcome:
    target = special_folder(list_folders(client), b"\\Archive", ARCHIVE_NAME)
    if target is None:
        raise CommandError(
            "no archive folder: none is marked \\Archive and none is named 'Archive'; "
            "create one, or use move with 'to'"
        )
    return _move(client, sel, target)


def _delete(client: imapclient.IMAPClient, sel: Selection) -> Outcome:
    if sel.command.expunge:
        _require_uidplus(client, "the server lacks UIDPLUS, so the bridge cannot delete them",
                         "delete without expunge moves them to Deleted Items")
        _expunge(client, sel.uids)
        return Outcome(sel.uids, (sel.folder,))
    target = special_folder(list_folders(client), b"\\Trash", TRASH_NAME)
    if target is None:
        raise CommandError(
            "no Deleted Items folder: none is marked \\Trash and none is named "
            "'Deleted Items'; create one, or send \"expunge\": true to delete permanently"
        )
    if target == sel.folder:
        raise CommandError(
            f"the messages are already in {target}: send \"expunge\": true to delete them "
            "permanently"
        )
    return _move(client, sel, target)


def _move(client: imapclient.IMAPClient, sel: Selection, target: str) -> Outcome:
    if target == sel.folder:
        raise CommandError(f"the messages are already in {target}: nothing to do")
    uids = uid_set(sel.uids)
    if client.has_capability("MOVE"):
        client.move(uids, target)  # RFC 6851: atomic
    else:
        _require_uidplus(client, "the server supports neither MOVE nor UIDPLUS, so the bridge "
                         "cannot move them", "copy still works")
        client.copy(uids, target)
        _expunge(client, sel.uids)
    return Outcome(sel.uids, (sel.folder, target), target)


def _require_uidplus(client: imapclient.IMAPClient, reason: str, advice: str) -> None:
    if not client.has_capability("UIDPLUS"):
        # Without UID EXPUNGE (RFC 4315 §2.1) only a bare EXPUNGE is left, which also
        # removes every other message some client marked \Deleted.
        raise CommandError(
            f"{reason} without also expunging other messages marked deleted; nothing was "
            f"changed ({advice})"
        )


def _expunge(client: imapclient.IMAPClient, uids: tuple[int, ...]) -> None:
    """Remove exactly `uids` (UID EXPUNGE), never every \\Deleted message of the folder."""
    client.add_flags(uid_set(uids), [imapclient.DELETED], silent=True)
    client.uid_expunge(uid_set(uids))


def _fetch(
    client: imapclient.IMAPClient, sel: Selection, publisher: MessagePublisher, uidvalidity: int
) -> Outcome:
    publications: list[Publication] = []
    published: list[int] = []
    batches = publisher.publish_batches(
        client,
        sel.uids,
        server_name=sel.folder,
        uidvalidity=uidvalidity,
        include_body=sel.command.include_body,
    )
    with contextlib.closing(batches):
        for batch in batches:
            for item in batch:
                if item.publications:
                    published.append(item.uid)
                    publications.extend(item.publications)
    deadline = time.monotonic() + ACK_TIMEOUT
    for publication in publications:
        if not publication.wait(max(0.0, deadline - time.monotonic())):
            raise CommandError(
                f"the broker did not acknowledge the re-published messages within "
                f"{ACK_TIMEOUT:.0f} s: check the MQTT connection and send fetch again"
            )
    return Outcome(tuple(published))


_HANDLERS: dict[str, Callable[[imapclient.IMAPClient, Selection], Outcome]] = {
    **dict.fromkeys(FLAG_CHANGES, _flags),
    "move": _move_or_copy,
    "copy": _move_or_copy,
    "archive": _archive,
    "delete": _delete,
}


def read_message(client: imapclient.IMAPClient, command: Command) -> tuple[int, bytes]:
    """The UID and whole raw message the command selects (one message; BODY.PEEK, so
    reading it leaves \\Seen alone), for a reply or forward."""
    if command.folder is None:
        raise CommandError(f"{command.action} needs 'folder'")
    selected = client.select_folder(_resolve(client, command.folder, "folder"), readonly=True)
    uidvalidity = int(selected[b"UIDVALIDITY"])
    if command.uidvalidity is not None and command.uidvalidity != uidvalidity:
        raise CommandError(
            f"stale uidvalidity {command.uidvalidity} for {command.folder} (now {uidvalidity}): "
            "look the message up again; nothing was sent"
        )
    uid = _choose(client, command)[-1]  # the newest copy when a Message-ID repeats
    data = client.fetch([uid], [b"BODY.PEEK[]"]).get(uid, {})
    raw = data.get(b"BODY[]")
    if not isinstance(raw, bytes):
        raise CommandError(f"uid {uid} in {command.folder} vanished while it was read; "
                           "nothing was sent")
    return uid, raw
