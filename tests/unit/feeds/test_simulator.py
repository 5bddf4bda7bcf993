"""Unit tests of the market simulator (no services)."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from hftengine.feeds.instruments import (
    INSTRUMENTS,
    IST,
    expiry_datetime,
    get_instrument,
    last_weekday_of_month,
)
from hftengine.feeds.simulator import (
    RATE,
    MarketSimulator,
    Scenario,
    SimulatorStats,
    block_trade,
    iv_spike,
    oi_buildup,
    run_simulator,
    wall_shift,
)
from hftengine.snapshot import LEG_FIELDS, ChainSnapshot
from tests.factories import RecordingPublisher

MONDAY = datetime(2026, 11, 16, 9, 15, tzinfo=IST)  # NIFTY weekly expires Tue 17 Nov 2026


def make_sim(
    seed: int = 7, underlyings: tuple[str, ...] = ("NIFTY", "RELIANCE"), **kwargs: object
) -> MarketSimulator:
    kwargs.setdefault("start", MONDAY)
    kwargs.setdefault("strikes_per_side", 30)
    return MarketSimulator(seed, underlyings, **kwargs)  # type: ignore[arg-type]


def run(sim: MarketSimulator, steps: int) -> list[list[ChainSnapshot]]:
    return [sim.step() for _ in range(steps)]


def chain_of(batch: list[ChainSnapshot], underlying: str, expiry: date | None = None) -> ChainSnapshot:
    return next(s for s in batch if s.underlying == underlying and (expiry is None or s.expiry == expiry))


def same_snapshot(a: ChainSnapshot, b: ChainSnapshot) -> bool:
    scalars = (
        "underlying",
        "underlying_security_id",
        "segment",
        "exchange",
        "expiry",
        "exchange_ts",
        "received_ts",
        "spot",
        "lot_size",
        "oi_unit",
        "source",
    )
    if any(getattr(a, f) != getattr(b, f) for f in scalars) or not np.array_equal(a.strikes, b.strikes):
        return False
    return all(
        np.array_equal(getattr(getattr(a, side), name), getattr(getattr(b, side), name), equal_nan=True)
        for side in ("ce", "pe")
        for name, _ in LEG_FIELDS
    )


class FakePublisher(RecordingPublisher):
    """The recording publisher, refusing the snapshots ``refuse`` picks (dead-lettered)."""

    def __init__(self, refuse: Callable[[ChainSnapshot], bool] = lambda s: False) -> None:
        super().__init__()
        self._refuse = refuse

    def publish(self, snapshot: ChainSnapshot) -> bool:
        if self._refuse(snapshot):
            self.dead_letter(stage="feed", error_type="invalid_chain", reason="refused")
            return False
        return super().publish(snapshot)


# ----------------------------------------------------------------------------- catalog
def test_catalog_ids_and_expiry_rules() -> None:
    nifty, bank = get_instrument("nifty"), get_instrument("BANKNIFTY")
    assert (nifty.security_id, nifty.segment, nifty.lot_size, nifty.strike_step) == (13, "IDX_I", 75, 50)
    assert (bank.security_id, bank.lot_size, bank.strike_step) == (25, 35, 100)
    assert get_instrument("RELIANCE").segment == "NSE_EQ"
    assert get_instrument("SBIN").security_id == 3045
    weeklies = nifty.expiries(MONDAY, 3)
    assert weeklies == [date(2026, 11, 17), date(2026, 11, 24), date(2026, 12, 1)]
    assert bank.expiries(MONDAY, 2) == [date(2026, 11, 24), date(2026, 12, 29)]
    assert last_weekday_of_month(2026, 12, 1) == date(2026, 12, 29)
    # at 15:30 IST on expiry day the series is gone
    assert nifty.expiries(datetime(2026, 11, 17, 15, 30, tzinfo=IST), 1) == [date(2026, 11, 24)]
    assert nifty.expiries(datetime(2026, 11, 17, 15, 29, tzinfo=IST), 1) == [date(2026, 11, 17)]
    with pytest.raises(KeyError, match="unknown underlying"):
        get_instrument("NOPE")


# ----------------------------------------------------------------------------- determinism
def test_same_seed_gives_identical_snapshots() -> None:
    a, b = run(make_sim(11), 6), run(make_sim(11), 6)
    assert [len(x) for x in a] == [4] * 6
    for batch_a, batch_b in zip(a, b, strict=True):
        for sa, sb in zip(batch_a, batch_b, strict=True):
            assert same_snapshot(sa, sb)


def test_different_seed_gives_different_snapshots() -> None:
    a, b = run(make_sim(11), 3), run(make_sim(12), 3)
    assert not any(same_snapshot(sa, sb) for sa, sb in zip(a[-1], b[-1], strict=True))


# ----------------------------------------------------------------------------- validity and shape
def test_every_snapshot_is_valid_and_realistic() -> None:
    sim = MarketSimulator(3, start=MONDAY, interval=timedelta(minutes=20), strikes_per_side=40)
    assert sim.now == MONDAY
    seen_days: set[date] = set()
    for _ in range(25):  # 20-minute ticks: crosses into the next sessions
        batch = sim.step()
        assert len(batch) == 2 * len(INSTRUMENTS)
        ids = np.concatenate([np.concatenate([s.ce.security_id, s.pe.security_id]) for s in batch])
        assert np.unique(ids).shape == ids.shape and (ids > 0).all()
        for s in batch:
            assert s.problems() == []
            inst = get_instrument(s.underlying)
            assert (s.underlying_security_id, s.segment, s.lot_size) == (
                inst.security_id,
                inst.segment,
                inst.lot_size,
            )
            assert s.oi_unit == "shares" and s.source == "simulator"
            assert np.all(np.diff(s.strikes) > 0)
            assert s.strikes[0] < s.spot < s.strikes[-1]
            middle = s.strikes[len(s.strikes) // 2]
            assert abs(middle - s.spot) < 0.03 * s.spot  # grid centred near spot
            assert s.ce.present.all() and s.pe.present.all()
            for legs in (s.ce, s.pe):
                for name in (
                    "oi",
                    "previous_oi",
                    "volume",
                    "previous_volume",
                    "top_bid_quantity",
                    "top_ask_quantity",
                ):
                    assert (getattr(legs, name) % s.lot_size == 0).all(), name
                assert (legs.top_ask_price > legs.top_bid_price).all()
                assert (legs.top_ask_price > 0).all()
                ticks = legs.top_bid_price * 20
                assert np.allclose(ticks, np.rint(ticks))
                assert (legs.last_price >= 0.05).all()
                assert np.isfinite(legs.implied_volatility).all() and (legs.implied_volatility > 1).all()
            assert ((s.ce.delta >= 0) & (s.ce.delta <= 1)).all()
            assert ((s.pe.delta >= -1) & (s.pe.delta <= 0)).all()
            assert (s.ce.gamma >= 0).all() and (s.ce.vega >= 0).all()
            # timestamps: aware, UTC, inside the IST session, before expiry
            assert s.exchange_ts.tzinfo is not None and s.exchange_ts.utcoffset() == timedelta(0)
            assert timedelta(0) < s.received_ts - s.exchange_ts < timedelta(seconds=1)
            ist = s.exchange_ts.astimezone(IST)
            assert ist.weekday() < 5 and time(9, 15) <= ist.time() < time(15, 30)
            assert s.exchange_ts < expiry_datetime(s.expiry)
            seen_days.add(ist.date())
    assert len(seen_days) >= 2


def test_negative_skew_and_atm_values() -> None:
    s = chain_of(make_sim(5, ("NIFTY",), strikes_per_side=90).step(), "NIFTY", date(2026, 11, 24))
    iv = dict(zip(s.strikes.tolist(), s.ce.implied_volatility.tolist(), strict=True))
    atm = round(s.spot / 50) * 50
    assert iv[atm - 1000] > iv[atm] and iv[atm - 1000] > iv[atm + 1000]  # smile with put skew
    assert 8.0 < iv[atm] < 20.0
    i = int(np.argmin(np.abs(s.strikes - s.spot)))
    assert 0.35 < s.ce.delta[i] < 0.65 and s.ce.theta[i] < 0 and s.pe.theta[i] < 0
    # OI: largest near the money, call OI above spot, put OI below it
    assert s.strikes[np.argmax(s.ce.oi)] >= atm - 200 and s.strikes[np.argmax(s.pe.oi)] <= atm + 200
    assert s.ce.oi[i] > 20 * s.ce.oi[0]


def test_put_call_parity_of_mid_prices_within_spread() -> None:
    sim = make_sim(8, ("NIFTY", "BANKNIFTY", "SBIN"), strikes_per_side=60)
    for _ in range(3):
        for s in sim.step():
            t = (expiry_datetime(s.expiry) - s.exchange_ts).total_seconds() / (365 * 86_400)
            mid_c = (s.ce.top_bid_price + s.ce.top_ask_price) / 2
            mid_p = (s.pe.top_bid_price + s.pe.top_ask_price) / 2
            forward_value = s.spot - s.strikes * math.exp(-RATE * t)
            spread_c = s.ce.top_ask_price - s.ce.top_bid_price
            tolerance = (spread_c + s.pe.top_ask_price - s.pe.top_bid_price) / 2
            assert (np.abs(mid_c - mid_p - forward_value) <= tolerance + 1e-9).all()


def test_volume_is_cumulative_and_vwap_inside_the_day() -> None:
    batches = run(make_sim(9, ("NIFTY",)), 20)
    first, last = batches[0][0], batches[-1][0]
    assert (last.ce.volume >= first.ce.volume).all() and last.ce.volume.sum() > first.ce.volume.sum()
    traded = last.ce.volume > 0
    assert (last.ce.average_price[traded] > 0).all()
    assert (last.ce.average_price[~traded] == 0).all()


def test_snapshot_arrays_are_read_only() -> None:
    s = make_sim().step()[0]
    with pytest.raises(ValueError, match="read-only"):
        s.ce.oi[0] = 1


# ----------------------------------------------------------------------------- clock
def test_session_rollover_carries_oi_and_resets_volume() -> None:
    start = datetime(2026, 11, 20, 15, 29, tzinfo=IST)  # a Friday, one minute before the close
    sim = make_sim(4, ("NIFTY", "INFY"), start=start, interval=timedelta(seconds=30))
    before = run(sim, 2)[-1]
    assert sim.now == datetime(2026, 11, 20, 15, 29, 30, tzinfo=IST)
    after = sim.step()
    assert sim.now == datetime(2026, 11, 23, 9, 15, tzinfo=IST)  # Monday open
    for b in before:
        a = chain_of(after, b.underlying, b.expiry)
        common, ib, ia = np.intersect1d(b.strikes, a.strikes, return_indices=True)
        assert len(common) > len(a.strikes) // 2
        for leg_b, leg_a in ((b.ce, a.ce), (b.pe, a.pe)):
            assert np.array_equal(leg_a.previous_oi[ia], leg_b.oi[ib])
            assert np.array_equal(leg_a.previous_volume[ia], leg_b.volume[ib])
            assert np.array_equal(leg_a.previous_close_price[ia], leg_b.last_price[ib])
            assert leg_a.volume.sum() < leg_b.volume.sum() / 50  # reset: only the first tick's trades
        assert a.exchange_ts.astimezone(IST).time() == time(9, 15)


def test_expired_series_drop_out_at_rollover() -> None:
    start = datetime(2026, 11, 17, 15, 29, 59, tzinfo=IST)  # NIFTY weekly expiry day
    sim = make_sim(4, ("NIFTY",), start=start)
    assert [s.expiry for s in sim.step()] == [date(2026, 11, 17), date(2026, 11, 24)]
    rolled = sim.step()
    assert sim.now == datetime(2026, 11, 18, 9, 15, tzinfo=IST)
    assert [s.expiry for s in rolled] == [date(2026, 11, 24), date(2026, 12, 1)]


def test_start_is_normalised_to_a_session() -> None:
    saturday = datetime(2026, 11, 21, 12, 0, tzinfo=IST)
    assert make_sim(start=saturday).now == datetime(2026, 11, 23, 9, 15, tzinfo=IST)
    assert make_sim(start=datetime(2026, 11, 16, 7, 0, tzinfo=IST)).now == MONDAY
    assert make_sim(start=datetime(2026, 11, 16, 16, 0, tzinfo=IST)).now == datetime(
        2026, 11, 17, 9, 15, tzinfo=IST
    )
    with pytest.raises(ValueError, match="timezone-aware"):
        make_sim(start=datetime(2026, 11, 16, 10, 0))
    default = MarketSimulator(1, ["SBIN"]).now.astimezone(IST)
    assert default.weekday() < 5 and default.time() == time(9, 15)


# ----------------------------------------------------------------------------- scenarios
def diff_leg(base: ChainSnapshot, other: ChainSnapshot, side: str, name: str) -> NDArray[Any]:
    out: NDArray[Any] = getattr(getattr(other, side), name) - getattr(getattr(base, side), name)
    return out


def test_block_trade_jumps_volume_and_oi_at_one_strike_at_that_step() -> None:
    lots = 4_000
    scenario = block_trade("NIFTY", 5, 2, side="ce", lots=lots)
    base, played = run(make_sim(21), 7), run(make_sim(21, scenarios=[scenario]), 7)
    lot = get_instrument("NIFTY").lot_size
    for k in range(5):  # nothing before the step
        assert same_snapshot(base[k][0], played[k][0])
    b, p = base[5][0], played[5][0]
    dv, doi = diff_leg(b, p, "ce", "volume"), diff_leg(b, p, "ce", "oi")
    hit = np.flatnonzero(dv)
    assert hit.tolist() == np.flatnonzero(doi).tolist() and len(hit) == 1
    assert dv[hit[0]] == lots * lot and doi[hit[0]] == lots * lot
    assert p.strikes[hit[0]] == round(p.spot / 50) * 50 + 2 * 50
    assert not diff_leg(b, p, "pe", "volume").any()
    assert same_snapshot(base[5][1], played[5][1])  # other expiry untouched


def test_oi_buildup_adds_oi_over_its_steps() -> None:
    lots, steps = 6_000, 4
    scenario = oi_buildup("NIFTY", 2, -3, side="pe", lots=lots, steps=steps)
    base, played = run(make_sim(22), 8), run(make_sim(22, scenarios=[scenario]), 8)
    lot = 75
    totals = [int(diff_leg(base[k][0], played[k][0], "pe", "oi").sum()) for k in range(8)]
    assert totals == [0, 0, 1500 * lot, 3000 * lot, 4500 * lot, 6000 * lot, 6000 * lot, 6000 * lot]
    final = diff_leg(base[-1][0], played[-1][0], "pe", "oi")
    assert np.count_nonzero(final) == 1
    assert np.count_nonzero(diff_leg(base[-1][0], played[-1][0], "ce", "oi")) == 0


def test_iv_spike_raises_iv_then_decays() -> None:
    scenario = iv_spike("NIFTY", 3, 5.0, half_life_steps=2)
    base, played = run(make_sim(23), 8), run(make_sim(23, scenarios=[scenario]), 8)
    pairs = zip(base, played, strict=True)
    bump = [float(np.median(diff_leg(b[0], p[0], "ce", "implied_volatility"))) for b, p in pairs]
    assert bump[:3] == [0.0, 0.0, 0.0]
    assert bump[3] == pytest.approx(5.0, abs=0.01)
    assert bump[5] == pytest.approx(2.5, abs=0.01)
    far = diff_leg(base[3][1], played[3][1], "ce", "implied_volatility")
    assert 0 < float(np.median(far)) < 5.0  # later expiry: smaller shock
    assert (played[3][0].ce.top_ask_price >= base[3][0].ce.top_ask_price).all()


def test_wall_shift_moves_the_call_wall() -> None:
    scenario = wall_shift("NIFTY", 1, 8, side="ce", steps=5)
    sim = make_sim(24, ("NIFTY",), scenarios=[scenario])
    before = sim.step()[0]
    after = run(sim, 8)[-1][0]
    target = round(after.spot / 50) * 50 + 8 * 50
    assert before.strikes[np.argmax(before.ce.oi)] != target
    assert after.strikes[np.argmax(after.ce.oi)] == target
    old_wall = int(np.argmax(before.ce.oi))
    assert after.ce.oi[old_wall] < 0.5 * before.ce.oi[old_wall]


def test_demo_scenarios_run_valid() -> None:
    sim = MarketSimulator.with_demo_scenarios(
        5, ["NIFTY", "SBIN"], start=MONDAY, strikes_per_side=15, expiries_per_underlying=1
    )
    kinds = {s.kind for s in sim.scenarios}
    assert kinds == {"oi_buildup", "wall_shift", "iv_spike", "block_trade"}
    assert max(s.at_step + s.steps for s in sim.scenarios) < 300
    for _ in range(260):
        assert all(s.problems() == [] for s in sim.step())


def test_scenarios_are_checked() -> None:
    with pytest.raises(ValueError, match="not simulated"):
        make_sim(scenarios=[Scenario("iv_spike", "TCS", 1)])
    with pytest.raises(ValueError, match="expiry_index"):
        make_sim(scenarios=[block_trade("NIFTY", 1, 0, expiry_index=5)])


# ----------------------------------------------------------------------------- driver
def test_run_simulator_respects_steps_and_reports_stats() -> None:
    publisher = FakePublisher()
    calls: list[tuple[int, int]] = []
    stats = run_simulator(
        make_sim(), publisher, rate=None, steps=5, progress=lambda t, s: calls.append((t, s))
    )
    assert isinstance(stats, SimulatorStats)
    assert (stats.ticks, stats.snapshots, stats.dead_lettered) == (5, 20, 0)
    assert stats.contracts == sum(s.n_contracts for s in publisher.published) == 20 * 2 * 61
    assert len(publisher.published) == 20 and publisher.flushes == 1
    assert calls == [(t, 4 * t) for t in range(1, 6)]
    assert stats.elapsed > 0 and stats.contracts_per_second > 0


def test_run_simulator_counts_dead_letters_and_paces() -> None:
    publisher = FakePublisher(refuse=lambda s: s.underlying == "RELIANCE")
    stats = run_simulator(make_sim(), publisher, rate=100.0, steps=4)
    assert (stats.ticks, stats.snapshots, stats.dead_lettered) == (4, 16, 8)
    assert stats.elapsed >= 0.03  # 4 ticks at 100/s: the last one is due after 30 ms
    stop = threading.Event()
    stop.set()
    assert run_simulator(make_sim(), FakePublisher(), rate=None, stop=stop).ticks == 0
    timed = run_simulator(make_sim(), FakePublisher(), rate=50.0, duration=0.1)
    assert 1 <= timed.ticks <= 6
