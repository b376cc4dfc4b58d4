"""The systemd unit: it verifies, it is hardened, and the bridge runs the way it starts it."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rig.bridgecfg import rig_config, write_config
from rig.dovecot import Dovecot
from rig.idp import IdentityPlatform
from rig.mosquitto import Mosquitto
from rig.pki import TestPKI, make_client_certificate
from rig.procs import terminate
from tests.bridgeproc import ROOT

UNIT = ROOT / "systemd" / "outlook2mqtt.service"
TEMPLATE = ROOT / "systemd" / "outlook2mqtt@.service"
SETUP_DOC = ROOT / "docs" / "setup.md"
ANALYZE = shutil.which("systemd-analyze")
# scripts/setup.sh installs systemd: a missing systemd-analyze is a broken set-up.
needs_analyze = pytest.mark.usefixtures("_systemd_analyze")


@pytest.fixture
def _systemd_analyze() -> None:
    assert ANALYZE is not None, "systemd-analyze missing: apt-get install systemd"
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1  # linux/prctl.h, Linux >= 6.3


def directives(text: str) -> dict[str, list[str]]:
    """Key -> every value it is given in the unit (keys may repeat)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def installable(unit: Path, directory: Path) -> Path:
    """`unit` in `directory` with ExecStart pointing at this venv's console script (verify
    wants it to exist)."""
    script = Path(sys.executable).parent / "outlook2mqtt"
    assert script.exists(), "pip install -e . provides the outlook2mqtt script"
    path = directory / unit.name
    path.write_text(unit.read_text().replace("/opt/outlook2mqtt/bin/outlook2mqtt", str(script)))
    return path


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, "verify", "--man=no", str(unit)], capture_output=True,
                          text=True, timeout=60, check=False)


def exposure(unit: Path) -> tuple[str, str]:
    """`systemd-analyze security`'s overall exposure level of `unit`: (figure, verdict)."""
    assert ANALYZE is not None
    done = subprocess.run([ANALYZE, "security", "--offline=true", "--no-pager", str(unit)],
                          capture_output=True, text=True, timeout=60, check=False)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", done.stdout)
    assert found, done.stdout + done.stderr
    return found[1], found[2]


@pytest.fixture
def installable_unit(tmp_path: Path) -> Path:
    return installable(UNIT, tmp_path)


@needs_analyze
def test_unit_passes_systemd_analyze_verify(installable_unit: Path) -> None:
    done = verify(installable_unit)

    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == ""  # not even a warning


@needs_analyze
def test_exposure_is_low_and_the_figure_in_the_docs_is_current(installable_unit: Path) -> None:
    figure, verdict = exposure(installable_unit)

    assert float(figure) <= 1.5 and verdict == "OK"
    assert f"exposure level {figure} ({verdict})" in SETUP_DOC.read_text()
    assert f"rates this {figure} ({verdict})" in UNIT.read_text()


@needs_analyze
def test_template_unit_and_its_instances_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    template = installable(TEMPLATE, tmp_path)

    # verify loads `name@instance.service` from the template beside it
    for unit in (template, tmp_path / "outlook2mqtt@helpdesk-1.service"):
        done = verify(unit)
        assert done.returncode == 0 and done.stderr.strip() == "", (unit, done.stderr)


@needs_analyze
def test_template_instance_is_exposed_no_more_than_the_service(
    tmp_path: Path, installable_unit: Path,
) -> None:
    installable(TEMPLATE, tmp_path)

    assert exposure(tmp_path / "outlook2mqtt@helpdesk-1.service") == exposure(installable_unit)


def test_template_unit_is_the_service_with_config_state_and_secrets_per_instance() -> None:
    unit, template = directives(UNIT.read_text()), directives(TEMPLATE.read_text())

    differ = {key for key in unit.keys() | template.keys() if unit.get(key) != template.get(key)}
    assert differ == {"Description", "StateDirectory", "LoadCredential"}
    assert template["StateDirectory"] == ["outlook2mqtt/%i"]
    assert "%i" in template["Description"][0]
    credentials = dict(c.split(":", 1) for c in template["LoadCredential"])
    assert credentials.pop("config.toml") == "/etc/outlook2mqtt/%i.toml"
    single = dict(c.split(":", 1) for c in unit["LoadCredential"])
    single.pop("config.toml")
    # the same credentials, from files of the instance's own in /etc/credstore
    assert credentials == {name: source.replace("outlook2mqtt.", "outlook2mqtt@%i.", 1)
                           for name, source in single.items()}


def test_unit_has_the_hardening_the_issue_asks_for() -> None:
    unit = directives(UNIT.read_text())

    for key, value in {
        "Type": "notify", "DynamicUser": "yes", "StateDirectory": "outlook2mqtt",
        "ConfigurationDirectory": "outlook2mqtt", "ProtectSystem": "strict",
        "ProtectHome": "yes", "PrivateTmp": "yes", "NoNewPrivileges": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "Restart": "on-failure",
        "RestartPreventExitStatus": "2", "MemoryDenyWriteExecute": "yes",
        "CapabilityBoundingSet": "", "UMask": "0077",
    }.items():
        assert unit.get(key) == [value], key
    assert "@system-service" in unit["SystemCallFilter"]
    assert unit["WatchdogSec"] == ["120s"]
    credentials = dict(c.split(":", 1) for c in unit["LoadCredential"])
    assert credentials["config.toml"] == "/etc/outlook2mqtt/config.toml"
    # the names the config looks up in $CREDENTIALS_DIRECTORY, from /etc/credstore (optional)
    for name in ("client_secret", "private_key", "private_key_passphrase", "mqtt.password"):
        assert not credentials[name].startswith("/"), name
    assert unit["ExecStart"] == [
        "/opt/outlook2mqtt/bin/outlook2mqtt run -c ${CREDENTIALS_DIRECTORY}/config.toml"]


# -- the bridge as systemd starts it --------------------------------------------------------------

def _mdwe_supported() -> bool:
    code = ("import ctypes, sys; "
            f"sys.exit(ctypes.CDLL(None).prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0)"
            " != 0)")
    return subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


MDWE = _mdwe_supported()


def _as_systemd_starts_it() -> None:
    """In the child: UMask=0077 and, where the kernel has it (Linux >= 6.3),
    MemoryDenyWriteExecute= as the kernel's MDWE."""
    os.umask(0o077)
    if MDWE and ctypes.CDLL(None).prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        os._exit(99)


@pytest.fixture
def notify_socket() -> Iterator[tuple[str, socket.socket]]:
    """An abstract-namespace datagram socket standing in for systemd's NOTIFY_SOCKET."""
    name = f"o2m-notify-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(0.2)
    yield "@" + name, sock
    sock.close()


def wait_notification(sock: socket.socket, wanted: str, seen: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not any(wanted in m for m in seen):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {wanted!r} from the bridge; got {seen}")
        try:
            seen.append(sock.recv(4096).decode())
        except TimeoutError:
            continue


def test_bridge_runs_as_the_unit_starts_it(
    idp: IdentityPlatform, pki: TestPKI, dovecot: Dovecot, mosquitto: Mosquitto, tenant: str,
    mailbox: str, tmp_path: Path, notify_socket: tuple[str, socket.socket],
) -> None:
    """Config and private key from $CREDENTIALS_DIRECTORY, state in $STATE_DIRECTORY, READY=1
    and watchdog pings on NOTIFY_SOCKET, journald log format, no W+X memory, clean stop."""
    cert = make_client_certificate(tmp_path / "etc", "outlook2mqtt")
    app = idp.register_app(tenant, certificates=[cert.cert_pem], mailboxes=[mailbox])
    data = rig_config(authority=idp.authority, ca_file=pki.ca_file, imap_port=dovecot.port,
                      mqtt_port=mosquitto.port, tenant_id=tenant, client_id=app.client_id,
                      mailbox=mailbox, state_dir=tmp_path, certificate_file=cert.cert_file,
                      private_key_file=cert.key_file, base_topic=f"o2m-{uuid.uuid4().hex[:8]}")
    del data["bridge"]  # state goes to $STATE_DIRECTORY
    del data["accounts"][0]["private_key_file"]  # the key comes as a credential
    credentials, state = tmp_path / "credentials", tmp_path / "state"
    credentials.mkdir(mode=0o700)
    state.mkdir(mode=0o700)
    write_config(credentials / "config.toml", data)
    shutil.copy(cert.key_file, credentials / "private_key")
    address, sock = notify_socket
    log_path = tmp_path / "journal"
    with log_path.open("wb") as journal:
        st = os.fstat(journal.fileno())
        env = {**os.environ, "CREDENTIALS_DIRECTORY": str(credentials),
               "STATE_DIRECTORY": str(state), "NOTIFY_SOCKET": address,
               "WATCHDOG_USEC": "1000000", "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
               "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        env.pop("OUTLOOK2MQTT_CONFIG", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "run", "-c", f"{credentials}/config.toml"],
            cwd=ROOT, env=env, stdout=journal, stderr=journal,
            preexec_fn=_as_systemd_starts_it)  # noqa: PLW1509 - prctl must run in the child
        seen: list[str] = []
        try:
            wait_notification(sock, "READY=1", seen, 30)
            wait_notification(sock, "WATCHDOG=1", seen, 30)
        finally:
            code = terminate(proc)
        assert code == 0
    wait_notification(sock, "STOPPING=1", seen, 30)

    lines = log_path.read_text().splitlines()
    assert lines and all(re.match(r"<[2-7]>", line) for line in lines), lines[:5]
    assert not any(re.match(r"<\d>\d{4}-\d\d-\d\d", line) for line in lines)  # no timestamp
    written = [p for p in state.rglob("*") if p.is_file()]
    assert written, "positions are kept in $STATE_DIRECTORY"
