"""Logging: a terminal format, a journald format, and no secret in any line at any level."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge import log
from rig.bridgecfg import rig_config
from rig.dovecot import Dovecot
from rig.idp import IdentityPlatform, random_secret
from rig.mosquitto import Mosquitto
from rig.mqttsub import Collector
from rig.pki import TestPKI, make_client_certificate
from rig.samples import make_message
from tests.bridgeproc import ROOT, BridgeProcess
from tests.clitools import recording_tokens

MQTT_USER, MQTT_PASSWORD = "o2m", "mqtt-pw-d41d8cd98f00b204"
JWT = ("eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL291dGxvb2sub2ZmaWNlMzY1LmNvbSJ9."
       "c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmU")


def record(msg: str, level: int = logging.INFO, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            exc_info = sys.exc_info()
    return logging.LogRecord("bridge.auth", level, __file__, 1, msg, None, exc_info)


# -- formats ----------------------------------------------------------------------------------

def test_terminal_lines_carry_time_level_and_logger() -> None:
    line = log.formatter(journald=False).format(record("token acquired"))

    date, time_, level, rest = line.split(" ", 3)
    assert len(date) == 10 and len(time_) == 8 and level == "INFO"
    assert rest.strip() == "bridge.auth: token acquired"


@pytest.mark.parametrize(("level", "prefix"), [
    (logging.DEBUG, "<7>"), (logging.INFO, "<6>"), (logging.WARNING, "<4>"),
    (logging.ERROR, "<3>"), (logging.CRITICAL, "<2>")])
def test_journald_lines_start_with_the_syslog_priority_and_have_no_timestamp(
    level: int, prefix: str,
) -> None:
    line = log.formatter(journald=True).format(record("token acquired", level))

    assert line == f"{prefix}bridge.auth: token acquired"


def test_journald_prefixes_every_line_of_a_traceback() -> None:
    lines = log.formatter(journald=True).format(record("failed", logging.ERROR, exc=True))

    assert len(lines.splitlines()) > 3
    assert all(line.startswith("<3>") for line in lines.splitlines())


def test_journald_is_detected_only_when_stderr_is_the_journal_stream(tmp_path: Path) -> None:
    out = tmp_path / "stderr"
    code = ("import logging, sys; from bridge import log; log.setup('info'); "
            "logging.getLogger('bridge.x').info('hello')")
    with out.open("wb") as err:
        st = os.fstat(err.fileno())
        for stream in (f"{st.st_dev}:{st.st_ino}", f"{st.st_dev}:{st.st_ino + 1}"):
            subprocess.run([sys.executable, "-c", code], stderr=err, cwd=ROOT, check=True,
                           env={**os.environ, "JOURNAL_STREAM": stream})

    journal, terminal = out.read_text().splitlines()
    assert journal == "<6>bridge.x: hello"
    assert terminal.endswith("INFO    bridge.x: hello") and terminal[:2] == "20"


# -- redaction --------------------------------------------------------------------------------

@pytest.fixture
def clean_secrets() -> Iterator[None]:
    saved = set(log._secrets)
    yield
    log._secrets.clear()
    log._secrets.update(saved)


def test_registered_secrets_are_redacted_in_messages_arguments_and_tracebacks(
    clean_secrets: None,
) -> None:
    log.register_secret("s3cr3t-value")
    rec = record("login with %s failed")
    rec.args = ("s3cr3t-value",)
    try:
        raise ValueError("bad secret s3cr3t-value")
    except ValueError:
        rec.exc_info = sys.exc_info()

    line = log.formatter(journald=False).format(rec)

    assert "s3cr3t-value" not in line
    assert "login with *** failed" in line and "ValueError: bad secret ***" in line


def test_credential_shapes_are_redacted_unregistered(clean_secrets: None) -> None:
    key = make_client_certificate(Path(os.environ.get("TMPDIR", "/tmp")) / uuid.uuid4().hex,
                                  "k").key_file.read_text()

    text = log.redact(f"token {JWT} then Authorization: Bearer abcdefgh12345678 and\n{key}")

    assert JWT not in text and "abcdefgh12345678" not in text
    assert "PRIVATE KEY" not in text and key.splitlines()[1] not in text


def test_each_line_of_a_registered_private_key_is_redacted(
    clean_secrets: None, tmp_path: Path,
) -> None:
    key = make_client_certificate(tmp_path, "k").key_file
    lines = key.read_text().splitlines()[1:-1]

    log.register_private_key_file(key)

    assert all(log.redact(f"x{line}y") == "x***y" for line in lines)


def test_short_values_are_not_registered(clean_secrets: None) -> None:
    log.register_secret("abc")
    log.register_secret(None)

    assert log.redact("abc") == "abc"


# -- a whole rig run at debug level --------------------------------------------------------------

def leaks(text: str, secrets: dict[str, str]) -> list[str]:
    return [what for what, value in secrets.items() if value in text]


def test_no_secret_reaches_any_output_of_a_full_run_at_debug_level(
    idp: IdentityPlatform, pki: TestPKI, dovecot: Dovecot, tenant: str, mailbox: str,
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = random_secret()
    secret_app = idp.register_app(tenant, secret=secret, mailboxes=[mailbox])
    cert = make_client_certificate(tmp_path / "cert", "work")
    cert_app = idp.register_app(tenant, certificates=[cert.cert_pem], mailboxes=[mailbox])
    base = f"o2m-{uuid.uuid4().hex[:8]}"
    with Mosquitto(tmp_path_factory.mktemp("broker"), users={MQTT_USER: MQTT_PASSWORD}) as broker, \
            recording_tokens(idp, monkeypatch) as issued:
        data: dict[str, Any] = rig_config(
            authority=idp.authority, ca_file=pki.ca_file, imap_port=dovecot.port,
            mqtt_port=broker.port, tenant_id=tenant, client_id=secret_app.client_id,
            mailbox=mailbox, state_dir=tmp_path / "state", secret=secret, base_topic=base)
        data["mqtt"] |= {"username": MQTT_USER, "password": MQTT_PASSWORD}
        work = {k: v for k, v in data["accounts"][0].items() if k != "client_secret"}
        data["accounts"].append(work | {
            "name": "work", "client_id": cert_app.client_id, "auth": "client_certificate",
            "certificate_file": str(cert.cert_file), "private_key_file": str(cert.key_file)})
        bridge = BridgeProcess(tmp_path, data)

        collector = Collector("127.0.0.1", broker.port, [f"{base}/#"])
        collector.client.username_pw_set(MQTT_USER, MQTT_PASSWORD)
        with collector:
            bridge.start()
            collector.wait_for(lambda m: m.topic == f"{base}/bridge/state"
                               and m.payload == b"online", timeout=30)
            dovecot.deliver(mailbox, make_message(subject="leak test", to=mailbox))
            uid = collector.wait_topic(f"{base}/home/inbox/message")[0].json()["uid"]
            collector.publish(f"{base}/work/command",
                              f'{{"action": "flag", "folder": "INBOX", "uids": [{uid}]}}')
            reply = collector.wait_topic(f"{base}/work/command/result")[0].json()
            assert reply["status"] == "ok", reply
            assert bridge.stop() == 0
        outputs = {"run": bridge.log()}
        for command in ("check", "token"):
            done = subprocess.run(
                [sys.executable, "-m", "bridge", command, "-c", str(bridge.config_path),
                 "--log-level", "debug"], cwd=ROOT, capture_output=True, text=True,
                timeout=60, check=False)
            assert done.returncode == 0, done.stdout + done.stderr
            outputs[command] = done.stdout + done.stderr
        outputs |= {f"state {p.name}": p.read_text(errors="replace")
                    for p in (tmp_path / "state").rglob("*") if p.is_file()}

    assert "DEBUG" in outputs["run"] and "AUTHENTICATE" in outputs["run"]
    assert "DEBUG" in outputs["check"] and "INFO" in outputs["token"]
    assert len(issued) >= 6  # the bridge's, check's and token's, for both accounts
    key_lines = cert.key_file.read_text().splitlines()[1:-1]
    secrets = {"client secret": secret, "MQTT password": MQTT_PASSWORD,
               "private key": "".join(key_lines)}
    secrets |= {f"private key line {i}": line for i, line in enumerate(key_lines)}
    for n, token in enumerate(issued):
        _header, payload, signature = token.split(".")
        secrets |= {f"token {n}": token, f"token {n} payload": payload,
                    f"token {n} signature": signature}
    for name, text in outputs.items():
        assert leaks(text, secrets) == [], f"{name} output leaks"
        assert "eyJ" not in text, f"{name} output holds a JWT"


def test_config_errors_under_journald_are_error_priority(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[mqtt]\nhost = "localhost"\nport = "x"\n')
    out = tmp_path / "stderr"
    with out.open("wb") as err:
        st = os.fstat(err.fileno())
        done = subprocess.run([sys.executable, "-m", "bridge", "run", "-c", str(config)],
                              stderr=err, cwd=ROOT, check=False, timeout=60,
                              env={**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})

    assert done.returncode == 2
    lines = out.read_text().splitlines()
    assert lines[0] == "<3>outlook2mqtt: invalid configuration:"
    assert any(line.startswith("<3>  - mqtt.port") for line in lines)
    assert all(line.startswith("<3>") for line in lines)
