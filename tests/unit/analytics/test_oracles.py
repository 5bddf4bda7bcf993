"""Independent oracles: vollib (Let's Be Rational) and QuantLib, test-only imports.

Golden-table layer of the numerical tests: prices, Greeks and implied
volatilities of a few hundred random options against two independent libraries.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from hftengine.analytics import black76, bsm
from hftengine.analytics.iv import implied_volatility


def _book(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "S": np.full(n, 22_000.0),
        "K": 22_000.0 * np.exp(rng.uniform(-0.15, 0.15, n)),
        "days": rng.integers(1, 90, n),
        "sigma": rng.uniform(0.08, 0.6, n),
        "is_call": rng.random(n) < 0.5,
    }


RATE = 0.065
DIV = 0.012


def _informative(b: dict[str, np.ndarray], t: np.ndarray, q: float) -> np.ndarray:
    """Rows whose price pins the volatility down: normal density at d1 above 1e-3.

    Deep in the money with days to go, the time value is below the price's last bit
    and every library returns a different (equally valid) volatility, or none.
    """
    s = b["sigma"] * np.sqrt(t)
    d1 = (np.log(b["S"] / b["K"]) + (RATE - q) * t) / s + 0.5 * s
    return np.exp(-0.5 * d1 * d1) / math.sqrt(2.0 * math.pi) > 1e-3


# ------------------------------------------------------------------------------- vollib
@pytest.fixture(scope="module")
def vollib_bsm() -> object:
    return pytest.importorskip("vollib.black_scholes_merton", reason="vollib not installed (test-only oracle)")


def test_bsm_price_greeks_iv_vs_vollib(vollib_bsm: object) -> None:
    from vollib.black_scholes_merton import black_scholes_merton
    from vollib.black_scholes_merton.greeks import analytical
    from vollib.black_scholes_merton.implied_volatility import implied_volatility as lbr_iv

    b = _book(400, seed=11)
    t = b["days"] / 365.0
    ours = bsm.price(b["S"], b["K"], t, RATE, DIV, b["sigma"], b["is_call"])
    g = bsm.greeks(b["S"], b["K"], t, RATE, DIV, b["sigma"], b["is_call"])
    our_iv = implied_volatility(ours, b["S"], b["K"], t, RATE, DIV, b["is_call"])
    informative = _informative(b, t, DIV)
    for i in range(len(t)):
        flag = "c" if b["is_call"][i] else "p"
        args = (flag, b["S"][i], b["K"][i], t[i], RATE, b["sigma"][i], DIV)
        assert ours[i] == pytest.approx(black_scholes_merton(*args), rel=1e-11, abs=1e-9)
        assert g.delta[i] == pytest.approx(analytical.delta(*args), rel=1e-9, abs=1e-12)
        assert g.gamma[i] == pytest.approx(analytical.gamma(*args), rel=1e-9, abs=1e-14)
        assert g.theta[i] / 365.0 == pytest.approx(analytical.theta(*args), rel=1e-9, abs=1e-9)  # vollib: per day
        assert g.vega[i] / 100.0 == pytest.approx(analytical.vega(*args), rel=1e-9, abs=1e-9)  # vollib: per 1 %
        assert g.rho[i] / 100.0 == pytest.approx(analytical.rho(*args), rel=1e-9, abs=1e-9)  # vollib: per 1 %
        if informative[i]:
            ref = lbr_iv(float(ours[i]), b["S"][i], b["K"][i], t[i], RATE, DIV, flag)
            assert our_iv[i] == pytest.approx(ref, abs=1e-9)
            assert our_iv[i] == pytest.approx(b["sigma"][i], abs=1e-10)


def test_black76_price_and_iv_vs_vollib(vollib_bsm: object) -> None:
    from vollib.black import black
    from vollib.black.implied_volatility import implied_volatility as lbr_iv

    b = _book(300, seed=12)
    t = b["days"] / 365.0
    forward = b["S"] * np.exp(RATE * t)
    ours = black76.price(forward, b["K"], t, RATE, b["sigma"], b["is_call"])
    our_iv = black76.implied_volatility(ours, forward, b["K"], t, RATE, b["is_call"])
    informative = _informative(b, t, 0.0)
    for i in range(len(t)):
        flag = "c" if b["is_call"][i] else "p"
        ref = black(flag, forward[i], b["K"][i], t[i], RATE, b["sigma"][i])
        assert ours[i] == pytest.approx(ref, rel=1e-11, abs=1e-9)
        if informative[i]:
            ref_iv = lbr_iv(float(ours[i]), forward[i], b["K"][i], RATE, t[i], flag)
            assert our_iv[i] == pytest.approx(ref_iv, abs=1e-9)


# ------------------------------------------------------------------------------- QuantLib
@pytest.fixture(scope="module")
def ql() -> object:
    return pytest.importorskip("QuantLib", reason="QuantLib not installed (test-only oracle)")


def test_bsm_vs_quantlib(ql: object) -> None:
    import QuantLib as QL  # noqa: N811 (library convention)

    b = _book(150, seed=13)
    today = QL.Date(2, 1, 2026)
    QL.Settings.instance().evaluationDate = today
    dc = QL.Actual365Fixed()
    cal = QL.NullCalendar()
    spot = QL.SimpleQuote(22_000.0)
    vol = QL.SimpleQuote(0.2)
    process = QL.BlackScholesMertonProcess(
        QL.QuoteHandle(spot),
        QL.YieldTermStructureHandle(QL.FlatForward(today, DIV, dc, QL.Continuous)),
        QL.YieldTermStructureHandle(QL.FlatForward(today, RATE, dc, QL.Continuous)),
        QL.BlackVolTermStructureHandle(QL.BlackConstantVol(today, cal, QL.QuoteHandle(vol), dc)),
    )
    engine = QL.AnalyticEuropeanEngine(process)
    t = b["days"] / 365.0
    ours = bsm.price(b["S"], b["K"], t, RATE, DIV, b["sigma"], b["is_call"])
    g = bsm.greeks(b["S"], b["K"], t, RATE, DIV, b["sigma"], b["is_call"])
    our_iv = implied_volatility(ours, b["S"], b["K"], t, RATE, DIV, b["is_call"])
    informative = _informative(b, t, DIV)
    for i in range(len(t)):
        kind = QL.Option.Call if b["is_call"][i] else QL.Option.Put
        option = QL.VanillaOption(
            QL.PlainVanillaPayoff(kind, float(b["K"][i])),
            QL.EuropeanExercise(today + int(b["days"][i])),
        )
        option.setPricingEngine(engine)
        vol.setValue(float(b["sigma"][i]))
        assert ours[i] == pytest.approx(option.NPV(), rel=1e-10, abs=1e-8)
        assert g.delta[i] == pytest.approx(option.delta(), rel=1e-9, abs=1e-12)
        assert g.gamma[i] == pytest.approx(option.gamma(), rel=1e-9, abs=1e-14)
        assert g.vega[i] == pytest.approx(option.vega(), rel=1e-9, abs=1e-8)
        assert g.theta[i] == pytest.approx(option.theta(), rel=1e-8, abs=1e-6)
        assert g.rho[i] == pytest.approx(option.rho(), rel=1e-9, abs=1e-8)
        if informative[i]:
            ref_iv = option.impliedVolatility(float(ours[i]), process, 1e-12, 500, 1e-4, 5.0)
            assert our_iv[i] == pytest.approx(ref_iv, abs=1e-8)


def test_below_intrinsic_is_nan_where_vollib_refuses(vollib_bsm: object) -> None:
    """Below-intrinsic prices: Let's Be Rational refuses them (exception), we return NaN."""
    from vollib.black_scholes_merton.implied_volatility import implied_volatility as lbr_iv

    price = np.array([10.0, 3_000.0])
    strikes = [20_000.0, 18_000.0]
    ours = implied_volatility(price, 22_000.0, strikes, 0.05, RATE, 0.0, True)
    assert np.isnan(ours).all()
    for p, k in zip(price, strikes, strict=True):
        with pytest.raises(Exception):  # noqa: B017 (vollib raises its own exception types)
            lbr_iv(float(p), 22_000.0, k, 0.05, RATE, 0.0, "c")
