"""Implied volatility: accuracy on one million random options, bad rows, shapes, blocks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hftengine.analytics import bsm, iv
from hftengine.analytics.iv import IVStatus, implied_volatility, implied_volatility_and_greeks

SPOT = 22_000.0
RATE = 0.065


def _random_book(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "K": rng.uniform(18_000.0, 26_000.0, n),
        "t": rng.uniform(1.0, 60.0, n) / 365.0,
        "sigma": rng.uniform(0.08, 0.60, n),
        "is_call": rng.random(n) < 0.5,
    }


def _density_at_d1(book: dict[str, np.ndarray], q: float = 0.0) -> np.ndarray:
    s = book["sigma"] * np.sqrt(book["t"])
    d1 = (np.log(SPOT / book["K"]) + (RATE - q) * book["t"]) / s + 0.5 * s
    return np.exp(-0.5 * d1 * d1) / math.sqrt(2.0 * math.pi)


def _solvable(price: np.ndarray, book: dict[str, np.ndarray], q: float = 0.0) -> np.ndarray:
    fd = SPOT * np.exp(-q * book["t"])
    kd = book["K"] * np.exp(-RATE * book["t"])
    intrinsic = np.maximum(np.where(book["is_call"], fd - kd, kd - fd), 0.0)
    upper = np.where(book["is_call"], fd, kd)
    return (price > intrinsic) & (price < upper)


@pytest.fixture(scope="module")
def million() -> tuple[dict[str, np.ndarray], np.ndarray, iv.IVResult]:
    book = _random_book(1_000_000, seed=20261101)
    price = bsm.price(SPOT, book["K"], book["t"], RATE, 0.0, book["sigma"], book["is_call"])
    result = implied_volatility_and_greeks(price, SPOT, book["K"], book["t"], RATE, 0.0, book["is_call"])
    return book, price, result


def test_million_options_accuracy(million: tuple[dict[str, np.ndarray], np.ndarray, iv.IVResult]) -> None:
    book, _, result = million
    err = np.abs(result.iv - book["sigma"])
    density = _density_at_d1(book)
    core = density > 1e-3
    wing = density > 1e-6
    assert core.sum() > 800_000 and wing.sum() > core.sum()
    assert np.nanmax(err[core]) < 1e-10, np.nanmax(err[core])
    assert np.nanmax(err[wing]) < 1e-8, np.nanmax(err[wing])
    assert not np.isnan(result.iv[wing]).any()


def test_million_options_no_nan_where_solvable(
    million: tuple[dict[str, np.ndarray], np.ndarray, iv.IVResult],
) -> None:
    book, price, result = million
    solvable = _solvable(price, book)
    assert solvable.sum() > 980_000
    assert np.isfinite(result.iv[solvable]).all()
    assert (result.status[solvable] == IVStatus.OK).all()
    # The rest: prices that underflowed to (or rounded onto) intrinsic value.
    rest = ~solvable
    assert np.isnan(result.iv[rest]).all()
    assert set(np.unique(result.status[rest])) <= {IVStatus.BELOW_INTRINSIC, IVStatus.ABOVE_UPPER_BOUND}


def test_million_options_greeks_match_forward_greeks(
    million: tuple[dict[str, np.ndarray], np.ndarray, iv.IVResult],
) -> None:
    book, _, result = million
    core = _density_at_d1(book) > 1e-3
    sample = np.flatnonzero(core)[::50]
    ref = bsm.greeks(
        SPOT, book["K"][sample], book["t"][sample], RATE, 0.0, book["sigma"][sample], book["is_call"][sample]
    )
    for name in ("delta", "gamma", "theta", "vega", "rho", "vanna", "charm"):
        got = getattr(result.greeks, name)[sample]
        want = getattr(ref, name)
        scale = np.abs(want) + 1e-8 * np.max(np.abs(want))
        assert np.max(np.abs(got - want) / scale) < 1e-7, name


def test_dividend_yield_and_black76_agree_on_equivalent_inputs() -> None:
    book = _random_book(20_000, seed=7)
    q = 0.012
    price = bsm.price(SPOT, book["K"], book["t"], RATE, q, book["sigma"], book["is_call"])
    sigma = implied_volatility(price, SPOT, book["K"], book["t"], RATE, q, book["is_call"])
    core = _density_at_d1(book, q) > 1e-3
    assert np.max(np.abs(sigma[core] - book["sigma"][core])) < 1e-10
    from hftengine.analytics import black76

    forward = SPOT * np.exp((RATE - q) * book["t"])
    sigma76 = black76.implied_volatility(price, forward, book["K"], book["t"], RATE, book["is_call"])
    assert np.max(np.abs(sigma76[core] - book["sigma"][core])) < 1e-9


@pytest.mark.parametrize(
    ("price", "spot", "strike", "t", "is_call", "status"),
    [
        (10.0, SPOT, 20_000.0, 0.05, True, IVStatus.BELOW_INTRINSIC),  # deep ITM call below intrinsic
        (0.0, SPOT, 25_000.0, 0.05, True, IVStatus.BELOW_INTRINSIC),
        (-1.0, SPOT, 22_000.0, 0.05, False, IVStatus.BELOW_INTRINSIC),
        (SPOT, SPOT, 22_000.0, 0.05, True, IVStatus.ABOVE_UPPER_BOUND),  # call >= S
        (30_000.0, SPOT, 25_000.0, 0.05, False, IVStatus.ABOVE_UPPER_BOUND),  # put >= K e^{-rt}
        (100.0, SPOT, 22_000.0, 0.0, True, IVStatus.EXPIRED),
        (100.0, SPOT, 22_000.0, -0.01, False, IVStatus.EXPIRED),
        (math.nan, SPOT, 22_000.0, 0.05, True, IVStatus.INVALID_INPUT),
        (100.0, math.inf, 22_000.0, 0.05, True, IVStatus.INVALID_INPUT),
        (100.0, 0.0, 22_000.0, 0.05, False, IVStatus.INVALID_INPUT),
        (100.0, SPOT, 0.0, 0.05, False, IVStatus.INVALID_INPUT),
        (100.0, SPOT, -5.0, 0.05, True, IVStatus.INVALID_INPUT),
        (100.0, SPOT, 22_000.0, math.nan, True, IVStatus.INVALID_INPUT),
    ],
)
def test_bad_rows_are_nan_with_a_reason(
    price: float, spot: float, strike: float, t: float, is_call: bool, status: IVStatus
) -> None:
    # Mixed with good rows so that the block path (not a scalar shortcut) is exercised.
    prices = np.array([price, 150.0, 150.0])
    res = implied_volatility_and_greeks(
        prices,
        spot,
        [strike, 22_000.0, 22_000.0],
        [t, 0.05, 0.05],
        RATE,
        0.0,
        [is_call, True, False],
    )
    assert math.isnan(res.iv[0])
    assert res.status[0] == status
    for name in ("delta", "gamma", "theta", "vega", "rho", "vanna", "charm"):
        assert math.isnan(getattr(res.greeks, name)[0])
    if np.isfinite(spot) and spot > 0:
        assert np.isfinite(res.iv[1:]).all()


def test_scalars_and_broadcasting() -> None:
    p = bsm.price(SPOT, 22_500.0, 0.1, RATE, 0.0, 0.2, True)
    assert p.shape == ()
    sigma = implied_volatility(p, SPOT, 22_500.0, 0.1, RATE, 0.0, True)
    assert sigma.shape == () and abs(float(sigma) - 0.2) < 1e-13
    strikes = np.linspace(20_000.0, 24_000.0, 9)[:, None]
    vols = np.array([0.1, 0.2, 0.4])[None, :]
    prices = bsm.price(SPOT, strikes, 0.1, RATE, 0.0, vols, False)
    assert prices.shape == (9, 3)
    res = implied_volatility_and_greeks(prices, SPOT, strikes, 0.1, RATE, 0.0, False)
    assert res.iv.shape == (9, 3) and res.greeks.vanna.shape == (9, 3) and res.status.shape == (9, 3)
    np.testing.assert_allclose(res.iv, np.broadcast_to(vols, (9, 3)), rtol=0, atol=1e-11)
    empty = implied_volatility(np.empty(0), SPOT, np.empty(0), 0.1, RATE, 0.0, True)
    assert empty.shape == (0,)


def test_block_boundaries_and_deep_wing_refinement(monkeypatch: pytest.MonkeyPatch) -> None:
    book = _random_book(5_000, seed=3)
    price = bsm.price(SPOT, book["K"], book["t"], RATE, 0.0, book["sigma"], book["is_call"])
    whole = implied_volatility_and_greeks(price, SPOT, book["K"], book["t"], RATE, 0.0, book["is_call"])
    monkeypatch.setattr(iv, "BLOCK_SIZE", 97)
    blocks = implied_volatility_and_greeks(price, SPOT, book["K"], book["t"], RATE, 0.0, book["is_call"])
    np.testing.assert_array_equal(whole.status, blocks.status)
    np.testing.assert_allclose(whole.iv, blocks.iv, rtol=1e-13, atol=0, equal_nan=True)
    np.testing.assert_allclose(whole.greeks.gamma, blocks.greeks.gamma, rtol=1e-12, atol=0, equal_nan=True)


@pytest.mark.parametrize("sigma", [0.005, 0.05, 1.0, 3.0, 8.0])
@pytest.mark.parametrize("t", [1.0 / (365 * 24 * 12), 1.0 / 365, 0.5, 5.0])
def test_extreme_but_solvable_inputs(sigma: float, t: float) -> None:
    strikes = SPOT * np.exp(np.linspace(-1.5, 1.5, 61))
    for is_call in (True, False):
        price = bsm.price(SPOT, strikes, t, RATE, 0.0, sigma, is_call)
        res = implied_volatility_and_greeks(price, SPOT, strikes, t, RATE, 0.0, is_call)
        fd = SPOT
        kd = strikes * math.exp(-RATE * t)
        intrinsic = np.maximum((fd - kd) if is_call else (kd - fd), 0.0)
        upper = fd if is_call else kd
        solvable = (price > intrinsic) & (price < upper)
        assert np.isfinite(res.iv[solvable]).all()
        # Round trip to the price wherever the price carries information about sigma.
        back = bsm.price(SPOT, strikes, t, RATE, 0.0, res.iv, is_call)
        ok = solvable & (res.greeks.vega * sigma > 1e-9 * price)
        np.testing.assert_allclose(back[ok], price[ok], rtol=1e-11, atol=1e-9)


def test_initial_guess_table_accuracy() -> None:
    """The documented property of the table seed: < 5e-4 relative error inside the table
    (p > 1e-300), so that one quartic Householder step lands at round-off for nearly every row."""
    from hftengine.analytics import normalized_black as nb

    rng = np.random.default_rng(99)
    a = np.abs(rng.normal(0.0, 0.4, 200_000))
    s = np.exp(rng.uniform(np.log(1e-3), np.log(1.5), 200_000))
    p = nb.otm_price(a, s)
    ok = (p > 1e-300) & (p < 1.0)
    with np.errstate(all="ignore"):
        guess = nb.initial_total_vol(a[ok], p[ok])
    inside = np.isfinite(guess)
    assert inside.mean() > 0.99
    rel = np.abs(guess[inside] / s[ok][inside] - 1.0)
    assert np.max(rel) < 5e-4
    s_out, n1, n2, phi, converged = nb.solve_total_vol(a[ok], p[ok])
    assert converged.all()
    np.testing.assert_allclose(s_out, s[ok], rtol=1e-9)
