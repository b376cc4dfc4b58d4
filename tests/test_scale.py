"""Many accounts in one bridge: shared token providers and TLS contexts, a bounded login
ramp, and Exchange's and Entra's throttling kept to the account that got it."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bridge.auth.providers import TokenProviders
from bridge.auth.tokens import Token, TokenProvider
from bridge.config.load import parse_config
from bridge.config.model import AccountConfig
from bridge.errors import AuthError, ImapThrottled
from bridge.imap import connection as imap
from bridge.imap.logins import Logins
from bridge.imap.throttle import THROTTLED_WAIT, UNAVAILABLE_WAIT, throttle_delay
from rig.bridgecfg import rig_config
from rig.dovecot import Dovecot
from rig.idp import App, IdentityPlatform, random_secret
from rig.mosquitto import Mosquitto
from rig.mqttsub import Collector
from rig.pki import TestPKI
from rig.samples import make_message
from rig.throttle import ThrottlingImap
from tests.bridgeproc import BridgeProcess


@pytest.fixture
def relay(pki: TestPKI, dovecot: Dovecot) -> Iterator[ThrottlingImap]:
    """Exchange's throttling in front of the rig's Dovecot."""
    with ThrottlingImap(pki, dovecot.starttls_port) as r:
        yield r


@pytest.fixture
def accounts(idp: IdentityPlatform, pki: TestPKI, dovecot: Dovecot, mosquitto: Mosquitto,
             tenant: str, tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """Config dicts with one account per (mailbox, app, secret) given."""

    def make(entries: list[tuple[str, App, str]], **overrides: Any) -> dict[str, Any]:
        base = rig_config(authority=idp.authority, ca_file=pki.ca_file,
                          imap_port=overrides.pop("imap_port", dovecot.port),
                          mqtt_port=mosquitto.port, tenant_id=tenant, client_id="x",
                          mailbox="x@contoso.test", state_dir=tmp_path / "state", secret="x",
                          idle=True, **overrides)
        template = base["accounts"][0]
        base["accounts"] = [
            {**template, "name": f"a{i}", "mailbox": mailbox, "client_id": app.client_id,
             "client_secret": secret} for i, (mailbox, app, secret) in enumerate(entries)]
        return base

    return make


def new_mailbox() -> str:
    return f"scale-{uuid.uuid4().hex[:8]}@contoso.test"


def parsed(data: dict[str, Any]) -> tuple[AccountConfig, ...]:
    return parse_config(data).accounts


def test_accounts_of_one_app_share_a_provider_and_its_token(
    idp: IdentityPlatform, tenant: str, accounts: Callable[..., dict[str, Any]]
) -> None:
    one, two, other = new_mailbox(), new_mailbox(), new_mailbox()
    secret = random_secret()
    app = idp.register_app(tenant, secret=secret, mailboxes=[one, two])
    second = random_secret()
    app.secrets.append(second)
    lone = idp.register_app(tenant, secret=random_secret(), mailboxes=[other])
    a, b, c, d = parsed(accounts([(one, app, secret), (two, app, secret),
                                  (one, app, second), (other, lone, lone.secrets[0])]))
    providers = TokenProviders()
    shared = providers.for_account(a)
    assert providers.for_account(b) is shared
    assert providers.for_account(c) is not shared  # another credential, another provider
    assert providers.for_account(d) is not shared
    assert len(providers) == 3
    before = idp.token_requests
    assert shared.get_token().access_token == shared.get_token().access_token
    assert idp.token_requests - before == 1


def test_delegated_accounts_keep_their_own_provider(
    idp: IdentityPlatform, tenant: str, accounts: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    app = idp.register_app(tenant, secret=random_secret())
    data = accounts([(new_mailbox(), app, "unused"), (new_mailbox(), app, "unused")])
    for i, account in enumerate(data["accounts"]):
        del account["client_secret"]
        account.update(auth="device_code", token_cache=str(tmp_path / f"cache{i}.json"))
    first, second = parsed(data)
    providers = TokenProviders()
    assert providers.for_account(first) is not providers.for_account(second)
    assert len(providers) == 0


def test_every_connection_of_a_ca_file_shares_one_tls_context(
    idp: IdentityPlatform, tenant: str, accounts: Callable[..., dict[str, Any]], tmp_path: Path,
    pki: TestPKI,
) -> None:
    app = idp.register_app(tenant, secret=random_secret())
    data = accounts([(new_mailbox(), app, "s"), (new_mailbox(), app, "s"),
                     (new_mailbox(), app, "s")])
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_bytes(pki.ca_file.read_bytes())
    data["accounts"][2]["ca_file"] = str(other_ca)
    a, b, c = parsed(data)
    logins = Logins()
    assert logins.context(a) is logins.context(b)
    assert logins.context(c) is not logins.context(a)


@pytest.mark.parametrize(("text", "delay"), [
    ("[THROTTLED] Request is throttled. Suggested Backoff Time: 2500 milliseconds", 2.5),
    ("NO [THROTTLED] Request is throttled.", THROTTLED_WAIT),
    ("* BYE Server Unavailable. 15", UNAVAILABLE_WAIT),
    ("BYE Connection closed. 14 Server Unavailable. 15", UNAVAILABLE_WAIT),
    ("[AUTHENTICATIONFAILED] Authentication failed.", None),
    ("BYE Session invalidated - AccessTokenExpired", None),
])
def test_exchange_throttling_answers_are_recognised(text: str, delay: float | None) -> None:
    assert throttle_delay(text) == delay


def test_a_429_from_the_identity_platform_is_waited_out_without_asking_again(
    idp: IdentityPlatform, tenant: str, accounts: Callable[..., dict[str, Any]]
) -> None:
    app = idp.register_app(tenant, secret=random_secret(), mailboxes=[new_mailbox()])
    (account,) = parsed(accounts([(new_mailbox(), app, app.secrets[0])]))
    provider = TokenProvider(account)
    idp.throttle_every, idp.throttle_retry_after = 1, 2
    with pytest.raises(AuthError) as refused:
        provider.get_token()
    assert refused.value.transient and refused.value.retry_after == pytest.approx(2, abs=0.5)
    idp.throttle_every = 0
    asked = idp.token_requests
    with pytest.raises(AuthError):
        provider.get_token()  # still within Retry-After: not asked again
    assert idp.token_requests == asked
    time.sleep(refused.value.retry_after)
    assert provider.get_token().access_token


def test_a_throttled_login_holds_back_only_its_account(
    idp: IdentityPlatform, tenant: str, accounts: Callable[..., dict[str, Any]],
    relay: ThrottlingImap,
) -> None:
    throttled, fine = new_mailbox(), new_mailbox()
    app = idp.register_app(tenant, secret=random_secret(), mailboxes=[throttled, fine])
    secret = app.secrets[0]
    one, two = parsed(accounts([(throttled, app, secret), (fine, app, secret)],
                               imap_port=relay.port))
    relay.refuse_logins, relay.suggest_ms = 1, 3000
    providers, logins, stop = TokenProviders(), Logins(start_jitter=0), threading.Event()
    with pytest.raises(ImapThrottled) as refused:
        logins.open(one, providers.for_account(one), stop)
    assert refused.value.retry_after == 3.0
    assert logins.held_for(one.name) > 2.0  # 3 s, jittered
    assert logins.held_for(two.name) == 0
    relay.refuse_logins = 0
    opened = logins.open(two, providers.for_account(two), stop)
    assert opened is not None
    held = logins.held_for(one.name)
    assert held > 0  # `two` signed in while `one` was still held: not slowed by it
    started = time.monotonic()
    imap.close(opened[0])
    opened = logins.open(one, providers.for_account(one), stop)
    assert opened is not None and time.monotonic() - started >= held  # waited its hold out
    imap.close(opened[0])


class CountingProvider:
    """A real provider that records how many token requests run at once."""

    def __init__(self, inner: TokenProvider) -> None:
        self._inner = inner
        self.running = 0
        self.most = 0
        self._lock = threading.Lock()

    @property
    def account(self) -> AccountConfig:
        return self._inner.account

    def get_token(self, *, force: bool = False) -> Token:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.05)
        try:
            return self._inner.get_token(force=force)
        finally:
            with self._lock:
                self.running -= 1


def test_logins_run_at_most_the_ramp_s_concurrency_at_once(
    idp: IdentityPlatform, tenant: str, accounts: Callable[..., dict[str, Any]]
) -> None:
    mailboxes = [new_mailbox() for _ in range(8)]
    app = idp.register_app(tenant, secret=random_secret(), mailboxes=mailboxes)
    parsed_accounts = parsed(accounts([(m, app, app.secrets[0]) for m in mailboxes]))
    provider = CountingProvider(TokenProvider(parsed_accounts[0]))
    logins, stop = Logins(concurrency=3, start_jitter=0.2), threading.Event()
    opened: list[Any] = []

    def login(account: AccountConfig) -> None:
        opened.append(logins.open(account, provider, stop))

    threads = [threading.Thread(target=login, args=(a,)) for a in parsed_accounts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(opened) == 8 and all(o is not None for o in opened)
    assert provider.most <= 3
    for o in opened:
        imap.close(o[0])


def test_server_unavailable_mid_session_backs_off_that_account_only(
    idp: IdentityPlatform, tenant: str, dovecot: Dovecot, mosquitto: Mosquitto,
    accounts: Callable[..., dict[str, Any]], relay: ThrottlingImap, tmp_path: Path,
) -> None:
    shed, fine = new_mailbox(), new_mailbox()
    app = idp.register_app(tenant, secret=random_secret(), mailboxes=[shed, fine])
    data = accounts([(shed, app, app.secrets[0]), (fine, app, app.secrets[0])],
                    imap_port=relay.port, base_topic=f"o2m-{uuid.uuid4().hex[:8]}")
    base = data["mqtt"]["base_topic"]
    bridge = BridgeProcess(tmp_path, data)
    with Collector("127.0.0.1", mosquitto.port, [f"{base}/#"]) as sub:
        bridge.start()
        try:
            sub.wait_for(lambda m: m.topic == f"{base}/bridge/state" and m.payload == b"online",
                         timeout=30)
            logins = relay.logins[shed]
            assert relay.bye(shed) == 1
            byed = time.monotonic()
            dovecot.deliver(fine, make_message(subject="still flowing", to=fine))
            # The hold is at least 0.8 UNAVAILABLE_WAIT (jittered) from the bridge's reading
            # of the BYE, which comes after `byed`.
            time.sleep(max(0.0, byed + UNAVAILABLE_WAIT * 0.7 - time.monotonic()))
            assert relay.logins[shed] == logins  # kept away, not reconnecting at once
            sub.wait_for(lambda m: m.topic == f"{base}/a1/inbox/message")
            dovecot.deliver(shed, make_message(subject="after the pause", to=shed))
            sub.wait_for(lambda m: m.topic == f"{base}/a0/inbox/message",
                         timeout=UNAVAILABLE_WAIT * 3)
            assert relay.logins[shed] == logins + 1
        finally:
            bridge.stop()


class LookedAt(threading.Event):
    """A stop event that counts how often a waiter looked at it."""

    def __init__(self) -> None:
        super().__init__()
        self.looks = 0

    def is_set(self) -> bool:
        self.looks += 1
        return super().is_set()


class SlotHolder:
    """A sign-in that holds the ramp's only slot (its token request waits) until `go`."""

    def __init__(self, logins: Logins) -> None:
        self.inside, self.go = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._open, args=(logins,), daemon=True)
        self.thread.start()
        assert self.inside.wait(30)

    @property
    def account(self) -> SimpleNamespace:
        return SimpleNamespace(name="holder")

    def get_token(self, *, force: bool = False) -> Token:
        self.inside.set()
        assert self.go.wait(30)
        raise AuthError("released")

    def _open(self, logins: Logins) -> None:
        with pytest.raises(AuthError):
            logins.open(self.account, self, threading.Event())  # type: ignore[arg-type]


class Waiter:
    """A sign-in waiting for a slot; `turn` is set once it has one (its token request)."""

    def __init__(self, logins: Logins) -> None:
        self.stop, self.turn = LookedAt(), threading.Event()
        self.result: object = "not returned"
        self.thread = threading.Thread(target=self._open, args=(logins,), daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while self.stop.looks < 2 and time.monotonic() < deadline:  # before and in the wait
            time.sleep(0.01)
        settled = self.stop.looks
        # Nothing happens for a while: a waiter that polled would look at its stop event
        # again meanwhile (the count only grows, so a loaded machine cannot fail this).
        time.sleep(1.5)
        assert self.stop.looks == settled, "the waiter polls its stop event"

    @property
    def account(self) -> SimpleNamespace:
        return SimpleNamespace(name="waiter")

    def get_token(self, *, force: bool = False) -> Token:
        self.turn.set()
        raise AuthError("had its turn")

    def _open(self, logins: Logins) -> None:
        try:
            self.result = logins.open(self.account, self, self.stop)  # type: ignore[arg-type]
        except AuthError as exc:
            self.result = exc


def test_a_sign_in_waiting_for_a_slot_takes_it_when_one_is_released_without_polling() -> None:
    logins = Logins(concurrency=1, start_jitter=0)
    holder = SlotHolder(logins)
    waiter = Waiter(logins)
    assert not waiter.turn.is_set()
    holder.go.set()
    assert waiter.turn.wait(30)
    waiter.thread.join(30)
    assert isinstance(waiter.result, AuthError)


def test_a_sign_in_waiting_for_a_slot_gives_up_when_stop_is_set_without_polling() -> None:
    logins = Logins(concurrency=1, start_jitter=0)
    holder = SlotHolder(logins)
    waiter = Waiter(logins)
    waiter.stop.set()
    logins.wake()  # what the bridge's shutdown does after setting its stop event
    waiter.thread.join(30)
    assert not waiter.thread.is_alive() and waiter.result is None
    assert not waiter.turn.is_set() and holder.thread.is_alive()  # the slot was never free
    holder.go.set()
    holder.thread.join(30)
