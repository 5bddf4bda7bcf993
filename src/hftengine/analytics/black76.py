"""Black-76: European options on the forward ``F`` (index options priced off futures or
the put-call-parity forward).

``V = e^{-rt}·θ·(F Φ(θd1) − K Φ(θd2))``, ``d1,2 = (ln(F/K) ± σ²t/2)/(σ√t)``.
Units as in :mod:`hftengine.analytics.bsm`; the Greeks are with respect to ``F``
(``delta = ∂V/∂F``, ``gamma = ∂²V/∂F²``, ``vanna = ∂²V/∂F∂σ``), ``theta`` and ``charm``
hold ``F`` fixed, and ``rho = ∂V/∂r = −t·V`` with ``F`` fixed.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from hftengine.analytics.bsm import black_greeks, black_price
from hftengine.analytics.greeks import Greeks
from hftengine.analytics.iv import IVResult, solve_implied_volatility
from hftengine.analytics.normalized_black import FloatArray

__all__ = ["greeks", "implied_volatility", "implied_volatility_and_greeks", "parity_forward", "price"]


def price(
    F: npt.ArrayLike,  # noqa: N803 (finance notation)
    K: npt.ArrayLike,  # noqa: N803
    t: npt.ArrayLike,
    r: npt.ArrayLike,
    sigma: npt.ArrayLike,
    is_call: npt.ArrayLike,
) -> FloatArray:
    """Black-76 price ``e^{-rt}θ(FΦ(θd1) − KΦ(θd2))`` in currency; NaN on invalid rows."""
    return black_price(F, K, t, r, r, sigma, is_call)


def greeks(
    F: npt.ArrayLike,  # noqa: N803
    K: npt.ArrayLike,  # noqa: N803
    t: npt.ArrayLike,
    r: npt.ArrayLike,
    sigma: npt.ArrayLike,
    is_call: npt.ArrayLike,
) -> Greeks:
    """Black-76 Greeks w.r.t. the forward: ``delta = θe^{-rt}Φ(θd1)``,
    ``gamma = e^{-rt}φ(d1)/(Fσ√t)``, ``vega = Fe^{-rt}φ(d1)√t``, ``theta = rV − Fe^{-rt}φ(d1)σ/(2√t)``
    per year, ``rho = −tV``, ``vanna = −e^{-rt}φ(d1)d2/σ``, ``charm = r·delta + e^{-rt}φ(d1)d2/(2t)``."""
    return black_greeks(F, K, t, r, r, sigma, is_call, black76=True)


def implied_volatility(
    price: npt.ArrayLike,
    F: npt.ArrayLike,  # noqa: N803
    K: npt.ArrayLike,  # noqa: N803
    t: npt.ArrayLike,
    r: npt.ArrayLike,
    is_call: npt.ArrayLike,
) -> FloatArray:
    """Black-76 implied volatility; NaN where no volatility reproduces the price
    (outside ``(intrinsic, upper bound)``, ``t <= 0``, invalid input). Never raises."""
    return solve_implied_volatility(price, F, K, t, r, 0.0, is_call, black76=True, with_greeks=False).iv


def implied_volatility_and_greeks(
    price: npt.ArrayLike,
    F: npt.ArrayLike,  # noqa: N803
    K: npt.ArrayLike,  # noqa: N803
    t: npt.ArrayLike,
    r: npt.ArrayLike,
    is_call: npt.ArrayLike,
) -> IVResult:
    """Black-76 implied volatility, the Greeks at it and an
    :class:`~hftengine.analytics.iv.IVStatus` per row."""
    return solve_implied_volatility(price, F, K, t, r, 0.0, is_call, black76=True)


def parity_forward(
    strikes: npt.ArrayLike,
    call_mid: npt.ArrayLike,
    put_mid: npt.ArrayLike,
    t: float,
    r: float,
    *,
    n_strikes: int = 5,
) -> float:
    """Forward implied by put-call parity: ``F_K = K + e^{rt}(C − P)`` at every strike with
    both mids, then the median over the ``n_strikes`` strikes closest to the money (smallest
    ``|C − P|``), which shrugs off a stale quote. NaN when no strike has both legs."""
    k = np.asarray(strikes, dtype=np.float64)
    c = np.asarray(call_mid, dtype=np.float64)
    p = np.asarray(put_mid, dtype=np.float64)
    if not (math.isfinite(t) and math.isfinite(r)):
        return math.nan
    with np.errstate(all="ignore"):
        ok = (k > 0.0) & (c > 0.0) & (p > 0.0) & np.isfinite(c) & np.isfinite(p) & np.isfinite(k)
        if not ok.any():
            return math.nan
        diff = c[ok] - p[ok]
        fwd = k[ok] + math.exp(r * t) * diff
        m = max(1, min(int(n_strikes), diff.shape[0]))
        nearest = np.argpartition(np.abs(diff), m - 1)[:m] if m < diff.shape[0] else np.arange(m)
        chosen = fwd[nearest]
        chosen = chosen[chosen > 0.0]
        return float(np.median(chosen)) if chosen.size else math.nan
