"""README promises that only show when something goes wrong, each proved on the rig: a
relay between the bridge and a server holds, slows or cuts the traffic where the promise
matters, and the test fails when the bridge breaks the promise."""

from __future__ import annotations

import itertools
import json
import logging
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.config.load import parse_config
from bridge.mailbox.watcher import FolderWatcher
from bridge.service import Bridge
from rig.bridgecfg import rig_config
from rig.dovecot import EXCHANGE_CAPABILITIES, Dovecot
from rig.idp import IdentityPlatform
from rig.mailstate import snapshot
from rig.mosquitto import Mosquitto
from rig.mqttsub import Collector
from rig.pki import TestPKI
from rig.samples import make_message
from tests.bridgeproc import BridgeProcess
from tests.conftest import wait_online
from tests.relay import Relay, relay_tls

QUIET = 300  # seconds between polls: only what a test causes makes the bridge act


@pytest.fixture
def imap_relay(dovecot: Dovecot, pki: TestPKI) -> Iterator[Relay]:
    """A relay in front of the rig's Dovecot that sees IMAP in clear."""
    with Relay(dovecot.port, tls=relay_tls(pki)) as relay:
        yield relay


@pytest.fixture
def mqtt_relay(mosquitto: Mosquitto) -> Iterator[Relay]:
    """A relay in front of the rig's broker."""
    with Relay(mosquitto.port) as relay:
        yield relay


def command(collector: Collector, base_topic: str, payload: dict[str, Any] | str, *,
            timeout: float = 30, **publish: Any) -> dict[str, Any]:
    """Publish a command to the account and return its reply from the result topic."""
    result_topic = f"{base_topic}/home/command/result"
    seen = len(collector.on(result_topic))
    collector.publish(f"{base_topic}/home/command",
                      payload if isinstance(payload, str) else json.dumps(payload), **publish)
    reply: dict[str, Any] = collector.wait_topic(result_topic, count=seen + 1,
                                                 timeout=timeout)[seen].json()
    return reply


# -- commands -------------------------------------------------------------------------


@pytest.mark.parametrize("constant", ["Infinity", "-Infinity", "NaN"])
def test_infinity_or_nan_in_a_command_is_refused_and_changes_nothing(
    constant: str, make_bridge: Callable[..., BridgeProcess],
    secret_credential: dict[str, Any], collector: Collector, dovecot: Dovecot, mailbox: str,
    base_topic: str,
) -> None:
    uid = dovecot.deliver(mailbox, make_message(to=mailbox))
    make_bridge(secret_credential, poll_interval=QUIET).start()
    wait_online(collector, base_topic)
    before = snapshot(dovecot, mailbox)

    # Python's json reads these, and `id` takes any value: a bridge that let them through
    # would flag the message and echo a reply that is not JSON.
    reply = command(collector, base_topic, '{"action": "flag", "folder": "INBOX", '
                    f'"uids": [{uid}], "id": {constant}}}')

    assert reply["status"] == "error" and "uids" not in reply
    assert f"{constant} is not a JSON number" in reply["error"]
    assert snapshot(dovecot, mailbox) == before


def test_mark_all_read_lists_only_the_messages_that_were_unread(
    make_bridge: Callable[..., BridgeProcess], secret_credential: dict[str, Any],
    collector: Collector, dovecot: Dovecot, mailbox: str, base_topic: str,
) -> None:
    uids = [dovecot.deliver(mailbox, make_message(subject=f"m{i}", to=mailbox),
                            flags=["\\Seen"] if i % 2 else []) for i in range(5)]
    make_bridge(secret_credential, poll_interval=QUIET).start()
    wait_online(collector, base_topic)

    reply = command(collector, base_topic, {"action": "mark_all_read", "folder": "INBOX",
                                            "id": "all"})

    assert reply == {"id": "all", "action": "mark_all_read", "status": "ok",
                     "uids": uids[0::2]}
    assert all("\\Seen" in f for f in dovecot.flags(mailbox).values())


def test_a_flag_reply_lists_every_selected_message_also_those_already_flagged(
    make_bridge: Callable[..., BridgeProcess], secret_credential: dict[str, Any],
    collector: Collector, dovecot: Dovecot, mailbox: str, base_topic: str,
) -> None:
    flagged = dovecot.deliver(mailbox, make_message(to=mailbox), flags=["\\Flagged"])
    plain = dovecot.deliver(mailbox, make_message(to=mailbox))
    make_bridge(secret_credential, poll_interval=QUIET).start()
    wait_online(collector, base_topic)

    reply = command(collector, base_topic, {"action": "flag", "folder": "INBOX",
                                            "uids": [plain, flagged]})

    assert reply == {"action": "flag", "status": "ok", "uids": [flagged, plain]}
    assert all("\\Flagged" in f for f in dovecot.flags(mailbox).values())


def test_fetch_replies_only_after_the_broker_acknowledged(
    make_bridge: Callable[..., BridgeProcess], secret_credential: dict[str, Any],
    collector: Collector, dovecot: Dovecot, mailbox: str, base_topic: str, mqtt_relay: Relay,
) -> None:
    make_bridge(secret_credential, poll_interval=QUIET, mqtt_port=mqtt_relay.port).start()
    wait_online(collector, base_topic)
    uid = dovecot.deliver(mailbox, make_message(subject="again", to=mailbox))
    summaries = f"{base_topic}/home/inbox/message"
    command(collector, base_topic, "refresh")
    collector.wait_topic(summaries)
    results = f"{base_topic}/home/command/result"
    replies_before = len(collector.on(results))

    # From the bridge's first re-published summary on, the broker's PUBACKs wait in the relay.
    mqtt_relay.hold_on = summaries.encode()
    collector.publish(f"{base_topic}/home/command",
                      json.dumps({"action": "fetch", "folder": "INBOX", "uids": [uid]}))
    collector.wait_topic(summaries, count=2)  # the broker has the re-published summary
    with pytest.raises(TimeoutError):  # a reply that did not wait comes right behind it
        collector.wait_for(lambda m: m.topic == results, count=replies_before + 1, timeout=3)
    mqtt_relay.hold_on = None
    mqtt_relay.release()

    reply = collector.wait_topic(results, count=replies_before + 1)[-1].json()
    assert reply == {"action": "fetch", "status": "ok", "uids": [uid]}


def test_a_response_topic_with_wildcards_or_a_command_topic_is_ignored(
    make_bridge: Callable[..., BridgeProcess], secret_credential: dict[str, Any],
    collector: Collector, dovecot: Dovecot, mailbox: str, base_topic: str,
) -> None:
    uid = dovecot.deliver(mailbox, make_message(to=mailbox))
    bridge = make_bridge(secret_credential, poll_interval=QUIET).start()
    wait_online(collector, base_topic)
    own = f"{base_topic}/home/command"
    for i, response_topic in enumerate([f"{base_topic}/replies/+", f"{base_topic}/#", own]):
        reply = command(collector, base_topic, {"action": "flag", "folder": "INBOX",
                                                "uid": uid, "id": i},
                        response_topic=response_topic, correlation_data=b"c")
        assert reply == {"id": i, "action": "flag", "status": "ok", "uids": [uid]}

    # One more command: anything the bridge sent for the earlier ones has arrived by now.
    assert command(collector, base_topic, {"action": "unflag", "folder": "INBOX", "uid": uid,
                                           "id": "last"})["status"] == "ok"
    assert len(collector.on(f"{base_topic}/home/command/result")) == 4
    assert len(collector.on(own)) == 4  # only the requests: no reply was read back
    assert [m.topic for m in collector.messages if "/replies/" in m.topic] == []
    assert bridge.stop() == 0
    log = bridge.log()
    assert log.count("not replying on response topic") == 3
    assert "cannot publish a command reply" not in log


def test_a_command_cut_off_mid_way_is_not_retried(
    make_bridge: Callable[..., BridgeProcess], secret_credential: dict[str, Any],
    collector: Collector, dovecot: Dovecot, mailbox: str, base_topic: str, imap_relay: Relay,
) -> None:
    uid = dovecot.deliver(mailbox, make_message(to=mailbox))
    make_bridge(secret_credential, poll_interval=QUIET, imap_port=imap_relay.port).start()
    wait_online(collector, base_topic)
    store = b"UID STORE %d +FLAGS.SILENT (\\Flagged)" % uid

    imap_relay.cut_on = store  # the server gets the STORE, the bridge never its answer
    reply = command(collector, base_topic, {"action": "flag", "folder": "INBOX", "uid": uid})

    assert imap_relay.cuts == 1
    assert reply["status"] == "error" and "not retried" in reply["error"]
    # The worker reconnects for the next command; the cut one was sent exactly once.
    again = command(collector, base_topic, {"action": "mark_read", "folder": "INBOX",
                                            "uid": uid})
    assert again == {"action": "mark_read", "status": "ok", "uids": [uid]}
    assert sum(store in line for line in imap_relay.commands()) == 1
    assert dovecot.flags(mailbox)[uid] >= {"\\Flagged", "\\Seen"}


# -- push, healing, supervision -------------------------------------------------------


def test_idle_is_renewed_every_idle_renew_seconds(
    make_bridge: Callable[..., BridgeProcess], secret_credential: dict[str, Any],
    collector: Collector, imap_relay: Relay, base_topic: str,
) -> None:
    renew = 2
    make_bridge(secret_credential, imap_port=imap_relay.port, idle=True, poll_interval=QUIET,
                extra_account={"idle_renew": renew}).start()
    wait_online(collector, base_topic)
    deadline = time.monotonic() + 60
    while len(imap_relay.times_of(b" IDLE\r\n")) < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    idles = imap_relay.times_of(b" IDLE\r\n")
    assert len(idles) >= 5
    gaps = [b - a for a, b in itertools.pairwise(idles)]
    assert min(gaps) >= 0.9 * renew, gaps
    assert statistics.median(gaps) <= 2 * renew, gaps
    assert len(imap_relay.times_of(b"DONE\r\n")) >= len(idles) - 1  # ended, not dropped
    assert sum(b"AUTHENTICATE" in c for c in imap_relay.commands()) == 1  # one session


@pytest.fixture(scope="module")
def dovecot_without_idle(pki: TestPKI, idp: IdentityPlatform,
                         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    """A Dovecot that does not announce IDLE."""
    capabilities = EXCHANGE_CAPABILITIES.replace(" IDLE", "")
    with Dovecot(pki, idp.introspection_url, tmp_path_factory.mktemp("no-idle"),
                 capabilities=capabilities) as server:
        yield server


def test_without_idle_on_the_server_the_bridge_polls_every_poll_interval(
    make_bridge: Callable[..., BridgeProcess], secret_credential: dict[str, Any],
    collector: Collector, dovecot_without_idle: Dovecot, pki: TestPKI, mailbox: str,
    base_topic: str,
) -> None:
    interval = 1.0
    with Relay(dovecot_without_idle.port, tls=relay_tls(pki)) as relay:
        bridge = make_bridge(secret_credential, imap_port=relay.port, idle=True,
                             poll_interval=interval).start()
        wait_online(collector, base_topic)
        dovecot_without_idle.deliver(mailbox, make_message(subject="polled", to=mailbox))
        msg = collector.wait_topic(f"{base_topic}/home/inbox/message", timeout=30)[0]
        assert msg.json()["subject"] == "polled"
        # A poll is a sync: a UID SEARCH for new UIDs, then one for the unread.
        deadline = time.monotonic() + 60
        while len(relay.times_of(b"UID SEARCH UNSEEN")) < 8 and time.monotonic() < deadline:
            time.sleep(0.1)
        polls = relay.times_of(b"UID SEARCH UNSEEN")
        commands = relay.commands()
    assert len(polls) >= 8
    gaps = [b - a for a, b in itertools.pairwise(polls[1:])]  # the first sync is at start
    assert min(gaps) >= 0.9 * interval, gaps  # not more often
    assert statistics.median(gaps) <= 2 * interval, gaps  # and not much less often
    assert not [c for c in commands if c.split(b" ")[1:2] == [b"IDLE"]]
    assert sum(b"AUTHENTICATE" in c for c in commands) == 1  # one session throughout
    assert "server has no IDLE, polling every 1 s" in bridge.log()


def test_an_imap_login_refusal_shows_auth_error_on_the_status(
    make_bridge: Callable[..., BridgeProcess], idp: IdentityPlatform, tenant: str,
    collector: Collector, base_topic: str,
) -> None:
    secret = f"s-{uuid.uuid4().hex}"
    ungranted = idp.register_app(tenant, secret=secret)  # a token, but not for this mailbox
    make_bridge({"client_id": ungranted.client_id, "secret": secret}).start()
    status = collector.wait_for(lambda m: m.topic == f"{base_topic}/home/status"
                                and m.json()["auth"] == "error", timeout=30)[0].json()
    assert status["connected"] is False
    assert "IMAP login" in status["last_error"] and "refused" in status["last_error"]
    assert "AUTHENTICATIONFAILED" in status["last_error"]
    wait_online(collector, base_topic)  # one refused account does not hold the bridge back


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """systemd's end of NOTIFY_SOCKET, with a watchdog every 0.2 s for this process."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(0.5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        monkeypatch.setenv("WATCHDOG_USEC", "400000")
        yield sock


def datagrams(sock: socket.socket) -> list[str]:
    """What arrived on the socket so far."""
    got = []
    sock.setblocking(False)
    try:
        while True:
            got.append(sock.recv(4096).decode())
    except BlockingIOError:
        return got
    finally:
        sock.settimeout(0.5)


# The worker's death is the point: pytest need not warn about it.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_the_watchdog_is_no_longer_fed_once_a_worker_died(
    notify_socket: socket.socket, idp: IdentityPlatform, pki: TestPKI, dovecot: Dovecot,
    mosquitto: Mosquitto, tenant: str, mailbox: str, secret_credential: dict[str, Any],
    base_topic: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = parse_config(rig_config(
        authority=idp.authority, ca_file=pki.ca_file, imap_port=dovecot.port,
        mqtt_port=mosquitto.port, tenant_id=tenant, mailbox=mailbox, state_dir=tmp_path,
        base_topic=base_topic, poll_interval=1, **secret_credential))
    bridge = Bridge(config)
    runner = threading.Thread(target=bridge.run, name="bridge-under-test")
    runner.start()
    try:
        notify_socket.settimeout(30)
        while "WATCHDOG=1" not in notify_socket.recv(4096).decode():
            pass
        watcher = bridge.accounts["home"].watchers[0]

        def bug(*_args: object) -> None:
            raise SystemExit  # escapes the watcher's handlers, as a bug in one could

        def noticed(times: int) -> None:
            deadline = time.monotonic() + 30
            while caplog.text.count(died) < times and time.monotonic() < deadline:
                time.sleep(0.05)
            assert caplog.text.count(died) >= times

        died = "a worker thread died"
        with caplog.at_level(logging.ERROR, logger="bridge.service"):
            monkeypatch.setattr(FolderWatcher, "sync", bug)
            watcher.join(30)
            assert not watcher.is_alive()
            noticed(1)
            datagrams(notify_socket)  # pings from before the death
            noticed(caplog.text.count(died) + 2)  # two more watchdog rounds
            late = datagrams(notify_socket)
        assert not [d for d in late if "WATCHDOG=1" in d], late
    finally:
        bridge.stop_event.set()
        runner.join(30)
