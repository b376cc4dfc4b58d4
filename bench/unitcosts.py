"""What one of each per-connection thing costs in RSS, each in a fresh process.

    .venv/bin/python -m bench.unitcosts [--count 300] [--ca-file FILE]

- a thread that waits as a folder watcher does (an Event wait in a loop), at the
  default stack size and at a given `threading.stack_size`;
- an `ssl.SSLContext` as the bridge makes one per connection (system CAs plus a CA file).
"""

from __future__ import annotations

import argparse
import ssl
import subprocess
import sys
import threading
from pathlib import Path


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def threads(count: int, stack_kib: int) -> list[threading.Thread]:
    if stack_kib:
        threading.stack_size(stack_kib * 1024)
    stop = threading.Event()

    def wait() -> None:
        while not stop.wait(0.05):
            pass

    made = [threading.Thread(target=wait, daemon=True) for _ in range(count)]
    for t in made:
        t.start()
    return made


def contexts(count: int, ca_file: str | None) -> list[ssl.SSLContext]:
    made = []
    for _ in range(count):
        context = ssl.create_default_context()
        if ca_file:
            context.load_verify_locations(cafile=ca_file)
        made.append(context)
    return made


def measure(kind: str, count: int, arg: str) -> None:
    """In this process: RSS before and after making `count` of `kind`."""
    before = rss_kib()
    keep: object = threads(count, int(arg)) if kind == "thread" else contexts(count, arg or None)
    if kind == "thread":
        threading.Event().wait(1.0)  # every thread has run its loop a few times
    per = (rss_kib() - before) / count
    print(f"{kind} ({arg or 'default'}): {per:.1f} KiB RSS each over {count}")
    del keep


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--ca-file", default="")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "ARG"))
    args = parser.parse_args()
    if args.child:
        measure(args.child[0], args.count, args.child[1])
        return 0
    runs = [("thread", "0"), ("thread", "256"), ("context", "")]
    if args.ca_file:
        runs.append(("context", args.ca_file))
    for kind, arg in runs:
        subprocess.run([sys.executable, "-m", "bench.unitcosts", "--count", str(args.count),
                        "--child", kind, arg], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
