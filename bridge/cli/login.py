"""`outlook2mqtt login`: delegated sign-in with the device-code flow (RFC 8628).

MSAL asks the identity platform for a code; a person opens the verification page on any
device, enters it and signs in as the account's mailbox. The verification URL and code
are printed and, when the broker is reachable, published retained on `B/A/status` so a
dashboard can show them. Only a sign-in of the configured mailbox is saved, to the
account's token cache (mode 0600), where a running bridge picks it up by itself.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import msal

from bridge.auth.delegated import TokenCacheFile, public_client, signed_in_user
from bridge.auth.tokens import MSAL_ERRORS, error_from_result, network_error
from bridge.cli.configuration import add_command, unknown_account
from bridge.cli.exits import EXIT_FAIL, EXIT_OK
from bridge.config.model import AccountConfig, Config
from bridge.errors import AuthError
from bridge.log import register_secret
from bridge.mailbox.status import AccountStatus
from bridge.mqtt.client import MqttClient
from bridge.mqtt.topics import Topics
from bridge.smtp.outbox import login_scopes
from bridge.util.times import iso_ts

_LOGGER = logging.getLogger(__name__)

MQTT_TIMEOUT = 3.0


def choose_account(config: Config, name: str | None) -> AccountConfig | str:
    """The delegated account to sign in (by name, or the only one); else why not."""
    delegated = [a for a in config.accounts if a.auth == "device_code"]
    if name is not None:
        found = config.account(name)
        if found is None:
            return unknown_account(config, name)
        if found.auth != "device_code":
            return (f"account {name!r} uses auth = \"{found.auth}\", which needs no sign-in;"
                    " login is for auth = \"device_code\" accounts")
        return found
    if len(delegated) == 1:
        return delegated[0]
    if not delegated:
        return "no account uses auth = \"device_code\": there is nothing to sign in"
    names = ", ".join(a.name for a in delegated)
    return f"several accounts use device_code ({names}): choose one with --account NAME"


class _Announcer:
    """Best effort: the account's retained status while `login` runs. A broker that is
    down or refuses us costs a warning, never the sign-in."""

    def __init__(self, config: Config, account: AccountConfig) -> None:
        self._topic = Topics(config.mqtt.base_topic).account_status(account.name)
        self._client: MqttClient | None = None
        self._reachable = True
        try:
            self._client = MqttClient(config.mqtt, client_id=f"{config.mqtt.client_id}-login")
            self._client.start()
        except (OSError, ValueError) as exc:
            self._unreachable(str(exc))

    def _unreachable(self, why: str) -> None:
        if self._reachable:
            _LOGGER.warning("MQTT broker not reachable (%s): the code is shown here only", why)
        self._reachable = False

    def publish(self, payload: bytes) -> None:
        if self._client is None or not self._reachable:
            return
        if not self._client.publish(self._topic, payload, retain=True).wait(MQTT_TIMEOUT):
            self._unreachable(self._client.last_error or "no acknowledgement")

    def close(self) -> None:
        if self._client is not None:
            self._client.stop()


def _status(announcer: _Announcer) -> AccountStatus:
    # one pseudo-worker that never connects: the status says connected false
    return AccountStatus(["login"], announcer.publish)


def login(
    config: Config,
    account: AccountConfig,
    out: TextIO,
    *,
    app_factory: Callable[..., Any] = msal.PublicClientApplication,
    announce: bool = True,
) -> bool:
    """Sign the account's mailbox in and save the token cache; True on success."""
    if account.token_cache is None:  # the config always sets it for device_code
        raise AuthError("token_cache is not set")
    announcer = _Announcer(config, account) if announce else None
    try:
        return _login(account, account.token_cache, out, app_factory, announcer)
    finally:
        if announcer is not None:
            announcer.close()


def _say(out: TextIO, text: str) -> None:
    out.write(text + "\n")
    out.flush()


def _login(account: AccountConfig, cache_path: Path, out: TextIO,
           app_factory: Callable[..., Any], announcer: _Announcer | None) -> bool:
    status = _status(announcer) if announcer is not None else None
    cache_file = TokenCacheFile(cache_path)  # fresh: the old sign-in is replaced
    try:
        app = public_client(account, cache_file.cache, app_factory)
        flow = app.initiate_device_flow(scopes=login_scopes(account))
    except MSAL_ERRORS as exc:
        _say(out, f"Cannot start the sign-in: {network_error(exc, account.authority)}")
        return False
    if "user_code" not in flow:
        _say(out, f"Cannot start the sign-in: {error_from_result(flow)}")
        return False
    _show_code(account, flow, out, status)
    try:
        result = app.acquire_token_by_device_flow(flow)
    except KeyboardInterrupt:
        _say(out, "Sign-in aborted; nothing saved.")
        return False
    except MSAL_ERRORS as exc:
        result = {"error": "network", "error_description": str(
            network_error(exc, account.authority))}
    refused = _refusal(account, result)
    if refused is not None:
        said, reported = refused
        _say(out, said)
        if status is not None:
            status.login_required("login", reported)
        return False
    return _save(account, result, cache_file, out, announcer)


def _show_code(account: AccountConfig, flow: dict[str, Any], out: TextIO,
               status: AccountStatus | None) -> None:
    """Print the verification URL and code, and publish them for a dashboard."""
    register_secret(str(flow.get("device_code", "")))
    expires = iso_ts(float(flow.get("expires_at", time.time() + 900)))
    uri, code = str(flow["verification_uri"]), str(flow["user_code"])
    _say(out, f"To sign in {account.name} ({account.mailbox}), open {uri} on any device and "
              f"enter the code {code}")
    _say(out, f"The code is valid until {expires}. Sign in as {account.mailbox}. Waiting...")
    if status is not None:
        status.login_required("login", f"waiting for the sign-in of {account.mailbox}",
                              {"verification_uri": uri, "user_code": code, "expires": expires})


def _refusal(account: AccountConfig, result: dict[str, Any]) -> tuple[str, str] | None:
    """Why the sign-in's `result` is not saved: (what is printed, what the status says)."""
    if "access_token" not in result:
        error = error_from_result(result)
        why = ("the code expired before the sign-in finished: run login again"
               if error.error == "expired_token" else str(error))
        return f"Sign-in failed: {why}", f"sign-in failed: {why}"
    register_secret(str(result["access_token"]))
    register_secret(str(result.get("refresh_token", "")))
    user = signed_in_user(result.get("id_token_claims") or {})
    if user is None or user.casefold() != account.mailbox.casefold():
        why = (f"signed in as {user or 'an unknown user'}, but the mailbox of account "
               f"{account.name} is {account.mailbox}: sign in as {account.mailbox} (sign out "
               "of the other account at the verification page, or use a private browser "
               "window), or change mailbox in the config. Nothing saved")
        return f"Refused: {why}.", why
    return None


def _save(account: AccountConfig, result: dict[str, Any], cache_file: TokenCacheFile,
          out: TextIO, announcer: _Announcer | None) -> bool:
    """Save the mailbox's sign-in to the token cache; True when it is written."""
    user = signed_in_user(result.get("id_token_claims") or {})
    expires_at = time.time() + float(result.get("expires_in", 3599))
    if announcer is not None:
        # Before the cache is saved: a running bridge publishes its own status once it
        # sees the new cache, and that must come last.
        announcer.publish(json.dumps({
            "connected": False, "auth": "ok", "last_error": None, "last_sync": None,
            "token_expires": iso_ts(expires_at)}).encode())
    try:
        cache_file.save(force=True)
    except OSError as exc:
        _say(out, f"Signed in as {user}, but cannot write {cache_file.path}: "
                  f"{exc.strerror or exc}")
        return False
    _say(out, f"Signed in as {user}. Token cache saved to {cache_file.path} (mode 0600); a "
              "running bridge picks it up within seconds.")
    return True


def add_parser(subparsers: Any, *, parents: Sequence[argparse.ArgumentParser]) -> None:
    p = add_command(subparsers, "login", "sign in a device_code account (personal "
                    "Outlook.com)", parents, run,
                    description="Sign in an auth = \"device_code\" account: print a URL and "
                    "a code to enter on any device, wait for the sign-in as the account's "
                    "mailbox, and save the token cache (mode 0600) for run.")
    p.add_argument("--account", help="the account (needed when several use device_code)")


def run(args: argparse.Namespace, config: Config) -> int:
    """Sign a device_code account in (device-code flow) and save its token cache."""
    account = choose_account(config, args.account)
    if isinstance(account, str):
        print(f"outlook2mqtt: {account}", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK if login(config, account, sys.stdout) else EXIT_FAIL
