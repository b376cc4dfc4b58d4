"""Folders sync a bounded number at a time, bridge-wide: mail landing in every folder at
once is all published, in turn, on the rig's Dovecot."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import imapclient
import pytest

from bridge.config.load import parse_config
from bridge.mailbox.watcher import FolderWatcher
from bridge.service import Bridge
from rig.bridgecfg import rig_config
from rig.dovecot import Dovecot
from rig.idp import App, IdentityPlatform
from rig.mosquitto import Mosquitto
from rig.mqttsub import Collector
from rig.pki import TestPKI
from rig.samples import make_message
from tests.conftest import wait_online

FOLDERS = ["INBOX", "F1", "F2", "F3", "F4", "F5"]
SLOTS = 2
DEADLINE = 60.0


class SyncCounter:
    """Records how many folders sync at once."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self._lock = threading.Lock()

    def wrap(self, sync: Any) -> Any:
        def counted(watcher: FolderWatcher, client: imapclient.IMAPClient) -> None:
            with self._lock:
                self.running += 1
                self.most = max(self.most, self.running)
            try:
                sync(watcher, client)
            finally:
                with self._lock:
                    self.running -= 1

        return counted


def test_mail_in_every_folder_at_once_is_published_with_a_bounded_number_of_syncs(
    idp: IdentityPlatform, pki: TestPKI, dovecot: Dovecot, mosquitto: Mosquitto, app: App,
    mailbox: str, tmp_path: Path, base_topic: str, collector: Collector,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in FOLDERS[1:]:
        dovecot.create_folder(mailbox, name)
    counter = SyncCounter()
    monkeypatch.setattr(FolderWatcher, "sync", counter.wrap(FolderWatcher.sync))
    monkeypatch.setattr("bridge.service.SYNC_CONCURRENCY", SLOTS)
    data = rig_config(authority=idp.authority, ca_file=pki.ca_file, imap_port=dovecot.port,
                      mqtt_port=mosquitto.port, tenant_id=app.tenant_id,
                      client_id=app.client_id, secret=app.secrets[0], mailbox=mailbox,
                      state_dir=tmp_path / "state", base_topic=base_topic, idle=True,
                      poll_interval=300, folders=[{"name": f} for f in FOLDERS])
    bridge = Bridge(parse_config(data))
    runner = threading.Thread(target=bridge.run, name="bridge-under-test")
    runner.start()
    try:
        wait_online(collector, base_topic)
        for round_ in range(3):
            for name in FOLDERS:
                dovecot.deliver(mailbox, make_message(subject=f"{name} {round_}", to=mailbox),
                                folder=name)
        summaries = collector.wait_for(
            lambda m: m.topic.endswith("/message"), len(FOLDERS) * 3, timeout=DEADLINE)
        subjects = sorted(m.json()["subject"] for m in summaries)
        assert subjects == sorted(f"{f} {r}" for f in FOLDERS for r in range(3))
        assert 1 <= counter.most <= SLOTS
    finally:
        bridge.stop_event.set()
        runner.join(DEADLINE)
    assert not runner.is_alive()
