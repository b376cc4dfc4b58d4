"""Shared fixtures: real servers started once per session, fresh identities per test.

Session-scoped: `pki` (test CA), `idp` (Entra ID stand-in over HTTPS), `dovecot` (IMAP with
XOAUTH2, checked against `idp`), `mosquitto` (anonymous broker), `homeassistant` (a real
one on `mosquitto`, with the docs' examples loaded). Each test gets its own
`tenant`, `mailbox` and `app` (secret in `app.secrets[0]`, granted `mailbox`), so tests never
see each other's mail or tokens. Tests that change a shared server (`idp.down`,
`idp.token_lifetime`, `idp.refuse_after`, a Dovecot restart) must put it back; `_restore_idp`
does it for the idp.
"""

from __future__ import annotations

import os
import shutil
import ssl
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from imapclient import IMAPClient

from rig.bridgecfg import rig_config
from rig.clients import app_token
from rig.dovecot import Dovecot
from rig.homeassistant import HomeAssistant
from rig.idp import App, IdentityPlatform, random_secret
from rig.mosquitto import Mosquitto
from rig.mqttsub import Collector
from rig.pki import TestPKI
from tests.bridgeproc import BridgeProcess
from tests.installs import FreshInstall, service_install

# HYPOTHESIS_PROFILE=thorough: ten times Hypothesis's default examples where a property test
# sets no count, its full count where it does (tests.profile).
settings.register_profile("thorough", max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


SLOW_TIMEOUT = 300  # seconds: a `slow` test takes a minute or so, several on a loaded machine


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`slow` tests get SLOW_TIMEOUT, and their files run first, most slow tests first:
    xdist (--dist loadfile) hands out whole files in this order, and a long one handed
    out last would keep its worker busy after the others are done."""
    slow_tests: Counter[Path] = Counter()
    for item in items:
        if item.get_closest_marker("slow"):
            slow_tests[item.path] += 1
            if not item.get_closest_marker("timeout"):
                item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT))
    items.sort(key=lambda item: -slow_tests[item.path])


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A `root` test fails, not skips, where the suite does not run as root (with
    runuser, if it asks): skipped, what it proves would go unproven unnoticed."""
    mark = item.get_closest_marker("root")
    if mark is None:
        return
    if os.geteuid() != 0 or (mark.kwargs.get("runuser") and not shutil.which("runuser")):
        pytest.fail(f"{mark.kwargs['why']}: run the suite as root (scripts/test.sh)")


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    """A test CA and a server certificate for 127.0.0.1, 127.0.0.2 and localhost."""
    return TestPKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def idp(pki: TestPKI) -> Iterator[IdentityPlatform]:
    """The running identity-platform stand-in."""
    with IdentityPlatform(pki) as platform:
        yield platform


@pytest.fixture(autouse=True)
def _restore_idp(request: pytest.FixtureRequest) -> Iterator[None]:
    """Undo outage, lifetime and throttling changes a test makes to the shared idp."""
    if "idp" not in request.fixturenames:
        yield
        return
    platform: IdentityPlatform = request.getfixturevalue("idp")
    saved = (platform.down, platform.token_lifetime, platform.retry_after,
             platform.refuse_after, platform.throttle_every, platform.throttle_retry_after)
    yield
    (platform.down, platform.token_lifetime, platform.retry_after, platform.refuse_after,
     platform.throttle_every, platform.throttle_retry_after) = saved


@pytest.fixture(scope="session")
def dovecot(
    pki: TestPKI, idp: IdentityPlatform, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Dovecot]:
    """The running Dovecot, asking idp about every XOAUTH2 token."""
    with Dovecot(pki, idp.introspection_url, tmp_path_factory.mktemp("dovecot")) as server:
        yield server


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """The running anonymous Mosquitto broker."""
    with Mosquitto(tmp_path_factory.mktemp("mosquitto")) as broker:
        yield broker


# Home Assistant's discovery prefix (and birth topic's) on the shared broker: no other test
# publishes under it.
HA_PREFIX = "ha-rig"
HA_EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "homeassistant"
# The docs' examples as a user adds them: automations and scripts in the YAML files that
# configuration.yaml includes, cards on a YAML dashboard, and a `notify.notify` (the
# automations notify) that shows up as a persistent notification.
HA_EXAMPLES_CONFIGURATION = """\
automation: !include_dir_list automations
script: !include scripts.yaml
notify:
  - platform: group
    name: notify
    services:
      - action: persistent_notification
lovelace:
  dashboards:
    outlook-mail:
      mode: yaml
      filename: dashboard.yaml
      title: Mail
      show_in_sidebar: false
"""


def ha_example_files() -> dict[str, str]:
    """The example files, placed where HA_EXAMPLES_CONFIGURATION includes them."""
    files: dict[str, str] = {}
    cards = []
    for path in sorted(HA_EXAMPLES.glob("*.yaml")):
        kind = path.name.split("_")[0]
        if kind == "automation":
            files[f"automations/{path.name}"] = path.read_text()
        elif kind == "script":
            files["scripts.yaml"] = files.get("scripts.yaml", "") + path.read_text()
        elif kind == "card":
            files[f"cards/{path.name}"] = path.read_text()
            cards.append(f"      - !include cards/{path.name}\n")
        else:
            raise ValueError(f"{path.name}: not an automation_, script_ or card_ example")
    files["dashboard.yaml"] = "views:\n  - title: Mail\n    cards:\n" + "".join(cards)
    return files


@pytest.fixture(scope="session")
def homeassistant(mosquitto: Mosquitto,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[HomeAssistant]:
    """The running Home Assistant, its MQTT integration on `mosquitto` with HA_PREFIX."""
    with HomeAssistant(tmp_path_factory.mktemp("homeassistant"), mqtt_port=mosquitto.port,
                       discovery_prefix=HA_PREFIX, configuration=HA_EXAMPLES_CONFIGURATION,
                       files=ha_example_files()) as ha:
        yield ha


@pytest.fixture
def tenant(idp: IdentityPlatform) -> str:
    """A fresh tenant id."""
    return idp.add_tenant()


@pytest.fixture
def mailbox() -> str:
    """A fresh mailbox address, unique to this test."""
    return f"u{uuid.uuid4().hex[:10]}@contoso.test"


@pytest.fixture
def app(idp: IdentityPlatform, tenant: str, mailbox: str) -> App:
    """An app in tenant with a random client secret (app.secrets[0]), granted mailbox."""
    return idp.register_app(tenant, secret=random_secret(), mailboxes=[mailbox])


@pytest.fixture
def imap_session(idp: IdentityPlatform, pki: TestPKI, dovecot: Dovecot, app: App,
                 mailbox: str) -> Iterator[IMAPClient]:
    """A logged-in IMAP connection to this test's (empty) mailbox, as the watcher runs one
    (aware INTERNALDATEs: normalise_times off)."""
    client = IMAPClient(dovecot.host, port=dovecot.port, ssl=True, timeout=30,
                        ssl_context=ssl.create_default_context(cafile=str(pki.ca_file)))
    client.oauth2_login(mailbox, app_token(idp, pki, app.tenant_id, app.client_id, app.secrets[0]))
    client.normalise_times = False
    yield client
    client.logout()


# -- the bridge on the rig ------------------------------------------------------------


@pytest.fixture(params=["idle", "poll"])
def mode(request: pytest.FixtureRequest) -> dict[str, object]:
    """IDLE with a poll interval too long to matter, or polling every second."""
    if request.param == "idle":
        return {"idle": True, "poll_interval": 300}
    return {"idle": False, "poll_interval": 1}


@pytest.fixture
def base_topic() -> str:
    """A base topic unique to this test, so tests never see each other's traffic."""
    return f"o2m-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def secret_credential(app: App) -> dict[str, object]:
    """rig_config keys for `app` with its client secret."""
    return {"client_id": app.client_id, "secret": app.secrets[0]}


@pytest.fixture
def bridges() -> Iterator[list[BridgeProcess]]:
    """Bridge processes a test started; any still running at the end are killed."""
    started: list[BridgeProcess] = []
    yield started
    for proc in started:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.kill()


@pytest.fixture
def make_bridge(
    idp: IdentityPlatform, pki: TestPKI, dovecot: Dovecot, mosquitto: Mosquitto, tenant: str,
    mailbox: str, tmp_path: Path, base_topic: str, bridges: list[BridgeProcess],
) -> Callable[..., BridgeProcess]:
    """Factory for `outlook2mqtt run` processes on the rig; all are killed at the end.

    Keyword arguments are rig_config's (credential keys, mode, folders, mqtt_port ...).
    """

    def factory(cred: dict[str, object], **overrides: object) -> BridgeProcess:
        settings: dict[str, object] = {
            "authority": idp.authority, "ca_file": pki.ca_file, "imap_port": dovecot.port,
            "mqtt_port": mosquitto.port, "tenant_id": tenant, "mailbox": mailbox,
            "state_dir": tmp_path / "state", "base_topic": base_topic, **cred, **overrides,
        }
        proc = BridgeProcess(tmp_path, rig_config(**settings))  # type: ignore[arg-type]
        bridges.append(proc)
        return proc

    return factory


@pytest.fixture
def collector(mosquitto: Mosquitto, base_topic: str) -> Iterator[Collector]:
    """A subscriber to everything under this test's base topic."""
    with Collector("127.0.0.1", mosquitto.port, [f"{base_topic}/#"]) as c:
        yield c


def wait_online(collector: Collector, base_topic: str, timeout: float = 30,
                count: int = 1) -> None:
    """Wait for the bridge's retained `online` (the `count`th, after restarts)."""
    collector.wait_for(
        lambda m: m.topic == f"{base_topic}/bridge/state" and m.payload == b"online",
        count=count, timeout=timeout,
    )


@pytest.fixture(scope="session")
def fresh_install() -> Iterator[FreshInstall]:
    """This repository cloned and installed as docs/setup.md's service install does."""
    made = service_install()
    yield made
    shutil.rmtree(made.base)
