"""Shared fixtures: real servers started once per session, fresh identities per test.

Session-scoped: `pki` (test CA), `idp` (Entra ID stand-in over HTTPS), `dovecot` (IMAP with
XOAUTH2, checked against `idp`), `mosquitto` (anonymous broker). Each test gets its own
`tenant`, `mailbox` and `app` (secret in `app.secrets[0]`, granted `mailbox`), so tests never
see each other's mail or tokens. Tests that change a shared server (`idp.down`,
`idp.token_lifetime`, a Dovecot restart) must put it back; `_restore_idp` does it for the idp.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from rig.dovecot import Dovecot
from rig.idp import App, IdentityPlatform, random_secret
from rig.mosquitto import Mosquitto
from rig.pki import TestPKI


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    """A test CA and a server certificate for 127.0.0.1, 127.0.0.2 and localhost."""
    return TestPKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def idp(pki: TestPKI) -> Iterator[IdentityPlatform]:
    """The running identity-platform stand-in."""
    with IdentityPlatform(pki) as platform:
        yield platform


@pytest.fixture(autouse=True)
def _restore_idp(request: pytest.FixtureRequest) -> Iterator[None]:
    """Undo outage, lifetime and throttling changes a test makes to the shared idp."""
    if "idp" not in request.fixturenames:
        yield
        return
    platform: IdentityPlatform = request.getfixturevalue("idp")
    saved = platform.down, platform.token_lifetime, platform.retry_after
    yield
    platform.down, platform.token_lifetime, platform.retry_after = saved


@pytest.fixture(scope="session")
def dovecot(
    pki: TestPKI, idp: IdentityPlatform, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Dovecot]:
    """The running Dovecot, asking idp about every XOAUTH2 token."""
    with Dovecot(pki, idp.introspection_url, tmp_path_factory.mktemp("dovecot")) as server:
        yield server


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """The running anonymous Mosquitto broker."""
    with Mosquitto(tmp_path_factory.mktemp("mosquitto")) as broker:
        yield broker


@pytest.fixture
def tenant(idp: IdentityPlatform) -> str:
    """A fresh tenant id."""
    return idp.add_tenant()


@pytest.fixture
def mailbox() -> str:
    """A fresh mailbox address, unique to this test."""
    return f"u{uuid.uuid4().hex[:10]}@contoso.test"


@pytest.fixture
def app(idp: IdentityPlatform, tenant: str, mailbox: str) -> App:
    """An app in tenant with a random client secret (app.secrets[0]), granted mailbox."""
    return idp.register_app(tenant, secret=random_secret(), mailboxes=[mailbox])
