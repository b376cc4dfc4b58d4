"""Runs the bridge in this process under tracemalloc and writes where its memory goes.

    .venv/bin/python -m bench.memprobe CONFIG REPORT

Started by `bench.scale --memory-report REPORT`. Once the bridge is online (and 5 s
later) it writes: the process's mappings from /proc/self/smaps grouped as thread stacks,
the main heap, other anonymous memory (Python's arenas, glibc's per-thread arenas,
OpenSSL) and files; Python allocations by file (tracemalloc); how many of the objects
that come once per account or connection are alive. Then it runs until SIGTERM.
"""

from __future__ import annotations

import gc
import signal
import ssl
import sys
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path

# Everything Python allocates from here on is traced, the bridge's imports included.
tracemalloc.start(1)

from bridge.config.load import load_config  # noqa: E402
from bridge.service import Bridge  # noqa: E402
from bridge.util.signals import handle_signals  # noqa: E402

THREAD_STACK_KIB = 8192  # glibc's default: RLIMIT_STACK, 8 MiB on Debian


def smaps_groups() -> dict[str, tuple[int, int]]:
    """(mappings, RSS KiB) per kind of mapping."""
    groups: dict[str, list[int]] = {}
    kind, size = "", 0
    for line in Path("/proc/self/smaps").read_text().splitlines():
        parts = line.split()
        if "-" in parts[0] and len(parts) >= 5:  # a mapping's header line
            path = parts[5] if len(parts) > 5 else ""
            kind = path if path.startswith("[") else ("file" if path else "anon")
            continue
        if parts[0] == "Size:":
            size = int(parts[1])
        elif parts[0] == "Rss:":
            label = kind
            if kind == "anon" and size in (THREAD_STACK_KIB, threading.stack_size() // 1024):
                label = "thread stacks"
            groups.setdefault(label, []).append(int(parts[1]))
    return {k: (len(v), sum(v)) for k, v in groups.items()}


def object_counts() -> Counter[str]:
    """Objects of the kinds that come once per account or per connection."""
    wanted = ("SSLContext", "SSLSocket", "ConfidentialClientApplication", "Session",
              "IMAPClient", "IMAP4_TLS", "TokenProvider", "TokenCache", "HTTPAdapter")
    counts: Counter[str] = Counter()
    for obj in gc.get_objects():
        name = type(obj).__name__
        if name in wanted:
            counts[name] += 1
    counts["ssl.SSLContext"] = sum(1 for o in gc.get_objects() if isinstance(o, ssl.SSLContext))
    return counts


def report(out: Path) -> None:
    snapshot = tracemalloc.take_snapshot()
    lines = [f"threads: {threading.active_count()}",
             f"tracemalloc: {tracemalloc.get_traced_memory()[0] / 2**20:.1f} MiB traced now, "
             f"{tracemalloc.get_traced_memory()[1] / 2**20:.1f} MiB peak", "", "smaps:"]
    for kind, (count, rss) in sorted(smaps_groups().items(), key=lambda kv: -kv[1][1]):
        lines.append(f"  {kind:16} {count:6d} mappings {rss / 1024:8.1f} MiB")
    lines += ["", "Python allocations by file (top 25):"]
    for stat in snapshot.statistics("filename")[:25]:
        frame = stat.traceback[0]
        lines.append(f"  {stat.size / 2**20:7.2f} MiB {stat.count:8d} blocks  {frame.filename}")
    lines += ["", "objects:"]
    lines += [f"  {name}: {count}" for name, count in sorted(object_counts().items())]
    out.write_text("\n".join(lines) + "\n")


def main() -> int:
    config_path, out = Path(sys.argv[1]), Path(sys.argv[2])
    stop = threading.Event()
    handle_signals(lambda _signum: stop.set(), (signal.SIGTERM,))
    bridge = Bridge(load_config(config_path), stop=stop)
    bridge.start()
    if bridge.online.wait(600):
        time.sleep(5)
        report(out)
    stop.wait()
    bridge.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
