"""A self-contained local demo: the rig's servers, a bridge against them, live traffic.

Starts an identity-platform stand-in, Dovecot and Mosquitto on loopback, registers an
app, runs `outlook2mqtt run` against them, delivers a few sample mails, marks one read
over MQTT, and prints every MQTT message until Ctrl-C (or, with --once, until the
mark_read round trip is done).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bridge.util.signals import handle_signals

from .bridgecfg import rig_config, write_config
from .dovecot import Dovecot
from .idp import IdentityPlatform
from .mosquitto import Mosquitto
from .mqttsub import Collector, Received
from .pki import TestPKI
from .samples import DEMO_MESSAGES

BASE = "outlook2mqtt"
MAILBOX = "demo@contoso.test"


def _show(msg: Received) -> None:
    payload: str
    try:
        payload = json.dumps(json.loads(msg.payload), ensure_ascii=False)
    except ValueError:
        text = msg.payload.decode("utf-8", "replace")
        short_text = len(text) <= 80 and text.isprintable()
        payload = text if short_text else f"<{len(msg.payload)} bytes>"
    if len(payload) > 300:
        payload = payload[:297] + "..."
    flag = " (retained)" if msg.retain else ""
    print(f"  {msg.topic}{flag}\n      {payload}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo", description=__doc__)
    parser.add_argument("--once", action="store_true", help="exit after the mark_read round trip")
    args = parser.parse_args(argv)
    stop = threading.Event()
    # on a thread of its own: a Ctrl-C the kernel hands to another thread still wakes us
    handle_signals(lambda _signum: stop.set(), (signal.SIGINT, signal.SIGTERM))

    with tempfile.TemporaryDirectory(prefix="outlook2mqtt-demo-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        pki = TestPKI(work / "pki")
        with (
            IdentityPlatform(pki) as idp,
            Dovecot(pki, idp.introspection_url, work / "dovecot") as dovecot,
            Mosquitto(work / "mosquitto") as broker,
        ):
            tenant = idp.add_tenant()
            app = idp.register_app(tenant, secret="demo-secret-value", mailboxes=[MAILBOX])
            config = rig_config(
                authority=idp.authority, ca_file=pki.ca_file, imap_port=dovecot.port,
                mqtt_port=broker.port, tenant_id=tenant, client_id=app.client_id,
                mailbox=MAILBOX, secret="demo-secret-value", state_dir=work / "state",
                base_topic=BASE, poll_interval=2,
            )
            path = write_config(work / "config.toml", config)
            print(f"Demo rig: identity stand-in {idp.authority}, IMAP 127.0.0.1:{dovecot.port}, "
                  f"MQTT 127.0.0.1:{broker.port}")
            print(f"Watch it yourself: mosquitto_sub -h 127.0.0.1 -p {broker.port} "
                  f"-t '{BASE}/#' -v")
            print(f"Bridge config: {path}\n", flush=True)
            bridge = subprocess.Popen(
                [sys.executable, "-m", "bridge", "run", "-c", str(path)],
                stdout=subprocess.DEVNULL, stderr=open(work / "bridge.log", "wb"),  # noqa: SIM115
            )
            try:
                return _drive(broker.port, dovecot, stop, once=args.once, work=work)
            finally:
                bridge.send_signal(signal.SIGTERM)
                bridge.wait(15)
                print(f"\nBridge stopped (exit {bridge.returncode}).")


def _drive(port: int, dovecot: Dovecot, stop: threading.Event, *, once: bool, work: Path) -> int:
    with Collector("127.0.0.1", port, [f"{BASE}/#"], on_message=_show) as sub:
        sub.wait_for(lambda m: m.topic == f"{BASE}/bridge/state" and m.payload == b"online",
                     timeout=60)
        print("\n== bridge online: delivering sample mail ==", flush=True)
        for raw in DEMO_MESSAGES:
            dovecot.deliver(MAILBOX, raw)
            time.sleep(0.5)
        msgs = sub.wait_topic(f"{BASE}/home/inbox/message", count=len(DEMO_MESSAGES), timeout=60)
        uid = msgs[0].json()["uid"]
        print(f"\n== marking UID {uid} read over MQTT ==", flush=True)
        sub.publish(f"{BASE}/home/command",
                    json.dumps({"action": "mark_read", "folder": "INBOX", "uids": [uid],
                                "id": "demo-1"}))
        reply = sub.wait_topic(f"{BASE}/home/command/result", timeout=30)[0].json()
        seen = "\\Seen" in dovecot.flags(MAILBOX).get(uid, set())
        print(f"\n== reply {reply['status']}; \\Seen on the server: {seen} ==", flush=True)
        if once:
            return 0 if reply["status"] == "ok" and seen else 1
        print(f"Press Ctrl-C to stop. (Bridge log: {work / 'bridge.log'})", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
