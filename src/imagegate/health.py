"""Endpoint health: recent latency, speed, errors and 429s, and a circuit breaker.

Each endpoint keeps a short window of outcomes. The breaker opens after consecutive
failures and stops traffic for a cool-down; then traffic is let through again (half-open):
a success closes it, a failure re-opens it for twice as long (up to a ceiling).
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

WINDOW_S = 300.0
MAX_SAMPLES = 200


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failures_to_open: int = 5
    cooldown_s: float = 30.0
    max_cooldown_s: float = 300.0


@dataclass(frozen=True, slots=True)
class Outcome:
    at: float
    ok: bool
    latency_s: float
    megapixels: float
    status: int


@dataclass
class EndpointHealth:
    policy: BreakerPolicy
    outcomes: deque[Outcome] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))
    consecutive_failures: int = 0
    open_until: float | None = None
    cooldown_s: float = 0.0

    def record(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        if outcome.ok:
            self.consecutive_failures = 0
            self.open_until = None
            self.cooldown_s = 0.0
        else:
            self.consecutive_failures += 1
            if self.consecutive_failures >= self.policy.failures_to_open:
                self.cooldown_s = min(
                    self.policy.max_cooldown_s, self.cooldown_s * 2 or self.policy.cooldown_s
                )
                self.open_until = outcome.at + self.cooldown_s

    def state(self, now: float) -> str:
        if self.open_until is None:
            return "closed"
        return "open" if now < self.open_until else "half-open"

    def recent(self, now: float) -> list[Outcome]:
        return [o for o in self.outcomes if o.at >= now - WINDOW_S]

    def latency_p50(self, now: float) -> float | None:
        samples = [o.latency_s for o in self.recent(now) if o.ok]
        return statistics.median(samples) if samples else None

    def seconds_per_megapixel(self, now: float) -> float | None:
        samples = [o.latency_s / o.megapixels for o in self.recent(now) if o.ok and o.megapixels > 0]
        return statistics.median(samples) if samples else None

    def error_rate(self, now: float) -> float:
        recent = self.recent(now)
        return sum(not o.ok for o in recent) / len(recent) if recent else 0.0

    def recent_429s(self, now: float) -> int:
        return sum(o.status == 429 for o in self.recent(now))


class HealthBook:
    """Health of every endpoint this process has called, by endpoint key."""

    def __init__(self, policy: BreakerPolicy = BreakerPolicy(), clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.clock = clock
        self._endpoints: dict[str, EndpointHealth] = {}

    def of(self, key: str) -> EndpointHealth:
        if key not in self._endpoints:
            self._endpoints[key] = EndpointHealth(self.policy)
        return self._endpoints[key]

    def record(self, key: str, *, ok: bool, latency_s: float, megapixels: float = 0.0, status: int = 200) -> None:
        self.of(key).record(Outcome(self.clock(), ok, latency_s, megapixels, status))

    def is_open(self, key: str) -> bool:
        return self.of(key).state(self.clock()) == "open"

    def snapshot(self, key: str) -> dict[str, object]:
        now = self.clock()
        health = self.of(key)
        return {
            "state": health.state(now),
            "latency_p50_s": health.latency_p50(now),
            "seconds_per_megapixel": health.seconds_per_megapixel(now),
            "error_rate": health.error_rate(now),
            "recent_429s": health.recent_429s(now),
        }
