"""What one folder's sync costs the bridge and Dovecot per IMAP command, and a position's write.

    .venv/bin/python -m bench.roundtrips [--repeat 300]

On the rig's Dovecot over TLS, one logged-in imapclient connection with INBOX selected
(five small messages): each command a burst's sync sends, run `--repeat` times, with this
thread's CPU (`time.thread_time`), the CPU of the Dovecot `imap` process serving it and
the wall time per command; then `write_atomic` as the position store calls it (write,
fsync, rename).
"""

from __future__ import annotations

import argparse
import os
import ssl
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import imapclient

from bench.scale import process_stats
from bench.servers import MAILBOX, servers
from bridge.util.files import write_atomic
from rig.samples import make_message

META = ["UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE"]


def imap_seconds(master: int) -> float:
    """CPU seconds so far of the `imap` processes of the Dovecot whose master is `master`:
    the one serving this bench's connection, and none of another Dovecot's."""
    return sum((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
               for comm, fields in process_stats()
               if comm == "imap" and int(fields[1]) == master)


def per_call(action: Callable[[], Any], repeat: int,
             master: int | None = None) -> tuple[float, float, float]:
    """Microseconds of this thread's CPU, of the `imap` CPU of the Dovecot with `master`
    (0 without one) and of wall time per call."""
    server0 = imap_seconds(master) if master else 0.0
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    for _ in range(repeat):
        action()
    cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
    server = imap_seconds(master) - server0 if master else 0.0
    return cpu / repeat * 1e6, server / repeat * 1e6, wall / repeat * 1e6


def commands(client: imapclient.IMAPClient) -> dict[str, Callable[[], Any]]:
    return {
        "IDLE + DONE": lambda: (client.idle(), client.idle_done()),
        "SELECT (read-only)": lambda: client.select_folder("INBOX", readonly=True),
        "UID SEARCH UID n:*": lambda: client.search(["UID", "5:*"]),
        "UID FETCH metadata": lambda: client.fetch([5], META),
        "UID FETCH BODY.PEEK[1]": lambda: client.fetch([5], ["BODY.PEEK[1]"]),
        "SEARCH UNSEEN": lambda: client.search(["UNSEEN"]),
        "NOOP": client.noop,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=300)
    args = parser.parse_args()
    with servers() as rig:
        for i in range(5):
            rig.dovecot.deliver(MAILBOX, make_message(subject=f"m{i}", to=MAILBOX))
        context = ssl.create_default_context(cafile=str(rig.pki.ca_file))
        client = imapclient.IMAPClient("127.0.0.1", port=rig.dovecot.port, ssl=True,
                                       ssl_context=context)
        client.oauth2_login(MAILBOX, rig.token())
        client.select_folder("INBOX", readonly=True)
        print(f"{'command':24s} {'CPU us':>8s} {'imap us':>8s} {'wall us':>8s}")
        totals = [0.0, 0.0]
        for name, action in commands(client).items():
            cpu, server, wall = per_call(action, args.repeat, rig.dovecot.pid)
            totals[0] += cpu
            totals[1] += server
            print(f"{name:24s} {cpu:8.0f} {server:8.0f} {wall:8.0f}")
        print(f"{'all of the above':24s} {totals[0]:8.0f} {totals[1]:8.0f}")
        client.logout()
    with tempfile.TemporaryDirectory(dir=Path.home()) as tmp:
        path = Path(tmp) / "position.json"
        cpu, _server, wall = per_call(lambda: write_atomic(path, b'{"last_uid": 1}'),
                                      args.repeat)
        print(f"{'position write + fsync':24s} {cpu:8.0f} {'':8s} {wall:8.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
