"""The Dhan feed against the fake Dhan server over real HTTP (uvicorn in a background thread).

Rates are fast (20-50 requests/s) so a "long" run takes ~3 s; the server's
request log (arrival times) is the measurement.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from hftengine.config import Settings
from hftengine.feeds.dhan import (
    DhanClient,
    DhanFeedConfig,
    DhanPoller,
    DhanRateLimited,
    DhanRecorder,
    run_dhan_feed,
)
from hftengine.feeds.fake_dhan import FAKE_ACCESS_TOKEN, FAKE_CLIENT_ID, FakeDhanConfig, FakeDhanServer
from hftengine.feeds.formats import DEFAULT_UNDERLYINGS, IST
from hftengine.feeds.ratelimit import BreakerState, CircuitBreaker, TokenBucket
from hftengine.feeds.replay import replay
from tests.factories import RecordingPublisher

pytestmark = pytest.mark.integration

NIFTY = DEFAULT_UNDERLYINGS["NIFTY"]
BANKNIFTY = DEFAULT_UNDERLYINGS["BANKNIFTY"]
FAR = date(2031, 1, 2)
FAR2 = date(2031, 1, 9)
CHAIN = "/v2/optionchain"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeDhanServer]:
    with FakeDhanServer() as srv:
        yield srv


@pytest.fixture
def fake_server(server: FakeDhanServer) -> FakeDhanServer:
    server.fake.reset(FakeDhanConfig())
    return server


def client_for(srv: FakeDhanServer, rate: float, timeout_s: float = 5.0) -> DhanClient:
    return DhanClient(
        FAKE_CLIENT_ID,
        FAKE_ACCESS_TOKEN,
        base_url=srv.base_url,
        timeout_s=timeout_s,
        bucket=TokenBucket(rate, burst=1),
    )


def pair_of(req: object) -> tuple[int | None, str | None]:
    return (req.security_id, req.expiry)  # type: ignore[attr-defined]


async def test_poller_never_exceeds_the_configured_rate(fake_server: FakeDhanServer) -> None:
    rate, run_s = 20.0, 3.0
    fake_server.fake.configure(rate_limit={"probability": 0.1}, seed=11)  # retries must respect the rate too
    pub = RecordingPublisher()
    cfg = DhanFeedConfig(max_attempts=4, backoff_base_s=0.01, backoff_max_s=0.05, seed=3)
    stop = asyncio.Event()
    async with client_for(fake_server, rate) as client:
        poller = DhanPoller(client, pub, [NIFTY, BANKNIFTY], [FAR, FAR2], config=cfg, registry=CollectorRegistry())
        task = asyncio.create_task(poller.run(stop))
        await asyncio.sleep(run_s)
        stop.set()
        stats = await task
    reqs = fake_server.fake.requests(CHAIN)
    times = [r.monotonic for r in reqs]
    span = times[-1] - times[0]
    # It really ran near the limit (not trivially slow) ...
    assert len(reqs) >= 0.5 * rate * run_s, len(reqs)
    # ... and never above it: in every window, at most burst + rate * window requests
    # (+1 for loopback arrival jitter between the client's send and the server's clock).
    worst = 0.0
    for i in range(len(times)):
        for j in range(i + 1, len(times)):
            excess = (j - i + 1) - (1 + rate * (times[j] - times[i]))
            worst = max(worst, excess)
    assert worst <= 1.0, f"rate exceeded by {worst:.2f} requests"
    for i in range(len(times)):
        in_one_second = sum(1 for t in times[i:] if t - times[i] < 1.0)
        assert in_one_second <= rate + 1
    assert (len(reqs) - 1) / span <= rate * 1.02
    assert any(r.outcome == "rate_limited" for r in reqs) and stats.retries > 0
    # round-robin: every pair polled, evenly
    polls = stats.polls
    assert set(polls) == {(u, e) for u in ("NIFTY", "BANKNIFTY") for e in (FAR, FAR2)}
    assert max(polls.values()) - min(polls.values()) <= 1
    assert stats.published == len(pub.published) > 0 and not pub.dead


async def test_outage_opens_breaker_and_schedule_resumes_after_recovery(fake_server: FakeDhanServer) -> None:
    registry = CollectorRegistry()
    reset_s, threshold = 0.3, 3
    breaker = CircuitBreaker("cred-a", failure_threshold=threshold, reset_timeout_s=reset_s, registry=registry)
    cfg = DhanFeedConfig(max_attempts=2, backoff_base_s=0.01, backoff_max_s=0.05, seed=5)
    pub = RecordingPublisher()
    pairs = {(u.security_id, e.isoformat()) for u in (NIFTY, BANKNIFTY) for e in (FAR, FAR2)}
    stop = asyncio.Event()
    async with client_for(fake_server, 50.0) as client:
        poller = DhanPoller(
            client, pub, [NIFTY, BANKNIFTY], [FAR, FAR2], config=cfg, breaker=breaker, registry=registry
        )
        task = asyncio.create_task(poller.run(stop))
        await asyncio.sleep(0.4)
        assert breaker.state is BreakerState.CLOSED and pub.published
        outage_start = time.monotonic()
        fake_server.fake.configure(outage=True)
        await asyncio.sleep(1.2)
        assert breaker.state in (BreakerState.OPEN, BreakerState.HALF_OPEN)
        assert registry.get_sample_value("hft_feed_breaker_state", {"breaker": "cred-a"}) in (1.0, 2.0)
        fake_server.fake.configure(outage=False)
        recovered = time.monotonic()
        deadline = recovered + 5.0
        while time.monotonic() < deadline:
            ok_after = [r for r in fake_server.fake.requests(CHAIN) if r.monotonic >= recovered and r.outcome == "ok"]
            if len(ok_after) >= 2 * len(pairs):
                break
            await asyncio.sleep(0.05)
        stop.set()
        stats = await task

    reqs = fake_server.fake.requests(CHAIN)
    during = [r for r in reqs if outage_start <= r.monotonic < recovered]
    # the breaker limited the hammering: threshold failures, then ~one probe per reset timeout
    assert all(r.outcome == "outage" for r in during[1:])
    assert len(during) <= threshold + math.ceil(1.2 / reset_s) + 2, len(during)
    # recovery: the next successful polls cover every (underlying, expiry) in round-robin order
    ok_after = [r for r in reqs if r.monotonic >= recovered and r.outcome == "ok"]
    assert {pair_of(r) for r in ok_after[: len(pairs)]} == pairs
    # breaker transitions as designed
    CL, OP, HO = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN  # noqa: N806
    tr = breaker.transitions
    assert tr[0] == (CL, OP) and tr[1] == (OP, HO) and tr[-1] == (HO, CL)
    assert all(step in {(OP, HO), (HO, OP)} for step in tr[1:-1])
    assert breaker.state is CL
    assert registry.get_sample_value("hft_feed_breaker_state", {"breaker": "cred-a"}) == 0.0
    for state in ("open", "half_open", "closed"):
        assert (
            registry.get_sample_value("hft_feed_breaker_transitions_total", {"breaker": "cred-a", "state": state}) >= 1
        )
    # given-up polls were dead-lettered with a reason, nothing else was lost
    assert stats.gave_up >= 1
    assert {d.error_type for d in pub.dead} == {"fetch_failed"}
    assert all("gave up after" in d.reason and "HTTP 503" in d.reason for d in pub.dead)
    assert (
        registry.get_sample_value(
            "hft_dhan_requests_total",
            {"credential": "dhan", "endpoint": "optionchain", "outcome": "server_error"},
        )
        >= 1
    )


async def test_every_documented_defect_maps_to_a_flag_or_a_dead_letter(fake_server: FakeDhanServer) -> None:
    today = datetime.now(IST).date()
    fake_server.fake.configure(
        null_legs={"requests": [2]},
        null_leg_fraction=0.3,
        zero_chain={"requests": [3]},
        zero_spot={"requests": [4]},
        failure={"requests": [5]},
        rate_limit={"requests": [6]},
        server_error={"requests": [7]},
        slow={"requests": [8]},
        slow_seconds=0.6,  # longer than the client timeout below
    )
    registry = CollectorRegistry()
    pub = RecordingPublisher()
    cfg = DhanFeedConfig(max_attempts=4, backoff_base_s=0.01, backoff_max_s=0.05, seed=9)
    async with client_for(fake_server, 50.0, timeout_s=0.3) as client:
        poller = DhanPoller(client, pub, [NIFTY], {"NIFTY": [today, FAR]}, config=cfg, registry=registry)
        stats = await poller.run(max_polls=8)

    outcomes = [r.outcome for r in fake_server.fake.requests(CHAIN)]
    assert outcomes[:9] == [
        "ok",
        "null_legs",
        "zero_chain",
        "zero_spot",
        "failure",
        "rate_limited",
        "server_error",
        "slow",
        "ok",
    ]
    # dead letters with reasons
    reasons = {d.reason.split(": ", 1)[1]: d for d in pub.dead}
    assert "all-zero chain: every leg has zero price, quotes, OI and volume" in reasons
    assert "spot 0 (holiday?)" in reasons
    assert "dhan status 'failure': error 811: Invalid Expiry Date" in reasons
    assert {d.error_type for d in pub.dead} == {"broker_defect", "broker_failure"}
    assert all(d.stage == "feed" and d.underlying == "NIFTY" and d.key == b"NIFTY" and d.value for d in pub.dead)
    assert len(pub.dead) == 3
    # retryable errors (805/429, 5xx, timeout of a slow response) were retried, not dead-lettered
    assert stats.retries == 3 and stats.gave_up == 0
    assert stats.errors == {"rate_limited": 1, "server_error": 1, "transport_error": 1}
    # null legs: kept as absent legs
    # (found by content, not by position: exactly one response had null legs)
    with_absent = [s for s in pub.published if not (s.ce.present.all() and s.pe.present.all())]
    assert len(with_absent) == 1, [(s.expiry, s.exchange_ts) for s in pub.published]
    nulled = with_absent[0]
    assert nulled.problems() == []
    # expiry-day ITM legs with IV 0 / Greeks 0: kept, broker analytics NaN for the engine to re-solve
    expiry_day = [s for s in pub.published if s.expiry == today]
    assert expiry_day
    for snap in expiry_day:
        itm_ce = snap.strikes < snap.spot
        itm_pe = snap.strikes > snap.spot
        for legs, itm in ((snap.ce, itm_ce), (snap.pe, itm_pe)):
            mask = legs.present & itm
            assert mask.any()
            for name in ("implied_volatility", "delta", "theta", "gamma", "vega"):
                assert all(math.isnan(x) for x in getattr(legs, name)[mask])
            assert all(math.isfinite(x) for x in legs.implied_volatility[legs.present & ~itm])
    assert all(s.oi_unit == "shares" and s.lot_size == 75 and s.exchange_ts.tzinfo is not None for s in pub.published)
    assert stats.defects["expiry_day_itm_zero_greeks"] == len(expiry_day)
    assert stats.defects["null_leg"] >= 1
    assert stats.defects["zero_spot"] == 1 and stats.defects["all_zero_chain"] == 1
    assert stats.defects["failure_status"] == 1
    assert registry.get_sample_value("hft_dhan_defects_total", {"underlying": "NIFTY", "kind": "zero_spot"}) == 1
    assert (
        registry.get_sample_value(
            "hft_dhan_dead_letters_total", {"underlying": "NIFTY", "error_type": "broker_failure"}
        )
        == 1
    )


async def test_auth_is_checked_and_never_retried(fake_server: FakeDhanServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "tok-not-the-right-one-93c1"  # noqa: S105
    async with httpx.AsyncClient(base_url=fake_server.base_url) as raw:
        resp = await raw.post(CHAIN, json={"UnderlyingScrip": 13, "UnderlyingSeg": "IDX_I", "Expiry": "2031-01-02"})
        assert resp.status_code == 401 and resp.json()["remarks"]["error_code"] == "808"
    pub = RecordingPublisher()
    async with DhanClient(FAKE_CLIENT_ID, secret, base_url=fake_server.base_url, bucket=TokenBucket(50, 1)) as client:
        poller = DhanPoller(
            client, pub, [NIFTY], [FAR], config=DhanFeedConfig(max_attempts=4), registry=CollectorRegistry()
        )
        stats = await poller.run(max_polls=1)
    assert stats.requests == 1 and stats.gave_up == 1 and stats.retries == 0
    assert pub.dead[0].error_type == "fetch_failed" and "authentication failed" in pub.dead[0].reason
    assert [r.outcome for r in fake_server.fake.requests()] == ["unauthorized", "unauthorized"]
    # over real HTTP (httpx + httpcore debug logging on), the token is still never logged
    assert caplog.records and secret not in caplog.text and FAKE_ACCESS_TOKEN not in caplog.text


async def test_admin_endpoint_changes_faults_at_runtime_and_exposes_the_log(
    fake_server: FakeDhanServer,
) -> None:
    async with (
        client_for(fake_server, 100.0) as client,
        httpx.AsyncClient(base_url=fake_server.base_url) as admin,
    ):
        await client.option_chain(NIFTY, FAR)
        resp = await admin.post("/admin/config", json={"rate_limit": {"every": 1}, "rate_limit_http_status": 429})
        assert resp.status_code == 200 and resp.json()["rate_limit"]["every"] == 1
        assert "access_token" not in resp.json()
        with pytest.raises(DhanRateLimited, match="rate limited"):
            await client.option_chain(NIFTY, FAR)
        assert (await admin.post("/admin/config", json={"rate_limit": {}})).status_code == 200
        await client.option_chain(NIFTY, FAR)
        assert (await admin.post("/admin/config", json={"no_such_knob": 1})).status_code == 400
        log = (await admin.get("/admin/requests")).json()
        assert [r["outcome"] for r in log] == ["ok", "rate_limited", "ok"]
        assert all(datetime.fromisoformat(r["received_ts"]).tzinfo is not None for r in log)
        assert log[0]["monotonic"] < log[1]["monotonic"] < log[2]["monotonic"]
        await admin.post("/admin/reset")
        assert (await admin.get("/admin/requests")).json() == []


async def test_record_then_replay_reproduces_the_run(fake_server: FakeDhanServer, tmp_path: Path) -> None:
    fake_server.fake.configure(zero_spot={"requests": [3]}, failure={"requests": [5]})
    live = RecordingPublisher()
    path = tmp_path / "dhan.jsonl"
    with DhanRecorder(path) as recorder:
        async with client_for(fake_server, 100.0) as client:
            poller = DhanPoller(
                client,
                live,
                [NIFTY, BANKNIFTY],
                [FAR],
                config=DhanFeedConfig(seed=1),
                recorder=recorder,
                registry=CollectorRegistry(),
            )
            await poller.run(max_polls=6)
    assert len(path.read_text().splitlines()) == 6
    replayed = RecordingPublisher()
    stats = replay(path, replayed, speed=None, progress=False)
    assert stats.errors == [] and stats.snapshots == len(live.published) == 4
    for a, b in zip(live.published, replayed.published, strict=True):
        ra, rb = a.to_record(), b.to_record()
        assert ra.pop("source") == "dhan" and rb.pop("source") == "replay-dhan"
        assert ra == rb
    assert [d.reason for d in replayed.dead] == [d.reason for d in live.dead]
    assert FAKE_ACCESS_TOKEN not in path.read_text()


async def test_run_dhan_feed_entry_point_resolves_expiries(fake_server: FakeDhanServer, tmp_path: Path) -> None:
    today = datetime.now(IST).date()
    expiries = [today + timedelta(days=d) for d in (-7, 3, 10, 17)]
    fake_server.fake.configure(expiries=expiries)
    settings = Settings(
        _env_file=None,
        dhan_client_id=SecretStr(FAKE_CLIENT_ID),  # type: ignore[call-arg]
        dhan_access_token=SecretStr(FAKE_ACCESS_TOKEN),
    )
    pub = RecordingPublisher()
    cfg = DhanFeedConfig(base_url=fake_server.base_url, requests_per_second=100, n_expiries=2, seed=2)
    stats = await run_dhan_feed(
        settings,
        pub,
        ["NIFTY"],
        record_path=tmp_path / "r.jsonl",
        config=cfg,
        registry=CollectorRegistry(),
        max_polls=4,
    )
    assert stats.published == 4 and pub.flushes == 1
    assert {s.expiry for s in pub.published} == set(expiries[1:3])  # past expiry dropped, next two kept
    assert fake_server.fake.requests()[0].path == "/v2/optionchain/expirylist"
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 4
    with pytest.raises(ValueError, match="DHAN_ACCESS_TOKEN"):
        await run_dhan_feed(Settings(_env_file=None), pub, ["NIFTY"])  # type: ignore[call-arg]
