"""From a fresh clone: the user install (no root, no Debian packages, runtime dependencies
only) and the service install's venv both run `--version` and `check` against the rig, and
scripts/start.sh runs the config the command line finds, never the demo instead of it."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge import __version__
from rig.bridgecfg import rig_config, write_config
from rig.dovecot import Dovecot
from rig.idp import IdentityPlatform, random_secret
from rig.mosquitto import Mosquitto
from rig.mqttsub import Collector
from rig.pki import TestPKI
from rig.procs import terminate
from tests.conftest import wait_online
from tests.installs import FreshInstall, clean_env, clone_repository

RUNUSER = shutil.which("runuser") or "runuser"
pytestmark = pytest.mark.root(why="playing an unprivileged user needs root and runuser",
                              runuser=True)
TEST_TOOLS = ("pytest", "mypy", "ruff", "hypothesis")


@dataclass(frozen=True)
class UserInstall:
    """A clone owned by user nobody, set up by nobody with `scripts/setup.sh run`."""

    clone: Path
    home: Path
    setup: subprocess.CompletedProcess[str]

    def run(self, *argv: str, cwd: Path | None = None, timeout: float = 120,
            **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([RUNUSER, "-u", "nobody", "--", *argv], capture_output=True,
                              text=True, timeout=timeout, check=False, cwd=cwd or self.home,
                              env=clean_env(HOME=str(self.home), **env))


@pytest.fixture(scope="module")
def user_install() -> Iterator[UserInstall]:
    base, clone = clone_repository()
    home = base / "home"
    home.mkdir()
    subprocess.run(["chown", "-R", "nobody:", str(base)], check=True)
    made = UserInstall(clone, home, subprocess.CompletedProcess([], 0))
    setup = made.run(str(clone / "scripts" / "setup.sh"), "run", timeout=600)
    yield UserInstall(clone, home, setup)
    shutil.rmtree(base)


@pytest.fixture
def rig_config_file(idp: IdentityPlatform, pki: TestPKI, dovecot: Dovecot,
                    mosquitto: Mosquitto, tenant: str, mailbox: str, base_topic: str,
                    user_install: UserInstall) -> Path:
    """A client-secret config for the rig in nobody's home, with the rig's CA beside it."""
    secret = random_secret()
    app = idp.register_app(tenant, secret=secret, mailboxes=[mailbox])
    ca = shutil.copy(pki.ca_file, user_install.home / "rig-ca.pem")
    data = rig_config(authority=idp.authority, ca_file=Path(ca), imap_port=dovecot.port,
                      mqtt_port=mosquitto.port, tenant_id=tenant, client_id=app.client_id,
                      mailbox=mailbox, state_dir=user_install.home / "state", secret=secret,
                      base_topic=base_topic)
    path = write_config(user_install.home / f"{base_topic}.toml", data)
    os.chown(path, *_nobody())
    return path


def _nobody() -> tuple[int, int]:
    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def test_user_install_needs_no_root_and_installs_no_test_tools(
    user_install: UserInstall, rig_config_file: Path
) -> None:
    assert user_install.setup.returncode == 0, user_install.setup.stderr
    program = user_install.clone / ".venv" / "bin" / "outlook2mqtt"
    installed = {p.name for p in (user_install.clone / ".venv" / "bin").iterdir()}
    assert not installed & set(TEST_TOOLS)

    version = user_install.run(str(program), "--version")
    checked = user_install.run(str(program), "check", "-c", str(rig_config_file))

    assert version.stdout.strip() == f"outlook2mqtt {__version__}"
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "FAIL" not in checked.stdout


def test_service_install_venv_runs_version_and_check(
    fresh_install: FreshInstall, rig_config_file: Path
) -> None:
    installed = {p.name for p in fresh_install.program.parent.iterdir()}
    assert not installed & set(TEST_TOOLS)

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(fresh_install.program), *argv], capture_output=True,
                              text=True, timeout=120, check=False, env=clean_env())

    assert run("--version").stdout.strip() == f"outlook2mqtt {__version__}"
    checked = run("check", "-c", str(rig_config_file))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_start_runs_the_config_it_finds(
    user_install: UserInstall, rig_config_file: Path, mosquitto: Mosquitto, base_topic: str
) -> None:
    start = str(user_install.clone / "scripts" / "start.sh")
    log = user_install.home / "start.log"
    with Collector("127.0.0.1", mosquitto.port, [f"{base_topic}/#"]) as seen, \
            log.open("wb") as out:
        uid, gid = _nobody()  # not runuser: the signal must reach the bridge start.sh execs
        proc = subprocess.Popen(
            [start], cwd=user_install.home, stdout=out, stderr=out, user=uid, group=gid,
            extra_groups=[], env=clean_env(HOME=str(user_install.home),
                                           OUTLOOK2MQTT_CONFIG=str(rig_config_file)))
        try:
            wait_online(seen, base_topic, timeout=60)
        finally:
            code = terminate(proc)
    assert code == 0
    assert "demo" not in log.read_text()


def test_start_takes_the_working_directory_config_not_the_demo(
    user_install: UserInstall,
) -> None:
    workdir = user_install.home / "site"
    workdir.mkdir(exist_ok=True)
    (workdir / "config.toml").write_text('[mqtt]\nhost = "localhost"\nhots = 1\n')
    os.chown(workdir, *_nobody())

    done = user_install.run(str(user_install.clone / "scripts" / "start.sh"), cwd=workdir)

    assert done.returncode == 2
    assert "invalid configuration" in done.stderr and "did you mean" in done.stderr
    assert "demo" not in done.stderr + done.stdout


def test_start_with_a_named_config_that_is_missing_fails_instead_of_the_demo(
    user_install: UserInstall,
) -> None:
    missing = user_install.home / "nowhere.toml"

    done = user_install.run(str(user_install.clone / "scripts" / "start.sh"),
                            OUTLOOK2MQTT_CONFIG=str(missing))

    assert done.returncode == 2
    assert f"{missing}: file not found" in done.stderr
    assert "demo" not in done.stderr + done.stdout
