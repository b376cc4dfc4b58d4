"""One account's command worker: a thread with its own IMAP connection, fed by a bounded
queue from paho's `on_message`, answering every command exactly once, in order.

The connection is opened by the first command and given back after a quiet period:
Exchange Online allows about 20 IMAP connections per mailbox, the folders' and the
commands' together, and most accounts get a command now and then, not all the time.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping

import imapclient

from bridge.auth.tokens import Provider
from bridge.commands import actions, sending
from bridge.commands.outgoing import SendCommand, parse_request
from bridge.commands.parse import Command, InvalidCommand, peek, reply
from bridge.config.model import AccountConfig, same_folder
from bridge.errors import AuthError, CommandError, ImapAuthError, ImapError, LoginRequired
from bridge.imap.connection import CONNECTION_LOST, IMAP_FAILURES, abandon, close
from bridge.imap.logins import Logins
from bridge.mailbox.publisher import MessagePublisher
from bridge.mqtt.client import Incoming
from bridge.smtp.outbox import Outbox

_LOGGER = logging.getLogger(__name__)

QUEUE_LIMIT = 100
# Seconds without a command after which the command connection is logged out.
QUIET_CLOSE = 60.0

Replier = Callable[[Incoming, bytes], None]
_STOP = None  # queued by stop(): the worker ends when it reaches it


class CommandWorker(threading.Thread):
    """Runs an account's commands in order on its own IMAP connection."""

    def __init__(
        self,
        *,
        account: AccountConfig,
        provider: Provider,
        publishers: Mapping[str, MessagePublisher],
        reply: Replier,
        on_changed: Callable[[str], None],
        stop: threading.Event,
        queue_limit: int = QUEUE_LIMIT,
        logins: Logins | None = None,
        quiet_close: float = QUIET_CLOSE,
    ) -> None:
        super().__init__(name=f"commands-{account.name}", daemon=True)
        self.account = account
        self._provider = provider
        self._logins = logins or Logins()
        self._publishers = publishers  # configured folder name -> its publisher (fetch)
        self._reply = reply
        self._on_changed = on_changed  # configured folder name ("*" = every folder)
        self._stopping = stop
        # Unbounded, so that stop() never blocks; submit() keeps to queue_limit.
        self._queue: queue.Queue[tuple[Incoming, str | None] | None] = queue.Queue()
        self._queue_limit = queue_limit
        self._client: imapclient.IMAPClient | None = None
        self.quiet_close = quiet_close
        self.outbox = Outbox(account, provider) if account.sending else None
        self._fresh_token = False  # the server refused the last token: get a new one

    # -- paho's thread: cheap checks only, never block -------------------------------------

    def submit(self, msg: Incoming, folder: str | None) -> None:
        """Queue a command that arrived on a command topic (`folder` implied by the topic)."""
        if msg.retain:
            if not msg.payload:
                return  # an empty retained message only deletes a retained command
            command_id, action = peek(msg.payload)
            # A broker replays retained messages on every subscribe: running them would
            # repeat the action at each restart of the bridge.
            self._send(msg, reply(command_id, action, error=(
                "retained command ignored: publish commands without the retain flag, and "
                f"clear this one by publishing an empty retained message to {msg.topic}"
            )))
            return
        if self._queue.qsize() >= self._queue_limit:  # only paho's thread adds commands
            command_id, action = peek(msg.payload)
            self._send(msg, reply(command_id, action, error=(
                f"busy: {self._queue_limit} commands are waiting; send this one again later"
            )))
            return
        self._queue.put((msg, folder))

    def stop(self) -> None:
        """End the worker once the command in hand is answered (the stop event is set)."""
        self._queue.put(_STOP)

    # -- the worker thread -----------------------------------------------------------------

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                # With a connection open, the wait for the next command is also the
                # quiet period's deadline; without one, nothing is due.
                item = self._queue.get(
                    timeout=None if self._client is None else self.quiet_close)
            except queue.Empty:
                self._close_quiet()
                continue
            if item is _STOP:
                break
            self._answer(*item)
        close(self._client)

    def _answer(self, msg: Incoming, folder: str | None) -> None:
        try:
            answer = self.handle(msg.payload, folder)
        except Exception:  # a bug must cost one command, not the account's commands
            _LOGGER.exception("%s: command failed unexpectedly", self.account.name)
            command_id, action = peek(msg.payload)
            answer = reply(command_id, action, error="internal error: see the bridge's log")
        self._send(msg, answer)

    def _close_quiet(self) -> None:
        """Give the connection back; the next command opens a fresh one. Commands that
        arrive meanwhile wait in the queue: the close is this thread's, like every use."""
        _LOGGER.debug("%s: no command for %g s: closing the command connection",
                      self.account.name, self.quiet_close)
        close(self._client)  # LOGOUT; a connection already lost is just shut
        self._client = None

    def handle(self, payload: bytes, folder: str | None) -> bytes:
        """Parse and execute one command; return its reply."""
        try:
            command = parse_request(payload, account=self.account, folder=folder)
        except InvalidCommand as exc:
            return reply(exc.command_id, exc.action, error=str(exc))
        if isinstance(command, SendCommand):
            return self._send_mail(command)
        try:
            outcome = self._execute(command)
        except CommandError as exc:
            return reply(command.id, command.action, error=str(exc))
        except LoginRequired as exc:
            return reply(command.id, command.action, error=f"login required: {exc}")
        except (AuthError, ImapError) as exc:
            return reply(command.id, command.action, error=f"cannot reach the mailbox: {exc}")
        _LOGGER.info(
            "%s: %s in %s: %d message(s)",
            self.account.name,
            command.action,
            command.folder or "every folder",
            len(outcome.uids),
        )
        return reply(command.id, command.action, uids=outcome.uids, to=outcome.to)

    def _send_mail(self, command: SendCommand) -> bytes:
        if self.outbox is None:  # parse_request refuses sending commands then
            return reply(command.id, command.action, error="sending is off")
        try:
            sent = sending.send(command, self.outbox, self._read_original)
        except CommandError as exc:
            _LOGGER.info("%s: %s not sent: %s", self.account.name, command.action, exc)
            return reply(command.id, command.action, error=str(exc))
        except LoginRequired as exc:
            return reply(command.id, command.action, error=f"login required: {exc}")
        except (AuthError, ImapError) as exc:
            return reply(command.id, command.action,
                         error=f"cannot read the original: {exc}; nothing was sent")
        return reply(command.id, command.action, uids=sent.uids, message_id=sent.message_id)

    def _read_original(self, selection: Command) -> tuple[int, bytes]:
        client = self._connection()
        try:
            return actions.read_message(client, selection)
        except CONNECTION_LOST as exc:
            self._drop(exc)
            raise CommandError("the IMAP connection dropped while reading the original; "
                               "nothing was sent: send the command again") from None
        except imapclient.imaplib.IMAP4.error as exc:
            raise CommandError(f"the server refused to read the original: {_text(exc)}; "
                               "nothing was sent") from None

    def _execute(self, command: Command) -> actions.Outcome:
        if command.action == "refresh":
            self._on_changed(command.folder or "*")
            return actions.Outcome(())
        client = self._connection()
        try:
            outcome = actions.execute(client, command, self._publishers)
        except CONNECTION_LOST as exc:
            # Not retried: the server may have carried out part of it (a COPY without
            # the EXPUNGE), and a second run could duplicate messages.
            self._drop(exc)
            self._changed(command.folder)
            raise CommandError(
                f"the IMAP connection dropped during {command.action}; it was not retried: "
                "check the folder, then send the command again if needed"
            ) from None
        except imapclient.imaplib.IMAP4.error as exc:
            raise CommandError(
                f"the server refused {command.action}: {_text(exc)}"
            ) from None
        for name in outcome.changed:
            self._changed(name)
        return outcome

    def _connection(self) -> imapclient.IMAPClient:
        """A logged-in connection; one that went stale while idle is replaced first."""
        if self._client is not None:
            try:
                self._client.noop()
            except IMAP_FAILURES as exc:
                self._drop(exc)
        if self._client is None:
            try:
                opened = self._logins.open(self.account, self._provider, self._stopping,
                                           force_token=self._fresh_token)
            except ImapAuthError:
                # A token refused now stays refused (issued before admin consent, or
                # revoked): MSAL would return it from its cache until it expires.
                self._fresh_token = True
                raise
            if opened is None:
                raise CommandError("the bridge is stopping")
            self._fresh_token = False
            self._client = opened[0]
        return self._client

    def _drop(self, exc: BaseException) -> None:
        _LOGGER.info(
            "%s: command connection lost (%s: %s); reconnecting",
            self.account.name,
            type(exc).__name__,
            exc,
        )
        # A lost connection is not logged out: LOGOUT would wait for an answer in vain.
        (abandon if isinstance(exc, CONNECTION_LOST) else close)(self._client)
        self._client = None

    def _changed(self, server_name: str | None) -> None:
        """Tell the watcher of the folder called `server_name` on the server, if any."""
        if server_name is None:
            return
        for folder in self.account.folders:
            if same_folder(folder.name, server_name):
                self._on_changed(folder.name)

    def _send(self, msg: Incoming, payload: bytes) -> None:
        try:
            self._reply(msg, payload)
        except Exception:  # publishing must not kill the worker or paho's thread
            _LOGGER.exception("%s: cannot publish a command reply", self.account.name)


def _text(exc: BaseException) -> str:
    """The server's words from an imaplib error (which wraps them in bytes reprs)."""
    return str(exc).strip("b'\"") or type(exc).__name__
