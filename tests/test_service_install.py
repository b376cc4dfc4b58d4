"""`outlook2mqtt service install|uninstall`: files, owners and modes, and the installed unit's
command line run as an unprivileged user against the rig.

systemd is not PID 1 on the test machines: every install here passes `--no-start` (no
systemctl) and directories under a temporary root; the unit is checked with
`systemd-analyze verify` and its ExecStart run as user `nobody` with the credentials its
LoadCredential= lines name, as systemd would hand them over.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.cli import service as service_cli
from rig.bridgecfg import rig_config, write_config
from rig.dovecot import Dovecot
from rig.idp import IdentityPlatform, random_secret
from rig.mosquitto import Mosquitto
from rig.mqttsub import Collector
from rig.pki import TestPKI
from rig.procs import terminate
from tests.bridgeproc import run_cli
from tests.clitools import main
from tests.conftest import wait_online
from tests.installs import FreshInstall, clean_env
from tests.test_systemd import directives

pytestmark = pytest.mark.root(why="a system install needs root")
ANALYZE = shutil.which("systemd-analyze")


@dataclass
class Host:
    """A stand-in for / : where the install writes, and what the rig needs."""

    base: Path
    base_topic: str
    program: Path  # a fresh install's outlook2mqtt, which the unit will run

    @property
    def units(self) -> Path:
        return self.base / "etc" / "systemd" / "system"

    @property
    def etc(self) -> Path:
        return self.base / "etc" / "outlook2mqtt"

    @property
    def credstore(self) -> Path:
        return self.base / "etc" / "credstore"

    @property
    def state(self) -> Path:
        return self.base / "var" / "lib" / "outlook2mqtt"

    def locations(self) -> list[str]:
        return ["--no-start", "--unit-dir", str(self.units), "--config-dir", str(self.etc),
                "--credstore", str(self.credstore), "--state-dir", str(self.state)]


@pytest.fixture
def host(fresh_install: FreshInstall) -> Iterator[Host]:
    # not pytest's tmp_path: its parents are 0700, and user nobody must reach the files
    base = Path(tempfile.mkdtemp(prefix="o2m-host-"))
    base.chmod(0o755)
    yield Host(base, f"o2m-{uuid.uuid4().hex[:8]}", fresh_install.program)
    shutil.rmtree(base)


@pytest.fixture
def rig_settings(idp: IdentityPlatform, pki: TestPKI, dovecot: Dovecot, mosquitto: Mosquitto,
                 tenant: str, mailbox: str, host: Host) -> dict[str, object]:
    return {"authority": idp.authority, "ca_file": pki.ca_file, "imap_port": dovecot.port,
            "mqtt_port": mosquitto.port, "tenant_id": tenant, "mailbox": mailbox,
            "base_topic": host.base_topic, "state_dir": host.base / "src" / "state"}


def certificate_config(idp: IdentityPlatform, host: Host, settings: dict[str, object]) -> Path:
    """A config beside a fresh `cert new` pair, with relative paths, as a user writes it."""
    src = host.base / "src"
    assert run_cli("cert", "new", "--out-dir", str(src)).returncode == 0
    app = idp.register_app(str(settings["tenant_id"]),
                           certificates=[(src / "outlook2mqtt.crt").read_bytes()],
                           mailboxes=[str(settings["mailbox"])])
    data = rig_config(client_id=app.client_id, certificate_file=Path("x"),
                      private_key_file=Path("x"), **settings)  # type: ignore[arg-type]
    data["accounts"][0].update(certificate_file="outlook2mqtt.crt",
                               private_key_file="outlook2mqtt.key")
    return write_config(src / "config.toml", data)


def secret_config(idp: IdentityPlatform, host: Host, settings: dict[str, object], *,
                  granted: bool = True) -> tuple[Path, str]:
    """(config, secret): a client-secret config; `granted` lets the app open the mailbox."""
    secret = random_secret()
    app = idp.register_app(str(settings["tenant_id"]), secret=secret,
                           mailboxes=[str(settings["mailbox"])] if granted else [])
    (host.base / "src").mkdir()
    data = rig_config(client_id=app.client_id, secret=secret, **settings)  # type: ignore[arg-type]
    return write_config(host.base / "src" / "config.toml", data), secret


def outlook2mqtt(host: Host, *argv: str, path: str = "/usr/bin:/bin"
                 ) -> subprocess.CompletedProcess[str]:
    """The fresh install's command, as root in a clean environment."""
    return subprocess.run([str(host.program), *argv], capture_output=True, text=True,
                          timeout=120, check=False, cwd=host.base, env=clean_env(PATH=path))


def install(host: Host, config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return outlook2mqtt(host, "service", "install", "-c", str(config), *host.locations(),
                        *extra)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_install_moves_the_key_into_the_credential_store_and_writes_a_service_config(
    idp: IdentityPlatform, host: Host, rig_settings: dict[str, object],
) -> None:
    config = certificate_config(idp, host, rig_settings)

    done = install(host, config)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok    config" in done.stdout and "check, as the service would" in done.stdout
    key = host.credstore / "outlook2mqtt.home.private_key"
    assert mode(host.credstore) == 0o700 and mode(key) == 0o600
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert not (host.base / "src" / "outlook2mqtt.key").exists()  # moved, not copied
    installed = tomllib.loads((host.etc / "config.toml").read_text())
    account = installed["accounts"][0]
    assert mode(host.etc / "config.toml") == 0o600 and mode(host.etc) == 0o755
    assert "private_key_file" not in account and "bridge" not in installed  # $STATE_DIRECTORY
    assert account["certificate_file"] == str(host.etc / "home.crt")
    assert mode(host.etc / "home.crt") == 0o644 and mode(host.etc / "home.ca.pem") == 0o644
    unit = directives((host.units / "outlook2mqtt.service").read_text())
    assert unit["ExecStart"] == [f"{host.program} run -c ${{CREDENTIALS_DIRECTORY}}/config.toml"]
    dropin = directives((host.units / "outlook2mqtt.service.d" / "credentials.conf").read_text())
    assert dropin["LoadCredential"] == [
        "", f"config.toml:{host.etc}/config.toml", f"home.private_key:{key}"]


def test_installed_unit_verifies_and_its_command_line_runs_as_an_unprivileged_user(
    idp: IdentityPlatform, host: Host, rig_settings: dict[str, object], mosquitto: Mosquitto,
) -> None:
    assert install(host, certificate_config(idp, host, rig_settings)).returncode == 0
    unit = host.units / "outlook2mqtt.service"
    assert ANALYZE is not None, "systemd-analyze missing: apt-get install systemd"
    verified = subprocess.run([ANALYZE, "verify", "--man=no", str(unit)], capture_output=True,
                              text=True, timeout=60, check=False)
    assert verified.returncode == 0 and verified.stderr.strip() == "", verified.stderr

    with Collector("127.0.0.1", mosquitto.port, [f"{host.base_topic}/#"]) as seen:
        proc = start_as_the_unit_would(host)
        try:
            wait_online(seen, host.base_topic)
        finally:
            code = terminate(proc)
    assert code == 0
    assert any(p.is_file() for p in (host.base / "state").rglob("*")), "positions kept"


def start_as_the_unit_would(host: Host, instance: str | None = None) -> subprocess.Popen[bytes]:
    """ExecStart as user nobody: the LoadCredential= files (the drop-in's list replaces the
    unit's after its empty reset) in a private $CREDENTIALS_DIRECTORY, a $STATE_DIRECTORY.
    With `instance`, of that instance of the template unit."""
    name = f"outlook2mqtt@{instance}.service" if instance else "outlook2mqtt.service"
    unit = directives((host.units / ("outlook2mqtt@.service" if instance else name)).read_text())
    credentials = directives((host.units / f"{name}.d" / "credentials.conf").read_text())
    loaded = credentials["LoadCredential"]
    nobody = pwd.getpwnam("nobody")
    creds, state = host.base / "run-credentials", host.base / "state"
    for directory in (creds, state):
        directory.mkdir(mode=0o700)
        os.chown(directory, nobody.pw_uid, nobody.pw_gid)
    for entry in loaded[loaded.index("") + 1:]:
        name, source = entry.split(":", 1)
        shutil.copyfile(source, creds / name)
        os.chown(creds / name, nobody.pw_uid, nobody.pw_gid)
    argv = unit["ExecStart"][0].replace("${CREDENTIALS_DIRECTORY}", str(creds)).split()
    env = {"PATH": "/usr/bin:/bin", "CREDENTIALS_DIRECTORY": str(creds),
           "STATE_DIRECTORY": str(state), "PYTHONUNBUFFERED": "1"}
    with (host.base / "journal").open("wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(argv, env=env, user=nobody.pw_uid, group=nobody.pw_gid,
                                extra_groups=[], umask=0o077, cwd="/", stdout=log, stderr=log)


def test_secret_goes_to_the_store_and_a_second_install_reuses_it(
    idp: IdentityPlatform, host: Host, rig_settings: dict[str, object],
) -> None:
    config, secret = secret_config(idp, host, rig_settings)

    first = install(host, config)
    again = install(host, host.etc / "config.toml")  # its secret now lives in the store

    assert first.returncode == 0, first.stdout + first.stderr
    assert again.returncode == 0, again.stdout + again.stderr
    assert secret not in (host.etc / "config.toml").read_text()
    stored = host.credstore / "outlook2mqtt.home.client_secret"
    assert stored.read_text() == secret and mode(stored) == 0o600
    assert f"note: {config} still holds secrets inline" in first.stdout
    assert secret not in first.stdout + first.stderr + again.stdout + again.stderr


def test_a_failing_check_stops_the_install_before_anything_is_started(
    idp: IdentityPlatform, host: Host, rig_settings: dict[str, object],
) -> None:
    config, _secret = secret_config(idp, host, rig_settings, granted=False)

    done = install(host, config)

    assert done.returncode == 1
    assert "FAIL  [home] IMAP login" in done.stdout
    assert "fix the config, then run `outlook2mqtt service install` again" in done.stdout


def test_uninstall_removes_the_unit_and_purge_everything_else(
    idp: IdentityPlatform, host: Host, rig_settings: dict[str, object],
) -> None:
    assert install(host, certificate_config(idp, host, rig_settings),
                   "--no-check").returncode == 0
    host.state.mkdir(parents=True)

    kept = outlook2mqtt(host, "service", "uninstall", *host.locations())
    assert kept.returncode == 0
    assert not (host.units / "outlook2mqtt.service").exists()
    assert not (host.units / "outlook2mqtt.service.d").exists()
    assert (host.etc / "config.toml").exists() and host.state.exists()
    assert "kept" in kept.stdout and "--purge removes it" in kept.stdout

    purged = outlook2mqtt(host, "service", "uninstall", "--purge", *host.locations())
    assert purged.returncode == 0
    assert not host.etc.exists() and not host.state.exists()
    assert list(host.credstore.iterdir()) == []


def test_a_user_service_keeps_its_secrets_in_its_own_config(
    idp: IdentityPlatform, host: Host, rig_settings: dict[str, object],
) -> None:
    config, secret = secret_config(idp, host, rig_settings)

    done = outlook2mqtt(host, "service", "install", "--user", "-c", str(config), "--no-start",
                        "--unit-dir", str(host.units), "--config-dir", str(host.etc))

    assert done.returncode == 0, done.stdout + done.stderr
    installed = tomllib.loads((host.etc / "config.toml").read_text())
    assert installed["accounts"][0]["client_secret"] == secret
    assert "bridge" not in installed and mode(host.etc / "config.toml") == 0o600
    unit = directives((host.units / "outlook2mqtt.service").read_text())
    assert unit["ExecStart"] == [f"{host.program} run -c {host.etc}/config.toml"]
    assert unit["StateDirectory"] == ["outlook2mqtt"] and unit["Type"] == ["notify"]
    assert not host.credstore.exists()
    assert ANALYZE is not None, "systemd-analyze missing: apt-get install systemd"
    runtime = host.base / "run-user"  # a user manager needs its runtime directory
    runtime.mkdir(mode=0o700)
    verified = subprocess.run(
        [ANALYZE, "--user", "verify", "--man=no", str(host.units / "outlook2mqtt.service")],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)})
    assert verified.returncode == 0 and verified.stderr.strip() == "", verified.stderr


def test_a_system_install_needs_root(host: Host) -> None:
    done = subprocess.run(["runuser", "-u", "nobody", "--", str(host.program), "service", "install",
                           *host.locations()], capture_output=True, text=True, timeout=60,
                          check=False, cwd="/")

    assert done.returncode == 1
    assert "service install needs root; --user installs a user service" in done.stdout


@pytest.fixture
def fake_systemctl(host: Host, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `systemctl` first on PATH that records its arguments, one call a line."""
    bin_dir, calls = host.base / "fake-bin", host.base / "systemctl.calls"
    bin_dir.mkdir()
    script = bin_dir / "systemctl"
    script.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return calls


def test_install_enables_and_starts_the_unit_and_prints_how_to_follow_it(
    idp: IdentityPlatform, host: Host, rig_settings: dict[str, object],
    fake_systemctl: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    config = certificate_config(idp, host, rig_settings)
    # where docs/setup.md installs it: the sandbox would hide the test's /tmp install
    monkeypatch.setattr(service_cli, "installed_program",
                        lambda: Path("/opt/outlook2mqtt/bin/outlook2mqtt"))
    locations = [a for a in host.locations() if a != "--no-start"]

    assert main("service", "install", "-c", str(config), "--no-check", *locations) == 0

    assert fake_systemctl.read_text().splitlines() == [
        "daemon-reload", "enable outlook2mqtt.service", "restart outlook2mqtt.service"]
    assert "Follow it: journalctl -u outlook2mqtt -f" in capsys.readouterr().out
    fake_systemctl.unlink()

    assert main("service", "uninstall", *locations) == 0
    assert fake_systemctl.read_text().splitlines() == [
        "disable --now outlook2mqtt.service", "daemon-reload"]


def test_install_refuses_a_program_the_sandbox_hides(
    host: Host, fake_systemctl: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    locations = [a for a in host.locations() if a != "--no-start"]

    # a fresh install in /tmp, with the fake systemctl on PATH
    done = outlook2mqtt(host, "service", "install", *locations, path=os.environ["PATH"])

    assert done.returncode == 1
    assert f"the service's sandbox hides {host.program}" in done.stdout
    assert not fake_systemctl.exists()


def test_an_invalid_config_is_refused_before_anything_is_written(host: Host) -> None:
    (host.base / "src").mkdir()
    config = host.base / "src" / "config.toml"
    config.write_text('[mqtt]\nhots = "localhost"\n')

    done = outlook2mqtt(host, "service", "install", "-c", str(config), *host.locations())

    assert done.returncode == 2
    assert "invalid configuration" in done.stderr and "mqtt.host" in done.stderr
    assert not host.etc.exists() and not host.units.exists()


# -- instances of the template unit ----------------------------------------------------------


def test_install_with_instance_writes_an_instance_of_the_template_that_runs(
    idp: IdentityPlatform, host: Host, rig_settings: dict[str, object], mosquitto: Mosquitto,
) -> None:
    config, secret = secret_config(idp, host, rig_settings)

    done = install(host, config, "--instance", "helpdesk-1")

    assert done.returncode == 0, done.stdout + done.stderr
    assert "journalctl -u outlook2mqtt@helpdesk-1 -f" not in done.stdout  # --no-start
    installed_path = host.etc / "helpdesk-1.toml"
    installed = tomllib.loads(installed_path.read_text())
    assert installed["bridge"] == {"instance": "helpdesk-1"} and mode(installed_path) == 0o600
    assert secret not in installed_path.read_text()
    assert installed["accounts"][0]["ca_file"] == str(host.etc / "helpdesk-1" / "home.ca.pem")
    stored = host.credstore / "outlook2mqtt@helpdesk-1.home.client_secret"
    assert stored.read_text() == secret and mode(stored) == 0o600
    assert not (host.units / "outlook2mqtt.service").exists()
    unit = directives((host.units / "outlook2mqtt@.service").read_text())
    assert unit["ExecStart"] == [f"{host.program} run -c ${{CREDENTIALS_DIRECTORY}}/config.toml"]
    assert unit["StateDirectory"] == ["outlook2mqtt/%i"]
    dropin = host.units / "outlook2mqtt@helpdesk-1.service.d" / "credentials.conf"
    assert directives(dropin.read_text())["LoadCredential"] == [
        "", f"config.toml:{installed_path}", f"home.client_secret:{stored}"]
    assert ANALYZE is not None, "systemd-analyze missing: apt-get install systemd"
    verified = subprocess.run([ANALYZE, "verify", "--man=no",
                               str(host.units / "outlook2mqtt@helpdesk-1.service")],
                              capture_output=True, text=True, timeout=60, check=False)
    assert verified.returncode == 0 and verified.stderr.strip() == "", verified.stderr

    state = f"{host.base_topic}/bridge/helpdesk-1/state"
    with Collector("127.0.0.1", mosquitto.port, [f"{host.base_topic}/#"]) as seen:
        proc = start_as_the_unit_would(host, "helpdesk-1")
        try:
            seen.wait_for(lambda m: m.topic == state and m.payload == b"online", timeout=60)
        finally:
            code = terminate(proc)
    assert code == 0


def instance_locations(host: Host, name: str) -> list[str]:
    """host.locations() with the instance's own state directory (what --purge deletes)."""
    found = host.locations()
    found[found.index("--state-dir") + 1] = str(host.state / name)
    return [*found, "--instance", name]


def test_uninstalling_one_instance_leaves_the_others_and_the_template(
    idp: IdentityPlatform, host: Host, rig_settings: dict[str, object],
) -> None:
    config, _secret = secret_config(idp, host, rig_settings)
    for name in ("a", "b"):
        done = outlook2mqtt(host, "service", "install", "-c", str(config), "--no-check",
                            *instance_locations(host, name))
        assert done.returncode == 0, done.stdout + done.stderr
        (host.state / name).mkdir(parents=True)
    template = host.units / "outlook2mqtt@.service"

    purged = outlook2mqtt(host, "service", "uninstall", "--purge", *instance_locations(host, "a"))

    assert purged.returncode == 0, purged.stdout + purged.stderr
    assert template.exists() and (host.units / "outlook2mqtt@b.service.d").exists()
    assert not (host.units / "outlook2mqtt@a.service.d").exists()
    assert not (host.etc / "a.toml").exists() and not (host.etc / "a").exists()
    assert not (host.state / "a").exists() and (host.state / "b").exists()
    assert (host.etc / "b.toml").exists() and (host.etc / "b" / "home.ca.pem").exists()
    assert [p.name for p in host.credstore.iterdir()] == ["outlook2mqtt@b.home.client_secret"]

    last = outlook2mqtt(host, "service", "uninstall", *instance_locations(host, "b"))

    assert last.returncode == 0 and not template.exists()
    assert (host.etc / "b.toml").exists() and "--purge removes it" in last.stdout


def test_an_instance_other_than_the_configs_is_refused(
    idp: IdentityPlatform, host: Host, rig_settings: dict[str, object],
) -> None:
    config, _secret = secret_config(idp, host, rig_settings)
    data = tomllib.loads(config.read_text())
    data["bridge"]["instance"] = "north"
    write_config(config, data)

    done = install(host, config, "--instance", "south")
    as_user = outlook2mqtt(host, "service", "install", "--user", "--instance", "north",
                           "-c", str(config), "--no-start")

    assert done.returncode == 2
    assert "bridge.instance: 'north' is not the --instance 'south'" in done.stderr
    assert not host.units.exists() and not (host.etc / "south.toml").exists()
    assert as_user.returncode == 2 and "--instance installs the system template" in (
        as_user.stdout)
