"""When messages reach a subscriber, timed by `mosquitto_sub` (C).

The throughput runs are CPU-bound on a 2-core rig. A Python subscriber (paho) takes
~0.12 s of CPU to receive 1000 summaries and cannot receive them faster than ~0.2 s,
which is CPU and time the measured process does not get; `mosquitto_sub` costs almost
nothing. Both the naive loop and the bridge are timed by it, from their start marker
(`<base>/bridge/state` = `online`) to the last summary.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from dataclasses import dataclass

from bench.servers import ACCOUNT
from bridge.mqtt.topics import Topics

_UID = re.compile(r'"uid": (\d+)')


@dataclass(frozen=True)
class Timing:
    started: float  # time.time() of the start marker
    last: float  # time.time() of the last summary
    uids: list[int]  # summary UIDs in arrival order

    @property
    def seconds(self) -> float:
        """Start marker to last summary."""
        return self.last - self.started


class Arrivals:
    """Subscribes to the start marker of `base` and the summaries of the bench account's
    folder `folder_topic` until `count` summaries arrived."""

    def __init__(self, port: int, base: str, folder_topic: str, count: int) -> None:
        topics = Topics(base)
        start_topic = topics.bridge_state
        summary_topic = topics.folder_message(ACCOUNT, folder_topic)
        self._start_topic, self._summary_topic, self._count = start_topic, summary_topic, count
        probe = f"{start_topic}/probe"
        # A file, not a pipe: a full pipe would stall mosquitto_sub and so the broker.
        self._out = tempfile.TemporaryFile("w+", errors="replace")  # noqa: SIM115
        # -C counts every message: the probe, the start marker and the summaries.
        self._proc = subprocess.Popen(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-V", "5",
             "-t", probe, "-t", start_topic, "-t", summary_topic, "-C", str(count + 2),
             "-F", "%U %t %p"],
            stdout=self._out)
        # Subscribed once a probe comes back (mosquitto_sub says nothing when it subscribes).
        deadline = time.monotonic() + 10
        while not self._lines():
            if time.monotonic() > deadline or self._proc.poll() is not None:
                self.close()
                raise RuntimeError("mosquitto_sub did not subscribe")
            subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", "1",
                            "-t", probe, "-m", "probe"], check=True, timeout=10)
            time.sleep(0.1)

    def _lines(self) -> list[str]:
        self._out.seek(0)
        return self._out.read().splitlines()

    def result(self, timeout: float) -> Timing:
        """Wait for every summary; raise if they do not all come within `timeout`."""
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        started, last, uids = None, 0.0, []
        for line in self._lines():
            stamp, topic, payload = [*line.split(" ", 2), "", ""][:3]
            if topic == self._start_topic and payload == "online" and started is None:
                started = float(stamp)
            elif topic == self._summary_topic and (match := _UID.search(payload)):
                uids.append(int(match.group(1)))
                last = float(stamp)
        if started is None or len(uids) < self._count:
            raise RuntimeError(f"{len(uids)} of {self._count} summaries arrived")
        return Timing(started, last, uids)

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._out.close()
