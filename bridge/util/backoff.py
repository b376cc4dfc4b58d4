"""Capped, jittered exponential backoff for reconnect loops."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# Doublings that count: far past any cap. Uncapped, 2.0 ** attempts overflows a float
# after 1023 attempts, which a five-minute cap reaches in an outage of three and a half days.
_MAX_DOUBLINGS = 64


@dataclass
class Backoff:
    """Delays of 1 s, 2 s, 4 s ... up to `cap`, each with +-20 % jitter ("full" jitter is
    too eager for IMAP logins, which Exchange throttles)."""

    initial: float = 1.0
    cap: float = 300.0
    jitter: float = 0.2
    _attempt: int = field(default=0, init=False)
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def next_delay(self) -> float:
        base = min(self.cap, self.initial * 2.0 ** min(self._attempt, _MAX_DOUBLINGS))
        self._attempt += 1
        return max(0.0, base * (1 + self._rng.uniform(-self.jitter, self.jitter)))

    def reset(self) -> None:
        self._attempt = 0

    @property
    def attempts(self) -> int:
        return self._attempt
