"""The bridge's CPU use at rest: N idle folders (IDLE mode, default settings) spread over
mailboxes of 10 folders each, CPU of the bridge process over a window. Runs on the rig.

    .venv/bin/python -m bench.idle_cpu [--folders 50] [--seconds 60] [--source DIR]

`--source` runs the bridge package found in DIR (e.g. an export of another commit)
instead of this checkout's, to compare.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.latency import _cpu_seconds
from bench.servers import Servers, servers
from rig.bridgecfg import write_config
from rig.mqttsub import Collector

FOLDERS_PER_MAILBOX = 10


def _config(rig: Servers, folders: int) -> dict[str, Any]:
    """One account per mailbox of up to FOLDERS_PER_MAILBOX folders (Exchange allows
    about 20 connections per mailbox)."""
    accounts = []
    for index in range(0, folders, FOLDERS_PER_MAILBOX):
        mailbox = f"idle{index // FOLDERS_PER_MAILBOX}@contoso.test"
        names = [f"F{n}" for n in range(min(FOLDERS_PER_MAILBOX, folders - index))]
        for name in names:
            rig.dovecot.create_folder(mailbox, name)
        rig.app.mailboxes.add(mailbox)
        account = rig.config(folders=[{"name": n, "topic": n.lower()} for n in names])
        account = account["accounts"][0] | {"name": f"a{index // FOLDERS_PER_MAILBOX}",
                                            "mailbox": mailbox}
        accounts.append(account)
    return rig.config() | {"accounts": accounts}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--folders", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--source", type=Path, default=Path(__file__).resolve().parent.parent)
    args = parser.parse_args()
    with servers() as rig:
        config = write_config(rig.work / "config.toml", _config(rig, args.folders))
        bridge = subprocess.Popen(
            [sys.executable, "-m", "bridge", "run", "-c", str(config), "--log-level",
             "warning"], cwd=args.source, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with Collector("127.0.0.1", rig.broker.port, ["outlook2mqtt/bridge/state"]) as sub:
                sub.wait_for(lambda m: m.payload == b"online", timeout=120)
                time.sleep(5)  # the first syncs and IDLEs are through
                cpu_before, wall_before = _cpu_seconds(bridge.pid), time.monotonic()
                time.sleep(args.seconds)
                cpu = (_cpu_seconds(bridge.pid) - cpu_before) / (time.monotonic() - wall_before)
        finally:
            bridge.terminate()
            bridge.wait(15)
    print(f"{args.folders} idle folders, {args.seconds:.0f} s: {cpu * 100:.2f} % of a core "
          f"({cpu * args.seconds:.2f} CPU s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
