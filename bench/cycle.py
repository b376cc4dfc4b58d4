"""The bridge's CPU per folder woken, per thread, with nothing else to contend with.

    .venv/bin/python -m bench.cycle [--messages 100]

One mailbox, one folder in IDLE mode: one message delivered at a time, each waited for
on MQTT before the next, so every delivery is one wake-up, one sync and one summary.
Prints the CPU (user + system, from /proc) each of the bridge's threads used per
message. Python does not name the threads for the kernel: they are told apart by the
order they started (main, MQTT network, watcher, command worker, health), which
`py-spy dump` confirmed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.servers import ACCOUNT, MAILBOX, servers
from rig.bridgecfg import write_config
from rig.mqttsub import Collector
from rig.samples import make_message

BASE = "outlook2mqtt"


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of `pid`, by thread id."""
    seconds: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        seconds[int(task.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf(
            "SC_CLK_TCK")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100)
    args = parser.parse_args()
    with servers() as rig:
        config = write_config(rig.work / "config.toml", rig.config())
        bridge = subprocess.Popen([sys.executable, "-m", "bridge", "run", "-c", str(config),
                                   "--log-level", "warning"])
        try:
            with Collector("127.0.0.1", rig.broker.port, [f"{BASE}/#"]) as sub:
                sub.wait_for(lambda m: m.topic == f"{BASE}/bridge/state"
                             and m.payload == b"online", timeout=30)
                time.sleep(2)  # the first sync's work is over
                raw = make_message(subject="cycle", to=MAILBOX)
                before = thread_cpu(bridge.pid)
                for i in range(args.messages):
                    rig.dovecot.deliver(MAILBOX, raw)
                    sub.wait_topic(f"{BASE}/{ACCOUNT}/inbox/message", i + 1, timeout=30)
                after = thread_cpu(bridge.pid)
        finally:
            bridge.terminate()
            bridge.wait(15)
    names = ["main", "MQTT network", "watcher", "command worker", "health"]
    print(f"{args.messages} messages, one at a time; bridge CPU per message:")
    total = 0.0
    for index, tid in enumerate(sorted(after)):
        used = (after[tid] - before.get(tid, 0.0)) / args.messages * 1000
        total += used
        name = names[index] if index < len(names) else f"thread {tid}"
        print(f"  {name:16s} {used:5.2f} ms")
    print(f"  {'all':16s} {total:5.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
