"""Real servers on loopback for tests and the demo: identity platform, Dovecot, Mosquitto,
a NATS cluster, Home Assistant. Imports nothing of the bridge, but for the demo's signal
handling (`bridge.util.signals`)."""

from rig.procs import free_port

__all__ = ["free_port"]
