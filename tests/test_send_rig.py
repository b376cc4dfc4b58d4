"""Sending end to end: MQTT command -> the bridge -> Dovecot's SMTP submission (XOAUTH2, the
token checked for SMTP.SendAsApp) -> the rig's SMTP sink, which records every message and
delivers mail for the test mailboxes back into Dovecot, where the bridge publishes it.

One bridge serves the module with three sending accounts: `home` (the normal limits),
`tight` (two messages a minute, small max_bytes) and `norole` (its app lacks SMTP.SendAsApp),
and `quiet`, which has no [accounts.send].
"""

from __future__ import annotations

import base64
import dataclasses
import email.policy
import io
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest

from bridge.auth.delegated import DelegatedTokenProvider
from bridge.auth.providers import token_provider
from bridge.cli.check import check_account
from bridge.cli.login import login
from bridge.cli.steps import Step
from bridge.config.load import load_config, parse_config
from bridge.errors import SmtpError
from bridge.mqtt.discovery import device_topic, node_id
from bridge.smtp.compose import Content, Recipients, new_message
from bridge.smtp.outbox import Outbox
from rig.bridgecfg import rig_config
from rig.homeassistant import HomeAssistant
from rig.idp import (
    IMAP_ROLE,
    IMAP_SCOPE,
    SMTP_ROLE,
    SMTP_SCOPE,
    IdentityPlatform,
    random_secret,
)
from rig.mqttsub import Collector
from rig.pki import TestPKI
from rig.samples import TINY_PDF, make_message
from rig.smtpsink import Relayed, SmtpSink
from rig.submission import SubmissionDovecot
from tests.bridgeproc import BridgeProcess
from tests.conftest import HA_PREFIX, wait_online
from tests.hatemplates import render_ha

ALLOWED = ["*@contoso.test", "friend@allowed.example"]


@dataclass
class SendRig:
    base: str
    collector: Collector
    sink: SmtpSink
    server: SubmissionDovecot
    mailboxes: dict[str, str]  # account name -> mailbox
    bridge: BridgeProcess

    def command(self, payload: dict[str, Any] | str, *, account: str = "home",
                retain: bool = False, timeout: float = 30) -> dict[str, Any]:
        """Publish a command and return its one reply."""
        topic = f"{self.base}/{account}/command/result"
        seen = len(self.collector.on(topic))
        body = json.dumps(payload) if isinstance(payload, dict) else payload
        self.collector.publish(f"{self.base}/{account}/command", body, retain=retain)
        return self.collector.wait_topic(topic, count=seen + 1, timeout=timeout)[seen].json()  # type: ignore[no-any-return]

    def relayed(self, message_id: str) -> tuple[Relayed, EmailMessage]:
        """The message the sink got with this Message-ID, and its parse."""
        found = self.sink.wait_for(lambda m: message_id.encode() in m.data)
        parsed = BytesParser(policy=email.policy.default).parsebytes(found.data)
        assert isinstance(parsed, EmailMessage)
        return found, parsed


@pytest.fixture(scope="module")
def send_rig(idp: IdentityPlatform, pki: TestPKI, mosquitto: Any,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[SendRig]:
    workdir = tmp_path_factory.mktemp("send")
    tenant = idp.add_tenant()
    names = ("home", "tight", "norole", "quiet")
    mailboxes = {n: f"{n}-{uuid.uuid4().hex[:8]}@contoso.test" for n in names}
    secret, norole_secret = random_secret(), random_secret()
    app = idp.register_app(tenant, secret=secret, roles=[IMAP_ROLE, SMTP_ROLE],
                           mailboxes=[mailboxes[n] for n in ("home", "tight", "quiet")])
    norole = idp.register_app(tenant, secret=norole_secret, roles=[IMAP_ROLE],
                              mailboxes=[mailboxes["norole"]])
    with SmtpSink() as sink, SubmissionDovecot(
        pki, idp.introspection_url, workdir / "dovecot", relay_port=sink.port,
        submission_introspection_url=idp.smtp_introspection_url,
    ) as server:
        sink.deliver = server.deliver
        base = f"o2m-{uuid.uuid4().hex[:8]}"
        send = {"enabled": True, "smtp_host": "127.0.0.1", "smtp_port": server.submission_port,
                "allowed_recipients": ALLOWED}
        config = rig_config(
            authority=idp.authority, ca_file=pki.ca_file, imap_port=server.port,
            mqtt_port=mosquitto.port, tenant_id=tenant, client_id=app.client_id, secret=secret,
            mailbox=mailboxes["home"], state_dir=workdir / "state", base_topic=base,
            poll_interval=30, idle=True,
            extra_account={"send": {**send, "default_to": [mailboxes["home"]],
                                    "default_subject": "From Home Assistant"}},
        )
        # on the rig Home Assistant's prefix: a running one takes the devices in too
        config["homeassistant"] = {"discovery": True, "prefix": HA_PREFIX}
        first = config["accounts"][0]
        config["accounts"] += [
            {**first, "name": "tight", "mailbox": mailboxes["tight"],
             "send": {**send, "max_per_minute": 2, "max_bytes": 4000}},
            {**first, "name": "norole", "mailbox": mailboxes["norole"],
             "client_id": norole.client_id, "client_secret": norole_secret, "send": send},
            {key: value for key, value in first.items() if key != "send"}
            | {"name": "quiet", "mailbox": mailboxes["quiet"]},
        ]
        bridge = BridgeProcess(workdir, config)
        # the accounts' devices and the bridge's own (its health sensors)
        devices = [device_topic(HA_PREFIX, node_id(base, name)) for name in (*names, "bridge")]
        with Collector("127.0.0.1", mosquitto.port, [f"{base}/#", *devices]) as collector:
            bridge.start()
            try:
                wait_online(collector, base)
                yield SendRig(base, collector, sink, server, mailboxes, bridge)
            finally:
                bridge.stop()
                for topic in devices:  # Home Assistant forgets the devices; the broker too
                    collector.publish(topic, "", retain=True)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- send --------------------------------------------------------------------------------


def test_send_with_attachments_arrives_byte_identical_and_the_bridge_publishes_it(
    send_rig: SendRig,
) -> None:
    home = send_rig.mailboxes["home"]
    photo = os.urandom(50_000)
    subject = f"Snapshot {uuid.uuid4().hex[:6]} - Haustür"
    reply = send_rig.command({
        "action": "send", "id": "s1", "to": [home], "cc": ["friend@allowed.example"],
        "bcc": [{"address": "hidden@contoso.test", "name": "Hidden"}],
        "subject": subject, "text": "Someone rang the bell.", "html": "<p>Someone rang</p>",
        "attachments": [
            {"filename": "door.jpg", "content_type": "image/jpeg", "data": b64(photo)},
            {"filename": "report.pdf", "content_type": "application/pdf", "data": b64(TINY_PDF)},
        ],
        "importance": "high",
    })
    assert reply["status"] == "ok", reply
    assert reply["id"] == "s1" and reply["action"] == "send"
    relayed, parsed = send_rig.relayed(reply["message_id"])
    assert set(relayed.rcpt_tos) == {home, "friend@allowed.example", "hidden@contoso.test"}
    assert relayed.mail_from == home
    assert parsed["From"] == home and parsed["Subject"] == subject
    assert parsed["Bcc"] is None and b"hidden@contoso.test" not in relayed.data
    assert parsed["Importance"] == "high"
    files = {p.get_filename(): p.get_content() for p in parsed.iter_attachments()}
    assert files == {"door.jpg": photo, "report.pdf": TINY_PDF}
    body = parsed.get_body(preferencelist=("plain",))
    assert body is not None and body.get_content().strip() == "Someone rang the bell."

    # delivered back into the mailbox: the bridge publishes it like any new mail
    summary = send_rig.collector.wait_for(
        lambda m: m.topic == f"{send_rig.base}/home/inbox/message"
        and m.json()["subject"] == subject)[0].json()
    assert summary["message_id"] == reply["message_id"]
    assert [a["filename"] for a in summary["attachments"]] == ["door.jpg", "report.pdf"]


def test_notify_mails_the_text_to_default_to_with_default_subject(send_rig: SendRig) -> None:
    reply = send_rig.command({"action": "notify", "text": "The washing machine is done."})
    assert reply["status"] == "ok", reply
    relayed, parsed = send_rig.relayed(reply["message_id"])
    assert relayed.rcpt_tos == (send_rig.mailboxes["home"],)
    assert parsed["Subject"] == "From Home Assistant"
    assert parsed.get_content().strip() == "The washing machine is done."


def test_the_discovered_notify_entity_mails_what_home_assistant_would_publish(
    send_rig: SendRig,
) -> None:
    def topic(account: str) -> str:
        return device_topic(HA_PREFIX, node_id(send_rig.base, account))

    device = send_rig.collector.wait_for(
        lambda m: m.topic == topic("home") and bool(m.payload))[-1].json()
    notify = device["components"]["send_mail"]
    assert notify["platform"] == "notify"
    for other in (topic("norole"), topic("quiet")):  # no default_to; no [accounts.send]
        config = send_rig.collector.wait_for(lambda m, t=other: m.topic == t)
        assert "send_mail" not in config[-1].json()["components"]
    # what Home Assistant's MQTT notify publishes for notify.send_message
    text = 'Alarm: "garage" open\nsince 22:00'
    payload = render_ha(notify["command_template"], value=text)
    seen = len(send_rig.collector.on(f"{send_rig.base}/home/command/result"))
    send_rig.collector.publish(notify["command_topic"], payload, retain=notify["retain"])
    reply = send_rig.collector.wait_topic(f"{send_rig.base}/home/command/result",
                                          count=seen + 1)[seen].json()
    assert reply["status"] == "ok", reply
    _relayed, parsed = send_rig.relayed(reply["message_id"])
    assert parsed["Subject"] == "From Home Assistant"
    assert parsed.get_content().replace("\r\n", "\n").strip() == text  # SMTP's CRLF


def test_home_assistant_registers_the_notify_entity_and_its_message_is_mailed(
    send_rig: SendRig, homeassistant: HomeAssistant,
) -> None:
    unique_id = f"{node_id(send_rig.base, 'home')}_send_mail"

    def entity_id() -> str | None:
        found = [e["entity_id"] for e in homeassistant.entity_registry()
                 if e["platform"] == "mqtt" and e["unique_id"] == unique_id]
        return found[0] if found else None

    deadline = time.monotonic() + 60
    while (notify := entity_id()) is None:
        assert time.monotonic() < deadline, "Home Assistant registered no notify entity"
        time.sleep(0.2)
    assert notify.startswith("notify.outlook_home_send_mail")
    while (homeassistant.state(notify) or {}).get("state") in (None, "unavailable"):
        # availability comes from the bridge's retained online, a moment after discovery
        assert time.monotonic() < deadline, "the notify entity stayed unavailable"
        time.sleep(0.2)
    text = f"Water in the basement ({uuid.uuid4().hex[:6]})"
    homeassistant.rest("POST", "/api/services/notify/send_message",
                       {"entity_id": notify, "message": text})
    relayed = send_rig.sink.wait_for(lambda m: text.encode() in m.data)
    assert relayed.rcpt_tos == (send_rig.mailboxes["home"],)
    parsed = BytesParser(policy=email.policy.default).parsebytes(relayed.data)
    assert parsed["Subject"] == "From Home Assistant"
    reply = send_rig.collector.wait_for(
        lambda m: m.topic == f"{send_rig.base}/home/command/result"
        and m.json().get("message_id") == parsed["Message-ID"])[0].json()
    assert reply["action"] == "notify" and reply["status"] == "ok"


# -- reply and forward ---------------------------------------------------------------------


def _deliver_original(send_rig: SendRig, sender: str, **kw: Any) -> tuple[int, str]:
    message_id = f"<{uuid.uuid4().hex}@allowed.example>"
    raw = make_message(sender=sender, to=send_rig.mailboxes["home"], message_id=message_id,
                       **kw)
    raw = b"References: <first@allowed.example>\r\n" + raw
    return send_rig.server.deliver(send_rig.mailboxes["home"], raw), message_id


def test_reply_threads_with_in_reply_to_references_and_quotes_the_original(
    send_rig: SendRig,
) -> None:
    uid, original_id = _deliver_original(send_rig, "Friend <friend@allowed.example>",
                                         subject="Dinner?", text="Are you free tonight?")
    reply = send_rig.command({"action": "reply", "folder": "INBOX", "uid": uid,
                              "text": "Yes, at eight."})
    assert reply["status"] == "ok", reply
    assert reply["uids"] == [uid]
    relayed, parsed = send_rig.relayed(reply["message_id"])
    assert relayed.rcpt_tos == ("friend@allowed.example",)
    assert parsed["Subject"] == "Re: Dinner?"
    assert parsed["In-Reply-To"] == original_id
    assert parsed["References"].split() == ["<first@allowed.example>", original_id]
    text = parsed.get_content()
    assert text.startswith("Yes, at eight.") and "> Are you free tonight?" in text
    # reading the original did not mark it read
    assert "\\Seen" not in send_rig.server.flags(send_rig.mailboxes["home"])[uid]


def test_reply_to_a_sender_outside_the_allow_list_names_it_and_sends_nothing(
    send_rig: SendRig,
) -> None:
    _uid, message_id = _deliver_original(send_rig, "Stranger <stranger@elsewhere.example>")
    before = len(send_rig.sink.messages)
    reply = send_rig.command({"action": "reply", "folder": "INBOX", "message_id": message_id,
                              "text": "Who are you?"})
    assert reply["status"] == "error"
    assert "stranger@elsewhere.example" in reply["error"]
    assert "nothing was sent" in reply["error"]
    assert len(send_rig.sink.messages) == before


def test_forward_carries_the_original_as_an_attached_message(send_rig: SendRig) -> None:
    uid, original_id = _deliver_original(
        send_rig, "Shop <shop@allowed.example>", subject="Your invoice",
        text="Invoice attached", attachments=[("invoice.pdf", "application/pdf", TINY_PDF)])
    reply = send_rig.command({"action": "forward", "folder": "INBOX", "uid": uid,
                              "to": ["friend@allowed.example"], "text": "For your records"})
    assert reply["status"] == "ok", reply
    relayed, parsed = send_rig.relayed(reply["message_id"])
    assert relayed.rcpt_tos == ("friend@allowed.example",)
    assert parsed["Subject"] == "Fwd: Your invoice"
    attached = [p for p in parsed.iter_attachments() if p.get_content_type() == "message/rfc822"]
    assert len(attached) == 1
    inner = attached[0].get_content()
    assert inner["Message-ID"] == original_id
    assert [p.get_content() for p in inner.iter_attachments()] == [TINY_PDF]


# -- safety --------------------------------------------------------------------------------


def test_a_recipient_outside_the_allow_list_is_named_and_nothing_is_sent(
    send_rig: SendRig,
) -> None:
    before = len(send_rig.sink.messages)
    reply = send_rig.command({"action": "send", "to": [send_rig.mailboxes["home"]],
                              "cc": ["boss@evil.example"], "subject": "x", "text": "x"})
    assert reply["status"] == "error" and "boss@evil.example" in reply["error"]
    assert send_rig.mailboxes["home"] not in reply["error"]
    assert len(send_rig.sink.messages) == before


def test_more_than_max_per_minute_is_refused_before_connecting(send_rig: SendRig) -> None:
    tight = send_rig.mailboxes["tight"]
    for i in range(2):
        ok = send_rig.command({"action": "send", "to": [tight], "subject": f"n{i}", "text": "x"},
                              account="tight")
        assert ok["status"] == "ok", ok
    logins = len(send_rig.sink.messages)
    refused = send_rig.command({"action": "send", "to": [tight], "subject": "n3", "text": "x"},
                               account="tight")
    assert refused["status"] == "error" and "max_per_minute = 2" in refused["error"]
    assert len(send_rig.sink.messages) == logins


def test_a_message_over_max_bytes_is_refused(send_rig: SendRig) -> None:
    before = len(send_rig.sink.messages)
    reply = send_rig.command({
        "action": "send", "to": [send_rig.mailboxes["tight"]], "subject": "big", "text": "x",
        "attachments": [{"filename": "a.bin", "content_type": "application/octet-stream",
                         "data": b64(os.urandom(6000))}]}, account="tight")
    assert reply["status"] == "error" and "max_bytes = 4000" in reply["error"]
    assert len(send_rig.sink.messages) == before


HOSTILE: dict[str, tuple[dict[str, Any], str]] = {
    "CRLF in subject": ({"subject": "Hi\r\nBcc: victim@evil.example"}, "header injection"),
    "LF in address": ({"to": ["me@contoso.test\nBcc: victim@evil.example"]},
                      "header injection"),
    "CRLF in display name": ({"to": [{"address": "me@contoso.test",
                                      "name": "Me\r\nBcc: victim@evil.example"}]},
                             "header injection"),
    "invalid address": ({"to": ["not an address"]}, "not an e-mail address"),
    "two addresses in one": ({"to": ["a@contoso.test, b@evil.example"]},
                             "not an e-mail address"),
    "bad base64": ({"attachments": [{"filename": "a.txt", "content_type": "text/plain",
                                     "data": "%%%not base64"}]}, "not valid base64"),
    "path in filename": ({"attachments": [{"filename": "../../etc/passwd",
                                           "content_type": "text/plain", "data": "eA=="}]},
                         "must not contain"),
    "a thousand recipients": ({"to": [f"u{i}@contoso.test" for i in range(1000)]},
                              "too many recipients"),
    "no body": ({"text": None}, "needs 'text' or 'html'"),
}


@pytest.mark.parametrize("fields", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_input_gets_an_error_and_sends_nothing(
    send_rig: SendRig, fields: tuple[dict[str, Any], str]
) -> None:
    change, expected = fields
    payload = {"action": "send", "id": "h", "to": [send_rig.mailboxes["home"]],
               "subject": "s", "text": "t", **change}
    payload = {k: v for k, v in payload.items() if v is not None}
    before = len(send_rig.sink.messages)
    reply = send_rig.command(payload)
    assert reply["status"] == "error" and reply["id"] == "h"
    assert expected in reply["error"]
    assert len(send_rig.sink.messages) == before


def test_a_huge_payload_is_refused_unread(send_rig: SendRig) -> None:
    before = len(send_rig.sink.messages)
    huge = json.dumps({"action": "send", "to": [send_rig.mailboxes["tight"]], "text": "x",
                       "subject": "s", "attachments": [
                           {"filename": "a", "content_type": "text/plain",
                            "data": "A" * 200_000}]})
    reply = send_rig.command(huge, account="tight")
    assert reply["status"] == "error" and "payload too large" in reply["error"]
    assert len(send_rig.sink.messages) == before


def test_a_retained_send_command_never_sends(send_rig: SendRig) -> None:
    before = len(send_rig.sink.messages)
    reply = send_rig.command({"action": "send", "id": "r", "to": [send_rig.mailboxes["home"]],
                              "subject": "retained", "text": "x"}, retain=True)
    assert reply["status"] == "error" and "retained" in reply["error"]
    send_rig.collector.publish(f"{send_rig.base}/home/command", "", retain=True)
    assert len(send_rig.sink.messages) == before


def test_an_account_without_a_send_table_refuses_sending(send_rig: SendRig) -> None:
    reply = send_rig.command({"action": "send", "to": ["x@contoso.test"], "text": "x"},
                             account="quiet")
    assert reply["status"] == "error" and "sending is off" in reply["error"]


# -- refusals by the server, with hints -------------------------------------------------------


def test_a_token_without_smtp_sendasapp_is_refused_with_the_permission_hint(
    send_rig: SendRig,
) -> None:
    reply = send_rig.command({"action": "send", "to": [send_rig.mailboxes["norole"]],
                              "text": "x"}, account="norole")
    assert reply["status"] == "error"
    assert reply["error"].startswith("SMTP login as")
    assert "535" in reply["error"] and "SMTP.SendAsApp" in reply["error"]
    assert "nothing was sent" in reply["error"]


@pytest.mark.parametrize(("answer", "hint"), [
    ("554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to "
     "process message due to a permanent exception", "10,000 recipients a day"),
    ("432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded",
     "more than 3 SMTP connections"),
], ids=["daily recipient limit", "concurrent connections"])
def test_an_exchange_refusal_of_the_message_comes_back_with_its_hint(
    send_rig: SendRig, answer: str, hint: str
) -> None:
    before = len(send_rig.sink.messages)
    send_rig.sink.refuse_next = answer
    reply = send_rig.command({"action": "send", "to": [send_rig.mailboxes["home"]],
                              "subject": "refused", "text": "x"})
    assert reply["status"] == "error"
    assert answer.split(maxsplit=1)[0] in reply["error"] and hint in reply["error"]
    assert len(send_rig.sink.messages) == before


# -- a connection that breaks mid-way ---------------------------------------------------------


def _outbox(send_rig: SendRig, account: str, timeout: float) -> Outbox:
    config = load_config(send_rig.bridge.config_path)
    found = config.account(account)
    assert found is not None
    return Outbox(found, token_provider(found), timeout=timeout)


def test_a_connection_lost_after_data_says_the_mail_may_be_sent_and_is_not_retried(
    send_rig: SendRig,
) -> None:
    outbox = _outbox(send_rig, "home", timeout=5)
    outgoing = new_message(send_rig.mailboxes["home"],
                           Recipients(to=(Address(addr_spec=send_rig.mailboxes["home"]),)),
                           Content(subject="slow", text="x"))
    send_rig.sink.data_gate.clear()  # the server answers DATA after the client gave up
    try:
        with pytest.raises(SmtpError) as caught:
            outbox.send(outgoing)
    finally:
        send_rig.sink.data_gate.set()
    assert caught.value.maybe_sent
    assert "may have been sent" in str(caught.value) and "not retried" in str(caught.value)
    # the server did take it: exactly once
    send_rig.sink.wait_for(lambda m: outgoing.message_id.encode() in m.data)
    time.sleep(1)
    assert len([m for m in send_rig.sink.messages if outgoing.message_id.encode() in m.data]) == 1


def test_a_refused_smtp_token_is_not_offered_again(send_rig: SendRig, idp: IdentityPlatform,
                                                   ) -> None:
    home = _outbox(send_rig, "home", timeout=10).account
    mailbox = f"revoked-{uuid.uuid4().hex[:8]}@contoso.test"
    secret = random_secret()
    app = idp.register_app(home.tenant_id, secret=secret, roles=[IMAP_ROLE, SMTP_ROLE],
                           mailboxes=[mailbox])
    account = dataclasses.replace(home, mailbox=mailbox, client_id=app.client_id,
                                  client_secret=secret)
    outbox = Outbox(account, token_provider(account), timeout=10)
    outgoing = new_message(mailbox, Recipients(to=(Address(addr_spec=mailbox),)),
                           Content(subject="token", text="x"))
    assert outbox.send(outgoing) == outgoing.message_id  # MSAL now caches the token
    idp.revoke_all(app.client_id)
    with pytest.raises(SmtpError, match="535"):
        outbox.send(outgoing)
    assert outbox.send(outgoing) == outgoing.message_id  # with a freshly acquired token


# -- check ----------------------------------------------------------------------------------


def test_check_logs_in_to_smtp_and_names_the_missing_permission(send_rig: SendRig) -> None:
    config = load_config(send_rig.bridge.config_path)
    before = len(send_rig.sink.messages)
    verdicts: dict[str, list[Step]] = {}
    for name in ("home", "norole"):
        account = config.account(name)
        assert account is not None
        steps: list[Step] = []
        verdicts[name] = steps
        check_account(account, steps.append)
    good = verdicts["home"][-1]
    assert good.name == "SMTP login" and good.ok, good
    assert "nothing sent" in good.detail
    bad = verdicts["norole"][-1]
    assert bad.name == "SMTP login" and not bad.ok and bad.error == "smtp_535"
    assert bad.hint is not None and "SMTP.SendAsApp" in bad.hint
    assert len(send_rig.sink.messages) == before


# -- a personal account (delegated SMTP.Send) -------------------------------------------------


def test_a_device_code_account_signs_in_for_smtp_send_and_sends(
    send_rig: SendRig, idp: IdentityPlatform, pki: TestPKI, tmp_path: Path,
) -> None:
    public = idp.delegated.register_public_app(scopes=(IMAP_SCOPE, SMTP_SCOPE))
    person = f"person-{uuid.uuid4().hex[:8]}@contoso.test"
    config = parse_config({"mqtt": {"host": "127.0.0.1"}, "bridge": {"state_dir": str(tmp_path)},
                           "accounts": [{
        "name": "me", "mailbox": person, "auth": "device_code", "tenant_id": "consumers",
        "client_id": public.client_id, "authority": idp.authority, "ca_file": str(pki.ca_file),
        "imap_host": "127.0.0.1", "imap_port": send_rig.server.port,
        "send": {"smtp_host": "127.0.0.1", "smtp_port": send_rig.server.submission_port,
                 "allowed_recipients": ALLOWED}}]}, environ={})
    account = config.accounts[0]
    out = io.StringIO()
    signed_in: list[bool] = []
    signing_in = threading.Thread(
        target=lambda: signed_in.append(login(config, account, out, announce=False)))
    signing_in.start()
    deadline = time.monotonic() + 30
    while not (code := re.search(r"enter the code (\S+)", out.getvalue())):
        assert time.monotonic() < deadline, out.getvalue()
        time.sleep(0.05)
    idp.delegated.approve(code[1], person)
    signing_in.join(30)
    assert signed_in == [True], out.getvalue()

    outbox = Outbox(account, DelegatedTokenProvider(account), timeout=10)
    outgoing = new_message(person, Recipients(to=(Address(addr_spec=send_rig.mailboxes["home"]),)),
                           Content(subject="from a person", text="x"))
    assert outbox.send(outgoing) == outgoing.message_id
    relayed, _parsed = send_rig.relayed(outgoing.message_id)
    assert relayed.mail_from == person
    scopes = [c.get("scp", "") for c in idp.issued if c.get("upn") == person]
    assert scopes and all("SMTP.Send" in s.split() for s in scopes)


# -- secrets ----------------------------------------------------------------------------------


def test_no_token_or_xoauth2_blob_reaches_the_log_or_the_replies(send_rig: SendRig) -> None:
    reply = send_rig.command({"action": "send", "to": [send_rig.mailboxes["home"]],
                              "subject": "secrets", "text": "x"})
    assert reply["status"] == "ok", reply
    refused = send_rig.command({"action": "send", "to": [send_rig.mailboxes["norole"]],
                                "text": "x"}, account="norole")
    assert refused["status"] == "error"
    log = send_rig.bridge.log()
    # what the bridge published: not the tests' own commands, nor attachments' random bytes
    published = [m.payload.decode(errors="replace") for m in send_rig.collector.messages
                 if not m.topic.endswith("/command") and "/attachment/" not in m.topic]
    assert reply["message_id"] in log  # the send was logged, without its credentials
    # a JWT starts with base64url '{"' (eyJ); the XOAUTH2 response with base64 'user=' (dXNlcj)
    for secret_shape in ("eyJ", "dXNlcj", "auth=Bearer"):
        assert secret_shape not in log
        assert not any(secret_shape in payload for payload in published)
