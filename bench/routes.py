"""Backlog throughput with routes and with `search`, beside the same backlog without.

Loads the corpus of `bench.throughput` (N messages, all from alice@example.com, subjects
"bench <i>: <word>") into a rig Dovecot and times `outlook2mqtt run` with `backfill = N`
(by `mosquitto_sub`, as `bench.throughput` does; --repeat rounds, each running every
configuration once, median per configuration; also the bridge process's CPU time, start
to finish, which the machine's other load disturbs less), the folder configured five ways:
  - plain: no filters;
  - routes, some match: three routes, by subject (~10 % of the messages), by sender and
    subject (~10 %), by a sender nobody uses;
  - routes, all match: the same with the third route by a sender every message has, so
    every summary is published twice (the worst case);
  - search: `search = 'FROM "alice@example.com"'`, which every message matches, so the
    same summaries are published after one more SEARCH per sync;
  - plain again: a second plain run in each round, the spread between identical runs.

    .venv/bin/python -m bench.routes [--messages 1000] [--repeat 7] [--results FILE]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

from bench.servers import servers
from bench.throughput import bridge_once, corpus, load

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
    parser.add_argument("--repeat", type=int, default=7, help="rounds (median per run)")
    parser.add_argument("--results", type=Path, help="append the table to this Markdown file")
    args = parser.parse_args()
    n = args.messages
    times: list[list[float]] = [[] for _ in RUNS]
    cpus: list[list[float]] = [[] for _ in RUNS]
    with servers() as rig:
        load(rig.dovecot.port, rig.pki.ca_file, rig.token(), "INBOX", corpus(n))
        # round-robin, so that a machine whose load changes meanwhile affects every run alike
        for round_ in range(args.repeat):
            for i, (label, extra) in enumerate(RUNS):
                config = rig.config(folders=[{"name": "INBOX", "topic": "inbox",
                                              "backfill": n, **extra}])
                name = f"routes{i}-{round_}"
                result = bridge_once(rig.work, config, rig.broker.port, name, "inbox", n,
                                     name, "info")
                times[i].append(result["seconds"])
                cpus[i].append(result["cpu"])
                print(f"round {round_}, {label}: {result['seconds']:.3f} s, "
                      f"{result['cpu']:.2f} s CPU", flush=True)
    medians = [statistics.median(t) for t in times]
    cpu = [statistics.median(c) for c in cpus]
    plain, plain_cpu = (medians[0] + medians[-1]) / 2, (cpu[0] + cpu[-1]) / 2
    lines = ["| run | messages | backlog s (median) | min-max s | vs plain | bridge CPU s "
             "(median) | vs plain |", "|---|---|---|---|---|---|---|"]
    for i, (label, _) in enumerate(RUNS):
        lines.append(f"| {label} | {n} | {medians[i]:.3f} | {min(times[i]):.3f}-"
                     f"{max(times[i]):.3f} | {(medians[i] / plain - 1) * 100:+.1f} % | "
                     f"{cpu[i]:.2f} | {(cpu[i] / plain_cpu - 1) * 100:+.1f} % |")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if args.results:
        with args.results.open("a") as out:
            out.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
