"""Start, stop, reload and supervision: what systemd and an operator see."""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.config.load import parse_config
from bridge.service import Bridge
from rig.bridgecfg import rig_config
from rig.dovecot import Dovecot
from rig.mosquitto import Mosquitto
from rig.mqttsub import Collector
from rig.samples import make_message
from tests.bridgeproc import BridgeProcess
from tests.conftest import wait_online

# What a stop must not wait for: the next poll (300 s here) or IDLE's check (60 s). The
# bound is far below both and far above a stop on a loaded machine (about a second idle).
STOP_BOUND = 30


def test_sigterm_stops_without_waiting_for_a_timer_with_offline_retained(
    mode: dict[str, Any], make_bridge: Callable[..., BridgeProcess],
    secret_credential: dict[str, Any], collector: Collector, base_topic: str,
) -> None:
    bridge = make_bridge(secret_credential, **{**mode, "poll_interval": 300}).start()
    wait_online(collector, base_topic)
    started = time.monotonic()
    assert bridge.stop(timeout=STOP_BOUND) == 0
    assert time.monotonic() - started < STOP_BOUND
    offline = collector.wait_for(lambda m: m.topic == f"{base_topic}/bridge/state"
                                 and m.payload == b"offline")[0]
    assert offline.retain
    assert "LOGOUT" in bridge.log()  # sessions are closed, not dropped


def test_sighup_reloads_the_config_and_watches_a_new_folder(
    make_bridge: Callable[..., BridgeProcess], secret_credential: dict[str, Any],
    collector: Collector, dovecot: Dovecot, mailbox: str, base_topic: str,
    idp: Any, pki: Any, mosquitto: Mosquitto, tenant: str, tmp_path: Path,
) -> None:
    dovecot.create_folder(mailbox, "INBOX/Receipts")
    bridge = make_bridge(secret_credential, idle=True).start()
    wait_online(collector, base_topic)
    bridge.rewrite_config(rig_config(
        authority=idp.authority, ca_file=pki.ca_file, imap_port=dovecot.port,
        mqtt_port=mosquitto.port, tenant_id=tenant, mailbox=mailbox,
        state_dir=tmp_path / "state", base_topic=base_topic, idle=True,
        folders=[{"name": "INBOX"}, {"name": "INBOX/Receipts", "topic": "receipts"}],
        **secret_credential,
    ))
    bridge.signal(signal.SIGHUP)
    collector.wait_topic(f"{base_topic}/home/receipts/state")
    dovecot.deliver(mailbox, make_message(subject="receipt", to=mailbox), folder="INBOX/Receipts")
    msg = collector.wait_topic(f"{base_topic}/home/receipts/message")[0]
    assert msg.json()["folder"] == "INBOX/Receipts"
    assert bridge.proc is not None and bridge.proc.poll() is None
    assert bridge.stop() == 0


def test_a_bad_config_on_sighup_keeps_the_running_one(
    make_bridge: Callable[..., BridgeProcess], secret_credential: dict[str, Any],
    collector: Collector, dovecot: Dovecot, mailbox: str, base_topic: str,
) -> None:
    bridge = make_bridge(secret_credential, idle=True).start()
    wait_online(collector, base_topic)
    bridge.config_path.write_text("[mqtt]\nhots = 1\n")
    bridge.signal(signal.SIGHUP)
    bridge.wait_log("new configuration rejected")
    wait_online(collector, base_topic, count=2)  # the old config, started again
    dovecot.deliver(mailbox, make_message(subject="still here", to=mailbox))
    msg = collector.wait_topic(f"{base_topic}/home/inbox/message")[0]
    assert msg.json()["subject"] == "still here"
    assert bridge.stop() == 0


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(0.5)
    yield sock
    sock.close()


def receive_until(sock: socket.socket, wanted: str, timeout: float = 30) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            seen.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
        if any(wanted in s for s in seen):
            return seen
    raise AssertionError(f"no {wanted} from the bridge; got {seen}")


def test_sd_notify_ready_watchdog_and_stopping_under_systemd(
    make_bridge: Callable[..., BridgeProcess], secret_credential: dict[str, Any],
    notify_socket: socket.socket, tmp_path: Path,
) -> None:
    bridge = make_bridge(secret_credential, idle=True).start(
        env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "1000000"}
    )
    receive_until(notify_socket, "READY=1")
    receive_until(notify_socket, "WATCHDOG=1")
    bridge.signal(signal.SIGTERM)
    receive_until(notify_socket, "STOPPING=1")
    assert bridge.stop() == 0


_SYS_TGKILL_BY_MACHINE = {"x86_64": 234, "aarch64": 131}


def signal_thread(pid: int, tid: int, signum: int) -> None:
    """Send `signum` to one thread of `pid` (tgkill), as the kernel may pick any thread
    that does not block a signal sent to the process; nothing if that thread has ended."""
    libc = ctypes.CDLL(None, use_errno=True)
    failed = libc.syscall(_SYS_TGKILL_BY_MACHINE[os.uname().machine], pid, tid, signum) != 0
    if failed and ctypes.get_errno() != errno.ESRCH:
        raise OSError(ctypes.get_errno(), "tgkill failed")


def test_sigterm_stops_the_bridge_whichever_of_its_threads_receives_it(
    make_bridge: Callable[..., BridgeProcess], secret_credential: dict[str, Any],
    notify_socket: socket.socket, tmp_path: Path,
) -> None:
    """SIGTERM taken by threads other than the main one (here each of them) still stops
    the bridge at once and cleanly: the main thread waits without a timeout, so a Python
    signal handler would not run in it until something else woke it."""
    bridge = make_bridge(secret_credential, idle=True).start(
        env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
    receive_until(notify_socket, "READY=1")
    assert bridge.proc is not None
    pid = bridge.proc.pid
    for tid in sorted(int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid):
        signal_thread(pid, tid, signal.SIGTERM)
    receive_until(notify_socket, "STOPPING=1")
    assert bridge.proc.wait(30) == 0  # no SIGTERM from here: one during exit would kill it
    log = bridge.log()
    assert "received SIGTERM, stopping" in log and "bridge stopped" in log


def test_broker_outage_pauses_publishing_and_mail_that_arrived_meanwhile_follows(
    mode: dict[str, Any], make_bridge: Callable[..., BridgeProcess],
    secret_credential: dict[str, Any], dovecot: Dovecot, mailbox: str, base_topic: str,
    tmp_path: Path,
) -> None:
    with Mosquitto(tmp_path / "broker") as broker:
        bridge = make_bridge(secret_credential, mqtt_port=broker.port, **mode).start()
        with Collector("127.0.0.1", broker.port, [f"{base_topic}/#"]) as sub:
            wait_online(sub, base_topic)
        broker.stop()
        for i in range(3):
            dovecot.deliver(mailbox, make_message(subject=f"during outage {i}", to=mailbox))
        bridge.wait_log("MQTT connection to")  # ... lost
        bridge.wait_log(re.compile(r"\(UID \d+-3\) in"))  # fetched, its publishing paused
        broker.start()  # no persistence: retained topics are gone and must come back
        # The bridge may reconnect before any subscriber does, so the proof that the mail
        # went out is the retained state: it advances only past acknowledged messages.
        with Collector("127.0.0.1", broker.port, [f"{base_topic}/#"]) as sub:
            state = sub.wait_for(lambda m: m.topic == f"{base_topic}/home/inbox/state"
                                 and m.json()["last_uid"] == 3, timeout=30)[-1]
            assert state.retain and state.json()["total"] == 3
            assert state.json()["last_message"]["subject"] == "during outage 2"
            wait_online(sub, base_topic)
            sub.wait_topic(f"{base_topic}/bridge/info")
            sub.wait_topic(f"{base_topic}/home/status")
        assert bridge.stop() == 0


def test_many_folders_warn_about_exchange_connection_limit(
    caplog: pytest.LogCaptureFixture, tmp_path: Path, pki: Any,
) -> None:
    folders = [{"name": f"INBOX/F{i}", "topic": f"f{i}"} for i in range(15)]
    config = parse_config(rig_config(
        authority="https://127.0.0.1:1", ca_file=pki.ca_file, imap_port=1, mqtt_port=1,
        tenant_id="t", client_id="c", mailbox="a@b.test", secret="s3cret-value",
        state_dir=tmp_path, folders=folders,
    ))
    with caplog.at_level(logging.WARNING):
        Bridge(config)
    assert "16 IMAP connections" in caplog.text
