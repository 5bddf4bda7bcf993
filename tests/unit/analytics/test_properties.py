"""Round trips, analytic vs finite-difference Greeks (hypothesis, fixed seeds) and a slow
pure-Python scalar reference against the vectorised kernels."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hftengine.analytics import black76, bsm
from hftengine.analytics.iv import implied_volatility, implied_volatility_and_greeks

FIXED = settings(derandomize=True, database=None, deadline=None, max_examples=150)

spots = st.floats(50.0, 60_000.0)
log_moneyness = st.floats(-0.35, 0.35)
times = st.floats(1.0 / 365.0, 3.0)
vols = st.floats(0.03, 1.5)
rates = st.floats(-0.01, 0.12)
yields = st.floats(0.0, 0.06)
calls = st.booleans()


def _density(spot: float, strike: float, t: float, r: float, q: float, sigma: float) -> float:
    s = sigma * math.sqrt(t)
    d1 = (math.log(spot / strike) + (r - q) * t) / s + 0.5 * s
    return math.exp(-0.5 * d1 * d1) / math.sqrt(2.0 * math.pi)


def _price(spot: float, strike: float, t: float, r: float, q: float, sigma: float, is_call: bool) -> float:
    return float(bsm.price(spot, strike, t, r, q, sigma, is_call))


@FIXED
@given(spots, log_moneyness, times, vols, rates, yields, calls)
def test_price_iv_price_round_trip(
    spot: float, lm: float, t: float, sigma: float, r: float, q: float, is_call: bool
) -> None:
    strike = spot * math.exp(lm)
    assume(_density(spot, strike, t, r, q, sigma) > 1e-4)
    price = _price(spot, strike, t, r, q, sigma, is_call)
    solved = float(implied_volatility(price, spot, strike, t, r, q, is_call))
    assert solved == pytest.approx(sigma, abs=1e-9)
    assert _price(spot, strike, t, r, q, solved, is_call) == pytest.approx(price, rel=1e-12, abs=1e-12 * spot)


@FIXED
@given(spots, log_moneyness, times, vols, rates, calls)
def test_black76_round_trip_and_parity(
    forward: float, lm: float, t: float, sigma: float, r: float, is_call: bool
) -> None:
    strike = forward * math.exp(lm)
    assume(_density(forward, strike, t, 0.0, 0.0, sigma) > 1e-4)
    price = float(black76.price(forward, strike, t, r, sigma, is_call))
    other = float(black76.price(forward, strike, t, r, sigma, not is_call))
    call, put = (price, other) if is_call else (other, price)
    assert call - put == pytest.approx(math.exp(-r * t) * (forward - strike), rel=1e-12, abs=1e-11 * forward)
    assert float(black76.implied_volatility(price, forward, strike, t, r, is_call)) == pytest.approx(sigma, abs=1e-9)


def _central(f: Callable[[float], float], x: float, h: float) -> float:
    """Richardson-extrapolated central difference (error O(h⁴))."""

    def d(step: float) -> float:
        return (f(x + step) - f(x - step)) / (2.0 * step)

    return (4.0 * d(0.5 * h) - d(h)) / 3.0


def _second(f: Callable[[float], float], x: float, h: float) -> float:
    """Richardson-extrapolated second difference (error O(h⁴))."""

    def d(step: float) -> float:
        return (f(x + step) - 2.0 * f(x) + f(x - step)) / step**2

    return (4.0 * d(0.5 * h) - d(h)) / 3.0


@FIXED
@given(log_moneyness, st.floats(5.0 / 365.0, 2.0), st.floats(0.05, 1.0), rates, yields, calls)
def test_bsm_greeks_vs_finite_differences(lm: float, t: float, sigma: float, r: float, q: float, is_call: bool) -> None:
    spot = 22_000.0
    strike = spot * math.exp(lm)
    assume(_density(spot, strike, t, r, q, sigma) > 1e-3)
    g = bsm.greeks(spot, strike, t, r, q, sigma, is_call)

    def v(**kw: float) -> float:
        args = {"S": spot, "K": strike, "t": t, "r": r, "q": q, "sigma": sigma} | kw
        return float(bsm.price(args["S"], args["K"], args["t"], args["r"], args["q"], args["sigma"], is_call))

    def delta(**kw: float) -> float:
        args = {"S": spot, "K": strike, "t": t, "r": r, "q": q, "sigma": sigma} | kw
        return float(bsm.greeks(args["S"], args["K"], args["t"], args["r"], args["q"], args["sigma"], is_call).delta)

    hs = spot * sigma * math.sqrt(t) * 1e-2  # step on the scale of the density width
    fd = {
        "delta": _central(lambda x: v(S=x), spot, hs),
        "gamma": _second(lambda x: v(S=x), spot, hs),
        "vega": _central(lambda x: v(sigma=x), sigma, 1e-5),
        "theta": -_central(lambda x: v(t=x), t, t * 1e-5),
        "rho": _central(lambda x: v(r=x), r, 1e-6),
        "vanna": _central(lambda x: delta(sigma=x), sigma, 1e-5),
        "charm": -_central(lambda x: delta(t=x), t, t * 1e-5),
    }
    price_scale = max(v(), 1e-3 * spot * sigma * math.sqrt(t))
    scales = {
        "delta": 1e-9,
        "gamma": 1e-9 * price_scale / spot**2,
        "vega": 1e-8 * price_scale,
        "theta": 1e-8 * price_scale / t,
        "rho": 1e-8 * price_scale * t,
        "vanna": 1e-8 / spot,
        "charm": 1e-8 / t,
    }
    for name, approx in fd.items():
        exact = float(getattr(g, name))
        assert approx == pytest.approx(exact, rel=2e-5, abs=scales[name] + 2e-5 * abs(exact)), name


@FIXED
@given(log_moneyness, st.floats(5.0 / 365.0, 2.0), st.floats(0.05, 1.0), rates, calls)
def test_black76_greeks_vs_finite_differences(lm: float, t: float, sigma: float, r: float, is_call: bool) -> None:
    forward = 22_000.0
    strike = forward * math.exp(lm)
    assume(_density(forward, strike, t, 0.0, 0.0, sigma) > 1e-3)
    g = black76.greeks(forward, strike, t, r, sigma, is_call)

    def v(**kw: float) -> float:
        a = {"F": forward, "t": t, "r": r, "sigma": sigma} | kw
        return float(black76.price(a["F"], strike, a["t"], a["r"], a["sigma"], is_call))

    h = forward * 1e-4
    checks = {
        "delta": _central(lambda x: v(F=x), forward, h),
        "vega": _central(lambda x: v(sigma=x), sigma, 1e-5),
        "theta": -_central(lambda x: v(t=x), t, t * 1e-5),
        "rho": _central(lambda x: v(r=x), r, 1e-6),
    }
    for name, approx in checks.items():
        exact = float(getattr(g, name))
        assert approx == pytest.approx(exact, rel=2e-5, abs=1e-7 * forward), name


# ------------------------------------------------------------------ slow scalar reference
def _ref_norm_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _ref_price(spot: float, strike: float, t: float, r: float, q: float, sigma: float, is_call: bool) -> float:
    s = sigma * math.sqrt(t)
    d1 = (math.log(spot / strike) + (r - q) * t) / s + 0.5 * s
    d2 = d1 - s
    th = 1.0 if is_call else -1.0
    return th * (spot * math.exp(-q * t) * _ref_norm_cdf(th * d1) - strike * math.exp(-r * t) * _ref_norm_cdf(th * d2))


def _ref_iv(price: float, spot: float, strike: float, t: float, r: float, q: float, is_call: bool) -> float:
    lo, hi = 1e-6, 5.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _ref_price(spot, strike, t, r, q, mid, is_call) > price:
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


def test_vectorised_kernel_matches_scalar_reference() -> None:
    rng = np.random.default_rng(2026)
    n = 300
    strikes = 22_000.0 * np.exp(rng.uniform(-0.2, 0.2, n))
    t = rng.uniform(2.0, 120.0, n) / 365.0
    sigma = rng.uniform(0.08, 0.8, n)
    is_call = rng.random(n) < 0.5
    r, q = 0.065, 0.01
    ref_prices = np.array([_ref_price(22_000.0, strikes[i], t[i], r, q, sigma[i], bool(is_call[i])) for i in range(n)])
    prices = bsm.price(22_000.0, strikes, t, r, q, sigma, is_call)
    np.testing.assert_allclose(prices, ref_prices, rtol=1e-11, atol=1e-9)
    solved = implied_volatility_and_greeks(ref_prices, 22_000.0, strikes, t, r, q, is_call)
    informative = np.array([_density(22_000.0, strikes[i], t[i], r, q, sigma[i]) > 1e-3 for i in range(n)])
    ref_iv = np.array(
        [
            _ref_iv(ref_prices[i], 22_000.0, strikes[i], t[i], r, q, bool(is_call[i]))
            for i in np.flatnonzero(informative)
        ]
    )
    np.testing.assert_allclose(solved.iv[informative], ref_iv, rtol=0, atol=1e-9)
