"""Chain analytics against hand-computed small chains, and robustness on bad chains."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from hftengine.analytics import (
    CHAIN_FLAGS,
    CONVENTIONS_VERSION,
    BuildUp,
    Conventions,
    LegQuality,
    analyze_chain,
    bsm,
    classify_buildup,
    flow_scores,
    max_pain,
    pcr,
    term_structure,
    time_to_expiry,
)
from hftengine.analytics.black76 import parity_forward
from hftengine.analytics.chain import LegQuotes
from hftengine.analytics.flow import FlowFlag
from hftengine.analytics.gex import call_wall, put_wall, zero_crossing
from hftengine.analytics.iv import IVStatus

from .conftest import MakeChain


def _legs(
    price: list[float] | np.ndarray,
    oi: list[float],
    prev_oi: list[float] | None = None,
    volume: list[float] | None = None,
) -> LegQuotes:
    p = np.asarray(price, dtype=np.float64)
    n = p.shape[0]
    o = np.asarray(oi, dtype=np.float64)
    return LegQuotes(
        present=np.ones(n, dtype=np.bool_),
        last_price=p,
        bid=p.copy(),
        ask=p.copy(),
        bid_qty=np.ones(n),
        ask_qty=np.ones(n),
        volume=np.asarray(volume if volume is not None else np.zeros(n), dtype=np.float64),
        oi=o,
        prev_oi=np.asarray(prev_oi if prev_oi is not None else o, dtype=np.float64),
        prev_close=p.copy(),
    )


# ------------------------------------------------------------------ hand-computed chains
STRIKES = np.array([100.0, 110.0, 120.0, 130.0])
CE_OI = [50.0, 100.0, 300.0, 200.0]
PE_OI = [400.0, 300.0, 150.0, 50.0]


def test_max_pain_hand_computed() -> None:
    # payout(K*) = Σ CE_OI·max(0, K*−K) + Σ PE_OI·max(0, K−K*):
    #   100: 300·10 + 150·20 + 50·30          = 7500
    #   110: 50·10 + 150·10 + 50·20           = 3000
    #   120: 50·20 + 100·10 + 50·10           = 2500   <- minimum
    #   130: 50·30 + 100·20 + 300·10          = 6500
    assert max_pain(STRIKES, CE_OI, PE_OI) == 120.0
    # Ties go to the lowest strike: with PE OI 100 at 120 both 110 and 120 pay 2500.
    assert max_pain(STRIKES, CE_OI, [400.0, 300.0, 100.0, 50.0]) == 110.0
    # Units do not matter, order does not matter, NaN counts as 0.
    assert max_pain(STRIKES, np.array(CE_OI) * 75, np.array(PE_OI) * 75) == 120.0
    assert max_pain(STRIKES[::-1], CE_OI[::-1], PE_OI[::-1]) == 120.0
    assert max_pain([100.0, 110.0], [math.nan, 5.0], [5.0, math.nan]) == 100.0
    assert math.isnan(max_pain([], [], []))


def _naive_max_pain(k: np.ndarray, c: np.ndarray, p: np.ndarray) -> float:
    pain = [float(np.sum(c * np.maximum(0.0, kk - k)) + np.sum(p * np.maximum(0.0, k - kk))) for kk in k]
    best = min(pain)
    return float(min(kk for kk, v in zip(k, pain, strict=True) if v == best))


@pytest.mark.parametrize("seed", range(25))
def test_max_pain_linear_equals_naive_quadratic(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 120))
    k = rng.permutation(np.round(rng.uniform(1_000, 50_000, n) / 50) * 50 + np.arange(n) * 0.001)
    c = rng.integers(0, 10_000, n).astype(float)
    p = rng.integers(0, 10_000, n).astype(float)
    assert max_pain(k, c, p) == _naive_max_pain(k, c, p)


def test_pcr_hand_computed() -> None:
    assert pcr(PE_OI, CE_OI) == pytest.approx(900.0 / 650.0)  # 1.3846…
    assert pcr([5.0, 5.0, 5.0, 5.0], [10.0, 20.0, 30.0, 40.0]) == pytest.approx(0.2)
    assert math.isnan(pcr([1.0], [0.0]))
    assert pcr([math.nan, 2.0], [4.0, math.nan]) == 0.5


def test_chain_pcr_and_max_pain_through_analyze_chain() -> None:
    spot, t = 115.0, 30.0 / 365.0
    calls = _legs(
        bsm.price(spot, STRIKES, t, 0.0, 0.0, 0.3, True),
        CE_OI,
        [40.0, 100.0, 250.0, 200.0],
        [10.0, 20.0, 30.0, 40.0],
    )
    puts = _legs(
        bsm.price(spot, STRIKES, t, 0.0, 0.0, 0.3, False),
        PE_OI,
        [400.0, 280.0, 150.0, 20.0],
        [5.0, 5.0, 5.0, 5.0],
    )
    res = analyze_chain(STRIKES, calls, puts, spot, t, r=0.0, q=0.0, lot_size=1)
    assert res.pcr_oi == pytest.approx(900.0 / 650.0)
    assert res.pcr_volume == pytest.approx(20.0 / 100.0)
    assert res.pcr_doi == pytest.approx((0 + 20 + 0 + 30) / (10 + 0 + 50 + 0))  # 50/60
    assert res.max_pain == 120.0
    assert res.conventions_version == CONVENTIONS_VERSION
    np.testing.assert_allclose(res.call_iv, 0.3, atol=1e-10)
    np.testing.assert_allclose(res.put_iv, 0.3, atol=1e-10)


def test_gex_hand_computed() -> None:
    # S = K = 100, t = 0.25, r = q = 0, σ = 0.2: d1 = 0.05, φ(d1) = 0.3984439,
    # Γ = φ/(Sσ√t) = 0.03984439; GEX = Γ·OI·S²·0.01.
    spot, t, sigma = 100.0, 0.25, 0.2
    k = np.array([100.0])
    calls = _legs(bsm.price(spot, k, t, 0.0, 0.0, sigma, True), [1_000.0])
    puts = _legs(bsm.price(spot, k, t, 0.0, 0.0, sigma, False), [500.0])
    res = analyze_chain(k, calls, puts, spot, t, r=0.0, q=0.0, lot_size=50)
    gamma = math.exp(-0.5 * 0.05**2) / math.sqrt(2 * math.pi) / (100.0 * 0.2 * 0.5)
    assert gamma == pytest.approx(0.0398443914)
    assert res.call_gamma[0] == pytest.approx(gamma, rel=1e-9)
    assert res.gex_call[0] == pytest.approx(3984.43914, rel=1e-8)
    assert res.gex_put[0] == pytest.approx(-1992.21957, rel=1e-8)
    assert res.gex[0] == pytest.approx(1992.21957, rel=1e-8)
    assert res.total_gex == pytest.approx(1992.21957, rel=1e-8)
    # Same OI given in contracts of 50: identical exposure in currency.
    c2 = replace(calls, oi=np.array([20.0]), prev_oi=np.array([20.0]))
    p2 = replace(puts, oi=np.array([10.0]), prev_oi=np.array([10.0]))
    res2 = analyze_chain(k, c2, p2, spot, t, r=0.0, q=0.0, lot_size=50, oi_unit="contracts")
    assert res2.total_gex == pytest.approx(res.total_gex, rel=1e-12)
    # The sign convention is a parameter.
    flipped = Conventions(gex_call_sign=-1.0, gex_put_sign=1.0)
    res3 = analyze_chain(k, calls, puts, spot, t, r=0.0, q=0.0, lot_size=50, conventions=flipped)
    assert res3.total_gex == pytest.approx(-1992.21957, rel=1e-8)
    # Per 1 point move instead of 1 %: GEX scales with the move.
    res4 = analyze_chain(k, calls, puts, spot, t, r=0.0, q=0.0, lot_size=50, conventions=Conventions(gex_move=0.001))
    assert res4.total_gex == pytest.approx(199.221957, rel=1e-8)


def test_walls_hand_computed() -> None:
    k = np.array([90.0, 95.0, 100.0, 105.0, 110.0])
    # Call exposure at 95 is the largest overall but below the spot: not a call wall.
    gex_call = np.array([0.0, 9e6, 10.0, 1e6, 10.0])
    gex_put = np.array([-10.0, -1e6, -10.0, -8e6, 0.0])
    assert call_wall(k, gex_call, 100.0) == 105.0
    assert put_wall(k, gex_put, 100.0) == 95.0
    assert call_wall(k, np.zeros(5), 100.0) is None
    assert put_wall(k, gex_put, 80.0) is None


def test_walls_and_flip_through_analyze_chain() -> None:
    spot, t, sigma = 100.0, 20.0 / 365.0, 0.25
    k = np.array([90.0, 95.0, 100.0, 105.0, 110.0])
    calls = _legs(bsm.price(spot, k, t, 0.0, 0.0, sigma, True), [0.0, 5e6, 10.0, 1e6, 10.0])
    puts = _legs(bsm.price(spot, k, t, 0.0, 0.0, sigma, False), [10.0, 1e6, 10.0, 0.0, 0.0])
    res = analyze_chain(k, calls, puts, spot, t, r=0.0, q=0.0, lot_size=1)
    assert res.call_wall == 105.0
    assert res.put_wall == 95.0
    # Long-call gamma everywhere except the put block at 95: GEX is negative only well below
    # 95 … positive calls at 95 dominate there, so the profile is positive on the whole grid.
    assert res.gamma_flip is None
    assert np.all(res.gex_profile > 0)
    # Puts only below the spot and calls only above: the profile crosses zero between them.
    calls = _legs(bsm.price(spot, k, t, 0.0, 0.0, sigma, True), [0.0, 0.0, 0.0, 1e6, 1e6])
    puts = _legs(bsm.price(spot, k, t, 0.0, 0.0, sigma, False), [1e6, 1e6, 0.0, 0.0, 0.0])
    res = analyze_chain(k, calls, puts, spot, t, r=0.0, q=0.0, lot_size=1)
    assert res.gamma_flip is not None and 95.0 < res.gamma_flip < 105.0
    # By symmetry of the book in ln K around 100 the flip is close to (slightly below) 100.
    assert res.gamma_flip == pytest.approx(100.0, abs=0.6)
    # The flip is a root of the re-priced profile (re-sampled cell, not just the 1 % grid).
    from hftengine.analytics.gex import gex_profile

    level = gex_profile(
        [res.gamma_flip],
        np.r_[k, k],
        np.r_[res.call_iv, res.put_iv],
        np.r_[[0.0, 0.0, 0.0, 1e6, 1e6], [1e6, 1e6, 0.0, 0.0, 0.0]],
        np.r_[np.ones(5), -np.ones(5)],
        t,
        forward_ratio=1.0,
        carry=1.0,
    )
    scale = np.max(np.abs(res.gex_profile))
    assert abs(level[0]) < 1e-4 * scale


def test_zero_crossing_linear_interpolation() -> None:
    levels = np.array([1.0, 2.0, 3.0, 4.0])
    assert zero_crossing(levels, np.array([-2.0, -1.0, 1.0, 2.0]), 2.5) == pytest.approx(2.5)
    assert zero_crossing(levels, np.array([1.0, 2.0, 3.0, 4.0]), 2.5) is None
    # two crossings: the one nearest to `near`
    assert zero_crossing(levels, np.array([1.0, -1.0, -1.0, 1.0]), 3.9) == pytest.approx(3.5)
    assert zero_crossing(levels, np.array([1.0, 0.0, 2.0, 3.0]), 1.0) == 2.0


# ------------------------------------------------------------------ realistic chains
def test_realistic_chain_skew_and_forward(make_chain: MakeChain) -> None:
    ch = make_chain()
    res = analyze_chain(ch.strikes, ch.calls, ch.puts, ch.spot, ch.t, r=ch.r, q=ch.q, lot_size=75)
    forward = ch.spot * math.exp(ch.r * ch.t)
    assert res.forward == pytest.approx(forward)
    assert res.atm_iv == pytest.approx(0.14, abs=2e-4)  # smile value at ln(K/F) = 0 is 0.14
    assert res.rr25 < 0.0  # negative skew parameter: puts richer than calls
    assert res.bf25 > 0.0  # convex smile
    assert np.isfinite(res.total_gex)
    # Far wings: sub-tick prices have no bid, deep ITM prices carry no time value above their
    # last bit; both are reported, nothing else is.
    assert set(res.quality_flags) <= {"one_sided_legs", "iv_unsolvable"}
    unsolved = (res.call_quality & LegQuality.IV_UNSOLVABLE) > 0
    assert (res.call_iv_status[unsolved] == IVStatus.BELOW_INTRINSIC).all()
    assert (ch.strikes[unsolved] < 0.9 * ch.spot).all()
    flat = make_chain(skew=0.0)
    flat = replace(flat)  # same chain object shape
    res_flat = analyze_chain(flat.strikes, flat.calls, flat.puts, flat.spot, flat.t, r=flat.r, q=flat.q, lot_size=75)
    assert abs(res_flat.rr25) < 2e-3 < abs(res.rr25)
    # Black-76 on the parity forward finds the same forward and the same volatilities.
    b76 = analyze_chain(
        ch.strikes,
        ch.calls,
        ch.puts,
        ch.spot,
        ch.t,
        r=ch.r,
        q=ch.q,
        lot_size=75,
        conventions=Conventions(iv_model="black76"),
    )
    assert b76.forward == pytest.approx(forward, rel=1e-9)
    ok = np.isfinite(res.call_iv) & np.isfinite(b76.call_iv)
    np.testing.assert_allclose(b76.call_iv[ok], res.call_iv[ok], atol=1e-7)
    assert b76.total_gex == pytest.approx(res.total_gex, rel=1e-6)
    assert b76.iv_model == "black76"


def test_theta_and_vega_units_are_conventions(make_chain: MakeChain) -> None:
    ch = make_chain(n=20)
    base = analyze_chain(ch.strikes, ch.calls, ch.puts, ch.spot, ch.t, r=ch.r, q=ch.q, lot_size=75)
    daily = analyze_chain(
        ch.strikes,
        ch.calls,
        ch.puts,
        ch.spot,
        ch.t,
        r=ch.r,
        q=ch.q,
        lot_size=75,
        conventions=Conventions(theta_unit="day", vega_per=0.01, version="test.1"),
    )
    np.testing.assert_allclose(daily.call_theta, base.call_theta / 365.0)
    np.testing.assert_allclose(daily.put_charm, base.put_charm / 365.0)
    np.testing.assert_allclose(daily.call_vega, base.call_vega * 0.01)
    assert daily.conventions_version == "test.1"


def test_oi_in_shares_or_contracts_gives_the_same_answers(make_chain: MakeChain) -> None:
    ch = make_chain()
    lot = 75.0

    def in_contracts(legs: LegQuotes) -> LegQuotes:
        return replace(legs, oi=legs.oi / lot, prev_oi=legs.prev_oi / lot, volume=legs.volume / lot)

    shares = analyze_chain(ch.strikes, ch.calls, ch.puts, ch.spot, ch.t, r=ch.r, q=ch.q, lot_size=75)
    contracts = analyze_chain(
        ch.strikes,
        in_contracts(ch.calls),
        in_contracts(ch.puts),
        ch.spot,
        ch.t,
        r=ch.r,
        q=ch.q,
        lot_size=75,
        oi_unit="contracts",
    )
    assert contracts.total_gex == pytest.approx(shares.total_gex, rel=1e-12)
    np.testing.assert_allclose(contracts.gex, shares.gex, rtol=1e-12)
    assert contracts.max_pain == shares.max_pain
    assert contracts.pcr_oi == pytest.approx(shares.pcr_oi)
    assert contracts.gamma_flip == pytest.approx(shares.gamma_flip)
    np.testing.assert_allclose(contracts.call_flow_score, shares.call_flow_score, rtol=1e-9, atol=1e-12)
    # Misreading contracts as shares would be off by the lot size: the unit is never guessed.
    wrong = analyze_chain(
        ch.strikes,
        in_contracts(ch.calls),
        in_contracts(ch.puts),
        ch.spot,
        ch.t,
        r=ch.r,
        q=ch.q,
        lot_size=75,
        oi_unit="shares",
    )
    assert wrong.total_gex == pytest.approx(shares.total_gex / lot, rel=1e-12)
    with pytest.raises(ValueError, match="oi_unit"):
        analyze_chain(ch.strikes, ch.calls, ch.puts, ch.spot, ch.t, r=ch.r, q=ch.q, lot_size=75, oi_unit="lots")  # type: ignore[arg-type]


def test_missing_legs_are_flagged_not_fatal(make_chain: MakeChain) -> None:
    ch = make_chain(n=40)
    gone = np.zeros(40, dtype=np.bool_)
    gone[[0, 5, 17, 39]] = True
    calls = replace(
        ch.calls,
        present=~gone,
        last_price=np.where(gone, np.nan, ch.calls.last_price),
        bid=np.where(gone, np.nan, ch.calls.bid),
        ask=np.where(gone, np.nan, ch.calls.ask),
        oi=np.where(gone, np.nan, ch.calls.oi),
    )
    puts = LegQuotes.missing(40)  # a whole side missing
    res = analyze_chain(ch.strikes, calls, puts, ch.spot, ch.t, r=ch.r, q=ch.q, lot_size=75)
    assert "missing_legs" in res.quality_flags
    assert np.isnan(res.call_iv[gone]).all() and np.isfinite(res.call_iv[~gone]).all()
    assert np.isnan(res.put_iv).all() and (res.put_quality & LegQuality.MISSING).all()
    assert (res.call_iv_status[gone] == IVStatus.INVALID_INPUT).all()
    assert (res.put_buildup == BuildUp.NO_DATA).all()
    assert np.all(res.gex_put == 0.0)  # no position, no exposure
    assert res.pcr_oi == 0.0
    assert "iv_unsolvable" not in res.quality_flags  # missing prices are not solver failures


def test_zero_crossed_and_one_sided_quotes(make_chain: MakeChain) -> None:
    ch = make_chain(n=30, spread=0.01)
    bid, ask, last = ch.calls.bid.copy(), ch.calls.ask.copy(), ch.calls.last_price.copy()
    bid[3], ask[3], last[3] = 0.0, 0.0, 0.0  # nothing at all
    bid[4], ask[4] = ask[4] + 5.0, bid[4]  # crossed: fall back to the last price
    ask[5] = 0.0  # one-sided
    calls = replace(ch.calls, bid=bid, ask=ask, last_price=last)
    res = analyze_chain(ch.strikes, calls, ch.puts, ch.spot, ch.t, r=ch.r, q=ch.q, lot_size=75)
    for flag in ("zero_quotes", "crossed_quotes", "one_sided_legs"):
        assert flag in res.quality_flags
    assert math.isnan(res.call_iv[3])
    assert res.call_quality[3] & LegQuality.ZERO_QUOTES and res.call_quality[3] & LegQuality.NO_PRICE
    assert res.call_quality[4] & LegQuality.CROSSED
    assert res.call_iv[4] == pytest.approx(ch.sigma[4], abs=1e-9)  # solved from the last price
    assert res.call_quality[5] & LegQuality.ONE_SIDED
    assert res.call_iv[5] == pytest.approx(ch.sigma[5], abs=1e-9)


def test_prices_outside_no_arbitrage_bounds_flag_iv_unsolvable(make_chain: MakeChain) -> None:
    ch = make_chain(n=30)
    last = ch.calls.last_price.copy()
    last[0] = 0.5  # deep ITM call far below intrinsic
    calls = replace(ch.calls, last_price=last, bid=np.zeros(30), ask=np.zeros(30))
    res = analyze_chain(ch.strikes, calls, ch.puts, ch.spot, ch.t, r=ch.r, q=ch.q, lot_size=75)
    assert "iv_unsolvable" in res.quality_flags
    assert res.call_iv_status[0] == IVStatus.BELOW_INTRINSIC and math.isnan(res.call_gamma[0])
    assert res.call_quality[0] & LegQuality.IV_UNSOLVABLE


def test_zero_spot(make_chain: MakeChain) -> None:
    ch = make_chain(n=30)
    for spot in (0.0, math.nan, -5.0):
        res = analyze_chain(ch.strikes, ch.calls, ch.puts, spot, ch.t, r=ch.r, q=ch.q, lot_size=75)
        assert "zero_spot" in res.quality_flags and "iv_unsolvable" not in res.quality_flags
        assert np.isnan(res.call_iv).all() and np.isnan(res.gex).all() and math.isnan(res.total_gex)
        assert res.gamma_flip is None and res.call_wall is None and res.put_wall is None
        assert math.isnan(res.atm_iv) and math.isnan(res.forward)
        # OI analytics need no spot.
        assert np.isfinite(res.pcr_oi) and np.isfinite(res.max_pain)


@pytest.mark.parametrize("minutes", [0.0, -30.0, 1.0, 15.0, 60.0])
def test_expiry_day(make_chain: MakeChain, minutes: float) -> None:
    t = minutes / (365.0 * 24 * 60)
    ch = make_chain(n=60, t=max(t, 1e-6), step=10.0)
    res = analyze_chain(ch.strikes, ch.calls, ch.puts, ch.spot, t, r=ch.r, q=ch.q, lot_size=75)
    if t <= 0:
        assert "expired" in res.quality_flags
        priced = ch.calls.last_price > 0
        assert np.isnan(res.call_iv).all() and (res.call_iv_status[priced] == IVStatus.EXPIRED).all()
        assert res.gamma_flip is None and math.isnan(res.total_gex)
        assert np.isfinite(res.max_pain)
    else:
        assert "expired" not in res.quality_flags
        near = np.abs(np.log(ch.strikes / ch.spot)) < 3 * 0.15 * math.sqrt(t)
        assert near.any()
        np.testing.assert_allclose(res.call_iv[near], ch.sigma[near], atol=1e-7)
        assert np.isfinite(res.total_gex)


def test_stale_oi_flag(make_chain: MakeChain) -> None:
    ch = make_chain(n=20)
    calls = replace(ch.calls, prev_oi=ch.calls.oi.copy())
    puts = replace(ch.puts, prev_oi=ch.puts.oi.copy())
    res = analyze_chain(ch.strikes, calls, puts, ch.spot, ch.t, r=ch.r, q=ch.q, lot_size=75)
    assert "stale_oi" in res.quality_flags
    assert res.pcr_doi != res.pcr_doi  # 0/0 -> NaN


def test_unsorted_strikes_keep_caller_order(make_chain: MakeChain) -> None:
    ch = make_chain(n=25)
    order = np.random.default_rng(1).permutation(25)

    def shuffle(legs: LegQuotes) -> LegQuotes:
        return legs.take(order)

    ref = analyze_chain(ch.strikes, ch.calls, ch.puts, ch.spot, ch.t, r=ch.r, q=ch.q, lot_size=75)
    res = analyze_chain(
        ch.strikes[order], shuffle(ch.calls), shuffle(ch.puts), ch.spot, ch.t, r=ch.r, q=ch.q, lot_size=75
    )
    np.testing.assert_array_equal(res.strikes, ch.strikes[order])
    np.testing.assert_allclose(res.call_iv, ref.call_iv[order])
    np.testing.assert_allclose(res.gex, ref.gex[order])
    assert res.max_pain == ref.max_pain and res.total_gex == pytest.approx(ref.total_gex)


def test_empty_chain() -> None:
    res = analyze_chain(np.empty(0), LegQuotes.missing(0), LegQuotes.missing(0), 100.0, 0.1, r=0.0, q=0.0, lot_size=1)
    assert math.isnan(res.max_pain) and math.isnan(res.pcr_oi) and res.gamma_flip is None


# ------------------------------------------------------------------ build-up, flow, skew
def test_buildup_quadrants_and_dead_bands() -> None:
    price = [110.0, 90.0, 110.0, 90.0, 100.02, 110.0, 110.0, 0.0, 110.0]
    prev_price = [100.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0, math.nan]
    oi = [1200.0, 1200.0, 800.0, 800.0, 1200.0, 1000.5, 1200.0, 1200.0, 1200.0]
    prev_oi = [1000.0] * 9
    present = [True] * 6 + [False, True, True]
    codes = classify_buildup(price, prev_price, oi, prev_oi, present=present)
    assert codes.dtype == np.int8
    assert list(codes) == [
        BuildUp.LONG_BUILDUP,  # price up, OI up
        BuildUp.SHORT_BUILDUP,  # price down, OI up
        BuildUp.SHORT_COVERING,  # price up, OI down
        BuildUp.LONG_UNWINDING,  # price down, OI down
        BuildUp.NEUTRAL,  # +0.02 is inside max(0.1 %, 0.05 tick)
        BuildUp.NEUTRAL,  # OI +0.5 inside 0.1 % of 1000
        BuildUp.NO_DATA,  # leg missing
        BuildUp.NO_DATA,  # no price
        BuildUp.NO_DATA,  # no previous price
    ]


def test_buildup_uses_previous_snapshot_ltp_when_given(make_chain: MakeChain) -> None:
    ch = make_chain(n=10)
    calls = replace(ch.calls, prev_last_price=ch.calls.last_price * 1.5, oi=ch.calls.prev_oi * 2 + 10)
    res = analyze_chain(ch.strikes, calls, ch.puts, ch.spot, ch.t, r=ch.r, q=ch.q, lot_size=75)
    moved = ch.calls.last_price > 0.2  # price fell by a third (beyond the tick) while OI rose
    assert (res.call_buildup[moved] == BuildUp.SHORT_BUILDUP).all()


def test_flow_flags_large_premium_and_volume_oi_outliers() -> None:
    n = 40
    rng = np.random.default_rng(5)
    volume = rng.uniform(900, 1100, n)
    oi = rng.uniform(9_000, 11_000, n)
    price = rng.uniform(95, 105, n)
    volume[7] = 200_000.0  # huge premium and turnover
    oi[7] = 10_000.0
    volume[12], oi[12] = 1_500.0, 100.0  # small premium, turnover 15x
    present = np.ones(n, dtype=np.bool_)
    present[30] = False
    score, flags, premium = flow_scores(volume, oi, price, present, zscore=3.0, min_premium=1e6, volume_oi_ratio=1.0)
    assert flags[7] & FlowFlag.LARGE_PREMIUM and flags[7] & FlowFlag.VOLUME_OI
    assert flags[12] == FlowFlag.VOLUME_OI
    assert np.count_nonzero(flags) == 2
    assert score[7] > 3.0 and math.isnan(score[30]) and math.isnan(premium[30])
    assert premium[7] == pytest.approx(200_000.0 * price[7])


def test_flow_in_analyze_chain(make_chain: MakeChain) -> None:
    ch = make_chain(n=50)
    vol = np.full(50, 1_000.0)
    oi = np.full(50, 100_000.0)
    vol[30] = 5_000_000.0
    calls = replace(ch.calls, volume=vol, oi=oi)
    puts = replace(ch.puts, volume=vol * 0 + 1_000.0, oi=oi)
    res = analyze_chain(ch.strikes, calls, puts, ch.spot, ch.t, r=ch.r, q=ch.q, lot_size=75)
    assert res.flow_flags[30] & 0b11  # call-side bits
    assert res.flow_score[30] == np.nanmax(res.flow_score)


def test_term_structure() -> None:
    ts = term_structure([30 / 365, 7 / 365, 90 / 365, 0.0], [0.15, 0.12, 0.14, 0.3])
    np.testing.assert_allclose(ts.t, [7 / 365, 30 / 365, 90 / 365])
    np.testing.assert_allclose(ts.atm_iv, [0.12, 0.15, 0.14])
    w = np.array([0.12**2 * 7, 0.15**2 * 30, 0.14**2 * 90]) / 365
    np.testing.assert_allclose(ts.total_variance, w)
    assert ts.forward_vol[0] == pytest.approx(0.12)
    assert ts.forward_vol[1] == pytest.approx(math.sqrt((w[1] - w[0]) / (23 / 365)))
    assert not ts.calendar_arbitrage.any()
    bad = term_structure([0.1, 0.2], [0.3, 0.2])  # total variance falls: calendar arbitrage
    assert bad.calendar_arbitrage.tolist() == [False, True] and math.isnan(bad.forward_vol[1])


def test_parity_forward_is_robust_to_a_bad_quote() -> None:
    k = np.arange(21_000.0, 23_001.0, 100.0)
    t, r, forward = 10 / 365, 0.065, 22_043.0
    from hftengine.analytics import black76

    call = black76.price(forward, k, t, r, 0.15, True)
    put = black76.price(forward, k, t, r, 0.15, False)
    assert parity_forward(k, call, put, t, r) == pytest.approx(forward, rel=1e-12)
    call_bad = call.copy()
    call_bad[np.argmin(np.abs(k - forward))] += 40.0  # stale quote at the money
    assert parity_forward(k, call_bad, put, t, r) == pytest.approx(forward, rel=1e-12)
    assert math.isnan(parity_forward(k, np.full(k.shape, np.nan), put, t, r))


def test_time_to_expiry() -> None:
    ist = ZoneInfo("Asia/Kolkata")
    now = datetime(2026, 11, 20, 9, 15, tzinfo=ist)
    assert time_to_expiry(now, date(2026, 11, 20)) == pytest.approx(6.25 * 3600 / (365 * 86_400))
    same_instant_utc = now.astimezone(UTC)
    assert time_to_expiry(same_instant_utc, date(2026, 11, 20)) == time_to_expiry(now, date(2026, 11, 20))
    assert time_to_expiry(now, date(2026, 11, 27)) == pytest.approx((7 * 24 + 6.25) / (365 * 24))
    assert time_to_expiry(now + timedelta(hours=7), date(2026, 11, 20)) < 0
    assert time_to_expiry(now, date(2026, 11, 20), time(15, 30), "Asia/Kolkata") > 0
    with pytest.raises(ValueError, match="timezone-aware"):
        time_to_expiry(datetime(2026, 11, 20, 9, 15), date(2026, 11, 20))  # noqa: DTZ001


@pytest.mark.parametrize("seed", range(12))
def test_garbage_rows_never_raise_or_warn(make_chain: MakeChain, seed: int) -> None:
    """NaN, ±inf, negatives and zeros sprinkled over every field: flags and NaN, no exception,
    no RuntimeWarning (warnings are errors in this suite)."""
    ch = make_chain(n=40, seed=seed)
    rng = np.random.default_rng(seed)
    junk = np.array([np.nan, np.inf, -np.inf, -1.0, 0.0, 1e300])

    def spoil(legs: LegQuotes) -> LegQuotes:
        changes: dict[str, np.ndarray] = {}
        for name in ("last_price", "bid", "ask", "volume", "oi", "prev_oi", "prev_close"):
            values = np.asarray(getattr(legs, name), dtype=np.float64).copy()
            hit = rng.random(values.shape[0]) < 0.2
            values[hit] = rng.choice(junk, int(hit.sum()))
            changes[name] = values
        present = legs.present & (rng.random(legs.present.shape[0]) < 0.9)
        return replace(legs, present=present, **changes)

    spot = float(rng.choice([ch.spot, 0.0, np.nan, ch.spot * 1.01]))
    t = float(rng.choice([ch.t, 0.0, 1e-7, -0.01]))
    for model in ("bsm", "black76"):
        res = analyze_chain(
            ch.strikes,
            spoil(ch.calls),
            spoil(ch.puts),
            spot,
            t,
            r=ch.r,
            q=ch.q,
            lot_size=75,
            oi_unit="contracts",
            conventions=Conventions(iv_model=model),
        )
        assert res.call_iv.shape == (40,) and res.gex.shape == (40,) and res.flow_score.shape == (40,)
        assert set(res.quality_flags) <= set(CHAIN_FLAGS)
        finite_iv = res.call_iv[np.isfinite(res.call_iv)]
        assert (finite_iv > 0).all()
