"""N mailboxes in one bridge process: time to online, memory, idle CPU, threads, a burst.

Each mailbox has its own app registration (or `--apps K` shares K of them round-robin)
and one folder, INBOX, in IDLE mode. Runs on the rig; loopback only.

    .venv/bin/python -m bench.scale --mailboxes 100 [--idle-seconds 60] [--apps K]
        [--memory-report FILE] [--throttle]

- online: from starting the process until every folder's first retained state (published
  once its position is recorded) reached a `mosquitto_sub` subscriber;
- memory: peak RSS (`VmHWM`) and RSS sampled every second over the idle period;
- idle CPU: the process's user + system time over the idle period;
- burst: one new mail delivered into every mailbox's Maildir as an MDA delivers (N
  APPENDs would need N more logins from this process, on the same 2 cores), then from
  the last delivery to the last summary.
`--memory-report` runs the bridge under `bench.memprobe` instead (tracemalloc, slower).
`--throttle` has the rig play Exchange's and the identity platform's throttling.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.servers import Servers, servers
from rig.bridgecfg import write_config
from rig.dovecot import MAIL_UID
from rig.samples import make_message

BASE = "outlook2mqtt"


@dataclass
class Sampler:
    """Samples a process's RSS and thread count every second."""

    pid: int
    rss_kib: list[int] = field(default_factory=list)
    threads: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        threading.Thread(target=self._run, name="sampler", daemon=True).start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            status = proc_status(self.pid)
            if status:
                self.rss_kib.append(status["VmRSS"])
                self.threads.append(status["Threads"])

    def stop(self) -> None:
        self._stop.set()


def proc_status(pid: int) -> dict[str, int]:
    """The numeric fields of /proc/PID/status (kB values in KiB)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        first = value.split()[:1]
        if first and first[0].isdigit():
            out[key] = int(first[0])
    return out


def cpu_seconds(pid: int) -> float:
    return sum(user_system_seconds(pid))


def user_system_seconds(pid: int) -> tuple[float, float]:
    """The process's user and system CPU time so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def machine_cpu_seconds() -> float:
    """CPU time all processes used so far (user, nice, system, irq), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    busy = sum(int(fields[i]) for i in (0, 1, 2, 5, 6))
    return busy / os.sysconf("SC_CLK_TCK")


def process_stats() -> Iterator[tuple[str, list[str]]]:
    """Each live process's command name and the fields of /proc/PID/stat after it
    (fields[1] the parent's pid, fields[11:15] user, system and reaped children's ticks)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # ended meanwhile
        yield text[text.index("(") + 1 : text.rindex(")")], text.rsplit(")", 1)[1].split()


def cpu_by_command() -> dict[str, float]:
    """CPU seconds per command name over every live process, with its reaped children."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for comm, fields in process_stats():
        out[comm] = out.get(comm, 0.0) + sum(int(f) for f in fields[11:15]) / tick
    return out


def cpu_split(before: dict[str, float], top: int = 6) -> str:
    """The commands that used the most CPU since `before`."""
    after = cpu_by_command()
    used = sorted(((after[c] - before.get(c, 0.0), c) for c in after), reverse=True)[:top]
    return ", ".join(f"{c} {s:.1f} s" for s, c in used if s >= 0.05)


class Subscriber:
    """`mosquitto_sub` writing `time topic` lines to a file (no Python client on the
    measured cores)."""

    def __init__(self, port: int, topics: list[str]) -> None:
        self._out = tempfile.NamedTemporaryFile("w+", errors="replace", delete=False)  # noqa: SIM115
        argv = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-V", "5",
                "-F", "%U %t"]
        probe = f"{BASE}/bench/probe"
        for topic in [probe, *topics]:
            argv += ["-t", topic]
        self._proc = subprocess.Popen(argv, stdout=self._out)
        deadline = time.monotonic() + 10
        while not self.lines():
            if time.monotonic() > deadline:
                raise RuntimeError("mosquitto_sub did not subscribe")
            subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", probe,
                            "-m", "x"], check=True)
            time.sleep(0.2)

    def lines(self) -> list[tuple[float, str]]:
        with open(self._out.name, errors="replace") as f:
            rows = [line.split(" ", 1) for line in f.read().splitlines()]
        return [(float(r[0]), r[1]) for r in rows if len(r) == 2]

    def first_times(self, suffix: str) -> dict[str, float]:
        """The first arrival time of each topic ending in `suffix`."""
        seen: dict[str, float] = {}
        for when, topic in self.lines():
            if topic.endswith(suffix):
                seen.setdefault(topic, when)
        return seen

    def wait_for(self, suffix: str, count: int, timeout: float) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        while True:
            seen = self.first_times(suffix)
            if len(seen) >= count or time.monotonic() > deadline:
                return seen
            time.sleep(0.2)

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait(5)
        os.unlink(self._out.name)


def mailbox(i: int) -> str:
    return f"m{i:04d}@contoso.test"


def scale_config(rig: Servers, n: int, apps: int) -> dict[str, Any]:
    """One account per mailbox; app registration i % apps grants every mailbox it serves."""
    registered = []
    for a in range(apps):
        grants = [mailbox(i) for i in range(a, n, apps)]
        registered.append(rig.idp.register_app(rig.tenant, secret=f"scale-secret-{a}",
                                               mailboxes=grants))
    config = rig.config()
    template = config["accounts"][0]
    accounts = []
    for i in range(n):
        app = registered[i % apps]
        accounts.append({**template, "name": f"m{i:04d}", "mailbox": mailbox(i),
                         "client_id": app.client_id, "client_secret": f"scale-secret-{i % apps}",
                         "folders": [{"name": "INBOX"}]})
    config["accounts"] = accounts
    return config


def deliver_burst(rig: Servers, n: int) -> float:
    """One new mail into every INBOX, as an MDA delivers into Maildir; the last one's time."""
    raw = make_message(subject="burst", to="someone@contoso.test")
    last = 0.0
    for i in range(n):
        maildir = rig.dovecot.mail_dir / mailbox(i) / "Maildir"
        name = f"{time.time_ns()}.burst{i}.scale"
        # Dovecot makes tmp/ only when it first needs it: an MDA makes it when missing.
        for sub in ("tmp", "new"):
            if not (maildir / sub).is_dir():
                (maildir / sub).mkdir(mode=0o700)
                os.chown(maildir / sub, MAIL_UID, MAIL_UID)
        tmp = maildir / "tmp" / name
        tmp.write_bytes(raw)
        os.chown(tmp, MAIL_UID, MAIL_UID)
        tmp.rename(maildir / "new" / name)
        last = time.time()
    return last


def bridge_argv(config: Path, memory_report: Path | None) -> list[str]:
    if memory_report is not None:
        return [sys.executable, "-m", "bench.memprobe", str(config), str(memory_report)]
    return [sys.executable, "-m", "bridge", "run", "-c", str(config), "--log-level", "warning"]


def summarize_rss(kib: list[int]) -> str:
    if not kib:
        return "n/a"
    return f"{min(kib) / 1024:.0f}-{max(kib) / 1024:.0f} MiB (first {kib[0] / 1024:.0f}, " \
           f"last {kib[-1] / 1024:.0f})"


def run(args: argparse.Namespace) -> int:
    n, apps = args.mailboxes, args.apps or args.mailboxes
    with servers(throttle=args.throttle) as rig:
        config = write_config(rig.work / "config.toml", scale_config(rig, n, apps))
        sub = Subscriber(rig.broker.port, [f"{BASE}/+/inbox/state", f"{BASE}/+/inbox/message",
                                           f"{BASE}/bridge/state"])
        log = (rig.work / "bridge.log").open("wb")
        started, machine_cpu_start = time.time(), machine_cpu_seconds()
        by_command = cpu_by_command()
        bridge = subprocess.Popen(bridge_argv(config, args.memory_report),
                                  stdout=log, stderr=subprocess.STDOUT)
        sampler = Sampler(bridge.pid)
        sampler.start()
        try:
            states = sub.wait_for("/inbox/state", n, args.timeout)
            online = (max(states.values()) - started) if len(states) == n else None
            print(f"N = {n}, {apps} app registration(s)"
                  + (", rig throttling" if args.throttle else ""))
            print(f"online: {len(states)}/{n} folders with a position in "
                  + (f"{online:.1f} s" if online is not None else f"> {args.timeout:.0f} s"))
            print(f"CPU until online: bridge {cpu_seconds(bridge.pid):.1f} s, whole machine "
                  f"{machine_cpu_seconds() - machine_cpu_start:.1f} s ({cpu_split(by_command)})")
            marker = sub.first_times("/bridge/state")
            if marker:
                print(f"bridge/state online after {min(marker.values()) - started:.1f} s")
            print(f"peak RSS at online: {proc_status(bridge.pid).get('VmHWM', 0) / 1024:.0f} MiB")
            time.sleep(5)
            idle_from = len(sampler.rss_kib)
            cpu0, wall0 = cpu_seconds(bridge.pid), time.monotonic()
            time.sleep(args.idle_seconds)
            cpu = (cpu_seconds(bridge.pid) - cpu0) / (time.monotonic() - wall0)
            status = proc_status(bridge.pid)
            print(f"idle {args.idle_seconds:.0f} s: CPU {cpu * 100:.2f} % of a core, RSS "
                  f"{summarize_rss(sampler.rss_kib[idle_from:])}, threads {status['Threads']}")
            (user0, system0), machine_cpu0 = user_system_seconds(bridge.pid), machine_cpu_seconds()
            by_command = cpu_by_command()
            last_delivery = deliver_burst(rig, n)
            messages = sub.wait_for("/inbox/message", n, args.timeout)
            user, system = user_system_seconds(bridge.pid)
            user, system = user - user0, system - system0
            machine_cpu = machine_cpu_seconds() - machine_cpu0
            arrivals = sorted(t - last_delivery for t in messages.values()) or [float("nan")]
            print(f"burst: {len(messages)}/{n} summaries, last {arrivals[-1]:.2f} s after the "
                  f"last delivery (first {arrivals[0]:.2f} s, median "
                  f"{arrivals[len(arrivals) // 2]:.2f} s)")
            print(f"CPU during the burst: bridge {user + system:.2f} s (user {user:.2f}, "
                  f"system {system:.2f}), whole machine "
                  f"{machine_cpu:.2f} s ({cpu_split(by_command)})")
            print(f"peak RSS (VmHWM): {proc_status(bridge.pid)['VmHWM'] / 1024:.0f} MiB")
            ok = online is not None and len(messages) == n
        finally:
            sampler.stop()
            bridge.terminate()
            bridge.wait(60)
            sub.close()
            log.close()
        text = (rig.work / "bridge.log").read_text()
        if args.keep_log:
            args.keep_log.write_text(text)
        errors = [line for line in text.splitlines()
                  if " ERROR " in line or "Traceback" in line]
        print(f"bridge log: {len(errors)} error line(s)" + (f", first: {errors[0][:200]}"
                                                          if errors else ""))
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mailboxes", type=int, default=100)
    parser.add_argument("--apps", type=int, default=0,
                        help="app registrations shared round-robin (default: one per mailbox)")
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--memory-report", type=Path)
    parser.add_argument("--throttle", action="store_true")
    parser.add_argument("--keep-log", type=Path, help="copy the bridge's log here")
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
