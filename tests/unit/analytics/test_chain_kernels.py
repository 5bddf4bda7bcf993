"""The small-batch chain kernels against slow references and the general-purpose paths.

``analyze_chain`` runs lean variants of the public pieces (one-expiry IV solver, packed
quality bits, block build-up, paired flow z-scores, sorted-strike skew and walls). Each
is checked here against a plain reference written the obvious way, bit for bit where
the arithmetic is the same, and ``analyze_chain`` against the public functions.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from hftengine.analytics import (
    BuildUp,
    Conventions,
    FlowFlag,
    LegQuality,
    analyze_chain,
    atm_iv,
    call_wall,
    classify_buildup,
    flow_scores,
    gamma_flip,
    gex_profile,
    max_pain,
    pcr,
    put_wall,
    risk_reversal_butterfly,
)
from hftengine.analytics import normalized_black as nb
from hftengine.analytics.chain import LegQuotes, mid_price
from hftengine.analytics.gex import wall_in, zero_crossing
from hftengine.analytics.iv import solve_implied_volatility, solve_single_expiry
from hftengine.analytics.quality import leg_quality
from hftengine.analytics.skew import _wings_of_legs, atm_iv_sorted, risk_reversal_butterfly_sorted, wing_iv

from .conftest import MakeChain

JUNK = np.array([np.nan, np.inf, -np.inf, -1.0, 0.0, 1e300])


def _spoil(values: np.ndarray, rng: np.random.Generator, share: float) -> np.ndarray:
    out = np.asarray(values, dtype=np.float64).copy()
    hit = rng.random(out.shape[0]) < share
    out[hit] = rng.choice(JUNK, int(hit.sum()))
    return out


# ------------------------------------------------------------------ IV + Greeks
@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("black76", [False, True])
def test_single_expiry_solver_is_the_block_solver_bit_for_bit(seed: int, black76: bool) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    strikes = np.sort(rng.uniform(15_000.0, 30_000.0, n))
    k2 = np.concatenate((strikes, strikes))
    sign = np.concatenate((np.ones(n), -np.ones(n)))
    underlying = 22_000.0
    t = float(rng.choice([5.0 / 365.0, 0.5, 1e-6]))
    r, q = 0.065, float(rng.choice([0.0, 0.02]))
    sigma = rng.uniform(0.05, 1.5, 2 * n)
    from hftengine.analytics import black76 as b76
    from hftengine.analytics import bsm

    if black76:
        price = b76.price(underlying, k2, t, r, sigma, sign > 0)
    else:
        price = bsm.price(underlying, k2, t, r, q, sigma, sign > 0)
    # tick rounding (prices at or below intrinsic), deep wings (refinement), junk
    price = np.where(rng.random(2 * n) < 0.3, np.round(price / 0.05) * 0.05, price)
    price = _spoil(price, rng, 0.1)
    out, status = solve_single_expiry(price, underlying, k2, t, r, 0.0 if black76 else q, sign, black76=black76)
    ref = solve_implied_volatility(price, underlying, k2, t, r, 0.0 if black76 else q, sign > 0, black76=black76)
    np.testing.assert_array_equal(out[0], ref.iv)
    for row, name in enumerate(("delta", "gamma", "theta", "vega", "rho", "vanna", "charm"), start=1):
        np.testing.assert_array_equal(out[row], getattr(ref.greeks, name), err_msg=name)
    np.testing.assert_array_equal(status, ref.status)


@pytest.mark.parametrize(
    "market", [(0.0, 0.1), (math.nan, 0.1), (22_000.0, 0.0), (22_000.0, -0.1), (22_000.0, math.nan)]
)
def test_single_expiry_solver_invalid_market(market: tuple[float, float]) -> None:
    underlying, t = market
    price = np.array([100.0, math.nan, -1.0, 50.0])
    k = np.array([22_000.0, 22_000.0, 22_000.0, 0.0])
    sign = np.array([1.0, -1.0, 1.0, -1.0])
    out, status = solve_single_expiry(price, underlying, k, t, 0.05, 0.0, sign)
    ref = solve_implied_volatility(price, underlying, k, t, 0.05, 0.0, sign > 0)
    assert np.isnan(out).all()
    np.testing.assert_array_equal(status, ref.status)


def test_small_batch_solver_is_the_block_solver_bit_for_bit() -> None:
    rng = np.random.default_rng(7)
    a = np.concatenate((rng.uniform(0.0, 3.0, 3000), rng.uniform(0.0, 40.0, 300), [0.0, 1e-12, 700.0]))
    p = np.concatenate(
        (
            np.exp(rng.uniform(math.log(1e-300), 0.0, 3000)),
            rng.uniform(1e-6, 1.0 - 1e-12, 300),
            [0.5, 1e-200, 1e-300],
        )
    )
    s, n12, phi, ok = nb.solve_total_vol_small(a, p)
    s_ref, n1_ref, n2_ref, phi_ref, ok_ref = nb.solve_total_vol(a, p)
    np.testing.assert_array_equal(ok, ok_ref)
    for got, want in ((s, s_ref), (n12[0], n1_ref), (n12[1], n2_ref), (phi, phi_ref)):
        np.testing.assert_array_equal(got[ok], want[ok])


# ------------------------------------------------------------------ per-leg pieces
def _quality_reference(
    present: np.ndarray, bid: np.ndarray, ask: np.ndarray, price: np.ndarray, iv_ok: np.ndarray
) -> np.ndarray:
    bits = []
    for pr, b, a, px, ok in zip(present, bid, ask, price, iv_ok, strict=True):
        if not pr:
            bits.append(int(LegQuality.MISSING))
            continue
        value = 0
        has_bid, has_ask = bool(b > 0.0), bool(a > 0.0)
        if has_bid != has_ask:
            value |= LegQuality.ONE_SIDED
        if has_bid and has_ask and b > a:
            value |= LegQuality.CROSSED
        if not (has_bid or has_ask):
            value |= LegQuality.ZERO_QUOTES
        if math.isfinite(px) and not ok:
            value |= LegQuality.IV_UNSOLVABLE
        if not math.isfinite(px):
            value |= LegQuality.NO_PRICE
        bits.append(int(value))
    return np.array(bits, dtype=np.uint8)


@pytest.mark.parametrize("n", [1, 15, 16, 17, 400])
def test_leg_quality_matches_the_rule_leg_by_leg(n: int) -> None:
    rng = np.random.default_rng(n)
    present = rng.random(n) < 0.8
    bid = rng.choice([0.0, 1.0, 2.0, np.nan, -1.0], n)
    ask = rng.choice([0.0, 1.0, 2.0, np.nan, np.inf], n)
    price = rng.choice([np.nan, 1.5, np.inf], n)
    iv_ok = rng.random(n) < 0.5
    with np.errstate(invalid="ignore"):
        want = _quality_reference(present, bid, ask, price, iv_ok)
    got = leg_quality(present, bid, ask, price, iv_ok)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, want)


def _buildup_reference(p: np.ndarray, p0: np.ndarray, o: np.ndarray, o0: np.ndarray, present: np.ndarray) -> np.ndarray:
    codes = []
    for a, a0, b, b0, live in zip(p, p0, o, o0, present, strict=True):
        if not (live and a > 0.0 and a0 > 0.0 and math.isfinite(a + a0 + b + b0)):
            codes.append(BuildUp.NO_DATA)
            continue
        band_p, band_o = max(0.001 * abs(a0), 0.05), max(0.001 * abs(b0), 0.0)
        up, down = a - a0 > band_p, a - a0 < -band_p
        oi_up, oi_down = b - b0 > band_o, b - b0 < -band_o
        if (up or down) and (oi_up or oi_down):
            codes.append(1 + int(down) + 2 * int(oi_down))
        else:
            codes.append(BuildUp.NEUTRAL)
    return np.array(codes, dtype=np.int8)


def test_buildup_matches_the_rule_leg_by_leg() -> None:
    rng = np.random.default_rng(3)
    n = 500
    p0 = rng.uniform(1.0, 200.0, n)
    p = p0 * rng.choice([0.9, 1.0, 1.0004, 1.1], n)
    o0 = rng.integers(0, 10_000, n).astype(float)
    o = o0 + rng.choice([-500.0, 0.0, 5.0, 500.0], n)
    p, p0, o, o0 = (_spoil(v, rng, 0.05) for v in (p, p0, o, o0))
    present = rng.random(n) < 0.95
    with np.errstate(all="ignore"):
        want = _buildup_reference(p, p0, o, o0, present)
    np.testing.assert_array_equal(classify_buildup(p, p0, o, o0, present=present), want)


def _flow_reference(
    vol: np.ndarray, oi: np.ndarray, px: np.ndarray, present: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The flow measure written out with masks over the whole chain (the original form)."""

    def robust(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
        out = np.full(values.shape, np.nan)
        sample = values[mask]
        m = sample.size
        if m < 4:
            out[mask] = 0.0
            return out
        part = np.sort(sample)
        scale = (part[(3 * m) // 4] - part[m // 4]) / 1.349
        med = part[m // 2]
        z = (sample - med) / scale if scale > 0.0 else np.sign(sample - med) * np.inf
        out[mask] = np.where(sample == med, 0.0, z)
        return out

    live = present & np.isfinite(vol) & np.isfinite(px)
    traded = live & (vol > 0.0) & (px > 0.0)
    premium = np.where(traded, vol * px, 0.0)
    turnover = np.where(oi > 0.0, vol / oi, np.inf)
    z_prem = robust(np.log1p(premium), traded)
    z_turn = robust(np.log1p(np.where(np.isfinite(turnover), turnover, 0.0)), traded & np.isfinite(turnover))
    z_turn = np.where(traded & ~np.isfinite(turnover), np.inf, z_turn)
    score = np.where(live, np.where(traded, np.fmax(z_prem, z_turn), 0.0), np.nan)
    large = traded & (z_prem >= 3.0) & (premium >= 1e6)
    unusual = traded & (z_turn >= 3.0) & (turnover >= 1.0)
    flags = (large * np.uint8(FlowFlag.LARGE_PREMIUM) | unusual * np.uint8(FlowFlag.VOLUME_OI)).astype(np.uint8)
    return score, flags, np.where(live, premium, np.nan)


@pytest.mark.parametrize("seed", range(6))
def test_flow_scores_match_the_masked_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 400))
    vol = rng.uniform(0.0, 1e5, n) * (rng.random(n) < 0.8)
    oi = rng.uniform(0.0, 1e6, n) * (rng.random(n) < 0.9)
    px = rng.uniform(0.05, 500.0, n)
    vol[rng.integers(0, n)] = 1e8  # an outlier
    if seed % 2:
        vol, oi, px = (_spoil(v, rng, 0.1) for v in (vol, oi, px))
    if seed == 4:
        vol[: n // 2] = 1_000.0  # zero spread: ±inf scores
        px[: n // 2] = 10.0
    present = rng.random(n) < 0.9
    with np.errstate(all="ignore"):
        want = _flow_reference(vol, oi, px, present)
    got = flow_scores(vol, oi, px, present)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


# ------------------------------------------------------------------ skew, walls, profile
@pytest.mark.parametrize("seed", range(20))
def test_sorted_skew_paths_match_the_general_ones(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    k = np.cumsum(rng.uniform(10.0, 100.0, n)) + 20_000.0
    forward = float(rng.choice([k[n // 2], k[0] - 1.0, k[-1] + 1.0, float(np.mean(k)), k[0], k[-1]]))
    call_iv = rng.uniform(0.1, 0.3, n)
    put_iv = rng.uniform(0.1, 0.3, n)
    call_delta = np.sort(rng.uniform(0.0, 1.0, n))[::-1].copy()
    put_delta = np.sort(rng.uniform(-1.0, 0.0, n))[::-1].copy()
    hole = rng.random((4, n)) < (0.05 * (seed % 5)) * 3
    call_iv[hole[0]] = np.nan
    put_iv[hole[1]] = np.nan
    call_delta[np.isnan(call_iv)] = np.nan
    put_delta[np.isnan(put_iv)] = np.nan
    if seed % 3 == 0:  # not monotone: the fallback path
        call_delta = rng.permutation(call_delta)
        put_delta = rng.permutation(put_delta)
    if seed == 5:
        call_delta[:] = 0.25  # ties
    assert atm_iv_sorted(k, call_iv, put_iv, forward) == pytest.approx(
        atm_iv(k, call_iv, put_iv, forward), rel=0, abs=0, nan_ok=True
    )
    for target in (0.25, 0.1, 0.9):
        got = risk_reversal_butterfly_sorted(k, forward, call_iv, put_iv, call_delta, put_delta, 0.2, wing=target)
        want = risk_reversal_butterfly(k, forward, call_iv, put_iv, call_delta, put_delta, 0.2, wing=target)
        np.testing.assert_array_equal(got, want)
    ok = np.isfinite(call_delta) & np.isfinite(call_iv)
    assert math.isnan(wing_iv(call_delta[~ok], call_iv[~ok], 0.25))
    # Both wings from the adjacent OTM legs of the 2N layout (analyze_chain's path): the
    # per-wing results whenever it applies (falling deltas across both wings).
    first_call, last_put = int(k.searchsorted(forward, "left")), int(k.searchsorted(forward, "right"))
    otm = slice(first_call, n + last_put)
    legs_delta, legs_iv = np.concatenate((call_delta, put_delta))[otm], np.concatenate((call_iv, put_iv))[otm]
    for target in (0.25, 0.1, 0.9, 0.0):
        wings = _wings_of_legs(legs_delta, legs_iv, n - first_call, target)
        if wings is None:
            continue
        got = (wings[0] - wings[1], 0.5 * (wings[0] + wings[1]) - 0.2)
        want = risk_reversal_butterfly(k, forward, call_iv, put_iv, call_delta, put_delta, 0.2, wing=target)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("seed", range(10))
def test_walls_on_sorted_strikes_match_the_general_ones(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 50))
    k = np.sort(rng.choice(np.arange(90.0, 140.0), n, replace=False))
    spot = float(rng.choice([k[0], k[-1], float(np.median(k)), 80.0, 150.0, 115.5]))
    gex_call = rng.choice([0.0, 1.0, 5.0, 5.0, 3.0], n)
    gex_put = -rng.choice([0.0, 2.0, 7.0, 7.0], n)
    finite = seed % 2 == 0
    if not finite:
        gex_call, gex_put = _spoil(gex_call, rng, 0.2), _spoil(gex_put, rng, 0.2)
    above, below = int(k.searchsorted(spot, "left")), int(k.searchsorted(spot, "right"))
    assert wall_in(k, gex_call, above, n, finite=finite) == call_wall(k, gex_call, spot)
    assert wall_in(k, gex_put, 0, below, finite=finite) == put_wall(k, gex_put, spot)


def test_gex_profile_matches_the_outer_product_form() -> None:
    rng = np.random.default_rng(11)
    m = 300
    strikes = rng.uniform(18_000.0, 26_000.0, m)
    iv = rng.uniform(0.08, 0.6, m)
    iv[::17] = np.nan
    oi = rng.uniform(0.0, 1e6, m)
    oi[::13] = 0.0
    signs = np.where(rng.random(m) < 0.5, 1.0, -1.0)
    t, ratio, carry = 7.0 / 365.0, 1.0012, 0.999
    levels = 22_000.0 * (1.0 + np.linspace(-0.1, 0.1, 41))
    got = gex_profile(levels, strikes, iv, oi, signs, t, forward_ratio=ratio, carry=carry)
    use = (iv > 0) & (oi != 0) & np.isfinite(iv * oi)
    w = iv[use] * math.sqrt(t)
    d1 = (np.log(np.multiply.outer(levels, ratio / strikes[use])) + 0.5 * w * w) / w
    want = (
        0.01
        * levels
        * carry
        / math.sqrt(t)
        * (np.exp(-0.5 * d1 * d1) @ (signs[use] * oi[use] / iv[use]))
        / math.sqrt(2.0 * math.pi)
    )
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-9 * np.abs(want).max())
    assert gex_profile(22_000.0, strikes, iv, oi, signs, t, forward_ratio=ratio, carry=carry).shape == ()


def _previous_gex_profile(
    levels: np.ndarray, strikes: np.ndarray, iv: np.ndarray, oi: np.ndarray, signs: np.ndarray, t: float, ratio: float
) -> np.ndarray:
    """The profile as computed before the centred quadratic form (carry 1, move 0.01):
    ``d1 = ln S'·(1/w) + (w²/2 − ln(K/ratio))·(1/w)``, one product and sum per entry."""
    use = (iv > 0) & (oi != 0) & np.isfinite(iv * oi)
    w = iv[use] * math.sqrt(t)
    inv_w = 1.0 / w
    offset = (w * 0.5 * w - np.log(strikes[use] * (1.0 / ratio))) * inv_w
    z = np.log(levels)[:, None] * inv_w + offset
    phi = np.exp(np.maximum(-0.5 * z * z, -700.0))
    coef = signs[use] * oi[use] / iv[use] / math.sqrt(2.0 * math.pi)
    result: np.ndarray = (phi @ coef) * levels * (0.01 / math.sqrt(t))
    return result


def _long_double_gex_profile(
    levels: np.ndarray, strikes: np.ndarray, iv: np.ndarray, oi: np.ndarray, signs: np.ndarray, t: float, ratio: float
) -> np.ndarray:
    """The profile in extended precision (carry 1, move 0.01)."""
    ld = np.longdouble
    use = (iv > 0) & (oi != 0) & np.isfinite(iv * oi)
    w = iv[use].astype(ld) * np.sqrt(ld(t))
    d1 = (np.log(np.multiply.outer(levels.astype(ld), ld(ratio) / strikes[use].astype(ld))) + w * w / 2) / w
    coef = (signs[use] * oi[use] / iv[use]).astype(ld)
    total = (np.exp(-d1 * d1 / 2) @ coef) * levels.astype(ld) * ld(0.01) / np.sqrt(ld(t) * 2 * ld(np.pi))
    result: np.ndarray = total.astype(np.float64)
    return result


@pytest.mark.parametrize("seed", range(40))
def test_gex_profile_agrees_with_the_previous_formula(seed: int) -> None:
    # The centred quadratic form changes the last bits: within 1e-12 of the previous
    # formula (relative, or of the profile's scale near its zeros), closer than it to an
    # extended-precision evaluation, and the same gamma flip.
    rng = np.random.default_rng(seed)
    m = int(rng.integers(2, 400))
    strikes = rng.uniform(15_000.0, 30_000.0, m)
    iv = rng.uniform(0.05, 1.0, m)
    iv[rng.random(m) < 0.1] = np.nan
    oi = rng.uniform(0.0, 1e7, m)
    oi[rng.random(m) < 0.1] = 0.0
    signs = np.where(rng.random(m) < 0.5, 1.0, -1.0)
    t = float(rng.choice([1.0 / 365.0, 5.0 / 365.0, 0.1, 1.0]))
    spot = 22_000.0 * rng.uniform(0.9, 1.1)
    ratio = math.exp(0.065 * t)
    flip, grid, profile = gamma_flip(spot, strikes, iv, oi, signs, t, forward_ratio=ratio, carry=1.0)
    previous = _previous_gex_profile(grid, strikes, iv, oi, signs, t, ratio)
    scale = np.abs(previous).max()
    np.testing.assert_allclose(profile, previous, rtol=1e-12, atol=1e-12 * scale)
    exact = _long_double_gex_profile(grid, strikes, iv, oi, signs, t, ratio)
    assert np.abs(profile - exact).max() <= 3e-13 * scale
    levels = grid[:-1] + 0.37 * np.diff(grid)  # off the grid: the uncached path
    got = gex_profile(levels, strikes, iv, oi, signs, t, forward_ratio=ratio, carry=1.0)
    np.testing.assert_allclose(
        got, _previous_gex_profile(levels, strikes, iv, oi, signs, t, ratio), rtol=1e-12, atol=1e-12 * scale
    )

    def previous_at(levels: np.ndarray) -> np.ndarray:
        return _previous_gex_profile(levels, strikes, iv, oi, signs, t, ratio)

    previous_flip = zero_crossing(grid, previous, spot, previous_at)
    if previous_flip is None:
        assert flip is None
    else:  # the flip interpolates the profile: the same to ~1e-12 relative
        assert flip == pytest.approx(previous_flip, rel=1e-12)


# ------------------------------------------------------------------ analyze_chain vs the public pieces
def _junk_chain(make_chain: MakeChain, seed: int) -> tuple[np.ndarray, LegQuotes, LegQuotes, float, float]:
    ch = make_chain(n=120, seed=seed, spread=0.004)
    rng = np.random.default_rng(seed)

    def spoil(legs: LegQuotes) -> LegQuotes:
        changes = {
            name: _spoil(getattr(legs, name), rng, 0.05) for name in ("last_price", "bid", "ask", "oi", "volume")
        }
        return replace(legs, present=legs.present & (rng.random(120) < 0.95), **changes)

    return ch.strikes, spoil(ch.calls), spoil(ch.puts), ch.spot, ch.t


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("model", ["bsm", "black76"])
def test_analyze_chain_agrees_with_the_public_functions(make_chain: MakeChain, seed: int, model: str) -> None:
    strikes, calls, puts, spot, t = _junk_chain(make_chain, seed)
    cv = Conventions(iv_model=model)  # type: ignore[arg-type]
    res = analyze_chain(strikes, calls, puts, spot, t, r=0.065, q=0.0, lot_size=75, conventions=cv)
    present = np.concatenate((calls.present, puts.present))
    legs = {name: np.concatenate((getattr(calls, name), getattr(puts, name))) for name in ("bid", "ask", "last_price")}
    px = mid_price(legs["bid"], legs["ask"], legs["last_price"], present)
    n = strikes.shape[0]
    with np.errstate(all="ignore"):
        oi = {
            side: np.where(legs_.present & np.isfinite(legs_.oi), legs_.oi, 0.0)
            for side, legs_ in (("c", calls), ("p", puts))
        }
        vol = {
            side: np.where(legs_.present & np.isfinite(legs_.volume), legs_.volume, 0.0)
            for side, legs_ in (("c", calls), ("p", puts))
        }
    assert res.pcr_oi == pcr(oi["p"], oi["c"])
    assert res.pcr_volume == pcr(vol["p"], vol["c"])
    assert res.max_pain == max_pain(strikes, oi["c"], oi["p"])
    assert res.call_wall == call_wall(strikes, res.gex_call, spot)
    assert res.put_wall == put_wall(strikes, res.gex_put, spot)
    assert res.atm_iv == pytest.approx(atm_iv(strikes, res.call_iv, res.put_iv, res.forward), rel=0, abs=0, nan_ok=True)
    rr_bf = risk_reversal_butterfly(
        strikes, res.forward, res.call_iv, res.put_iv, res.call_delta, res.put_delta, res.atm_iv
    )
    np.testing.assert_array_equal((res.rr25, res.bf25), rr_bf)
    np.testing.assert_array_equal(
        np.concatenate((res.call_buildup, res.put_buildup)),
        classify_buildup(
            legs["last_price"],
            np.concatenate((calls.prev_close, puts.prev_close)),
            np.concatenate((calls.oi, puts.oi)),
            np.concatenate((calls.prev_oi, puts.prev_oi)),
            present=present,
        ),
    )
    score, fflags, premium = flow_scores(
        np.concatenate((vol["c"], vol["p"])), np.concatenate((oi["c"], oi["p"])), px, present
    )
    np.testing.assert_array_equal(np.concatenate((res.call_flow_score, res.put_flow_score)), score)
    np.testing.assert_array_equal(res.flow_flags, fflags[:n] | (fflags[n:] << 2))
    np.testing.assert_array_equal(np.concatenate((res.call_premium, res.put_premium)), premium)
    iv = np.concatenate((res.call_iv, res.put_iv))
    np.testing.assert_array_equal(
        np.concatenate((res.call_quality, res.put_quality)),
        leg_quality(present, legs["bid"], legs["ask"], px, np.isfinite(iv)),
    )
    if model == "bsm":
        flip, grid, profile = gamma_flip(
            spot,
            np.concatenate((strikes, strikes)),
            iv,
            np.concatenate((oi["c"], oi["p"])),
            np.concatenate((np.ones(n), -np.ones(n))),
            t,
            forward_ratio=math.exp(0.065 * t),
            carry=1.0,
        )
        assert res.gamma_flip == flip
        np.testing.assert_array_equal(res.gex_profile, profile)
        np.testing.assert_array_equal(res.gex_profile_spots, grid)


def test_fast_result_constructor_is_the_dataclass(make_chain: MakeChain) -> None:
    from dataclasses import fields

    from hftengine.analytics.chain import ChainResult, _chain_result

    ch = make_chain(n=10)
    res = analyze_chain(ch.strikes, ch.calls, ch.puts, ch.spot, ch.t, r=ch.r, q=ch.q, lot_size=75)
    values = {f.name: getattr(res, f.name) for f in fields(ChainResult)}
    plain = ChainResult(**values)
    assert all(getattr(plain, name) is getattr(res, name) for name in values)
    with pytest.raises(TypeError, match="missing"):
        _chain_result(**{k: v for k, v in values.items() if k != "spot"})
    with pytest.raises(TypeError, match="no field"):
        _chain_result(**values, extra=1)
