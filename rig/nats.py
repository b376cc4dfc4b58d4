"""A real broker cluster on loopback: three NATS servers routed together, each with an MQTT
listener, JetStream clustered under them.

NATS keeps MQTT sessions and retained messages in JetStream streams replicated across the
nodes, so a retained message or a Last Will published through one node reaches subscribers
on the others: what a bridge needs from a cluster (EMQX, HiveMQ and VerneMQ do the same).
NATS 2.9 speaks MQTT 3.1.1 only, with QoS 0 and 1.
"""

from __future__ import annotations

import logging
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from rig.procs import Service, free_port, spawn, terminate, wait_until_ready

_LOGGER = logging.getLogger(__name__)

READY_TIMEOUT = 90.0  # seconds for JetStream to elect its leaders on a loaded machine


@dataclass
class _Node:
    name: str
    client_port: int
    cluster_port: int
    mqtt_port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_file(self) -> Path:
        return self.workdir / "nats.log"


class NatsCluster(Service):
    """`nats-server -c CONF` three times; `mqtt_ports[i]` is node i's MQTT listener."""

    def __init__(self, workdir: Path, *, nodes: int = 3, host: str = "127.0.0.1") -> None:
        self.host = host
        self._nodes = [
            _Node(f"n{i}", free_port(host), free_port(host), free_port(host), workdir / f"n{i}")
            for i in range(nodes)
        ]

    @property
    def mqtt_ports(self) -> list[int]:
        return [node.mqtt_port for node in self._nodes]

    def start(self) -> None:
        for node in self._nodes:
            node.workdir.mkdir(parents=True, exist_ok=True)
            conf = node.workdir / "nats.conf"
            conf.write_text(self._config(node))
            node.proc = spawn(["nats-server", "-c", str(conf)], node.log_file)
        try:
            for node in self._nodes:
                self._wait_ready(node)
        except BaseException:
            self.stop()  # `with` never reaches its exit when the start fails
            raise
        _LOGGER.debug("NATS cluster, MQTT on %s", self.mqtt_ports)

    def stop(self) -> None:
        for node in self._nodes:
            terminate(node.proc)
            node.proc = None

    def _wait_ready(self, node: _Node) -> None:
        """Ready when an MQTT client is accepted: NATS refuses MQTT connections until
        JetStream, clustered, has the streams MQTT keeps its state in."""
        if node.proc is not None:
            wait_until_ready(node.proc, lambda: _mqtt_accepts(self.host, node.mqtt_port),
                             what=f"nats-server {node.name}'s MQTT", log_file=node.log_file,
                             timeout=READY_TIMEOUT, interval=0.5)

    def _config(self, node: _Node) -> str:
        routes = ", ".join(f'"nats-route://{self.host}:{other.cluster_port}"'
                           for other in self._nodes if other is not node)
        return "\n".join([
            f'server_name: "{node.name}"',
            f'listen: "{self.host}:{node.client_port}"',
            f'jetstream {{ store_dir: "{node.workdir / "jetstream"}" }}',
            f'cluster {{ name: "rig", listen: "{self.host}:{node.cluster_port}", '
            f"routes: [{routes}] }}",
            f'mqtt {{ listen: "{self.host}:{node.mqtt_port}" }}',
            "",
        ])


def _mqtt_accepts(host: str, port: int) -> bool:
    """Whether an MQTT 3.1.1 CONNECT to host:port gets a CONNACK that accepts it."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"ready-{uuid.uuid4().hex[:8]}",
                         protocol=paho.MQTTv311)
    try:
        client.connect(host, port, keepalive=10)
        client.loop_start()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not client.is_connected():
            time.sleep(0.05)
        return client.is_connected()
    except OSError:
        return False
    finally:
        client.disconnect()
        client.loop_stop()
