"""Carrying out a sending command: build the message (reading the original of a reply or
forward through the caller's IMAP connection) and hand it to the account's outbox.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bridge.commands.outgoing import SendCommand
from bridge.commands.parse import Command
from bridge.smtp import compose
from bridge.smtp.outbox import Outbox

# (selection) -> (uid, raw message): the original of a reply or forward
ReadOriginal = Callable[[Command], tuple[int, bytes]]


@dataclass(frozen=True)
class Sent:
    message_id: str
    uids: tuple[int, ...]  # the original's UID for a reply or forward


def build(command: SendCommand, sender: str, read_original: ReadOriginal
          ) -> tuple[compose.Outgoing, tuple[int, ...]]:
    """The message a command asks for, and the UID of the original it used (if any)."""
    if command.original is None:
        return compose.new_message(sender, command.recipients, command.content), ()
    uid, raw = read_original(command.original)
    original = compose.parse_original(raw)
    if command.action == "reply":
        recipients = compose.reply_recipients(original, sender, reply_all=command.reply_all)
        content = compose.reply_content(original, command.content.text, command.content.html)
        outgoing = compose.new_message(sender, recipients, content,
                                       extra=compose.thread_headers(original))
        return outgoing, (uid,)
    outgoing = compose.new_message(sender, command.recipients,
                                   compose.forward_content(original, command.content.text))
    compose.attach_original(outgoing, original)
    return outgoing, (uid,)


def send(command: SendCommand, outbox: Outbox, read_original: ReadOriginal) -> Sent:
    """Build and send the message once; SendRefused or SmtpError when it was not sent."""
    outgoing, uids = build(command, outbox.account.mailbox, read_original)
    return Sent(outbox.send(outgoing), uids)
