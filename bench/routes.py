"""Backlog throughput with routes and with `search`, beside the same backlog without.

Loads the corpus of `bench.throughput` (N messages, all from alice@example.com, subjects
"bench <i>: <word>") into a rig Dovecot and times `outlook2mqtt run` with `backfill = N`
(median of --repeat runs, by `mosquitto_sub`, as `bench.throughput` does), the folder
configured five ways, in this order:
  - plain: no filters;
  - routes, some match: three routes, by subject (~10 % of the messages), by sender and
    subject (~10 %), by a sender nobody uses;
  - routes, all match: the same with the third route by a sender every message has, so
    every summary is published twice (the worst case);
  - search: `search = 'FROM "alice@example.com"'`, which every message matches, so the
    same summaries are published after one more SEARCH per sync;
  - plain again: how far the machine drifted meanwhile.

    .venv/bin/python -m bench.routes [--messages 1000] [--repeat 5] [--results FILE]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bench.servers import servers
from bench.throughput import corpus, load, run_bridge

ROUTES = [
    {"name": "parcels", "subject": "parcel|delivery"},
    {"name": "fives", "from": ["alice@*"], "subject": r"^bench \d*5:"},
]
NOBODY = {"name": "bob", "from": ["bob@*", "*@bob.example"]}
EVERYBODY = {"name": "alice", "from": ["*@example.com"]}
RUNS: list[tuple[str, dict[str, Any]]] = [
    ("plain", {}),
    ("routes, 20 % match", {"routes": [*ROUTES, NOBODY]}),
    ("routes, all match", {"routes": [*ROUTES, EVERYBODY]}),
    ("search (every message matches)", {"search": 'FROM "alice@example.com"'}),
    ("plain again", {}),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5, help="timed runs (median)")
    parser.add_argument("--results", type=Path, help="append the table to this Markdown file")
    args = parser.parse_args()
    n = args.messages
    rows = []
    with servers() as rig:
        load(rig.dovecot.port, rig.pki.ca_file, rig.token(), "INBOX", corpus(n))
        for i, (label, extra) in enumerate(RUNS):
            config = rig.config(folders=[{"name": "INBOX", "topic": "inbox", "backfill": n,
                                          **extra}])
            result = run_bridge(rig.work, config, rig.broker.port, f"routes{i}", "inbox", n,
                                f"routes{i}", args.repeat)
            rows.append((label, result))
            print(f"{label}: {result['seconds']:.3f} s", flush=True)
    plain = (rows[0][1]["seconds"] + rows[-1][1]["seconds"]) / 2
    lines = ["| run | messages | backlog s | messages/s | vs plain (mean of both) |",
             "|---|---|---|---|---|"]
    for label, r in rows:
        lines.append(f"| {label} | {r['messages']} | {r['seconds']:.3f} | "
                     f"{r['messages'] / r['seconds']:.0f} | "
                     f"{(r['seconds'] / plain - 1) * 100:+.1f} % |")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if args.results:
        with args.results.open("a") as out:
            out.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
