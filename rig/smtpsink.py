"""The relay host behind the rig's Dovecot submission: an SMTP server (aiosmtpd) that records
every message it is handed and can deliver it into a Dovecot mailbox.

It plays Exchange's transport: a test can make it refuse the next message with a given
reply (e.g. `554 5.2.0 STOREDRV.Submission.Exception:...`) or hang before answering DATA.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from rig.procs import Service, free_port

_LOGGER = logging.getLogger(__name__)

Deliver = Callable[[str, bytes], None]


@dataclass(frozen=True)
class Relayed:
    """One message as the sink received it: the envelope and the exact bytes of DATA."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        sink = self.sink
        if not sink.data_gate.is_set():
            await asyncio.get_running_loop().run_in_executor(None, sink.data_gate.wait, 120)
        with sink.lock:
            refusal, sink.refuse_next = sink.refuse_next, None
        if refusal is not None:
            return refusal
        data = envelope.original_content or b""
        message = Relayed(str(envelope.mail_from), tuple(envelope.rcpt_tos), data)
        for rcpt in message.rcpt_tos:
            if sink.deliver is not None and rcpt.rpartition("@")[2] in sink.local_domains:
                await asyncio.get_running_loop().run_in_executor(None, sink.deliver, rcpt, data)
        with sink.lock:
            sink.messages.append(message)
            sink.arrived.notify_all()
        return "250 2.0.0 OK queued"


class SmtpSink(Service):
    """An SMTP server on loopback; `messages` lists what it accepted, oldest first."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        deliver: Deliver | None = None,
        local_domains: Sequence[str] = ("contoso.test",),
    ) -> None:
        self.host = host
        self.port = free_port(host)
        self.deliver = deliver  # (recipient, raw message) for recipients in local_domains
        self.local_domains = tuple(local_domains)
        self.messages: list[Relayed] = []
        self.refuse_next: str | None = None
        self.data_gate = threading.Event()  # cleared: DATA is answered once it is set again
        self.data_gate.set()
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        self._controller: Controller | None = None

    def start(self) -> None:
        if self._controller is not None:
            return
        # Dovecot relays the client's message unchanged; no size limit, as the bridge's
        # own max_bytes is under test.
        kwargs: dict[str, Any] = {"data_size_limit": 0, "enable_SMTPUTF8": True}
        self._controller = Controller(_Handler(self), hostname=self.host, port=self.port,
                                      **kwargs)
        self._controller.start()
        _LOGGER.debug("smtp sink on %s:%d", self.host, self.port)

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def wait_for(self, predicate: Callable[[Relayed], bool], timeout: float = 30) -> Relayed:
        """The first recorded message matching `predicate`, waiting up to `timeout` s."""
        with self.arrived:
            found: list[Relayed] = []

            def ready() -> bool:
                found[:] = [m for m in self.messages if predicate(m)]
                return bool(found)

            if not self.arrived.wait_for(ready, timeout):
                raise TimeoutError(f"no matching message at the sink within {timeout} s")
            return found[0]

    def for_recipient(self, address: str) -> list[Relayed]:
        """Every recorded message with `address` in its envelope."""
        with self.lock:
            return [m for m in self.messages if address in m.rcpt_tos]
