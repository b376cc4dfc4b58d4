"""Outages back off 1 s -> 5 min with jitter, on IMAP and MQTT alike. The waits are
recorded instead of slept: the watcher's stop event and the MQTT client's clock are
stand-ins that note each delay and return at once."""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bridge.auth.providers import token_provider
from bridge.config.load import parse_config
from bridge.imap.logins import Logins
from bridge.mailbox.positions import StateStore
from bridge.mailbox.status import AccountStatus
from bridge.mailbox.watcher import FolderWatcher
from bridge.mqtt.client import MqttClient
from bridge.mqtt.topics import Topics
from bridge.util.backoff import Backoff
from rig.bridgecfg import rig_config
from rig.idp import IdentityPlatform
from rig.pki import TestPKI
from rig.procs import free_port

ROUNDS = 12  # 1, 2, 4 ... 256, then the 300 s cap twice


def expected_base(attempt: int) -> float:
    return min(300.0, 2.0**attempt)


def check_schedule(delays: list[float]) -> None:
    """Doubling from 1 s to the 5-minute cap, each within +-20 %, and really jittered."""
    assert len(delays) >= ROUNDS
    for attempt, delay in enumerate(delays[:ROUNDS]):
        base = expected_base(attempt)
        assert 0.8 * base - 0.05 <= delay <= 1.2 * base + 0.05, (attempt, delays)
    assert len({round(d / expected_base(i), 3) for i, d in enumerate(delays[:ROUNDS])}) > 1


class _Stub:
    """A random source whose uniform() returns one end of the range, or its middle."""

    def __init__(self, pick: str) -> None:
        self.pick = pick

    def uniform(self, low: float, high: float) -> float:
        return {"low": low, "high": high, "mid": (low + high) / 2}[self.pick]


@pytest.mark.parametrize(("pick", "factor"), [("low", 0.8), ("mid", 1.0), ("high", 1.2)])
def test_backoff_doubles_from_one_second_to_five_minutes_within_the_jitter(
    pick: str, factor: float,
) -> None:
    backoff = Backoff(_rng=_Stub(pick))  # type: ignore[arg-type]
    delays = [backoff.next_delay() for _ in range(ROUNDS)]
    assert delays == pytest.approx([factor * expected_base(i) for i in range(ROUNDS)])
    backoff.reset()
    assert backoff.next_delay() == pytest.approx(factor)


def test_backoff_stays_at_its_cap_through_an_outage_of_days() -> None:
    """Thousands of attempts (days at a five-minute cap): still the cap, no OverflowError
    (which would end the reconnect loop that asked)."""
    backoff = Backoff(_rng=_Stub("high"))  # type: ignore[arg-type]
    delays = [backoff.next_delay() for _ in range(5000)]
    assert delays[-1] == pytest.approx(1.2 * 300.0)
    assert backoff.attempts == 5000


class _RecordingStop(threading.Event):
    """The watcher's stop event: each timed wait is recorded, not slept; set after `limit`."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        if timeout is not None and not self.is_set():
            self.waits.append(timeout)
            if len(self.waits) >= self.limit:
                self.set()
        return self.is_set()


def test_an_imap_outage_backs_off_from_one_second_to_five_minutes(
    idp: IdentityPlatform, pki: TestPKI, app: Any, tenant: str, mailbox: str, tmp_path: Path,
) -> None:
    closed_port = free_port()  # nothing listens: every connection is refused at once
    config = parse_config(rig_config(
        authority=idp.authority, ca_file=pki.ca_file, imap_port=closed_port, mqtt_port=1,
        tenant_id=tenant, client_id=app.client_id, secret=app.secrets[0], mailbox=mailbox,
        state_dir=tmp_path))
    account = config.accounts[0]
    stop = _RecordingStop(ROUNDS)
    statuses: list[bytes] = []
    watcher = FolderWatcher(
        account=account, folder=account.folders[0], provider=token_provider(account),
        mqtt=MqttClient(config.mqtt), topics=Topics(config.mqtt.base_topic),
        store=StateStore(tmp_path), status=AccountStatus(["folder:inbox"], statuses.append),
        stop=stop, logins=Logins(start_jitter=0))  # no start jitter among the waits

    started = time.monotonic()
    watcher.run()  # returns once the stop event is set

    assert time.monotonic() - started < 30  # nothing was slept
    check_schedule(stop.waits)
    assert b'"connected": false' in statuses[-1]


def test_an_mqtt_outage_backs_off_from_one_second_to_five_minutes(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path,
) -> None:
    clock = {"slept": 0.0}

    class RecordingClosing(threading.Event):
        """The client's reconnect wait: each wait is recorded and ends at once."""

        def wait(self, timeout: float | None = None) -> bool:
            if self.is_set():
                return True
            clock["slept"] += timeout or 0.0
            return False

    data = rig_config(authority="https://login.example.test", ca_file=tmp_path,
                      imap_port=993, mqtt_port=free_port(), tenant_id="t", client_id="c",
                      mailbox="a@b.test", secret="s3cret-value", state_dir=tmp_path)
    del data["accounts"][0]["ca_file"]
    mqtt = MqttClient(parse_config(data).mqtt)  # no broker on that port
    mqtt._network.closing = RecordingClosing()
    pattern = re.compile(r"reconnecting in ([\d.]+) s")
    with caplog.at_level(logging.DEBUG, logger="bridge.mqtt.client"):
        mqtt.start()
        try:
            deadline = time.monotonic() + 30
            while (len(pattern.findall(caplog.text)) < ROUNDS + 1
                   and time.monotonic() < deadline):
                time.sleep(0.05)
        finally:
            mqtt.stop()
    delays = [float(d) for d in pattern.findall(caplog.text)]
    check_schedule(delays)
    # the waits really happened (on the stand-in clock): all but the one in progress
    assert clock["slept"] >= sum(delays[:ROUNDS]) - 0.1 * ROUNDS

