"""The other bridges on this base topic, read from their retained `info` and `state`, and
the accounts of this bridge that one of them serves too.

Two bridges serving one account both publish its retained topics and both run its
commands: a configuration mistake that corrupts state without a visible failure. Every
overlap is logged (ERROR while the other bridge is online); the service refuses to start
over one found at start. `Peers` is fed from paho's network thread, so it never blocks;
`check_at_start` waits, on the caller's thread.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from bridge.mqtt.client import MqttClient
from bridge.mqtt.topics import Topics

_LOGGER = logging.getLogger(__name__)

# A bridge is running unless its retained state says `offline` (its Last Will, or a clean
# stop): one that has just connected has published its info but not yet `online`.
OFFLINE = b"offline"


@dataclass(frozen=True)
class Overlap:
    """Accounts of this bridge that another bridge lists in its info."""

    instance: str | None  # the other bridge; None: the one without an instance
    accounts: tuple[str, ...]
    online: bool
    info_topic: str

    @property
    def peer(self) -> str:
        if self.instance is None:
            return "the bridge without an instance"
        return f"instance {self.instance!r}"

    def describe(self) -> str:
        names = ", ".join(repr(a) for a in self.accounts)
        noun = "account" if len(self.accounts) == 1 else "accounts"
        return f"{noun} {names} also served by {self.peer} ({self.info_topic})"


def info_accounts(payload: bytes) -> frozenset[str]:
    """The account names an info payload lists; none when it is empty or not an info."""
    try:
        accounts = json.loads(payload)["accounts"]
        return frozenset(a["name"] for a in accounts if isinstance(a.get("name"), str))
    except (ValueError, KeyError, TypeError, AttributeError):
        return frozenset()


def report(overlap: Overlap) -> None:
    """Log an overlap: an ERROR while the other bridge runs, else how to clear its info."""
    if overlap.online:
        _LOGGER.error("%s: both bridges publish its retained topics and run its commands; "
                      "remove it from one of the two configs", overlap.describe())
    else:
        _LOGGER.warning("%s, which is offline: if that bridge was retired or the account "
                        "moved here, clear its info: mosquitto_pub -r -n -t '%s'",
                        overlap.describe(), overlap.info_topic)


class Peers:
    """What the other bridges announced; `overlaps` says which of our accounts they list."""

    def __init__(self, topics: Topics, accounts: Iterable[str]) -> None:
        self._topics = topics
        self._own = frozenset(accounts)
        self._lock = threading.Lock()
        self._accounts: dict[str | None, frozenset[str]] = {}
        self._offline: set[str | None] = set()
        self._reported: dict[str | None, Overlap | None] = {}
        self._live = False
        self.fenced = threading.Event()  # the start check's fence came back

    @property
    def fence_topic(self) -> str:
        return self._topics.bridge_fence

    @property
    def filters(self) -> list[str]:
        """What to subscribe to: states before infos, so that with a broker that keeps
        the order a bridge's state is known when its info arrives."""
        found = [*self._topics.peer_filters("state"), *self._topics.peer_filters("info")]
        return [*found, self._topics.bridge_fence] if self._topics.instance else found

    def handle(self, topic: str, payload: bytes) -> bool:
        """Take a message if it is another bridge's info or state (or our fence)."""
        if topic == self._topics.bridge_fence:
            self.fenced.set()
            return True
        peer = self._topics.peer_of(topic)
        if peer is None or peer[1] not in ("state", "info"):
            return False
        instance, leaf = peer
        if instance == self._topics.instance:
            return True  # our own, retained from an earlier run
        with self._lock:
            if leaf == "info":
                self._accounts[instance] = info_accounts(payload)
            elif payload.strip() == OFFLINE:
                self._offline.add(instance)
            else:
                self._offline.discard(instance)
            changed = self._changed(instance) if self._live else None
        if changed is not None:
            report(changed)
        return True

    def _overlap(self, instance: str | None) -> Overlap | None:
        shared = self._accounts.get(instance, frozenset()) & self._own
        if not shared:
            return None
        return Overlap(instance, tuple(sorted(shared)), instance not in self._offline,
                       self._topics.info_of(instance))

    def _changed(self, instance: str | None) -> Overlap | None:
        """The overlap with `instance` if it differs from the one reported last."""
        overlap = self._overlap(instance)
        if overlap == self._reported.get(instance):
            return None
        self._reported[instance] = overlap
        return overlap

    def go_live(self) -> list[Overlap]:
        """Report every overlap found so far, and each new or changed one from now on;
        return those found so far."""
        with self._lock:
            self._live = True
            found = [o for o in map(self._changed, list(self._accounts)) if o is not None]
        for overlap in found:
            report(overlap)
        return found


def check_at_start(mqtt: MqttClient, peers: Peers, timeout: float) -> list[Overlap]:
    """The overlaps in the other bridges' retained info and state, read up to the fence
    published after subscribing to them (a broker sends a subscription's retained
    messages before the messages published after it). `mqtt` is started and subscribed
    to `peers.filters`; from here on every new overlap is logged as it arrives."""
    deadline = time.monotonic() + timeout
    if not mqtt.wait_connected(timeout):
        _LOGGER.warning("no MQTT broker (%s): starting without checking the other bridges; "
                        "an account one of them serves is logged when its info arrives",
                        mqtt.last_error or "not connected yet")
    else:
        mqtt.publish(peers.fence_topic, b"", qos=1)
        if not peers.fenced.wait(max(0.0, deadline - time.monotonic())):
            _LOGGER.warning("the broker did not return the start check's fence within %.0f s: "
                            "checked the other bridges' info received so far", timeout)
    return peers.go_live()
