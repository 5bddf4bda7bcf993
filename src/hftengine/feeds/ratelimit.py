"""Client-side protection for a rate-limited broker API: token bucket and circuit breaker.

``TokenBucket`` spaces requests: it holds at most ``burst`` tokens and refills
at ``rate`` tokens per second, so over any window of ``w`` seconds at most
``burst + rate * w`` requests start.  One bucket is shared by every request
made with one credential (the broker limits the credential, not the socket).

``CircuitBreaker`` stops hammering a broker that keeps failing::

    closed --(failure_threshold consecutive failures)--> open
    open   --(reset_timeout_s elapsed)-----------------> half_open
    half_open --(probe succeeds)--> closed
    half_open --(probe fails)-----> open (timer restarts)

Its state is exported as a Prometheus gauge (0 closed, 1 open, 2 half-open)
and every transition is counted.  Metrics are created once per
``CollectorRegistry`` (cached), so several breakers and repeated test setups
never trip prometheus_client's duplicate-registration error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from hftengine.promutil import once_per_registry

log = logging.getLogger(__name__)

Clock = Callable[[], float]
_EPS = 1e-9
Sleep = Callable[[float], Awaitable[None]]


class TokenBucket:
    """Async token bucket: ``rate`` tokens per second, at most ``burst`` stored.

    The bucket starts full.  ``acquire()`` waits (FIFO, one waiter at a time)
    until a token is available and takes it.  ``clock`` and ``sleep`` are
    injectable so unit tests can run on a simulated clock.
    """

    def __init__(
        self, rate: float, burst: float = 1.0, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0 tokens/s, got {rate}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._updated = clock()
        self._lock: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate:g}/s, burst={self.burst:g})"

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._updated = now

    @property
    def tokens(self) -> float:
        """Tokens available now."""
        self._refill()
        return self._tokens

    def try_acquire(self, tokens: float = 1.0) -> bool:
        """Take ``tokens`` if available now, without waiting."""
        self._refill()
        if self._tokens >= tokens - _EPS:
            self._tokens = max(0.0, self._tokens - tokens)
            return True
        return False

    async def acquire(self, tokens: float = 1.0) -> float:
        """Wait until ``tokens`` are available and take them; returns the seconds waited."""
        if tokens > self.burst:
            raise ValueError(f"cannot take {tokens} tokens from a bucket of {self.burst}")
        if self._lock is None:
            self._lock = asyncio.Lock()
        waited = 0.0
        async with self._lock:
            while True:
                self._refill()
                if self._tokens >= tokens - _EPS:  # tolerate float round-off of the refill
                    self._tokens = max(0.0, self._tokens - tokens)
                    return waited
                delay = (tokens - self._tokens) / self.rate
                await self._sleep(delay)
                waited += delay


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


STATE_VALUE = {BreakerState.CLOSED: 0, BreakerState.OPEN: 1, BreakerState.HALF_OPEN: 2}


@dataclass(frozen=True, slots=True)
class BreakerMetrics:
    state: Gauge
    transitions: Counter
    rejected: Counter


@once_per_registry
def breaker_metrics(registry: CollectorRegistry) -> BreakerMetrics:
    """The breaker metrics registered in ``registry`` (created on first use)."""
    return BreakerMetrics(
        state=Gauge(
            "hft_feed_breaker_state",
            "Circuit breaker state per credential (0 closed, 1 open, 2 half-open)",
            ["breaker"],
            registry=registry,
        ),
        transitions=Counter(
            "hft_feed_breaker_transitions",
            "Circuit breaker transitions by target state",
            ["breaker", "state"],
            registry=registry,
        ),
        rejected=Counter(
            "hft_feed_breaker_rejected",
            "Calls not attempted because the breaker was open",
            ["breaker"],
            registry=registry,
        ),
    )


class CircuitBreaker:
    """Consecutive-failure circuit breaker with half-open probes.

    Use ``allow()`` before a call and ``record_success()`` /
    ``record_failure()`` after it.  ``transitions`` keeps the history
    ``[(from, to), ...]`` for tests and diagnostics.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        reset_timeout_s: float = 30.0,
        half_open_max_calls: int = 1,
        registry: CollectorRegistry = REGISTRY,
        clock: Clock = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        if reset_timeout_s <= 0:
            raise ValueError("reset_timeout_s must be > 0")
        if half_open_max_calls < 1:
            raise ValueError("half_open_max_calls must be >= 1")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self.half_open_max_calls = half_open_max_calls
        self._clock = clock
        self._metrics = breaker_metrics(registry)
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probes = 0
        self.transitions: list[tuple[BreakerState, BreakerState]] = []
        self._metrics.state.labels(name).set(STATE_VALUE[self._state])

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, state={self._state.value}, failures={self._failures})"

    # ---------------------------------------------------------------- state
    def _move(self, new: BreakerState) -> None:
        old = self._state
        if old is new:
            return
        self._state = new
        self.transitions.append((old, new))
        self._metrics.state.labels(self.name).set(STATE_VALUE[new])
        self._metrics.transitions.labels(self.name, new.value).inc()
        if new is BreakerState.OPEN:
            self._opened_at = self._clock()
            log.warning("circuit breaker %s opened after %d consecutive failures", self.name, self._failures)
        else:
            log.info("circuit breaker %s: %s -> %s", self.name, old.value, new.value)
        if new is BreakerState.HALF_OPEN:
            self._probes = 0

    @property
    def state(self) -> BreakerState:
        """Current state; an open breaker turns half-open once its timeout has elapsed."""
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.reset_timeout_s:
            self._move(BreakerState.HALF_OPEN)
        return self._state

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when calls are allowed)."""
        state = self.state
        if state is BreakerState.OPEN:
            return max(0.0, self.reset_timeout_s - (self._clock() - self._opened_at))
        return 0.0

    # ---------------------------------------------------------------- calls
    def allow(self) -> bool:
        """May a call go out now?  In half-open state only ``half_open_max_calls`` probes may."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and self._probes < self.half_open_max_calls:
            self._probes += 1
            return True
        self._metrics.rejected.labels(self.name).inc()
        return False

    def record_success(self) -> None:
        self._failures = 0
        if self._state is not BreakerState.CLOSED:
            self._move(BreakerState.CLOSED)

    def record_failure(self) -> None:
        self._failures += 1
        if self._state is BreakerState.HALF_OPEN:
            self._move(BreakerState.OPEN)
        elif self._state is BreakerState.CLOSED and self._failures >= self.failure_threshold:
            self._move(BreakerState.OPEN)
