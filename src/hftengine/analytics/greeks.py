"""Greeks of European options, assembled from the normalised Black quantities.

Shared by :mod:`hftengine.analytics.bsm` (underlying ``U = S``, carry discount
``e^{-qt}``) and :mod:`hftengine.analytics.black76` (``U = F``, carry discount
``e^{-rt}``, i.e. BSM with ``q = r``).

Units: ``theta`` and ``charm`` are derivatives with respect to calendar time
(``-∂/∂t_expiry``) per year; ``vega`` per 1.00 of volatility; ``rho`` per 1.00
of rate; ``vanna = ∂²V/∂U∂σ``; ``gamma`` per unit of the underlying.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from hftengine.analytics.normalized_black import FloatArray, Scratch

_ZERO = np.float64(0.0)
_ONE = np.float64(1.0)
_HALF = np.float64(0.5)
_MINUS_HALF = np.float64(-0.5)
_MINUS_TWO = np.float64(-2.0)

GREEK_NAMES: tuple[str, ...] = ("delta", "gamma", "theta", "vega", "rho", "vanna", "charm")


@dataclass(frozen=True, slots=True)
class Greeks:
    """First- and second-order sensitivities, one array per Greek (same shape as the inputs).

    ``delta = ∂V/∂U``; ``gamma = ∂²V/∂U²``; ``theta = −∂V/∂t`` per year;
    ``vega = ∂V/∂σ`` per 1.00 vol; ``rho = ∂V/∂r`` per 1.00 rate;
    ``vanna = ∂²V/∂U∂σ``; ``charm = −∂delta/∂t`` per year.
    NaN where the inputs are invalid or the option has expired.
    """

    delta: FloatArray
    gamma: FloatArray
    theta: FloatArray
    vega: FloatArray
    rho: FloatArray
    vanna: FloatArray
    charm: FloatArray

    def as_dict(self) -> dict[str, FloatArray]:
        """``{name: array}`` in the order of :data:`GREEK_NAMES`."""
        return {name: getattr(self, name) for name in GREEK_NAMES}


def assemble_greeks(
    *,
    s: FloatArray,
    sqrt_t: FloatArray,
    t: FloatArray | float,
    x: FloatArray,
    n1: FloatArray,
    n2: FloatArray,
    phi: FloatArray,
    m: FloatArray,
    fd: FloatArray,
    kd: FloatArray,
    underlying: FloatArray | float,
    carry_discount: FloatArray | float,
    sign: FloatArray | float,
    r: FloatArray | float,
    q: FloatArray | float,
    out: tuple[FloatArray, ...],
    scratch: Scratch | None = None,
) -> None:
    """Write ``delta, gamma, theta, vega, rho, vanna, charm`` into ``out`` (7 arrays).

    Inputs are the reduced (OTM) quantities of
    :func:`hftengine.analytics.normalized_black.solve_total_vol`: ``n1 = Φ(d1r)``,
    ``n2 = Φ(d2r)``, ``phi = φ(d1r)`` with ``d1r = −|x|/s + s/2``; ``m = min(Fd, Kd)``,
    ``fd`` the discounted forward, ``kd = K·e^{-rt}``, ``sign = θ`` (+1 call, −1 put).
    With ``V0 = m·φ(d1r) = U·e^{-qt}·φ(d1)``, ``A = Φ(θd1)``, ``B = Φ(θd2)``::

        delta = θ e^{-qt} A            gamma = V0 / (U² s)          vega = V0 √t
        theta = −V0 s/(2t) − θ r Kd B + θ q Fd A                  rho  = θ Kd t B
        vanna = −V0 d2 / (U σ)         charm = q·delta − V0/U·((r−q)/s − d2/(2t))

    ``rho`` here holds the spot fixed (BSM); Black-76 overwrites it with ``−t·V``.
    """
    delta, gamma, theta, vega, rho, vanna, charm = out
    ws = scratch if scratch is not None else Scratch(s.shape[0])
    if scratch is None:
        ws.reset(s.shape[0])
    swap, keep, big_a, big_b, itm, v0, v0_u, tmp = ws.take_many(8)
    add, sub, mul, div = np.add, np.subtract, np.multiply, np.divide
    # Map the reduced Φ values to θ·A = θ·Φ(θ d1), θ·B = θ·Φ(θ d2) of the actual leg:
    # x > 0 swaps the roles of d1 and d2 (the OTM leg is then the put) and the ITM leg
    # takes the complement (parity). Blends with exact 0/1 weights instead of masks:
    # masked numpy loops are an order of magnitude slower than plain arithmetic.
    np.greater(x, _ZERO, swap)  # 1.0 where x > 0
    sub(_ONE, swap, keep)
    mul(n1, keep, big_a)
    mul(n2, swap, tmp)
    add(big_a, tmp, big_a)  # P
    mul(n2, keep, big_b)
    mul(n1, swap, tmp)
    add(big_b, tmp, big_b)  # Q
    # itm = 1 for calls with x > 0 and puts with x <= 0: itm = (1 − θ)/2 + θ·swap
    mul(sign, _MINUS_HALF, itm)
    add(itm, _HALF, itm)
    mul(swap, sign, tmp)
    add(itm, tmp, itm)
    # flip = θ·(1 − 2·itm): +θ on the OTM leg, −θ on the ITM leg
    mul(itm, _MINUS_TWO, swap)
    add(swap, _ONE, swap)
    mul(swap, sign, swap)
    mul(itm, sign, itm)
    mul(big_a, swap, big_a)
    add(big_a, itm, big_a)  # θ·A
    mul(big_b, swap, big_b)
    add(big_b, itm, big_b)  # θ·B
    mul(m, phi, v0)  # V0 = U e^{-qt} φ(d1)
    inv_u = keep
    div(_ONE, underlying, inv_u)
    mul(v0, inv_u, v0_u)  # V0/U
    mul(big_a, carry_discount, delta)  # delta = θ e^{-qt} A
    mul(v0_u, inv_u, gamma)
    div(gamma, s, gamma)  # gamma = V0/(U² s)
    mul(v0, sqrt_t, vega)  # vega = V0 √t
    inv_t = itm
    div(_ONE, t, inv_t)
    mul(v0, s, theta)
    mul(theta, _MINUS_HALF, theta)
    mul(theta, inv_t, theta)  # −V0 s/(2t)
    mul(big_b, kd, tmp)
    mul(tmp, t, rho)  # rho = θ Kd t B
    mul(tmp, r, tmp)
    sub(theta, tmp, theta)  # − θ r Kd B
    mul(big_a, fd, tmp)
    mul(tmp, q, tmp)
    add(theta, tmp, theta)  # + θ q Fd A
    d2 = swap
    div(x, s, d2)
    mul(s, _HALF, tmp)
    sub(d2, tmp, d2)  # d2 = x/s − s/2
    mul(v0_u, d2, vanna)
    mul(vanna, sqrt_t, vanna)
    div(vanna, s, vanna)
    np.negative(vanna, vanna)  # vanna = −V0/U · d2 √t / s
    mul(d2, _HALF, d2)
    mul(d2, inv_t, d2)  # d2/(2t)
    div(sub(r, q), s, tmp)
    sub(tmp, d2, tmp)
    mul(tmp, v0_u, tmp)
    mul(delta, q, charm)
    sub(charm, tmp, charm)  # charm = q·delta − V0/U·((r − q)/s − d2/(2t))
    ws.give(swap, keep, big_a, big_b, itm, v0, v0_u, tmp)


def empty_outputs(shape: tuple[int, ...]) -> tuple[FloatArray, ...]:
    """Seven uninitialised float64 arrays for :func:`assemble_greeks`."""
    return tuple(np.empty(shape, dtype=np.float64) for _ in GREEK_NAMES)


def to_greeks(arrays: tuple[NDArray[np.float64], ...], shape: tuple[int, ...]) -> Greeks:
    """Reshape seven flat arrays into a :class:`Greeks` of the broadcast ``shape``."""
    return Greeks(*(arr.reshape(shape) for arr in arrays))
