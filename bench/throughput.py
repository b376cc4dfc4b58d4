"""Backlog throughput, IMAP round trips and peak memory: the bridge beside a naive loop.

Loads N messages (mixed sizes, 10 % with attachments) into a rig Dovecot, then
  - runs a naive loop in its own process: per message one `UID FETCH ... BODY.PEEK[]`,
    `summarize`, and publishes (attachments, then the summary), each awaited before the
    next;
  - runs `outlook2mqtt run` with `backfill = N` (median of --repeat runs at log level info).
Both publish the same summaries and attachments to the same Mosquitto, and both are timed
the same way, by a `mosquitto_sub` subscriber (`bench.arrivals`): from their start marker
(`online` on `<base>/bridge/state`; the bridge publishes it once its folders are selected,
the naive loop just before its first FETCH) to the arrival of the last summary. Then the
same over a proxy that adds --rtt-ms of round trip to IMAP (`bench.delay`: Exchange Online
is not on loopback), and a mailbox of 51 messages with a 25 MB attachment, published (the
folder's limit is raised), for peak memory.

IMAP round trips: counted in one more bridge run at log level debug, where imapclient logs
every command it sends ("> b'TAG COMMAND ...'"; login, SELECT, SEARCH included). Peak RSS:
VmHWM of the process (/proc/PID/status). The naive loop gets the same imaplib fix as the
bridge (no repr() of every literal, `bridge.imap.fetchparse.literals_unlogged`), so the comparison
is about fetching alone.

    .venv/bin/python -m bench.throughput [--messages 1000] [--rtt-ms 10] [--repeat 3]
                                         [--no-big] [--results bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from imapclient import IMAPClient

from bench.arrivals import Arrivals
from bench.delay import DelayProxy
from bench.servers import ACCOUNT, MAILBOX, servers
from bridge.config.model import FolderConfig, MqttConfig
from bridge.imap.fetchparse import literals_unlogged
from bridge.mail.message import StoredMessage, summarize
from bridge.mail.policy import SummaryOptions
from bridge.mailbox.publisher import summary_options
from bridge.mqtt.client import MqttClient
from bridge.mqtt.topics import Topics
from rig.bridgecfg import write_config
from rig.samples import TINY_PDF, make_message

BIG = 25 * 1000 * 1000
_COMMAND = re.compile(r"imapclient\.imaplib: > b'\S+ (?:UID )?([A-Z]+)")
_WORDS = ("invoice", "parcel", "meeting", "report", "update", "delivery", "schedule",
          "project", "budget", "review", "contract", "order", "weekly", "summary", "team",
          "holiday", "reminder", "agenda", "notes", "draft")


# -- the mail -------------------------------------------------------------------------------


def corpus(n: int, seed: int = 1) -> list[bytes]:
    """N messages: text of 200 B to 40 KB, a third with an HTML alternative, 10 % with one
    or two attachments of 10 KB to 1 MB."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = int(30 * 200 ** rng.random())  # log-uniform: 30 to 6000 words
        text = " ".join(rng.choice(_WORDS) for _ in range(words))
        html = f"<html><body><p>{text}</p></body></html>" if rng.random() < 0.33 else None
        attachments = []
        if i % 10 == 5:
            for j in range(rng.choice((1, 1, 2))):
                size = int(10_000 * 100 ** rng.random())
                data = TINY_PDF + rng.randbytes(size)
                attachments.append((f"doc-{i}-{j}.pdf", "application/pdf", data))
        out.append(make_message(subject=f"bench {i}: {rng.choice(_WORDS)}", to=MAILBOX,
                                text=text, html=html, attachments=attachments))
    return out


def _imap(port: int, ca: Path, token: str) -> IMAPClient:
    client = IMAPClient("127.0.0.1", port=port, ssl=True, timeout=120,
                        ssl_context=ssl.create_default_context(cafile=str(ca)))
    client.oauth2_login(MAILBOX, token)
    return client


def load(port: int, ca: Path, token: str, folder: str, messages: list[bytes]) -> None:
    client = _imap(port, ca, token)
    if folder != "INBOX":
        client.create_folder(folder)
    for raw in messages:
        client.append(folder, raw)
    client.logout()


def vm_hwm(pid: int) -> int:
    """Peak resident set size of a process, in bytes (/proc/PID/status VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (/proc/PID/stat utime, stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the naive loop (run in its own process, for its own VmHWM) ---------------------------


def naive_worker(spec: dict[str, Any]) -> dict[str, Any]:
    client = _imap(spec["imap_port"], Path(spec["ca"]), spec["token"])
    client.normalise_times = False
    folder = FolderConfig(name=spec["folder"], topic=spec["topic"],
                          max_attachment_bytes=spec["max_attachment_bytes"])
    mqtt = MqttClient(MqttConfig(host="127.0.0.1", port=spec["mqtt_port"],
                                 client_id="naive-loop"))
    mqtt.start()
    mqtt.wait_connected(10)
    client.select_folder(folder.name, readonly=True)
    uids = sorted(client.search(["ALL"]))
    topics = Topics(spec["base"])
    options = summary_options(
        folder, account=ACCOUNT, folder_name=folder.name, uidvalidity=1,
        attachment_topic_prefix=topics.attachment_prefix(ACCOUNT, folder.topic))
    mqtt.publish(topics.bridge_state, "online").wait(10)  # the timer's start
    with literals_unlogged(client):  # as the bridge fetches
        for uid in uids:
            _naive_publish(client, mqtt, options, topics.folder_message(ACCOUNT, folder.topic),
                           uid)
    mqtt.stop()
    client.logout()
    return {"messages": len(uids), "round_trips": len(uids) + 2, "fetches": len(uids),
            "vmhwm": vm_hwm(os.getpid())}


def _naive_publish(client: IMAPClient, mqtt: MqttClient, options: SummaryOptions,
                   summary_topic: str, uid: int) -> None:
    """One message: fetched whole, summarized, published, each publish awaited."""
    data = client.fetch([uid], [b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE", b"BODY.PEEK[]"])[uid]
    stored = StoredMessage(uid, flags=list(data[b"FLAGS"]), internaldate=data[b"INTERNALDATE"],
                           size=data[b"RFC822.SIZE"])
    summary = summarize(data[b"BODY[]"], options, stored)
    del data
    for att in summary.attachments:
        if att.topic is not None:
            mqtt.publish(att.topic, att.data, user_properties=[
                ("filename", att.filename or ""), ("content_type", att.content_type),
                ("size", str(att.size))]).wait(60)
    mqtt.publish(summary_topic, json.dumps(summary.payload)).wait(60)


def run_naive(spec: dict[str, Any], count: int) -> dict[str, Any]:
    """The naive loop in its own process, timed like the bridge (`bench.arrivals`)."""
    arrivals = Arrivals(spec["mqtt_port"], spec["base"], spec["topic"], count)
    try:
        out = subprocess.run([sys.executable, "-m", "bench.throughput", "--naive-worker",
                              json.dumps(spec)], capture_output=True, text=True, check=True,
                             timeout=600)
        timing = arrivals.result(timeout=30)
    finally:
        arrivals.close()
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return {**result, "seconds": timing.seconds}


# -- the bridge -------------------------------------------------------------------------------


def run_bridge(work: Path, config: dict[str, Any], broker_port: int, base: str, topic: str,
               count: int, name: str, repeat: int) -> dict[str, Any]:
    """Time runs at log level info (median of `repeat`); count IMAP commands in one more
    run at debug level (debug logging formats every IMAP line: it slows a run down)."""
    timed = median_run([bridge_once(work, config, broker_port, f"{base}-{i}", topic, count,
                                     f"{name}-info{i}", "info") for i in range(repeat)])
    bridge_once(work, config, broker_port, f"{base}-debug", topic, count,
                 f"{name}-debug", "debug")
    commands = _COMMAND.findall((work / f"{name}-debug.log").read_text(errors="replace"))
    return {**timed, "round_trips": len(commands), "fetches": commands.count("FETCH")}


def bridge_once(work: Path, config: dict[str, Any], broker_port: int, base: str, topic: str,
                 count: int, name: str, level: str) -> dict[str, Any]:
    config = {**config, "mqtt": {**config["mqtt"], "base_topic": base,
                                 "client_id": f"bench-{base}"},
              "bridge": {"state_dir": str(work / f"state-{name}")}}
    path = write_config(work / f"{name}.toml", config)
    log = work / f"{name}.log"
    arrivals = Arrivals(broker_port, base, topic, count)
    try:
        started = time.time()
        with log.open("wb") as out:
            bridge = subprocess.Popen(
                [sys.executable, "-m", "bridge", "run", "-c", str(path), "--log-level", level],
                stdout=out, stderr=subprocess.STDOUT)
        try:
            timing = arrivals.result(timeout=600)
            time.sleep(0.2)
            hwm, cpu = vm_hwm(bridge.pid), cpu_seconds(bridge.pid)
        finally:
            bridge.terminate()
            bridge.wait(30)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}; see {log}") from exc
    finally:
        arrivals.close()
    if timing.uids != sorted(timing.uids):
        raise RuntimeError("summaries not in UID order")
    return {"seconds": timing.seconds, "wall": timing.last - started, "messages": count,
            "vmhwm": hwm, "cpu": cpu}


# -- main -------------------------------------------------------------------------------------


def _row(name: str, r: dict[str, Any]) -> str:
    rate = r["messages"] / r["seconds"]
    return (f"| {name} | {r['messages']} | {r['seconds']:.2f} | {rate:.0f} | "
            f"{r['round_trips'] / r['messages']:.3f} | {r['fetches'] / r['messages']:.3f} | "
            f"{r['vmhwm'] / 2**20:.0f} |")


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median time (the rig shares its CPUs with whatever else runs)."""
    return sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--rtt-ms", type=float, default=10.0,
                        help="round trip to IMAP in the WAN-like runs (0: skip them)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs (median)")
    parser.add_argument("--no-big", action="store_true", help="skip the 25 MB runs")
    parser.add_argument("--results", type=Path, help="write the tables to this Markdown file")
    parser.add_argument("--naive-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive_worker:
        print(json.dumps(naive_worker(json.loads(args.naive_worker))))
        return 0
    n = args.messages
    rows: list[tuple[str, dict[str, Any]]] = []
    with servers() as rig, DelayProxy(rig.dovecot.port, args.rtt_ms / 1000) as wan:
        work, pki, broker, dovecot = rig.work, rig.pki, rig.broker, rig.dovecot
        token = rig.token()
        mail = corpus(n)
        load(dovecot.port, pki.ca_file, token, "INBOX", mail)
        print(f"loaded {n} messages, {sum(map(len, mail)) / 2**20:.1f} MiB, "
              f"{sum(b'filename=' in m for m in mail)} with attachments", flush=True)
        big_mail = corpus(50, seed=2)
        big_mail.insert(25, make_message(
            subject="25 MB", to=MAILBOX, text="big one",
            attachments=[("video.mp4", "video/mp4", random.Random(7).randbytes(BIG))]))
        if not args.no_big:
            load(dovecot.port, pki.ca_file, token, "Big", big_mail)

        def measure(label: str, port: int, folder: str, count: int, limit: int,
                    repeat: int, naive_repeat: int) -> None:
            topic = folder.lower()
            spec = {"imap_port": port, "ca": str(pki.ca_file), "token": token,
                    "mqtt_port": broker.port, "folder": folder, "topic": topic,
                    "max_attachment_bytes": limit}
            naive = median_run([run_naive({**spec, "base": f"naive{len(rows)}-{i}"}, count)
                                for i in range(naive_repeat)])
            rows.append((f"naive loop{label}", naive))
            print(_row(*rows[-1]), flush=True)
            config = rig.config(imap_port=port, folders=[{
                "name": folder, "topic": topic, "backfill": count,
                "max_attachment_bytes": limit}])
            bridge = run_bridge(work, config, broker.port, f"bridge{len(rows)}", topic,
                                count, f"bridge{len(rows)}", repeat)
            rows.append((f"outlook2mqtt{label}", bridge))
            print(_row(*rows[-1]), flush=True)

        measure("", dovecot.port, "INBOX", n, 10_000_000, args.repeat, args.repeat)
        if args.rtt_ms:  # the naive loop's time is mostly the RTTs: one run will do
            measure(f", {args.rtt_ms:g} ms RTT", wan.port, "INBOX", n, 10_000_000,
                    args.repeat, 1)
        if not args.no_big:
            measure(", 25 MB attachment", dovecot.port, "Big", len(big_mail),
                    30_000_000, 1, 1)
    table = [
        "| run | messages | backlog s | messages/s | IMAP commands/msg | FETCH/msg "
        "| peak RSS MiB |",
        "|---|---|---|---|---|---|---|",
        *(_row(name, r) for name, r in rows),
    ]
    summary = []
    for i in range(0, len(rows), 2):
        (label, naive), (_, bridge) = rows[i], rows[i + 1]
        speedup = naive["seconds"] / naive["messages"] / (bridge["seconds"] / bridge["messages"])
        summary.append(f"- {label.replace('naive loop', 'backlog') or 'backlog'}: "
                       f"{speedup:.1f}x the naive loop's throughput; bridge peak RSS "
                       f"{bridge['vmhwm'] / 2**20:.0f} MiB")
    text = "\n".join(table) + "\n\n" + "\n".join(summary) + "\n"
    print("\n" + text)
    if args.results:
        args.results.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
