"""Black-Scholes-Merton prices and Greeks on the spot (continuous dividend yield ``q``).

``V = θ·(S e^{-qt} Φ(θd1) − K e^{-rt} Φ(θd2))``, ``d1,2 = (ln(S/K) + (r − q ± σ²/2)t)/(σ√t)``,
``θ = +1`` call / ``−1`` put. Units: prices in the currency of ``S`` and ``K``;
``t`` in years; ``r``, ``q`` continuously compounded per year; ``σ`` per 1.00
annualised. All functions broadcast over arrays, accept scalars, return arrays
of the broadcast shape (0-d for all-scalar input) and never raise on bad rows:
invalid rows (non-finite, ``S <= 0``, ``K <= 0``, ``t < 0``, ``σ < 0``) give NaN.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.special import ndtr

from hftengine.analytics.greeks import GREEK_NAMES, Greeks, assemble_greeks
from hftengine.analytics.normalized_black import INV_SQRT_2PI, FloatArray, otm_price

__all__ = ["Greeks", "greeks", "price"]


def _float(x: npt.ArrayLike) -> FloatArray:
    return np.asarray(x, dtype=np.float64)


def black_price(
    underlying: npt.ArrayLike,
    K: npt.ArrayLike,  # noqa: N803 (finance notation)
    t: npt.ArrayLike,
    r: npt.ArrayLike,
    q: npt.ArrayLike,
    sigma: npt.ArrayLike,
    is_call: npt.ArrayLike,
) -> FloatArray:
    """Shared BSM / Black-76 price: ``intrinsic_fwd + min(Fd, Kd)·p(|ln(Fd/Kd)|, σ√t)``.

    ``Fd = U e^{-qt}``, ``Kd = K e^{-rt}``, ``intrinsic_fwd = max(θ(Fd − Kd), 0)``. The OTM
    leg is priced directly, the ITM leg by parity (no cancellation in the wings).
    ``t == 0`` or ``σ == 0`` give the (discounted) intrinsic value.
    """
    u, k, tt, rr, qq, sig = (_float(v) for v in (underlying, K, t, r, q, sigma))
    call = np.asarray(is_call, dtype=np.bool_)
    with np.errstate(all="ignore"):
        fd = u * np.exp(-qq * tt)
        kd = k * np.exp(-rr * tt)
        a = np.abs(np.log(fd / kd))
        s = sig * np.sqrt(tt)
        intrinsic = np.maximum(np.where(call, fd - kd, kd - fd), 0.0)
        value = intrinsic + np.minimum(fd, kd) * otm_price(a, s)
        bad = ~((u > 0.0) & (k > 0.0) & (tt >= 0.0) & (sig >= 0.0) & np.isfinite(a) & np.isfinite(s))
        bad |= ~(np.isfinite(rr) & np.isfinite(qq))
        value = np.where(bad, np.nan, value)
    result: FloatArray = np.asarray(value, dtype=np.float64)
    return result


def black_greeks(
    underlying: npt.ArrayLike,
    K: npt.ArrayLike,  # noqa: N803
    t: npt.ArrayLike,
    r: npt.ArrayLike,
    q: npt.ArrayLike,
    sigma: npt.ArrayLike,
    is_call: npt.ArrayLike,
    *,
    black76: bool = False,
) -> Greeks:
    """Shared BSM / Black-76 Greeks (see :class:`~hftengine.analytics.greeks.Greeks` for units).

    NaN where ``t <= 0`` or ``σ <= 0`` (the Greeks are singular or undefined there) or
    where inputs are invalid.
    """
    arrays = np.broadcast_arrays(*(_float(v) for v in (underlying, K, t, r, q, sigma)), np.asarray(is_call))
    shape = arrays[0].shape
    u, k, tt, rr, qq, sig = (np.ascontiguousarray(v).reshape(-1) for v in arrays[:6])
    call = np.ascontiguousarray(arrays[6], dtype=np.bool_).reshape(-1)
    if black76:
        qq = rr
    n = u.shape[0]
    out = tuple(np.empty(n) for _ in GREEK_NAMES)
    with np.errstate(all="ignore"):
        sqrt_t = np.sqrt(tt)
        dq = np.exp(-qq * tt)
        dr = np.exp(-rr * tt)
        fd = u * dq
        kd = k * dr
        x = np.log(fd / kd)
        a = np.abs(x)
        s = sig * sqrt_t
        d1 = 0.5 * s - a / s
        n1 = ndtr(d1)
        n2 = ndtr(d1 - s)
        phi = INV_SQRT_2PI * np.exp(-0.5 * d1 * d1)
        assemble_greeks(
            s=s,
            sqrt_t=sqrt_t,
            t=tt,
            x=x,
            n1=n1,
            n2=n2,
            phi=phi,
            m=np.minimum(fd, kd),
            fd=fd,
            kd=kd,
            underlying=u,
            carry_discount=dq,
            sign=np.where(call, 1.0, -1.0),
            r=rr,
            q=qq,
            out=out,
        )
        if black76:  # ∂V/∂r holding F fixed: −t·V
            value = black_price(u, k, tt, rr, rr, sig, call)
            np.multiply(-tt, value, out=out[4])
        bad = ~((u > 0.0) & (k > 0.0) & (tt > 0.0) & (sig > 0.0) & np.isfinite(a) & np.isfinite(s))
        bad |= ~(np.isfinite(rr) & np.isfinite(qq))
        if bad.any():
            for arr in out:
                arr[bad] = np.nan
    return Greeks(*(arr.reshape(shape) for arr in out))


def price(
    S: npt.ArrayLike,  # noqa: N803
    K: npt.ArrayLike,  # noqa: N803
    t: npt.ArrayLike,
    r: npt.ArrayLike,
    q: npt.ArrayLike,
    sigma: npt.ArrayLike,
    is_call: npt.ArrayLike,
) -> FloatArray:
    """BSM price ``θ(S e^{-qt}Φ(θd1) − K e^{-rt}Φ(θd2))`` in currency units.

    ``t`` years, ``r``/``q`` per year (continuous), ``σ`` per 1.00. NaN on invalid rows.
    """
    return black_price(S, K, t, r, q, sigma, is_call)


def greeks(
    S: npt.ArrayLike,  # noqa: N803
    K: npt.ArrayLike,  # noqa: N803
    t: npt.ArrayLike,
    r: npt.ArrayLike,
    q: npt.ArrayLike,
    sigma: npt.ArrayLike,
    is_call: npt.ArrayLike,
) -> Greeks:
    """BSM Greeks: ``delta = θe^{-qt}Φ(θd1)``, ``gamma = e^{-qt}φ(d1)/(Sσ√t)``,
    ``theta`` per year (calendar), ``vega = S e^{-qt}φ(d1)√t`` per 1.00 vol,
    ``rho = θK t e^{-rt}Φ(θd2)`` per 1.00 rate, ``vanna = −e^{-qt}φ(d1)d2/σ``,
    ``charm = −∂delta/∂t`` per year. NaN where ``t <= 0``, ``σ <= 0`` or inputs are invalid.
    """
    return black_greeks(S, K, t, r, q, sigma, is_call)
