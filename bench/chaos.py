"""A chaos run: steady mail into the bench mailbox while random faults hit the bridge,
then the count of what was lost (must be 0), duplicated and how late it came.

Faults, one every 20-40 s at random: the broker restarts (with persistence, as a real
one would), Dovecot kicks the mailbox's sessions, the app's tokens are revoked and the
sessions kicked (an admin revoking sessions), or every open IMAP connection is silently
dropped (a NAT that forgot them: no FIN, no RST). The bridge runs at its default IDLE
settings, through a relay (`rig.relay`) that can drop connections.

    .venv/bin/python -m bench.chaos [--minutes 10] [--interval 2] [--seed N]
"""

from __future__ import annotations

import argparse
import contextlib
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from bench.latency import pct
from bench.servers import MAILBOX, Servers, servers
from rig.bridgecfg import write_config
from rig.mosquitto import Mosquitto
from rig.mqttsub import Collector, Received
from rig.relay import ImapRelay
from rig.samples import make_message

TOPIC = "outlook2mqtt/home/inbox/message"
DRAIN_SECONDS = 180  # after the last message: a silent drop takes up to ~90 s to notice
FAULT_SHADOW = 120  # seconds: how long after a fault a message counts as hit by it


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _faults(rig: Servers, broker: Mosquitto, relay: ImapRelay) -> dict[str, Callable[[], None]]:
    def drop_silently() -> None:
        relay.drop_existing()

    def kick() -> None:
        # doveadm fails when no session is open (the bridge is between two): nothing to hit
        with contextlib.suppress(RuntimeError):
            rig.dovecot.kick(MAILBOX)

    def cut_tokens() -> None:
        rig.idp.revoke_all(rig.app.client_id)
        kick()

    return {
        "broker restart": broker.restart,
        "IMAP kick": kick,
        "token cut": cut_tokens,
        "silent drop": drop_silently,
    }


def _inject(faults: dict[str, Callable[[], None]], rng: random.Random, stop: threading.Event,
            log: list[tuple[float, str]], done: threading.Event, *,
            every: tuple[float, float] = (20, 40)) -> None:
    """Deal a fault every `every` seconds until `stop`, then stay until `done`: a broker
    this thread restarted is its child, which PR_SET_PDEATHSIG (rig.procs) ends as soon
    as the thread exits, and the drain after the last mail needs that broker."""
    while not stop.wait(rng.uniform(*every)):
        name = rng.choice(sorted(faults))
        log.append((time.monotonic(), name))
        print(f"{time.strftime('%H:%M:%S')} fault: {name}", flush=True)
        faults[name]()
    done.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between mails")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--bridge-log", type=Path, default=None,
                        help="keep the bridge's log (debug level) here")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    arrivals: dict[str, list[float]] = {}
    lock = threading.Lock()

    def on_message(msg: Received) -> None:
        if msg.topic == TOPIC:
            with lock:
                arrivals.setdefault(msg.json()["subject"], []).append(time.monotonic())

    with servers() as rig, Mosquitto(rig.work / "chaos-mqtt", persistence=True) as broker, \
            ImapRelay(rig.pki, rig.dovecot.port) as relay:
        config = rig.config(imap_port=relay.port)
        config["mqtt"]["port"] = broker.port
        path = write_config(rig.work / "config.toml", config)
        log = args.bridge_log or rig.work / "bridge.log"
        bridge = subprocess.Popen(
            [sys.executable, "-m", "bridge", "run", "-c", str(path), "--log-level",
             "debug" if args.bridge_log else "info"],
            stdout=log.open("wb"), stderr=subprocess.STDOUT)
        sub = Collector("127.0.0.1", broker.port, ["outlook2mqtt/#"], client_id="chaos-sub",
                        clean=False, on_message=on_message).start()
        stop, done = threading.Event(), threading.Event()
        fault_log: list[tuple[float, str]] = []
        appended: dict[str, float] = {}
        try:
            sub.wait_for(lambda m: m.topic == "outlook2mqtt/bridge/state"
                         and m.payload == b"online", timeout=60)
            rss_start = _rss_mib(bridge.pid)
            threading.Thread(target=_inject, args=(_faults(rig, broker, relay), rng, stop,
                                                   fault_log, done), daemon=True).start()
            end = time.monotonic() + args.minutes * 60
            while time.monotonic() < end:
                subject = f"chaos {len(appended)}"
                rig.dovecot.deliver(MAILBOX, make_message(subject=subject, to=MAILBOX))
                appended[subject] = time.monotonic()
                time.sleep(rng.uniform(0.5, 1.5) * args.interval)
            stop.set()
            drain_until = time.monotonic() + DRAIN_SECONDS
            while time.monotonic() < drain_until and not set(appended) <= set(arrivals):
                time.sleep(0.5)
            rss_end = _rss_mib(bridge.pid)
        finally:
            stop.set()
            sub.stop()
            bridge.terminate()
            bridge.wait(15)
            done.set()
        _report(args.minutes, appended, arrivals, fault_log, rss_start, rss_end)
        lost = len(set(appended) - set(arrivals))
    return 0 if lost == 0 else 1


def _report(minutes: float, appended: dict[str, float], arrivals: dict[str, list[float]],
            faults: list[tuple[float, str]], rss_start: float, rss_end: float) -> None:
    lost = sorted(set(appended) - set(arrivals))
    duplicates = sum(len(times) - 1 for times in arrivals.values())
    delays = [arrivals[s][0] - t for s, t in appended.items() if s in arrivals]
    counts = Counter(name for _t, name in faults)
    print(f"\n{minutes:g} minutes, {len(appended)} messages appended, "
          f"{len(faults)} faults ({', '.join(f'{n} x{c}' for n, c in sorted(counts.items()))})")
    print(f"lost: {len(lost)} {lost[:10] if lost else ''}")
    print(f"duplicates: {duplicates}")
    if delays:
        print(f"APPEND -> MQTT delay: p50 {pct(delays, 0.5):.2f} s, p99 {pct(delays, 0.99):.2f} s,"
              f" max {max(delays):.2f} s")
    print(f"RSS: {rss_start:.1f} MiB at start, {rss_end:.1f} MiB at end")
    print(f"\n| last fault before the APPEND (within {FAULT_SHADOW} s) | messages | p50 s "
          "| max s |")
    print("|---|---|---|---|")
    for name, group in sorted(_delays_by_fault(appended, arrivals, faults).items()):
        print(f"| {name} | {len(group)} | {pct(group, 0.5):.2f} | {max(group):.2f} |")


def _delays_by_fault(appended: dict[str, float], arrivals: dict[str, list[float]],
                     faults: list[tuple[float, str]]) -> dict[str, list[float]]:
    """Each published message's delay, grouped by the fault that preceded its APPEND."""
    groups: dict[str, list[float]] = {}
    for subject, at in appended.items():
        if subject not in arrivals:
            continue
        before = [(t, name) for t, name in faults if at - FAULT_SHADOW <= t <= at]
        name = max(before)[1] if before else "none"
        groups.setdefault(name, []).append(arrivals[subject][0] - at)
    return groups


if __name__ == "__main__":
    sys.exit(main())
