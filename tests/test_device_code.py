"""Delegated sign-in without servers: the persisted token cache, `login_required` in the
status and the workers, and what check, the command worker and Home Assistant make of it."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bridge.auth.delegated import (
    DelegatedTokenProvider,
    TokenCacheFile,
    cache_stamp,
    wait_for_new_login,
)
from bridge.auth.providers import token_provider
from bridge.auth.tokens import Token, TokenProvider
from bridge.cli import login as login_mod
from bridge.cli.token_checks import token_step
from bridge.commands.worker import CommandWorker
from bridge.config.load import parse_config
from bridge.config.model import AccountConfig, Config
from bridge.errors import LoginRequired
from bridge.mailbox.status import AccountStatus
from bridge.mqtt.discovery import build_discovery, device_topic, node_id
from bridge.mqtt.topics import Topics
from bridge.util.files import write_atomic
from tests.test_discovery import render

MAILBOX = "Me@Outlook.test"


def make_config(tmp_path: Path, *accounts: dict[str, Any]) -> Config:
    default = {"name": "home", "mailbox": MAILBOX, "client_id": "0" * 8 + "-0000-0000-0000-"
               + "0" * 12, "auth": "device_code"}
    return parse_config({"mqtt": {"host": "broker.local"},
                         "bridge": {"state_dir": str(tmp_path / "state")},
                         "accounts": list(accounts) or [default]}, environ={})


@pytest.fixture
def account(tmp_path: Path) -> AccountConfig:
    return make_config(tmp_path).accounts[0]


class FakeApp:
    """The part of PublicClientApplication the provider uses."""

    def __init__(self, result: dict[str, Any] | None, users: list[str]) -> None:
        self.result, self.users, self.calls = result, users, 0

    def get_accounts(self) -> list[dict[str, str]]:
        return [{"username": u, "home_account_id": f"{i}.t"} for i, u in enumerate(self.users)]

    def acquire_token_silent_with_error(self, scopes: list[str], account: dict[str, str],
                                        force_refresh: bool = False) -> dict[str, Any] | None:
        self.calls += 1
        return self.result


def provider(account: AccountConfig, app: FakeApp) -> DelegatedTokenProvider:
    return DelegatedTokenProvider(account, app_factory=lambda *_a, **_k: app)


REVOKED = {"error": "invalid_grant", "error_codes": [50173],
           "error_description": "AADSTS50173: The provided grant has expired due to it being "
                                "revoked.\r\nTrace ID: x"}


# -- config and provider choice --------------------------------------------------------------


def test_device_code_accounts_get_the_delegated_provider_and_a_cache_in_state_dir(
        tmp_path: Path, account: AccountConfig) -> None:
    assert account.tenant_id == "consumers"
    assert account.scope == "https://outlook.office.com/IMAP.AccessAsUser.All"
    assert account.token_cache == tmp_path / "state" / "home.token-cache.json"
    assert isinstance(token_provider(account), DelegatedTokenProvider)
    secret = make_config(tmp_path, {"name": "w", "mailbox": "a@b.c", "tenant_id": "t",
                                    "client_id": "c", "client_secret": "s" * 20}).accounts[0]
    assert isinstance(token_provider(secret), TokenProvider)


# -- the provider ------------------------------------------------------------------------------


def test_without_a_cache_file_login_is_required_and_nobody_is_asked(
        account: AccountConfig) -> None:
    app = FakeApp({"access_token": "x"}, [MAILBOX])
    with pytest.raises(LoginRequired, match=r"run `outlook2mqtt login --account home`") as info:
        provider(account, app).get_token()
    assert info.value.stamp is None
    assert app.calls == 0


def test_a_revoked_sign_in_asks_once_then_waits_for_the_cache_file_to_change(
        account: AccountConfig) -> None:
    assert account.token_cache is not None
    account.token_cache.parent.mkdir(parents=True)
    account.token_cache.write_text("{}")
    app = FakeApp(REVOKED, [MAILBOX.lower()])
    p = provider(account, app)
    for _ in range(3):
        with pytest.raises(LoginRequired, match="AADSTS50173") as info:
            p.get_token()
    assert app.calls == 1  # the identity platform is not hammered
    assert info.value.code == 50173 and info.value.error == "invalid_grant"
    assert info.value.stamp == cache_stamp(account.token_cache)
    # `login` saves a new cache: the provider tries again
    time.sleep(0.01)
    account.token_cache.write_text("{ }")
    app.result = {"access_token": "opaque-token-of-a-personal-account", "expires_in": 3600}
    token = p.get_token()
    assert app.calls == 2
    assert token.username == MAILBOX.lower() and token.delegated
    assert token.claims == {} and 3500 < token.expires_in <= 3600


def test_a_cache_of_another_user_is_not_used(account: AccountConfig) -> None:
    assert account.token_cache is not None
    account.token_cache.parent.mkdir(parents=True)
    account.token_cache.write_text("{}")
    app = FakeApp({"access_token": "x"}, ["other@outlook.test"])
    with pytest.raises(LoginRequired, match="sign-in for other@outlook.test, not for "
                                            f"{MAILBOX}"):
        provider(account, app).get_token()
    assert app.calls == 0


def test_the_cache_is_written_0600_only_when_changed_and_never_over_a_new_login(
        tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    cache = TokenCacheFile(path)
    cache.load()
    cache.save()
    assert not path.exists()  # nothing changed
    cache.cache.has_state_changed = True
    cache.save()
    assert path.stat().st_mode & 0o777 == 0o600
    assert cache.stamp == cache_stamp(path)
    # `login` replaced the file after our load: our refresh must not overwrite it
    path.write_text('{"AccessToken": {}}')
    cache.cache.has_state_changed = True
    cache.save()
    assert path.read_text() == '{"AccessToken": {}}'
    assert cache.load() is True


def test_waiting_for_a_login_ends_when_the_file_changes_or_on_stop(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    stop = threading.Event()
    # Replaced whole, as `login` saves it: a plain write_text could be seen half done (an
    # empty file), and the stamp taken then would change once the write completes.
    threading.Timer(0.1, write_atomic, args=(path, b"{}")).start()
    assert wait_for_new_login(path, None, stop, interval=0.05) is True
    threading.Timer(0.1, stop.set).start()
    assert wait_for_new_login(path, cache_stamp(path), stop, interval=0.05) is False


# -- status, Home Assistant, commands, check -------------------------------------------------


def test_status_shows_login_required_with_the_pending_code_once() -> None:
    published: list[dict[str, Any]] = []
    status = AccountStatus(["folder:inbox", "folder:sent"],
                           lambda payload: published.append(json.loads(payload)))
    status.connected("folder:inbox", time.time() + 60)
    status.login_required("folder:inbox", "sign-in needed")
    status.login_required("folder:sent", "sign-in needed")  # the second folder: no repeat
    assert [p["auth"] for p in published] == ["ok", "login_required"]
    assert published[-1]["connected"] is False and "user_code" not in published[-1]
    code = {"verification_uri": "https://microsoft.com/devicelogin", "user_code": "ABC",
            "expires": "2026-01-01T00:15:00+00:00"}
    status.login_required(None, "waiting", code)
    assert published[-1] | code == published[-1]
    status.connected("folder:inbox")
    assert published[-1]["auth"] == "ok" and "user_code" not in published[-1]


def test_home_assistant_connectivity_is_off_while_login_is_required(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    discovery = build_discovery(config, Topics(config.mqtt.base_topic))
    (account,) = config.accounts
    device = json.loads(discovery[device_topic(
        config.homeassistant.prefix, node_id(config.mqtt.base_topic, account.name))])
    sensor = device["components"]["connectivity"]
    for auth, state in (("login_required", "OFF"), ("ok", "ON")):
        payload = {"connected": auth == "ok", "auth": auth}
        assert render(sensor["value_template"], payload).strip() == state


def test_a_command_under_login_required_gets_a_clear_error(account: AccountConfig) -> None:
    class NoSignIn:
        account = None

        def get_token(self, *, force: bool = False) -> Token:
            raise LoginRequired("no sign-in saved yet: sign-in needed, run `outlook2mqtt "
                                "login --account home`")

    worker = CommandWorker(account=account, provider=NoSignIn(),  # type: ignore[arg-type]
                           publishers={}, reply=lambda _m, _p: None, on_changed=lambda _f: None,
                           stop=threading.Event())
    reply = json.loads(worker.handle(b'{"action": "mark_read", "folder": "INBOX", "uid": 1, '
                                     b'"id": "c"}', None))
    assert reply["status"] == "error" and reply["id"] == "c"
    assert reply["error"].startswith("login required: ")
    assert "outlook2mqtt login --account home" in reply["error"]


class Fixed:
    def __init__(self, token: Token | Exception, account: AccountConfig) -> None:
        self.token, self.account = token, account

    def get_token(self, *, force: bool = False) -> Token:
        if isinstance(self.token, Exception):
            raise self.token
        return self.token


def test_check_judges_delegated_tokens_by_user_and_scope(account: AccountConfig) -> None:
    claims = {"aud": "https://outlook.office.com", "scp": "IMAP.AccessAsUser.All",
              "upn": MAILBOX.upper()}
    good = Token("t", time.time() + 3600, claims, MAILBOX)
    step, _ = token_step(account, Fixed(good, account))
    assert step.ok and f"user {MAILBOX.upper()}" in step.detail
    wrong = Token("t", time.time() + 3600, {**claims, "upn": "x@y.z"}, "x@y.z")
    step, _ = token_step(account, Fixed(wrong, account))
    assert not step.ok and step.error == "wrong_user"
    opaque = Token("t", time.time() + 3600, {}, MAILBOX)
    step, _ = token_step(account, Fixed(opaque, account))
    assert step.ok and "opaque" in step.detail
    step, token = token_step(account, Fixed(LoginRequired("no sign-in"), account))
    assert token is None and step.error == "login_required"
    assert step.hint == "run `outlook2mqtt login --account home`"


# -- login -------------------------------------------------------------------------------------


def test_login_chooses_the_only_device_code_account_or_asks(tmp_path: Path) -> None:
    secret = {"name": "work", "mailbox": "a@b.c", "tenant_id": "t", "client_id": "c",
              "client_secret": "s" * 20}
    home = {"name": "home", "mailbox": MAILBOX, "client_id": "c", "auth": "device_code"}
    config = make_config(tmp_path, secret, home)
    assert login_mod.choose_account(config, None) == config.accounts[1]
    assert "needs no sign-in" in str(login_mod.choose_account(config, "work"))
    assert "no account named 'x'" in str(login_mod.choose_account(config, "x"))
    two = make_config(tmp_path, home, {**home, "name": "home2"})
    assert "--account" in str(login_mod.choose_account(two, None))


class FlowApp:
    def __init__(self, user: str) -> None:
        self.user = user

    def initiate_device_flow(self, scopes: list[str]) -> dict[str, Any]:
        assert not {"offline_access", "openid", "profile"} & set(scopes)  # MSAL adds them
        return {"user_code": "CODE1", "device_code": "d" * 40, "expires_at": time.time() + 900,
                "verification_uri": "https://microsoft.com/devicelogin", "interval": 5}

    def acquire_token_by_device_flow(self, flow: dict[str, Any]) -> dict[str, Any]:
        return {"access_token": "a" * 40, "refresh_token": "r" * 40, "expires_in": 3600,
                "id_token_claims": {"preferred_username": self.user}}


@pytest.mark.parametrize(("user", "saved"), [(MAILBOX.lower(), True), ("x@y.z", False)])
def test_login_saves_only_a_sign_in_of_the_mailbox(
        tmp_path: Path, user: str, saved: bool) -> None:
    config = make_config(tmp_path)
    account = config.accounts[0]
    out = io.StringIO()
    ok = login_mod.login(config, account, out, app_factory=lambda *_a, **_k: FlowApp(user),
                         announce=False)
    assert ok is saved
    assert account.token_cache is not None and account.token_cache.exists() is saved
    text = out.getvalue()
    assert "open https://microsoft.com/devicelogin on any device and enter the code CODE1" in text
    if not saved:
        assert f"signed in as x@y.z, but the mailbox of account home is {MAILBOX}" in text


def test_init_signs_a_device_code_account_in_before_checking(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    from tests.clitools import main

    signed_in: list[str] = []

    def fake_login(config: Config, account: AccountConfig, out: Any, **_kw: Any) -> bool:
        signed_in.append(account.mailbox)
        return False  # the person never showed up

    monkeypatch.setattr(login_mod, "login", fake_login)
    path = tmp_path / "config.toml"
    assert main("init", "--non-interactive", "--output", str(path), "--auth", "device_code",
                "--client-id", "11111111-2222-3333-4444-555555555555", "--mailbox", MAILBOX,
                "--state-dir", str(tmp_path), "--check") == 1
    assert signed_in == [MAILBOX]
    assert f"sign in later with: outlook2mqtt login -c {path}" in capsys.readouterr().out
