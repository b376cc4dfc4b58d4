"""`outlook2mqtt init`: answers checked as given, a config `run` accepts, written 0600."""

from __future__ import annotations

import argparse
import io
import os
import pty
import re
import select
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from bridge.cli import answers
from bridge.cli import init as wizard
from bridge.cli.answers import Invalid, Prompter
from bridge.config.load import load_config
from rig.dovecot import Dovecot
from rig.idp import App, IdentityPlatform
from rig.mosquitto import Mosquitto
from rig.pki import TestPKI, make_client_certificate
from tests.bridgeproc import ROOT, run_cli
from tests.clitools import main

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT = "00001111-aaaa-2222-bbbb-3333cccc4444"
SECRET = "Xy78Q~abcdefghijklmnopqrstuvwxyz0123456"


def flags(path: Path, *extra: str) -> list[str]:
    return ["init", "--non-interactive", "--output", str(path), "--tenant-id", TENANT,
            "--client-id", CLIENT, "--mailbox", "me@contoso.com", *extra]


# -- answer checks ----------------------------------------------------------------------------

@pytest.mark.parametrize(("check", "good", "value"), [
    (answers.tenant_id, TENANT, TENANT),
    (answers.tenant_id, " contoso.onmicrosoft.com ", "contoso.onmicrosoft.com"),
    (answers.client_id, CLIENT.upper(), CLIENT.upper()),
    (answers.mailbox, "shared-helpdesk@contoso.com", "shared-helpdesk@contoso.com"),
    (answers.account_name, "work_2", "work_2"),
    (answers.auth, "2", "client_certificate"),
    (answers.auth, "device_code", "device_code"),
    (answers.cloud, "usgov-dod", "usgov-dod"),
    (answers.host, "192.168.1.10", "192.168.1.10"),
    (answers.port, "8883", 8883),
    (answers.authority, "https://login.microsoftonline.us/", "https://login.microsoftonline.us"),
    (answers.folders, "INBOX, Inbox/Receipts, INBOX", ["INBOX", "Inbox/Receipts"]),
    (answers.client_secret, SECRET, SECRET),
])
def test_good_answers_are_taken(check: Any, good: str, value: Any) -> None:
    assert check(good) == value


@pytest.mark.parametrize(("check", "bad", "why"), [
    (answers.tenant_id, "common", "works only for delegated sign-in"),
    (answers.tenant_id, "my tenant", "Directory (tenant) ID"),
    (answers.client_id, "my-app", "Application (client) ID"),
    (answers.mailbox, "me", "e-mail address"),
    (answers.account_name, "Home Mail", "'home_mail'"),
    (answers.account_name, "bridge", "not 'bridge'"),
    (answers.auth, "4", "choose 1 (client_secret)"),
    (answers.cloud, "germany", "one of global, usgov"),
    (answers.cloud, "gcc", "gcc is cloud 'global'"),
    (answers.cloud, "GCC High", "GCC High is cloud 'usgov'"),
    (answers.cloud, "DoD", "DoD is cloud 'usgov-dod'"),
    (answers.host, "mqtt://broker", "without scheme or port"),
    (answers.host, "broker:1883", "without scheme or port"),
    (answers.port, "70000", "1 to 65535"),
    (answers.authority, "https://login.microsoftonline.com/contoso", "tenant goes in tenant_id"),
    (answers.folders, " , ", "at least one folder"),
    # a fixed GUID: the same test id in every xdist worker
    (answers.client_secret, "17cc31b7-bc24-4f4d-acb4-f858fa414dc7", "that is the Secret ID"),
])
def test_bad_answers_say_what_would_work(check: Any, bad: str, why: str) -> None:
    with pytest.raises(Invalid, match=re.escape(why)):
        check(bad)


def test_certificate_and_key_must_belong_together(tmp_path: Path) -> None:
    one = make_client_certificate(tmp_path / "one", "one")
    two = make_client_certificate(tmp_path / "two", "two")

    assert answers.key_matches(one.cert_file)(str(one.key_file)) == one.key_file
    with pytest.raises(Invalid, match="does not belong to the certificate"):
        answers.key_matches(one.cert_file)(str(two.key_file))
    with pytest.raises(Invalid, match="DER copy for the Azure upload"):
        answers.certificate_file(str(one.key_file))


# -- non-interactive ----------------------------------------------------------------------------

def test_non_interactive_writes_a_0600_config_that_run_accepts(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "config.toml"

    assert main(*flags(path, "--client-secret", SECRET, "--folder", "INBOX", "--folder",
                       "Inbox/Receipts", "--mqtt-host", "broker.lan", "--mqtt-port", "1884",
                       "--mqtt-username", "o2m", "--mqtt-password", "pw",
                       "--account-name", "work", "--state-dir", str(tmp_path / "state"))) == 0

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    config = load_config(path)
    account = config.accounts[0]
    assert (account.name, account.tenant_id, account.client_id, account.mailbox) == (
        "work", TENANT, CLIENT, "me@contoso.com")
    assert account.client_secret == SECRET and account.auth == "client_secret"
    assert [f.name for f in account.folders] == ["INBOX", "Inbox/Receipts"]
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.username, config.mqtt.password) == (
        "broker.lan", 1884, "o2m", "pw")
    assert config.bridge.state_dir == tmp_path / "state"
    assert "[[accounts.folders]]" in path.read_text()


def test_non_interactive_certificate_and_overrides(tmp_path: Path) -> None:
    cert = make_client_certificate(tmp_path, "outlook2mqtt")
    path = tmp_path / "config.toml"

    assert main(*flags(path, "--auth", "client_certificate", "--certificate-file",
                       str(cert.cert_file), "--private-key-file", str(cert.key_file),
                       "--cloud", "china", "--imap-port", "1993", "--ca-file",
                       str(cert.cert_file))) == 0

    account = load_config(path).accounts[0]
    assert account.certificate_file == cert.cert_file
    assert account.private_key_file == cert.key_file
    assert (account.imap_host, account.imap_port, account.scope) == (
        "partner.outlook.cn", 1993, "https://partner.outlook.cn/.default")
    assert account.authority == "https://login.partner.microsoftonline.cn"


def test_non_interactive_device_code_needs_no_tenant(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"

    assert main("init", "--non-interactive", "--output", str(path), "--auth", "device_code",
                "--client-id", CLIENT, "--mailbox", "me@outlook.com") == 0

    assert load_config(path).accounts[0].tenant_id == "consumers"


def test_relative_file_flags_are_written_as_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "secret.txt").write_text(SECRET + "\n")
    monkeypatch.chdir(tmp_path)

    assert main(*flags(tmp_path / "sub" / "config.toml", "--client-secret-file",
                       "secret.txt")) == 0

    assert f'client_secret_file = "{tmp_path}/secret.txt"' in (
        tmp_path / "sub" / "config.toml").read_text()
    assert load_config(tmp_path / "sub" / "config.toml").accounts[0].client_secret == SECRET


def test_missing_and_bad_flags_are_all_listed_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "config.toml"

    assert main("init", "--non-interactive", "--output", str(path), "--auth",
                "client_certificate", "--mailbox", "me", "--mqtt-port", "x") == 2

    err = capsys.readouterr().err
    for problem in ("--mailbox: give the mailbox's e-mail address", "--mqtt-port: a port number",
                    "--client-id is required", "--tenant-id is required",
                    "--certificate-file is required with --auth client_certificate",
                    "--private-key-file is required"):
        assert problem in err
    assert not path.exists()


def test_an_existing_file_is_kept_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "config.toml"
    path.write_text("# mine\n")
    path.chmod(0o644)

    assert main(*flags(path, "--client-secret", SECRET)) == 1
    assert "exists; not replaced (use --force" in capsys.readouterr().err
    assert path.read_text() == "# mine\n"

    assert main(*flags(path, "--client-secret", SECRET, "--force")) == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_config(path).accounts[0].client_secret == SECRET


def test_a_symlink_is_replaced_not_written_through(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.toml"
    target.write_text("# not yours\n")
    path = tmp_path / "config.toml"
    path.symlink_to(target)

    assert main(*flags(path, "--client-secret", SECRET, "--force")) == 0

    assert target.read_text() == "# not yours\n"
    assert not path.is_symlink()


def test_secret_from_stdin_stays_out_of_the_process_list(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"

    done = subprocess.run([sys.executable, "-m", "bridge", *flags(path, "--client-secret", "-")],
                          input=SECRET + "\n", capture_output=True, text=True, cwd=ROOT,
                          timeout=60, check=False)

    assert done.returncode == 0, done.stderr
    assert load_config(path).accounts[0].client_secret == SECRET


def test_mqtt_password_from_stdin_stays_out_of_the_process_list(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    argv = flags(path, "--client-secret", "-", "--mqtt-username", "o2m", "--mqtt-password", "-")

    done = subprocess.run([sys.executable, "-m", "bridge", *argv],
                          input=f"{SECRET}\nbroker-pw-from-stdin\n", capture_output=True,
                          text=True, cwd=ROOT, timeout=60, check=False)

    assert done.returncode == 0, done.stderr
    config = load_config(path)
    assert config.accounts[0].client_secret == SECRET
    assert config.mqtt.password == "broker-pw-from-stdin"


def test_mqtt_password_file_is_referenced_not_copied(tmp_path: Path) -> None:
    secret_file = tmp_path / "mqtt.password"
    secret_file.write_text("broker-pw-in-a-file\n")
    path = tmp_path / "config.toml"

    assert main(*flags(path, "--client-secret", SECRET, "--mqtt-username", "o2m",
                       "--mqtt-password-file", str(secret_file))) == 0

    assert "broker-pw-in-a-file" not in path.read_text()
    assert load_config(path).mqtt.password == "broker-pw-in-a-file"


def test_mqtt_password_needs_a_user_and_only_one_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret_file = tmp_path / "mqtt.password"
    secret_file.write_text("pw\n")

    code = main(*flags(tmp_path / "config.toml", "--client-secret", SECRET,
                       "--mqtt-password", "pw", "--mqtt-password-file", str(secret_file)))

    err = capsys.readouterr().err
    assert code == 2
    assert "--mqtt-password-file needs --mqtt-username" in err
    assert "give one of them" in err


# -- interactive, in-process --------------------------------------------------------------------

def run_dialog(tmp_path: Path, answers: list[str], *extra: str) -> tuple[int, str]:
    from bridge.cli.main import build_parser

    args: argparse.Namespace = build_parser().parse_args(
        ["init", "--output", str(tmp_path / "config.toml"), *extra])
    out = io.StringIO()
    code = wizard.run_init(args, Prompter(io.StringIO("".join(a + "\n" for a in answers)), out))
    return code, out.getvalue()


def test_dialog_asks_again_until_each_answer_is_usable(tmp_path: Path) -> None:
    code, out = run_dialog(tmp_path, [
        "", "common", TENANT, "not-a-guid", CLIENT, "me", "me@contoso.com", "Home", "",
        "global", str(uuid.uuid4()), SECRET, "mqtt://x", "", "", "", "INBOX, Archive", "n"])

    assert code == 0, out
    assert out.count("Directory (tenant) ID: ") == 2
    assert "! 'common' works only for delegated sign-in" in out
    assert "! that is the Secret ID" in out
    assert "! a topic segment" in out and "! a host name or address only" in out
    assert "Next: outlook2mqtt check -c" in out
    account = load_config(tmp_path / "config.toml").accounts[0]
    assert account.client_secret == SECRET and account.name == "home"
    assert [f.name for f in account.folders] == ["INBOX", "Archive"]


def test_flags_given_are_not_asked(tmp_path: Path) -> None:
    code, out = run_dialog(tmp_path, ["n"], "--auth", "1", "--tenant-id", TENANT, "--client-id",
                           CLIENT, "--mailbox", "me@contoso.com", "--account-name", "home",
                           "--cloud", "global", "--client-secret", SECRET, "--mqtt-host",
                           "localhost", "--mqtt-port", "1883", "--mqtt-username", "",
                           "--folder", "INBOX")

    assert code == 0, out
    assert "Directory (tenant) ID" not in out and "Client secret" not in out
    assert "Credential [1]" not in out and "MQTT username" not in out


def test_end_of_input_aborts_and_writes_nothing(tmp_path: Path) -> None:
    code, _out = run_dialog(tmp_path, ["1", TENANT])

    assert code == 1
    assert not (tmp_path / "config.toml").exists()


def test_dialog_keeps_an_existing_file_unless_confirmed(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("# mine\n")

    code, out = run_dialog(tmp_path, [""])

    assert code == 1 and "Replace it? [y/N]" in out
    assert (tmp_path / "config.toml").read_text() == "# mine\n"


# -- on the rig ---------------------------------------------------------------------------------

def rig_flags(idp: IdentityPlatform, pki: TestPKI, dovecot: Dovecot, tmp_path: Path) -> list[str]:
    return ["--authority", idp.authority, "--imap-host", "127.0.0.1", "--imap-port",
            str(dovecot.port), "--ca-file", str(pki.ca_file), "--state-dir",
            str(tmp_path / "state")]


def test_non_interactive_round_trip_passes_check_on_the_rig(
    idp: IdentityPlatform, pki: TestPKI, dovecot: Dovecot, mosquitto: Mosquitto, tenant: str,
    mailbox: str, app: App, tmp_path: Path,
) -> None:
    path = tmp_path / "config.toml"
    done = run_cli("init", "--non-interactive", "--output", str(path), "--tenant-id", tenant,
                   "--client-id", app.client_id, "--mailbox", mailbox, "--client-secret",
                   app.secrets[0], "--mqtt-host", "127.0.0.1", "--mqtt-port",
                   str(mosquitto.port), *rig_flags(idp, pki, dovecot, tmp_path))
    assert done.returncode == 0, done.stderr

    checked = run_cli("check", "-c", str(path))

    assert checked.returncode == 0, checked.stdout
    assert checked.stdout.count("ok  ") == 5


class Terminal:
    """`python -m bridge ARGS` on a pseudo-terminal, driven like a person would."""

    def __init__(self, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "OUTLOOK2MQTT_CONFIG"}
        env["TERM"] = "dumb"
        pid, fd = pty.fork()
        if pid == 0:  # the child: becomes the program, with the pty as its terminal
            try:
                os.chdir(ROOT)
                os.execve(sys.executable, [sys.executable, "-m", "bridge", *args],  # noqa: S606
                          env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self.transcript = ""
        self._seen = 0

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.fd, 4096)
        except OSError:  # EIO: the program closed the terminal
            return False
        self.transcript += data.decode(errors="replace")
        return bool(data)

    def expect(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while (found := self.transcript.find(text, self._seen)) < 0:
            if time.monotonic() > deadline or not self._read(0.2):
                raise AssertionError(f"never saw {text!r}; transcript:\n{self.transcript}")
        self._seen = found + len(text)

    def answer(self, prompt: str, text: str) -> None:
        self.expect(prompt)
        os.write(self.fd, text.encode() + b"\r")

    def exit_code(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while self._read(0.2) and time.monotonic() < deadline:
            pass
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        return os.waitstatus_to_exitcode(status)


def test_interactive_certificate_setup_through_a_terminal_passes_check(
    idp: IdentityPlatform, pki: TestPKI, dovecot: Dovecot, mosquitto: Mosquitto, tenant: str,
    mailbox: str, tmp_path: Path,
) -> None:
    app = idp.register_app(tenant, mailboxes=[mailbox])  # no certificate uploaded yet
    path = tmp_path / "config.toml"
    term = Terminal("init", "--output", str(path), *rig_flags(idp, pki, dovecot, tmp_path))

    term.answer("Credential [1]: ", "2")
    term.answer("Directory (tenant) ID: ", "my tenant")
    term.expect("! give the Directory (tenant) ID")
    term.answer("Directory (tenant) ID: ", tenant)
    term.answer("Application (client) ID: ", app.client_id)
    term.answer("Mailbox address: ", mailbox)
    term.answer("Account name (used in MQTT topics) [home]: ", "")
    term.answer("(outlook2mqtt cert new)? [Y/n]: ", "")
    term.expect("The portal must then show the thumbprint ")
    # the person uploads the .cer in the Azure portal
    app.certificates.append((tmp_path / "outlook2mqtt.crt").read_bytes())
    term.answer("MQTT broker host [localhost]: ", "127.0.0.1")
    term.answer("MQTT broker port [1883]: ", str(mosquitto.port))
    term.answer("MQTT username (empty for none): ", "o2m")
    term.answer("MQTT password (input hidden) (empty for none): ", "typed-unseen-pw")
    term.answer("Folders to watch, comma-separated [INBOX]: ", "")
    term.expect(f"Wrote {path} (mode 0600).")
    term.answer("Test the connection now (outlook2mqtt check)? [Y/n]: ", "")
    term.expect("ok    MQTT")
    term.expect("All good.")

    assert term.exit_code() == 0, term.transcript
    assert "typed-unseen-pw" not in term.transcript  # not echoed
    assert stat.S_IMODE((tmp_path / "outlook2mqtt.key").stat().st_mode) == 0o600
    config = load_config(path)
    assert config.mqtt.password == "typed-unseen-pw"
    assert config.accounts[0].certificate_file == tmp_path / "outlook2mqtt.crt"
    assert config.accounts[0].private_key_file == tmp_path / "outlook2mqtt.key"


def test_a_folder_flag_is_one_name_even_with_a_comma(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"

    assert main(*flags(path, "--client-secret", SECRET, "--folder", "Sales, EMEA",
                       "--folder", "INBOX")) == 0

    assert [f.name for f in load_config(path).accounts[0].folders] == ["Sales, EMEA", "INBOX"]
