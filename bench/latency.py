"""APPEND -> summary latency in IDLE mode, beside a bare imapclient IDLE watcher (the
floor), and the bridge's CPU use while idle. Runs on the rig; loopback only.

    .venv/bin/python -m bench.latency [--messages 30] [--idle-seconds 60]
"""

from __future__ import annotations

import argparse
import os
import ssl
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from imapclient import IMAPClient

from bench.servers import MAILBOX, servers
from rig.bridgecfg import write_config
from rig.mqttsub import Collector, Received
from rig.samples import make_message


def _floor_watcher(port: int, ca: Path, token: str, seen: dict[int, float],
                   stop: threading.Event) -> None:
    """The floor: a bare IDLE loop that timestamps every EXISTS."""
    client = IMAPClient("127.0.0.1", port=port, ssl=True,
                        ssl_context=ssl.create_default_context(cafile=str(ca)))
    client.oauth2_login(MAILBOX, token)
    client.select_folder("INBOX", readonly=True)
    client.idle()
    while not stop.is_set():
        for response in client.idle_check(timeout=0.5):
            if isinstance(response, tuple) and len(response) > 1 and response[1] == b"EXISTS":
                seen[int(response[0])] = time.monotonic()
    client.idle_done()
    client.logout()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=30)
    parser.add_argument("--idle-seconds", type=float, default=60)
    args = parser.parse_args()
    with servers() as rig:
        dovecot, broker = rig.dovecot, rig.broker
        dovecot.deliver(MAILBOX, make_message(subject="seed", to=MAILBOX))
        config = write_config(rig.work / "config.toml", rig.config())
        received: dict[int, float] = {}

        def on_message(msg: Received) -> None:
            if msg.topic.endswith("/inbox/message"):
                received[msg.json()["uid"]] = time.monotonic()

        bridge = subprocess.Popen(
            [sys.executable, "-m", "bridge", "run", "-c", str(config), "--log-level",
             "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        floor: dict[int, float] = {}
        stop = threading.Event()
        try:
            with Collector("127.0.0.1", broker.port, ["outlook2mqtt/#"],
                           on_message=on_message) as sub:
                sub.wait_for(lambda m: m.topic == "outlook2mqtt/bridge/state"
                             and m.payload == b"online", timeout=30)
                token = rig.token()
                watcher = threading.Thread(
                    target=_floor_watcher,
                    args=(dovecot.port, rig.pki.ca_file, token, floor, stop), daemon=True)
                watcher.start()
                time.sleep(1)
                appended: dict[int, float] = {}
                for i in range(args.messages):
                    uid = dovecot.deliver(MAILBOX, make_message(subject=f"l{i}", to=MAILBOX))
                    appended[uid] = time.monotonic()
                    time.sleep(1.0)
                time.sleep(2)
                cpu_before, wall_before = _cpu_seconds(bridge.pid), time.monotonic()
                time.sleep(args.idle_seconds)
                cpu = (_cpu_seconds(bridge.pid) - cpu_before) / (
                    time.monotonic() - wall_before)
        finally:
            stop.set()
            bridge.terminate()
            bridge.wait(15)
    # message sequence numbers (floor) and UIDs coincide here: one folder, no expunges
    bridge_ms = [(received[u] - t) * 1000 for u, t in appended.items() if u in received]
    floor_ms = [(floor[u] - t) * 1000 for u, t in appended.items() if u in floor]
    print(f"messages: {len(appended)} appended, {len(bridge_ms)} summaries received")
    print("| path | median ms | p95 ms |\n|---|---|---|")
    print(f"| bare imapclient IDLE (floor) | {statistics.median(floor_ms):.0f} | "
          f"{pct(floor_ms, 0.95):.0f} |")
    print(f"| outlook2mqtt APPEND -> summary on MQTT | {statistics.median(bridge_ms):.0f} | "
          f"{pct(bridge_ms, 0.95):.0f} |")
    print(f"idle CPU over {args.idle_seconds:.0f} s: {cpu * 100:.2f} % of a core")
    return 0 if len(bridge_ms) == len(appended) else 1


if __name__ == "__main__":
    sys.exit(main())
