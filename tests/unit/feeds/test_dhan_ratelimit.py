"""Token bucket, circuit breaker and backoff on a simulated clock."""

from __future__ import annotations

import random

import pytest
from prometheus_client import REGISTRY, CollectorRegistry

from hftengine.feeds.dhan import backoff_delay, dhan_metrics
from hftengine.feeds.ratelimit import BreakerState, CircuitBreaker, TokenBucket, breaker_metrics


class SimClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def test_bucket_spaces_requests_at_the_rate() -> None:
    clock = SimClock()
    bucket = TokenBucket(rate=2.0, burst=1, clock=clock, sleep=clock.sleep)
    times = []
    for _ in range(10):
        await bucket.acquire()
        times.append(clock.now - 1000.0)
    assert times == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5])


async def test_bucket_burst_then_rate_and_never_more_than_burst_plus_rate_times_window() -> None:
    clock = SimClock()
    bucket = TokenBucket(rate=20.0, burst=3, clock=clock, sleep=clock.sleep)
    rng = random.Random(3)
    times = []
    for _ in range(300):
        if rng.random() < 0.2:  # idle gaps refill the bucket, up to the burst
            clock.now += rng.uniform(0, 0.5)
        await bucket.acquire()
        times.append(clock.now)
    assert times[:3] == [times[0]] * 3
    for i in range(len(times)):
        for j in range(i, len(times)):
            assert j - i + 1 <= 3 + 20.0 * (times[j] - times[i]) + 1e-6


async def test_bucket_try_acquire_and_validation() -> None:
    clock = SimClock()
    bucket = TokenBucket(rate=1.0, burst=1, clock=clock, sleep=clock.sleep)
    assert bucket.try_acquire() is True
    assert bucket.try_acquire() is False
    clock.now += 1.0
    assert bucket.try_acquire() is True
    with pytest.raises(ValueError):
        TokenBucket(rate=0)
    with pytest.raises(ValueError):
        TokenBucket(rate=1, burst=0.5)
    with pytest.raises(ValueError):
        await bucket.acquire(2)


def _state(registry: CollectorRegistry, name: str) -> float | None:
    return registry.get_sample_value("hft_feed_breaker_state", {"breaker": name})


def _transitions(registry: CollectorRegistry, name: str, state: str) -> float | None:
    return registry.get_sample_value("hft_feed_breaker_transitions_total", {"breaker": name, "state": state})


def state_of(br: CircuitBreaker) -> str:
    return br.state.value


def test_breaker_opens_half_opens_and_closes_with_metrics() -> None:
    clock = SimClock()
    registry = CollectorRegistry()
    br = CircuitBreaker(
        "cred", failure_threshold=3, reset_timeout_s=10, half_open_max_calls=1, registry=registry, clock=clock
    )
    assert state_of(br) == "closed" and _state(registry, "cred") == 0
    for _ in range(2):
        assert br.allow()
        br.record_failure()
    assert state_of(br) == "closed"
    br.record_success()  # resets the consecutive count
    for _ in range(3):
        assert br.allow()
        br.record_failure()
    assert state_of(br) == "open" and _state(registry, "cred") == 1
    assert not br.allow() and br.retry_in() == pytest.approx(10)
    assert registry.get_sample_value("hft_feed_breaker_rejected_total", {"breaker": "cred"}) == 1
    clock.now += 9.9
    assert not br.allow()
    clock.now += 0.1
    assert state_of(br) == "half_open" and _state(registry, "cred") == 2
    assert br.allow()  # the one probe
    assert not br.allow()  # no second concurrent probe
    br.record_failure()  # probe failed -> open again, timer restarted
    assert state_of(br) == "open" and br.retry_in() == pytest.approx(10)
    clock.now += 10
    assert br.allow()
    br.record_success()
    assert state_of(br) == "closed" and _state(registry, "cred") == 0
    CL, OP, HO = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN  # noqa: N806
    assert br.transitions == [(CL, OP), (OP, HO), (HO, OP), (OP, HO), (HO, CL)]
    assert _transitions(registry, "cred", "open") == 2
    assert _transitions(registry, "cred", "half_open") == 2
    assert _transitions(registry, "cred", "closed") == 1


def test_metrics_are_registered_once_per_registry() -> None:
    registry = CollectorRegistry()
    a = CircuitBreaker("a", registry=registry)
    b = CircuitBreaker("b", registry=registry)
    assert breaker_metrics(registry) is breaker_metrics(registry)
    assert dhan_metrics(registry) is dhan_metrics(registry)
    assert _state(registry, "a") == 0 and _state(registry, "b") == 0
    # the global default registry can be used repeatedly without duplicate-registration errors
    CircuitBreaker("global-test-1")
    CircuitBreaker("global-test-2")
    assert breaker_metrics() is breaker_metrics(REGISTRY)
    assert dhan_metrics() is dhan_metrics(REGISTRY)
    assert repr(a).startswith("CircuitBreaker('a'") and b.name == "b"


def test_breaker_validation() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker("x", failure_threshold=0, registry=CollectorRegistry())
    with pytest.raises(ValueError):
        CircuitBreaker("x", reset_timeout_s=0, registry=CollectorRegistry())


def test_backoff_is_exponential_jittered_and_capped() -> None:
    rng = random.Random(1)
    for attempt in range(1, 10):
        ceiling = min(8.0, 0.5 * 2 ** (attempt - 1))
        values = [backoff_delay(attempt, 0.5, 8.0, rng) for _ in range(200)]
        assert all(ceiling / 2 <= v <= ceiling for v in values)
        assert len(set(values)) > 100  # jittered
