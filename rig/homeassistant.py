"""A real Home Assistant for discovery tests: its cached install, and one instance on loopback.

Home Assistant runs from its own venv (it needs Python 3.13, the bridge does not), cached
outside the checkout and keyed by its version, so CI on the same machine installs it once:
`python -m rig.homeassistant install` (scripts/setup.sh runs it). An instance gets a
minimal config (no `default_config`), its MQTT integration as a config entry seeded in
`.storage`, and an owner and a long-lived access token made through the onboarding API;
tests drive it through the REST and websocket APIs.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

from rig.procs import ChildService, free_port, log_tail, spawn, terminate

_LOGGER = logging.getLogger(__name__)

HA_VERSION = "2025.4.4"
# The frontend is set up on every start (bootstrap's default integrations) and
# paho-mqtt is the MQTT integration's requirement; these are 2025.4.4's own pins.
HA_EXTRA_REQUIREMENTS = ("paho-mqtt==2.1.0", "home-assistant-frontend==20250411.0")
# The newest Python here that HA 2025.4 supports; 2025.5+ need 3.13.2.
HA_PYTHON = Path(os.environ.get("OUTLOOK2MQTT_HA_PYTHON")
                 or "/root/.pyenv/versions/3.13.0/bin/python3")
# pycares 5 breaks the aiodns that 2025.4's constraints pin.
_EXTRA_CONSTRAINTS = "pycares<5\n"


def cache_dir() -> Path:
    """Where installs are kept between runs: $OUTLOOK2MQTT_CACHE or ~/.cache/outlook2mqtt."""
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "outlook2mqtt"
    return Path(os.environ.get("OUTLOOK2MQTT_CACHE") or default)


def venv_dir() -> Path:
    """The venv that holds this version of Home Assistant."""
    return cache_dir() / f"homeassistant-{HA_VERSION}"


def hass_python() -> Path:
    """The interpreter of the Home Assistant venv."""
    return venv_dir() / "bin" / "python"


def frontend_dir() -> Path:
    """The built frontend that the install serves (its JavaScript defines the cards)."""
    (site,) = (venv_dir() / "lib").glob("python3*/site-packages")
    return site / "hass_frontend"


def installed() -> bool:
    """Tell whether the cached install is complete (its stamp is written last)."""
    return (venv_dir() / ".installed").is_file()


def install() -> Path:
    """Install Home Assistant into its cached venv unless it is there; return the venv.

    The stamp is written last: an interrupted install is thrown away and redone.
    """
    target = venv_dir()
    if installed():
        return target
    if not HA_PYTHON.is_file():
        raise SystemExit(f"Home Assistant {HA_VERSION} needs Python 3.13.0 or 3.13.1, not "
                         f"found at {HA_PYTHON}: set OUTLOOK2MQTT_HA_PYTHON")
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    _LOGGER.info("installing Home Assistant %s into %s", HA_VERSION, target)
    subprocess.run([str(HA_PYTHON), "-m", "venv", str(target)], check=True)
    constraints = target / "constraints.txt"
    constraints.write_text(_package_constraints(target) + _EXTRA_CONSTRAINTS)
    subprocess.run([str(hass_python()), "-m", "pip", "install", "-q",
                    f"homeassistant=={HA_VERSION}", *HA_EXTRA_REQUIREMENTS,
                    "-c", str(constraints)], check=True)
    (target / ".installed").write_text(HA_VERSION + "\n")
    return target


def _package_constraints(venv: Path) -> str:
    """The `package_constraints.txt` inside the homeassistant wheel: its own pins."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "download", "-q",
                        "--no-deps", "-d", tmp, f"homeassistant=={HA_VERSION}"], check=True)
        (wheel,) = Path(tmp).glob("homeassistant-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            return archive.read("homeassistant/package_constraints.txt").decode()


# -- one running instance ------------------------------------------------------------------

_CONFIGURATION = """\
homeassistant:
  name: outlook2mqtt test
  time_zone: UTC
  unit_system: metric
  country: DE
  currency: EUR
  latitude: 0
  longitude: 0
  elevation: 0
http:
  server_host: 127.0.0.1
  server_port: {port}
logger:
  default: warning
  logs:
    homeassistant.components.mqtt: info
"""
_CLIENT_ID = "http://127.0.0.1/"  # onboarding wants an OAuth client id; any URL will do
_OWNER = {"name": "Rig", "username": "rig", "password": "rig-password", "language": "en"}


class HomeAssistant(ChildService):
    """`hass -c DIR` on 127.0.0.1 with its MQTT integration on the broker at mqtt_port.

    `discovery_prefix` is also its birth message's prefix (`<prefix>/status`).
    `configuration` is appended to configuration.yaml; `files` (path -> text) are written
    into the config dir before the start, e.g. automations that it includes.
    """

    def __init__(self, workdir: Path, *, mqtt_port: int, discovery_prefix: str,
                 configuration: str = "", files: Mapping[str, str] | None = None) -> None:
        self.workdir = workdir
        self.config_dir = workdir / "config"
        self.mqtt_port = mqtt_port
        self.discovery_prefix = discovery_prefix
        self.configuration = configuration
        self.files = dict(files or {})
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_file = self.config_dir / "home-assistant.log"
        self.token = ""
        self._proc = None

    def start(self, timeout: float = 90) -> None:
        """Start it; ready when it runs, has an owner and its MQTT entry is loaded."""
        if self.running:
            return
        if not installed():
            raise RuntimeError(f"Home Assistant {HA_VERSION} is not installed: run "
                               "scripts/setup.sh (or python -m rig.homeassistant install)")
        self._write_config()
        self._proc = spawn([str(venv_dir() / "bin" / "hass"), "--skip-pip", "-c",
                            str(self.config_dir), "--log-file", str(self.log_file)],
                           self.workdir / "hass.out")
        try:
            self._until_ready(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise
        _LOGGER.debug("Home Assistant on %s", self.url)

    def _until_ready(self, deadline: float) -> None:
        # the onboarding API answers without a login, so waiting logs no failed one
        self._wait(lambda: self._request("GET", "/api/onboarding") is not None, deadline,
                   "HTTP API")
        if not self.token:
            self.token = self._onboard()
        self._wait(lambda: self.rest("GET", "/api/config")["state"] == "RUNNING", deadline,
                   "the RUNNING state")
        self._wait(self._mqtt_loaded, deadline, "its MQTT integration")

    def stop(self) -> None:
        """Stop it (SIGTERM: it shuts down in order and writes its storage)."""
        terminate(self._proc, timeout=30)
        self._proc = None

    def _wait(self, ready: Callable[[], bool], deadline: float, what: str) -> None:
        while True:
            if self._proc is None or self._proc.poll() is not None:
                raise RuntimeError(f"Home Assistant exited while starting:\n"
                                   f"{log_tail(self.workdir / 'hass.out')}")
            try:
                if ready():
                    return
            except (OSError, KeyError, ValueError):
                pass  # not up yet (urllib's errors are OSErrors)
            if time.monotonic() > deadline:
                raise RuntimeError(f"Home Assistant: no {what} in time:\n"
                                   f"{log_tail(self.workdir / 'hass.out')}")
            time.sleep(0.1)

    def _mqtt_loaded(self) -> bool:
        entries = self.rest("GET", "/api/config/config_entries/entry?domain=mqtt")
        return [e["state"] for e in entries] == ["loaded"]

    # -- configuration -----------------------------------------------------------------

    def _write_config(self) -> None:
        storage = self.config_dir / ".storage"
        storage.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "configuration.yaml").write_text(
            _CONFIGURATION.format(port=self.port) + self.configuration)
        for name, text in self.files.items():
            path = self.config_dir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        entries = storage / "core.config_entries"
        if not entries.exists():
            entries.write_text(json.dumps(self._config_entries(), indent=1))

    def _config_entries(self) -> dict[str, Any]:
        """`.storage/core.config_entries` with the MQTT entry the config flow would make."""
        now = dt.datetime.now(dt.UTC).isoformat()
        prefix = self.discovery_prefix
        mqtt = {
            "created_at": now, "modified_at": now, "entry_id": uuid.uuid4().hex,
            "domain": "mqtt", "title": "127.0.0.1", "source": "user", "version": 1,
            "minor_version": 2, "unique_id": None, "disabled_by": None,
            "pref_disable_new_entities": False, "pref_disable_polling": False,
            "discovery_keys": {}, "subentries": [],
            "data": {"broker": "127.0.0.1", "port": self.mqtt_port},
            "options": {
                "discovery": True, "discovery_prefix": prefix,
                "birth_message": {"topic": f"{prefix}/status", "payload": "online",
                                  "qos": 0, "retain": False},
                "will_message": {"topic": f"{prefix}/status", "payload": "offline",
                                 "qos": 0, "retain": False},
            },
        }
        return {"version": 1, "minor_version": 5, "key": "core.config_entries",
                "data": {"entries": [mqtt]}}

    def _onboard(self) -> str:
        """Create the owner through the onboarding API; return a long-lived token."""
        created = self._request("POST", "/api/onboarding/users",
                                json.dumps({"client_id": _CLIENT_ID, **_OWNER}).encode())
        form = urllib.parse.urlencode({"grant_type": "authorization_code",
                                       "code": created["auth_code"], "client_id": _CLIENT_ID})
        access = self._request("POST", "/auth/token", form.encode(),
                               {"Content-Type": "application/x-www-form-urlencoded"})
        with self.websocket(access["access_token"]) as ws:
            token: str = ws.call("auth/long_lived_access_token", client_name="rig",
                                 lifespan=365)
        return token

    # -- the APIs ----------------------------------------------------------------------

    def rest(self, method: str, path: str, body: Any = None) -> Any:
        """Call the REST API as the owner; the decoded JSON reply."""
        data = None if body is None else json.dumps(body).encode()
        return self._request(method, path, data, {"Authorization": f"Bearer {self.token}"})

    def _request(self, method: str, path: str, data: bytes | None = None,
                 headers: Mapping[str, str] | None = None) -> Any:
        request = urllib.request.Request(  # noqa: S310 - an http URL on loopback
            self.url + path, data=data, method=method,
            headers={"Content-Type": "application/json", **(headers or {})})
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            raw = response.read()
        return json.loads(raw) if raw else None

    @contextmanager
    def websocket(self, token: str | None = None) -> Iterator[WebSocketSession]:
        """A logged-in websocket API session."""
        with connect(f"ws://127.0.0.1:{self.port}/api/websocket", open_timeout=10) as conn:
            session = WebSocketSession(conn)
            session.login(token or self.token)
            yield session

    def ws_call(self, kind: str, **fields: Any) -> Any:
        """One websocket command in a session of its own; its result."""
        with self.websocket() as ws:
            return ws.call(kind, **fields)

    def entity_registry(self) -> list[dict[str, Any]]:
        """Every entry of the entity registry."""
        entries: list[dict[str, Any]] = self.ws_call("config/entity_registry/list")
        return entries

    def state(self, entity_id: str) -> dict[str, Any] | None:
        """An entity's state object, None when it has none."""
        try:
            found: dict[str, Any] = self.rest("GET", f"/api/states/{entity_id}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        return found

    def check_config(self) -> subprocess.CompletedProcess[str]:
        """Home Assistant's own check of the config dir (`hass --script check_config`)."""
        return subprocess.run(
            [str(venv_dir() / "bin" / "hass"), "--script", "check_config", "-c",
             str(self.config_dir)], capture_output=True, text=True, timeout=120, check=False)

    def log_lines(self) -> list[str]:
        """Home Assistant's log so far."""
        return self.log_file.read_text(errors="replace").splitlines()


class WebSocketSession:
    """Home Assistant's websocket API: `auth`, then numbered commands and their results."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self._next_id = 1

    def login(self, token: str) -> None:
        self._receive()  # auth_required
        self.conn.send(json.dumps({"type": "auth", "access_token": token}))
        reply = self._receive()
        if reply["type"] != "auth_ok":
            raise RuntimeError(f"websocket login refused: {reply.get('message')}")

    def call(self, kind: str, **fields: Any) -> Any:
        """Send a command and return its result; RuntimeError with the error when it fails."""
        number = self._next_id
        self._next_id += 1
        self.conn.send(json.dumps({"id": number, "type": kind, **fields}))
        while True:
            reply = self._receive()
            if reply.get("id") == number and reply["type"] == "result":
                if not reply["success"]:
                    raise RuntimeError(f"{kind}: {reply['error']}")
                return reply["result"]

    def _receive(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.conn.recv(timeout=30))
        return data


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if sys.argv[1:] != ["install"]:
        sys.exit("usage: python -m rig.homeassistant install")
    install()
