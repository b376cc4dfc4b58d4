"""`check`'s hints for answers only Exchange gives. A unit test: the token and the IMAP
login are faked, because Dovecot cannot refuse a login with Exchange's own words."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bridge.auth.tokens import Token
from bridge.cli import check, token_checks
from bridge.cli.check import Step
from bridge.config.load import parse_config
from bridge.config.model import AccountConfig
from bridge.errors import ImapAuthError
from rig.bridgecfg import rig_config

MAILBOX = "shared@contoso.test"
SERVICE_PRINCIPAL = "5a1e0f3c-0000-4000-8000-00000000beef"


class _GoodToken:
    """A provider whose token has Outlook's audience and the IMAP role."""

    account: AccountConfig

    def __init__(self, account: AccountConfig) -> None:
        self.account = account

    def get_token(self, *, force: bool = False) -> Token:
        claims = {"aud": "https://outlook.office365.com", "roles": [token_checks.IMAP_ROLE],
                  "oid": SERVICE_PRINCIPAL}
        return Token("not-a-real-token", time.time() + 3600, claims)


def test_authenticated_but_not_connected_names_the_mailbox(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    data = rig_config(authority="https://login.example.test", ca_file=tmp_path / "ca.pem",
                      imap_port=993, mqtt_port=1883, tenant_id="tenant", client_id="client",
                      mailbox=MAILBOX, state_dir=tmp_path / "state", secret="s3cret-value")
    del data["accounts"][0]["ca_file"]  # nothing connects
    account = parse_config(data).accounts[0]

    def exchange_says(account: AccountConfig, _token: Token, **_kw: object) -> None:
        raise ImapAuthError(f"IMAP login to {account.mailbox} refused: User is authenticated "
                            "but not connected.")

    monkeypatch.setattr(check, "token_provider", _GoodToken)
    monkeypatch.setattr(check.connection, "connect", exchange_says)
    steps: list[Step] = []

    assert check.check_account(account, steps.append) is False

    assert [(s.name, s.ok) for s in steps] == [("token acquired", True), ("IMAP login", False)]
    step = steps[-1]
    assert step.error == "not_connected"
    hint = step.hint or ""
    assert f"Exchange cannot open {MAILBOX}" in hint
    assert (f"Add-MailboxPermission -Identity {MAILBOX} -User {SERVICE_PRINCIPAL} "
            "-AccessRights FullAccess") in hint
