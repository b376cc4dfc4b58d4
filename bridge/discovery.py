"""Home Assistant MQTT discovery payloads (CONTRACT §6): pure functions, no I/O."""

from __future__ import annotations

from .config import Config
from .topics import Topics


def build_discovery(config: Config, topics: Topics) -> dict[str, bytes]:
    """Every retained discovery config: topic -> JSON payload."""
    del config, topics
    return {}
