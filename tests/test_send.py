"""Sending without a network: `[accounts.send]` validation, the SMTP hints, message building,
the sending commands' parsing (every hostile case refused before a message exists) and the
notify entity's discovery and template.
"""

from __future__ import annotations

import json
import re
from email.headerregistry import Address
from pathlib import Path
from typing import Any

import pytest

from bridge.commands.outgoing import SendCommand, parse_request
from bridge.commands.parse import Command, InvalidCommand
from bridge.config.load import parse_config
from bridge.config.model import AccountConfig, Config
from bridge.config.send import SEND_KEYS
from bridge.errors import ConfigError
from bridge.mqtt.discovery import build_discovery
from bridge.mqtt.topics import Topics
from bridge.smtp import compose
from bridge.smtp.hints import smtp_hint
from bridge.smtp.outbox import Outbox, SendRefused, login_scopes, smtp_scope
from tests.hatemplates import render_ha

TENANT = "11111111-1111-1111-1111-111111111111"
# the account's discovery config (the bridge publishes its own device beside it)
ACCOUNT_DEVICE = "homeassistant/device/outlook2mqtt_home/config"
SEND = {"enabled": True, "allowed_recipients": ["*@contoso.com", "me@example.com"],
        "default_to": ["me@example.com"]}


def make_config(send: dict[str, Any] | None = None, **extra: Any) -> Config:
    account: dict[str, Any] = {"name": "home", "mailbox": "bot@contoso.com",
                               "tenant_id": TENANT, "client_id": TENANT,
                               "client_secret": "not-a-real-secret", **extra}
    if send is not None:
        account["send"] = send
    return parse_config({"mqtt": {"host": "broker.local"}, "accounts": [account]}, environ={})


def home(send: dict[str, Any] | None = None, **extra: Any) -> AccountConfig:
    found = make_config(SEND if send is None else send, **extra).account("home")
    assert found is not None
    return found


def problems(send: dict[str, Any], **extra: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        make_config(send, **extra)
    return caught.value.problems


# -- config ----------------------------------------------------------------------------------


def test_no_send_table_means_sending_off() -> None:
    account = make_config().account("home")
    assert account is not None and account.send is None and not account.sending


def test_send_defaults_follow_the_cloud_and_the_auth() -> None:
    send = home().send
    assert send is not None
    assert (send.smtp_host, send.smtp_port, send.max_per_minute, send.max_bytes) == (
        "smtp.office365.com", 587, 30, 25_000_000)
    gov = home(cloud="usgov").send
    assert gov is not None and gov.smtp_host == "smtp.office365.us"
    personal = parse_config({"mqtt": {"host": "b"}, "accounts": [{
        "name": "me", "mailbox": "me@outlook.com", "client_id": TENANT, "auth": "device_code",
        "send": SEND}]}, environ={}).accounts[0]
    assert personal.send is not None and personal.send.smtp_host == "smtp-mail.outlook.com"
    assert smtp_scope(personal) == "https://outlook.office.com/SMTP.Send"
    assert login_scopes(personal) == ["https://outlook.office.com/IMAP.AccessAsUser.All",
                                      "https://outlook.office.com/SMTP.Send"]
    assert smtp_scope(home()) == "https://outlook.office365.com/.default"


def test_allowed_recipients_is_required_and_an_empty_list_allows_nobody() -> None:
    found = problems({"enabled": True})
    assert any(p.startswith("accounts[0].send.allowed_recipients: required") for p in found)
    nobody = home({"allowed_recipients": []}).send
    assert nobody is not None and not nobody.allows("me@example.com")


@pytest.mark.parametrize(("send", "key"), [
    ({**SEND, "allowed_recipients": ["not a glob"]}, "send.allowed_recipients[0]"),
    ({**SEND, "default_to": ["stranger@elsewhere.example"]}, "send.default_to[0]"),
    ({**SEND, "default_to": ["not-an-address"]}, "send.default_to[0]"),
    ({**SEND, "default_subject": "two\nlines"}, "send.default_subject"),
    ({**SEND, "max_per_minute": 0}, "send.max_per_minute"),
    ({**SEND, "smtp_host": "smtp://x"}, "send.smtp_host"),
    ({**SEND, "maxperminute": 3}, "send.maxperminute"),
])
def test_send_table_problems_name_their_key(send: dict[str, Any], key: str) -> None:
    assert any(p.startswith(f"accounts[0].{key}:") for p in problems(send))


def test_allow_list_globs_ignore_case() -> None:
    send = home().send
    assert send is not None
    assert send.allows("Alice@Contoso.COM") and send.allows("ME@example.com")
    assert not send.allows("me@example.com.evil") and not send.allows("x@sub.contoso.com.evil")


# -- hints -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "text", "expected"), [
    (535, "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the "
     "Mailbox", "Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled $false"),
    (535, "5.7.3 Authentication unsuccessful", "New-ServicePrincipal"),
    (535, "5.7.8 Authentication failed.", "SMTP.SendAsApp"),
    (432, "4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded", "3 SMTP connections"),
    (554, "5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException", "10,000"),
    (550, "5.7.30 Basic authentication is not supported for Client Submission", "OAuth2"),
])
def test_exchange_smtp_answers_map_to_their_fix(code: int, text: str, expected: str) -> None:
    hint = smtp_hint(code, text)
    assert hint is not None and expected in hint


def test_an_unknown_answer_has_no_hint() -> None:
    assert smtp_hint(250, "2.0.0 OK") is None


# -- building ----------------------------------------------------------------------------------


ORIGINAL = (
    b"From: Alice <alice@contoso.com>\r\nTo: bot@contoso.com, Carol <carol@contoso.com>\r\n"
    b"Cc: Bot <BOT@contoso.com>\r\nSubject: Re: Lunch\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <m2@contoso.com>\r\nReferences: <m1@contoso.com>\r\n\r\nAt noon?\r\n"
)


def test_reply_all_threads_keeps_one_re_and_never_mails_the_sender_itself() -> None:
    original = compose.parse_original(ORIGINAL)
    recipients = compose.reply_recipients(original, "bot@contoso.com", reply_all=True)
    assert [a.addr_spec for a in recipients.to] == ["alice@contoso.com"]
    assert [a.addr_spec for a in recipients.cc] == ["carol@contoso.com"]
    content = compose.reply_content(original, "Yes", None)
    assert content.subject == "Re: Lunch"
    assert content.text is not None and "> At noon?" in content.text
    assert compose.thread_headers(original) == {
        "In-Reply-To": "<m2@contoso.com>", "References": "<m1@contoso.com> <m2@contoso.com>"}


def test_bcc_is_only_in_the_envelope_and_non_ascii_is_encoded() -> None:
    recipients = compose.Recipients(to=(Address("Jörg", addr_spec="j@contoso.com"),),
                                    bcc=(Address(addr_spec="secret@contoso.com"),))
    out = compose.new_message("bot@contoso.com", recipients,
                              compose.Content(subject="Grüße", text="Hallo Jörg"))
    data = out.as_bytes()
    assert out.recipients == ("j@contoso.com", "secret@contoso.com")
    assert b"secret@contoso.com" not in data
    assert b"Subject: =?utf-8?" in data and data.isascii()
    assert out.message_id.endswith("@contoso.com>")


# -- parsing sending commands ------------------------------------------------------------------


def parse(payload: dict[str, Any] | bytes, account: AccountConfig | None = None,
          ) -> Command | SendCommand:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return parse_request(raw, account=account or home())


def refused(payload: dict[str, Any] | bytes, account: AccountConfig | None = None) -> str:
    with pytest.raises(InvalidCommand) as caught:
        parse(payload, account)
    return str(caught.value)


def test_send_parses_into_recipients_and_content() -> None:
    command = parse({"action": "send", "to": "me@example.com",
                     "cc": [{"address": "a@contoso.com", "name": "A"}], "subject": "s",
                     "text": "t", "attachments": [{"filename": "a.txt",
                                                   "content_type": "Text/Plain", "data": "eA=="}]})
    assert isinstance(command, SendCommand)
    assert command.recipients.addresses() == ("me@example.com", "a@contoso.com")
    assert command.content.attachments == (compose.Attachment("a.txt", "text/plain", b"x"),)


@pytest.mark.parametrize(("payload", "expected"), [
    ({"subject": "a\r\nBcc: x@evil.example"}, "header injection"),
    ({"subject": "a\x00"}, "header injection"),
    ({"to": ["me@example.com\r\nBcc: x@evil.example"]}, "header injection"),
    ({"to": [{"address": "me@example.com", "name": "A\nBcc: x@evil.example"}]},
     "header injection"),
    ({"to": ["Alice <me@example.com>"]}, "not an e-mail address"),
    ({"to": ["me@example.com, x@evil.example"]}, "not an e-mail address"),
    ({"to": ["\"quoted\"@example.com"]}, "not an e-mail address"),
    ({"to": ["me@[127.0.0.1]"]}, "not an e-mail address"),
    ({"to": ["m\u00e9@example.com"]}, "not an e-mail address"),
    ({"to": [42]}, "as strings"),
    ({"to": []}, "at least one recipient"),
    ({"to": [f"u{i}@contoso.com" for i in range(1000)]}, "too many recipients"),
    ({"to": [f"u{i}@contoso.com" for i in range(300)],
      "cc": [f"c{i}@contoso.com" for i in range(300)]}, "too many recipients"),
    ({"attachments": [{"filename": "a", "content_type": "text/plain", "data": "e A=="}]},
     "not valid base64"),
    ({"attachments": [{"filename": "a", "content_type": "text/plain", "data": "eA"}]},
     "not valid base64"),
    ({"attachments": [{"filename": "a\r\nX: y", "content_type": "text/plain", "data": ""}]},
     "must not contain"),
    ({"attachments": [{"filename": "a", "content_type": "text/plain\r\nX: y", "data": ""}]},
     "MIME type"),
    ({"attachments": [{"filename": "a", "data": "", "evil": 1}]}, "must be an object"),
    ({"importance": "urgent"}, "'importance'"),
    ({"folder": "INBOX"}, "does not apply to send"),
    ({"text": None, "html": None}, "needs 'text' or 'html'"),
], ids=lambda v: str(v)[:40] if isinstance(v, dict) else None)
def test_hostile_send_commands_are_refused_before_anything_is_built(
    payload: dict[str, Any], expected: str
) -> None:
    base = {"action": "send", "id": 7, "to": ["me@example.com"], "subject": "s", "text": "t"}
    merged = {k: v for k, v in {**base, **payload}.items() if v is not None}
    with pytest.raises(InvalidCommand) as caught:
        parse(merged)
    assert expected in str(caught.value)
    assert caught.value.command_id == 7 and caught.value.action == "send"


def test_a_payload_beyond_max_bytes_is_refused_unread() -> None:
    small = home({**SEND, "max_bytes": 1000})
    big = json.dumps({"action": "send", "to": ["me@example.com"], "text": "x" * 200_000})
    assert "payload too large" in refused(big.encode(), small)


def test_sending_is_off_without_the_table_or_when_disabled() -> None:
    off = make_config().account("home")
    assert off is not None
    assert "sending is off" in refused({"action": "send", "to": ["me@example.com"],
                                        "text": "x"}, off)
    disabled = home({**SEND, "enabled": False})
    assert "sending is off" in refused({"action": "notify", "text": "x"}, disabled)


def test_reply_and_forward_need_exactly_one_original() -> None:
    assert "exactly one" in refused({"action": "reply", "folder": "INBOX", "text": "x"})
    assert "exactly one" in refused({"action": "reply", "folder": "INBOX", "uid": 3,
                                     "message_id": "<a@b>", "text": "x"})
    assert "forward needs 'to'" in refused({"action": "forward", "folder": "INBOX", "uid": 3})
    command = parse({"action": "reply", "folder": "inbox", "uid": 3, "text": "x", "all": True})
    assert isinstance(command, SendCommand) and command.reply_all
    assert command.original is not None and command.original.folder == "INBOX"
    assert command.original.uids == (3,)


def test_the_other_commands_still_parse_as_before() -> None:
    command = parse({"action": "mark_read", "folder": "INBOX", "uid": 1})
    assert isinstance(command, Command) and command.action == "mark_read"


# -- limits before connecting ------------------------------------------------------------------


class _NoTokens:
    account = home()

    def get_token(self, *, force: bool = False) -> Any:
        raise AssertionError("a refused message must not even fetch a token")


def outgoing(*to: str) -> compose.Outgoing:
    return compose.new_message("bot@contoso.com",
                               compose.Recipients(to=tuple(Address(addr_spec=a) for a in to)),
                               compose.Content(subject="s", text="t"))


def test_the_outbox_refuses_before_connecting() -> None:
    outbox = Outbox(home(), _NoTokens())
    with pytest.raises(SendRefused, match=r"stranger@elsewhere\.example"):
        outbox.send(outgoing("me@example.com", "stranger@elsewhere.example"))
    small = Outbox(home({**SEND, "max_bytes": 1000}), _NoTokens())
    big = compose.new_message("bot@contoso.com",
                              compose.Recipients(to=(Address(addr_spec="me@example.com"),)),
                              compose.Content(text="x" * 5000))
    with pytest.raises(SendRefused, match="max_bytes = 1000"):
        small.send(big)


def test_the_rate_limit_is_a_sliding_minute() -> None:
    now = [1000.0]
    outbox = Outbox(home({**SEND, "max_per_minute": 2}), _NoTokens(), clock=lambda: now[0])
    message = outgoing("me@example.com")
    outbox.check(message)
    outbox._sends.extend([1000.0, 1030.0])
    now[0] = 1059.0
    with pytest.raises(SendRefused, match="send again in 1 s"):
        outbox.check(message)
    now[0] = 1060.0
    outbox.check(message)  # the first send left the window


# -- Home Assistant ---------------------------------------------------------------------------


def test_a_sending_account_gets_a_notify_entity_whose_message_becomes_a_mail() -> None:
    config = make_config(SEND)
    payload = build_discovery(config, Topics("outlook2mqtt"))[ACCOUNT_DEVICE]
    notify = json.loads(payload)["components"]["send_mail"]
    assert notify["platform"] == "notify" and notify["retain"] is False
    assert notify["default_entity_id"] == "notify.outlook_home_send_mail"
    assert notify["command_topic"] == "outlook2mqtt/home/command"
    message = 'Door "front" opened\nat 10:00 ü {{ not a template }}'
    command = parse(render_ha(notify["command_template"], value=message).encode())
    assert isinstance(command, SendCommand) and command.action == "notify"
    assert command.content.text == message
    assert command.recipients.addresses() == ("me@example.com",)


@pytest.mark.parametrize("send", [None, {**SEND, "enabled": False},
                                  {**SEND, "default_to": []}])
def test_no_notify_entity_without_sending_or_default_to(send: dict[str, Any] | None) -> None:
    for payload in build_discovery(make_config(send), Topics("outlook2mqtt")).values():
        assert "send_mail" not in json.loads(payload)["components"]


def test_the_example_config_documents_every_send_key() -> None:
    text = (Path(__file__).parent.parent / "config.toml.example").read_text()
    assert "# [accounts.send]" in text
    written = set(re.findall(r"^#\s*([a-z_]+) = ", text, re.MULTILINE))
    assert set(SEND_KEYS) <= written
