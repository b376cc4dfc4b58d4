"""The rig's servers for a benchmark, in a fresh directory: the identity-platform
stand-in, Dovecot and Mosquitto on loopback, and one app allowed into the bench mailbox.
With `throttle`, the identity platform and IMAP (through `rig.throttle`) throttle as
Exchange Online does under load."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rig.bridgecfg import rig_config
from rig.clients import app_token
from rig.dovecot import Dovecot
from rig.idp import App, IdentityPlatform
from rig.mosquitto import Mosquitto
from rig.pki import TestPKI
from rig.throttle import ThrottlingImap

ACCOUNT = "home"  # rig_config's account name
MAILBOX = "bench@contoso.test"
SECRET = "bench-secret-value"


@dataclass(frozen=True)
class Servers:
    work: Path
    pki: TestPKI
    idp: IdentityPlatform
    dovecot: Dovecot
    broker: Mosquitto
    tenant: str
    app: App
    relay: ThrottlingImap | None = None  # in front of Dovecot when throttling

    def token(self) -> str:
        """An access token of the app, for clients that log in themselves."""
        return app_token(self.idp, self.pki, self.tenant, self.app.client_id, SECRET)

    def config(self, *, imap_port: int | None = None, **kw: Any) -> dict[str, Any]:
        """A bridge config for the bench mailbox in IDLE mode (`rig_config` keywords)."""
        return rig_config(
            authority=self.idp.authority, ca_file=self.pki.ca_file,
            imap_port=imap_port or (self.relay or self.dovecot).port, mqtt_port=self.broker.port,
            tenant_id=self.tenant, client_id=self.app.client_id, mailbox=MAILBOX,
            secret=SECRET, state_dir=self.work / "state", idle=True, poll_interval=300, **kw)


@contextlib.contextmanager
def servers(*, throttle: bool = False) -> Iterator[Servers]:
    with tempfile.TemporaryDirectory(prefix="o2m-bench-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # Dovecot's unprivileged processes read its files here
        pki = TestPKI(work / "pki")
        with (IdentityPlatform(pki) as idp,
              Dovecot(pki, idp.introspection_url, work / "dovecot") as dovecot,
              Mosquitto(work / "mqtt") as broker):
            tenant = idp.add_tenant()
            app = idp.register_app(tenant, secret=SECRET, mailboxes=[MAILBOX])
            if not throttle:
                yield Servers(work, pki, idp, dovecot, broker, tenant, app)
                return
            # Harsh: one token request in 10 is refused for 2 s, every mailbox's first
            # login is throttled for 2 s, one connection in 10 is turned away.
            idp.throttle_every, idp.throttle_retry_after = 10, 2
            with ThrottlingImap(pki, dovecot.starttls_port) as relay:
                relay.refuse_logins, relay.suggest_ms, relay.bye_every = 1, 2000, 10
                yield Servers(work, pki, idp, dovecot, broker, tenant, app, relay)
