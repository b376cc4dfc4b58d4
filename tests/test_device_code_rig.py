"""Delegated sign-in on the rig: `login` with the device-code flow, then `run` on the saved,
refreshed token cache; revocation, resuming without a restart, the wrong user, no leaks.

The test plays the person at the browser: it reads the code `login` prints and approves it
at the identity-platform stand-in (`idp.delegated.approve`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rig.bridgecfg import rig_config, write_config
from rig.dovecot import Dovecot
from rig.idp import App, IdentityPlatform
from rig.idp_delegated import PublicApp
from rig.mosquitto import Mosquitto
from rig.mqttsub import Collector, Received
from rig.pki import TestPKI
from rig.samples import make_message
from tests.bridgeproc import ROOT, BridgeProcess, run_cli
from tests.conftest import wait_online

CODE = re.compile(r"enter the code (\S+)")


@pytest.fixture
def public_app(idp: IdentityPlatform) -> PublicApp:
    return idp.delegated.register_public_app()


def delegated_config(
    *, idp: IdentityPlatform, pki: TestPKI, dovecot: Dovecot, mosquitto: Mosquitto,
    client_id: str, mailbox: str, state_dir: Path, base_topic: str, **extra: Any,
) -> dict[str, Any]:
    """rig_config for one `auth = "device_code"` account (it only knows app-only keys)."""
    data = rig_config(
        authority=idp.authority, ca_file=pki.ca_file, imap_port=dovecot.port,
        mqtt_port=mosquitto.port, tenant_id="consumers", client_id=client_id, mailbox=mailbox,
        state_dir=state_dir, base_topic=base_topic, secret="unused", **extra)
    account = data["accounts"][0]
    del account["client_secret"]
    account["auth"] = "device_code"
    return data


class Login:
    """`outlook2mqtt login` as a child process, read line by line."""

    def __init__(self, config_path: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "login", "-c", str(config_path), "--log-level",
             "debug", *args],
            cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []

    def code(self, timeout: float = 30) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if found := CODE.search(line):
                return found[1]
        raise AssertionError("login printed no code:\n" + "".join(self.lines))

    def finish(self, timeout: float = 30) -> tuple[int, str]:
        out, _ = self.proc.communicate(timeout=timeout)
        self.lines.append(out)
        return self.proc.returncode, "".join(self.lines)


def sign_in(idp: IdentityPlatform, config_path: Path, user: str) -> tuple[int, str]:
    """Run login and approve its code as `user`; (exit code, output)."""
    login = Login(config_path)
    try:
        idp.delegated.approve(login.code(), user)
        return login.finish()
    finally:
        if login.proc.poll() is None:
            login.proc.kill()


def status_of(collector: Collector, base: str, account: str) -> list[dict[str, Any]]:
    return [m.json() for m in collector.on(f"{base}/{account}/status")]


def wait_status(collector: Collector, base: str, account: str, auth: str,
                timeout: float = 30) -> Received:
    """The next status (from now on) that says `auth`."""

    def match(m: Received) -> bool:
        return m.topic == f"{base}/{account}/status" and m.json().get("auth") == auth

    seen = len([m for m in collector.on(f"{base}/{account}/status") if match(m)])
    return collector.wait_for(match, count=seen + 1, timeout=timeout)[-1]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


# -- login ---------------------------------------------------------------------------------


def test_login_shows_the_code_on_mqtt_and_saves_a_private_cache(
    idp: IdentityPlatform, pki: TestPKI, dovecot: Dovecot, mosquitto: Mosquitto,
    public_app: PublicApp, mailbox: str, workdir: Path, base_topic: str, collector: Collector,
) -> None:
    config = delegated_config(idp=idp, pki=pki, dovecot=dovecot, mosquitto=mosquitto,
                              client_id=public_app.client_id, mailbox=mailbox,
                              state_dir=workdir / "state", base_topic=base_topic)
    path = write_config(workdir / "config.toml", config)
    login = Login(path)
    code = login.code()
    # A dashboard can show the code: retained on the account's status topic.
    shown = collector.wait_for(lambda m: m.topic == f"{base_topic}/home/status"
                               and m.json().get("user_code") == code)[-1]
    assert shown.retain
    status = shown.json()
    assert status["auth"] == "login_required"
    assert status["connected"] is False
    assert status["verification_uri"].endswith("/devicelogin")
    assert datetime.fromisoformat(status["expires"]) > datetime.now(UTC)
    polls = idp.delegated.stats.device_polls
    deadline = time.monotonic() + 30
    while idp.delegated.stats.device_polls < polls + 2:  # authorization_pending first
        assert time.monotonic() < deadline, "login does not poll for the sign-in"
        time.sleep(0.1)
    idp.delegated.approve(code, mailbox.upper())  # the user types their address in capitals
    rc, out = login.finish()
    assert rc == 0, out
    assert f"Signed in as {mailbox.upper()}" in out
    cache = workdir / "state" / "home.token-cache.json"
    assert cache.stat().st_mode & 0o777 == 0o600
    assert "RefreshToken" in cache.read_text()
    done = collector.wait_for(lambda m: m.topic == f"{base_topic}/home/status"
                              and m.json()["auth"] == "ok")[-1].json()
    assert done["last_error"] is None and "user_code" not in done
    # `token` and `check` see a delegated token of that user
    token = run_cli("token", "-c", str(path))
    assert token.returncode == 0, token.stderr
    shown_token = json.loads(token.stdout)["home"]
    assert shown_token["claims"]["scp"] == "IMAP.AccessAsUser.All"
    assert shown_token["claims"]["upn"].casefold() == mailbox.casefold()
    check = run_cli("check", "-c", str(path))
    assert check.returncode == 0, check.stdout
    assert "scp IMAP.AccessAsUser.All" in check.stdout
    for raw in idp.delegated.stats.raw_tokens:
        assert raw not in out + check.stdout + token.stdout + token.stderr


def test_a_sign_in_of_another_user_is_refused_and_not_saved(
    idp: IdentityPlatform, pki: TestPKI, dovecot: Dovecot, mosquitto: Mosquitto,
    public_app: PublicApp, mailbox: str, workdir: Path, base_topic: str,
) -> None:
    config = delegated_config(idp=idp, pki=pki, dovecot=dovecot, mosquitto=mosquitto,
                              client_id=public_app.client_id, mailbox=mailbox,
                              state_dir=workdir / "state", base_topic=base_topic)
    path = write_config(workdir / "config.toml", config)
    rc, out = sign_in(idp, path, "someone.else@outlook.test")
    assert rc == 1
    assert f"signed in as someone.else@outlook.test, but the mailbox of account home is " \
           f"{mailbox}" in out
    assert "Nothing saved" in out
    assert not (workdir / "state" / "home.token-cache.json").exists()
    # and without a cache, check says how to sign in
    check = run_cli("check", "-c", str(path))
    assert check.returncode == 1
    assert "FAIL  [home] token acquired" in check.stdout
    assert "run `outlook2mqtt login --account home`" in check.stdout


# -- run -----------------------------------------------------------------------------------


@pytest.mark.slow  # several token lifetimes
def test_run_refreshes_then_waits_for_a_new_login_while_other_accounts_publish(
    idp: IdentityPlatform, pki: TestPKI, dovecot: Dovecot, mosquitto: Mosquitto,
    public_app: PublicApp, app: App, tenant: str, mailbox: str, workdir: Path,
    base_topic: str, collector: Collector, bridges: list[BridgeProcess],
) -> None:
    config = delegated_config(idp=idp, pki=pki, dovecot=dovecot, mosquitto=mosquitto,
                              client_id=public_app.client_id, mailbox=mailbox,
                              state_dir=workdir / "state", base_topic=base_topic)
    work_mailbox = f"w{uuid.uuid4().hex[:10]}@contoso.test"
    app.mailboxes.add(work_mailbox)
    work = rig_config(authority=idp.authority, ca_file=pki.ca_file, imap_port=dovecot.port,
                      mqtt_port=mosquitto.port, tenant_id=tenant, client_id=app.client_id,
                      mailbox=work_mailbox, state_dir=workdir / "state", secret=app.secrets[0],
                      account="work")["accounts"][0]
    config["accounts"].append(work)
    path = write_config(workdir / "config.toml", config)
    # Every connection redeems the refresh token (MSAL renews tokens with under 5 minutes
    # left); renewal every 8 s, long enough for a login on a busy machine.
    idp.token_lifetime = 10
    rc, out = sign_in(idp, path, mailbox)
    assert rc == 0, out
    shown_by_login = len(status_of(collector, base_topic, "home"))

    bridge = BridgeProcess(workdir, config)
    bridges.append(bridge)
    bridge.start()
    wait_online(collector, base_topic)
    inbox = f"{base_topic}/home/inbox/message"
    refreshes = idp.delegated.stats.refreshes
    dovecot.deliver(mailbox, make_message(subject="before expiry"))
    collector.wait_topic(inbox)
    # a few token lifetimes: each renewal redeems (and rotates) the refresh token
    deadline = time.monotonic() + 60
    while idp.delegated.stats.refreshes < refreshes + 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert idp.delegated.stats.refreshes >= refreshes + 2
    dovecot.deliver(mailbox, make_message(subject="after expiry"))
    assert collector.wait_topic(inbox, count=2)[-1].json()["subject"] == "after expiry"
    seen = status_of(collector, base_topic, "home")[shown_by_login:]
    assert {s["auth"] for s in seen} <= {"unknown", "ok"}  # no prompt, no error

    # The user's sessions are revoked: the account waits for a sign-in, the other runs on.
    idp.delegated.revoke_refresh_tokens(mailbox)
    waiting = wait_status(collector, base_topic, "home", "login_required").json()
    assert waiting["connected"] is False
    assert "outlook2mqtt login --account home" in waiting["last_error"]
    collector.publish(f"{base_topic}/home/inbox/command",
                      json.dumps({"action": "mark_all_read", "id": "c1"}).encode())
    result = collector.wait_topic(f"{base_topic}/home/command/result")[-1].json()
    assert result["status"] == "error"
    assert result["error"].startswith("login required:")
    refreshes = idp.delegated.stats.refreshes
    time.sleep(3)
    # waiting for the cache file, not hammering the identity platform
    assert idp.delegated.stats.refreshes == refreshes
    dovecot.deliver(work_mailbox, make_message(subject="work goes on"))
    assert collector.wait_topic(f"{base_topic}/work/inbox/message")[-1].json()[
        "subject"] == "work goes on"

    # A new login brings it back without restarting run.
    rc, out = sign_in(idp, path, mailbox)
    assert rc == 0, out
    wait_status(collector, base_topic, "home", "ok")
    collector.wait_for(lambda m: m.topic == f"{base_topic}/home/status"
                       and m.json().get("connected") is True
                       and m.json().get("auth") == "ok")
    dovecot.deliver(mailbox, make_message(subject="signed in again"))
    assert collector.wait_topic(inbox, count=3)[-1].json()["subject"] == "signed in again"

    assert bridge.stop() == 0
    cache = workdir / "state" / "home.token-cache.json"
    assert cache.stat().st_mode & 0o777 == 0o600
    log = bridge.log()
    # the log covered every renewal and login, so finding no token in it means something
    assert log.count("token acquired for account home") >= 3
    assert "AUTHENTICATE" in log
    leaked = [t[:12] for t in idp.delegated.stats.raw_tokens if t in log or t in out]
    assert not leaked
    assert not any(s.payload for s in collector.on(f"{base_topic}/home/status")
                   if any(t in s.payload.decode() for t in idp.delegated.stats.raw_tokens))
