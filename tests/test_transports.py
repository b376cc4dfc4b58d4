"""The bridge over every transport option: STARTTLS to IMAP, MQTT with TLS and a
password, MQTT 3.1.1, and the PS256 certificate assertion."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rig.bridgecfg import write_config
from rig.dovecot import Dovecot
from rig.idp import IdentityPlatform
from rig.mosquitto import Mosquitto
from rig.mqttsub import Collector
from rig.pki import TestPKI, make_client_certificate
from rig.samples import make_message
from tests.bridgeproc import ROOT, BridgeProcess
from tests.conftest import wait_online


def test_imap_starttls_delivers_mail(
    make_bridge: Callable[..., BridgeProcess], secret_credential: dict[str, Any],
    collector: Collector, dovecot: Dovecot, mailbox: str, base_topic: str,
) -> None:
    make_bridge(secret_credential, imap_port=dovecot.starttls_port,
                extra_account={"imap_security": "starttls"}).start()
    wait_online(collector, base_topic)
    dovecot.deliver(mailbox, make_message(subject="over starttls", to=mailbox))
    msg = collector.wait_topic(f"{base_topic}/home/inbox/message")[0]
    assert msg.json()["subject"] == "over starttls"


@pytest.fixture
def secure_broker(tmp_path: Path, pki: TestPKI) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "secure", users={"bridge": "mqtt-pa55word"}, pki=pki) as broker:
        yield broker


def test_mqtt_over_tls_with_a_password(
    make_bridge: Callable[..., BridgeProcess], secret_credential: dict[str, Any],
    secure_broker: Mosquitto, pki: TestPKI, dovecot: Dovecot, mailbox: str, base_topic: str,
    tmp_path: Path,
) -> None:
    bridge = make_bridge(secret_credential, mqtt_port=secure_broker.tls_port)
    config = bridge.config_path.read_text()
    mqtt = {"tls": True, "ca_file": str(pki.ca_file), "username": "bridge",
            "password": "mqtt-pa55word"}
    data = tomllib.loads(config)
    data["mqtt"].update(mqtt)
    write_config(bridge.config_path, data)
    bridge.start()
    sub = Collector("127.0.0.1", secure_broker.port, [f"{base_topic}/#"])
    sub.client.username_pw_set("bridge", "mqtt-pa55word")
    with sub:
        wait_online(sub, base_topic)
        dovecot.deliver(mailbox, make_message(subject="over mqtts", to=mailbox))
        assert sub.wait_topic(f"{base_topic}/home/inbox/message")[0].json()["subject"] == (
            "over mqtts")
    assert bridge.stop() == 0
    assert "mqtt-pa55word" not in bridge.log()


def test_mqtt_3_1_1_delivers_mail_and_answers_commands(
    make_bridge: Callable[..., BridgeProcess], secret_credential: dict[str, Any],
    collector: Collector, dovecot: Dovecot, mailbox: str, base_topic: str,
) -> None:
    make_bridge(secret_credential, protocol="3.1.1").start()
    wait_online(collector, base_topic)
    uid = dovecot.deliver(mailbox, make_message(subject="old protocol", to=mailbox))
    collector.wait_topic(f"{base_topic}/home/inbox/message")
    collector.publish(f"{base_topic}/home/inbox/command",
                      f'{{"action": "mark_read", "uid": {uid}}}')
    reply = collector.wait_topic(f"{base_topic}/home/command/result")[0].json()
    assert reply["status"] == "ok" and reply["uids"] == [uid]


def test_ps256_certificate_assertion_when_configured(
    make_bridge: Callable[..., BridgeProcess], idp: IdentityPlatform, tenant: str,
    mailbox: str, collector: Collector, dovecot: Dovecot, base_topic: str, tmp_path: Path,
) -> None:
    cert = make_client_certificate(tmp_path, "ps")
    app = idp.register_app(tenant, certificates=[cert.cert_pem], mailboxes=[mailbox])
    make_bridge({"client_id": app.client_id, "certificate_file": cert.cert_file,
                 "private_key_file": cert.key_file},
                extra_account={"assertion_algorithm": "PS256"}).start()
    wait_online(collector, base_topic)
    dovecot.deliver(mailbox, make_message(subject="signed with PS256", to=mailbox))
    collector.wait_topic(f"{base_topic}/home/inbox/message")
    assert app.assertion_headers
    assert {h["alg"] for h in app.assertion_headers} == {"PS256"}
    assert all("x5t#S256" in h for h in app.assertion_headers)


def test_rs256_with_sha1_x5t_is_the_default_certificate_assertion(
    make_bridge: Callable[..., BridgeProcess], idp: IdentityPlatform, tenant: str,
    mailbox: str, collector: Collector, base_topic: str, tmp_path: Path,
) -> None:
    cert = make_client_certificate(tmp_path, "rs")
    app = idp.register_app(tenant, certificates=[cert.cert_pem], mailboxes=[mailbox])
    make_bridge({"client_id": app.client_id, "certificate_file": cert.cert_file,
                 "private_key_file": cert.key_file}).start()
    wait_online(collector, base_topic)
    assert {h["alg"] for h in app.assertion_headers} == {"RS256"}
    assert {str(h["x5t"]).rstrip("=") for h in app.assertion_headers} == {cert.x5t}


def test_the_demo_runs_a_mark_read_round_trip() -> None:
    """`scripts/start.sh` without a config runs this demo; --once ends it after the round
    trip instead of waiting for Ctrl-C."""
    result = subprocess.run([sys.executable, "-m", "rig.demo", "--once"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "reply ok; \\Seen on the server: True" in result.stdout
    assert "/home/inbox/message" in result.stdout
