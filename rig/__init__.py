"""Real servers on loopback for tests and the demo: identity platform, Dovecot, Mosquitto,
Home Assistant."""

from rig.procs import free_port

__all__ = ["free_port"]
