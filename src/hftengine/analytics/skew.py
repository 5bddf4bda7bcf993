"""Volatility skew: ATM IV, delta-wing risk reversal and butterfly, term structure.

- ATM IV: the smile (OTM leg's IV per strike: puts below the forward, calls at and
  above, the other leg where that one is missing) interpolated linearly in
  ``ln K`` at the forward; NaN if the forward is not bracketed.
- 25-delta wings: the call IV interpolated at call delta ``+wing`` over OTM calls, the
  put IV at put delta ``−wing`` over OTM puts (no extrapolation).
- ``rr = IV_call_wing − IV_put_wing``; ``bf = (IV_call_wing + IV_put_wing)/2 − ATM``.
- Term structure: per expiry ``t``, ATM IV, total variance ``w = σ²t`` and the forward
  volatility between consecutive expiries ``√((w₂ − w₁)/(t₂ − t₁))`` (NaN where the
  total variance decreases: calendar arbitrage).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from numpy.typing import NDArray

from hftengine.analytics.normalized_black import FloatArray, _count_nonzero


def smile_iv(strikes: FloatArray, call_iv: FloatArray, put_iv: FloatArray, forward: float) -> FloatArray:
    """Per strike: the OTM leg's IV (put for ``K < F``, call otherwise), else the other leg's."""
    otm_put = strikes < forward
    primary = np.where(otm_put, put_iv, call_iv)
    other = np.where(otm_put, call_iv, put_iv)
    result: FloatArray = np.where(np.isfinite(primary), primary, other)
    return result


def atm_iv(strikes: FloatArray, call_iv: FloatArray, put_iv: FloatArray, forward: float) -> float:
    """Smile IV interpolated linearly in ``ln K`` at ``K = forward``; NaN if not bracketed."""
    if not (math.isfinite(forward) and forward > 0.0):
        return math.nan
    smile = smile_iv(strikes, call_iv, put_iv, forward)
    ok = np.isfinite(smile) & (strikes > 0.0)
    if not ok.any():
        return math.nan
    k = strikes[ok]
    v = smile[ok]
    order = np.argsort(k, kind="stable")
    k, v = k[order], v[order]
    if forward < k[0] or forward > k[-1]:
        return math.nan
    return float(np.interp(math.log(forward), np.log(k), v))


def wing_iv(delta: FloatArray, iv: FloatArray, target: float) -> float:
    """IV interpolated at ``delta == target`` (linear in delta); NaN if ``target`` is not
    bracketed by the finite points."""
    ok = np.isfinite(delta) & np.isfinite(iv)
    if ok.sum() < 1:
        return math.nan
    d = delta[ok]
    v = iv[ok]
    order = np.argsort(d, kind="stable")
    d, v = d[order], v[order]
    if target < d[0] or target > d[-1]:
        return math.nan
    return float(np.interp(target, d, v))


def risk_reversal_butterfly(
    strikes: FloatArray,
    forward: float,
    call_iv: FloatArray,
    put_iv: FloatArray,
    call_delta: FloatArray,
    put_delta: FloatArray,
    atm: float,
    *,
    wing: float = 0.25,
) -> tuple[float, float]:
    """``(rr, bf)`` at the ``wing`` delta (0.25): ``rr = σ_C − σ_P``, ``bf = (σ_C + σ_P)/2 − ATM``."""
    if not math.isfinite(forward):
        return math.nan, math.nan
    otm_call = strikes >= forward
    otm_put = strikes <= forward
    c = wing_iv(call_delta[otm_call], call_iv[otm_call], wing)
    p = wing_iv(put_delta[otm_put], put_iv[otm_put], -wing)
    return c - p, 0.5 * (c + p) - atm


#: Strikes :func:`atm_iv_sorted` inspects on each side of the forward before it hands over
#: to :func:`atm_iv` (a chain with a long run of unpriced strikes at the money).
_ATM_SCAN: Final = 8


def atm_iv_sorted(strikes: FloatArray, call_iv: FloatArray, put_iv: FloatArray, forward: float) -> float:
    """:func:`atm_iv` for strictly increasing strikes, bit for bit: only the two smile
    points bracketing the forward are looked at (``np.interp`` on the whole smile picks the
    same two and the same formula, ``slope·(x − x_lo) + v_lo``)."""
    if not (math.isfinite(forward) and forward > 0.0):
        return math.nan
    n = strikes.shape[0]
    j = int(strikes.searchsorted(forward))

    def smile(i: int) -> float:
        k = float(strikes[i])
        primary, other = (put_iv, call_iv) if k < forward else (call_iv, put_iv)
        v = float(primary[i])
        if not math.isfinite(v):
            v = float(other[i])
        return v if math.isfinite(v) and k > 0.0 else math.nan

    hi = j
    while hi < n and hi < j + _ATM_SCAN and math.isnan(v_hi := smile(hi)):
        hi += 1
    lo = j - 1
    while lo >= 0 and lo > j - 1 - _ATM_SCAN and math.isnan(v_lo := smile(lo)):
        lo -= 1
    if hi == j + _ATM_SCAN or lo == j - 1 - _ATM_SCAN:
        return atm_iv(strikes, call_iv, put_iv, forward)
    if hi == n:
        return math.nan  # the forward is above every usable strike
    if float(strikes[hi]) == forward:
        return v_hi
    if lo < 0:
        return math.nan
    logs: list[float] = np.log(strikes[[lo, hi]]).tolist()
    x_lo, x_hi = logs
    x = math.log(forward)
    if x == x_hi:
        return v_hi
    if x == x_lo:
        return v_lo
    slope = (v_hi - v_lo) / (x_hi - x_lo)
    return slope * (x - x_lo) + v_lo


def _wing_iv_monotone(delta: FloatArray, iv: FloatArray, target: float, *, finite_delta: bool = False) -> float:
    """:func:`wing_iv` for deltas that fall with the strike (calls above, puts below the
    forward, in strike order): the stable sort is then a reversal, and the interpolation
    is ``np.interp``'s on the bracketing pair. Hands over to :func:`wing_iv` unless the
    finite points are strictly decreasing. ``finite_delta``: the caller knows that
    ``delta`` is finite wherever ``iv`` is."""
    rows = np.isfinite(iv).nonzero()[0]
    count = rows.shape[0]
    if count < delta.shape[0]:
        delta, iv = delta[rows], iv[rows]
    if (
        count < 1
        or _count_nonzero(delta[1:] < delta[:-1]) != count - 1
        or (not finite_delta and _count_nonzero(np.isfinite(delta)) != count)
    ):
        return wing_iv(delta, iv, target)
    # In ascending delta order (index count − 1 … 0) np.interp brackets the target with
    # the last point <= target (index j = how many deltas exceed it) and the next one up.
    j = int(np.negative(delta).searchsorted(-target))
    if j == count or target > float(delta[0]):
        return math.nan  # outside [min delta, max delta]
    x0, v0 = float(delta[j]), float(iv[j])
    if target == x0 or j == 0:
        return v0
    x1, v1 = float(delta[j - 1]), float(iv[j - 1])
    slope = (v1 - v0) / (x1 - x0)
    return slope * (target - x0) + v0  # np.interp's formula, same rounding


def risk_reversal_butterfly_sorted(
    strikes: FloatArray,
    forward: float,
    call_iv: FloatArray,
    put_iv: FloatArray,
    call_delta: FloatArray,
    put_delta: FloatArray,
    atm: float,
    *,
    wing: float = 0.25,
    finite_delta: bool = False,
) -> tuple[float, float]:
    """:func:`risk_reversal_butterfly` for ascending strikes (the OTM legs are a suffix and
    a prefix of the chain), same results. ``finite_delta``: deltas are finite wherever
    the IVs are (solver output), which saves a check."""
    if not math.isfinite(forward):
        return math.nan, math.nan
    first_call = int(strikes.searchsorted(forward, "left"))  # strikes >= forward
    last_put = int(strikes.searchsorted(forward, "right"))  # strikes <= forward
    c = _wing_iv_monotone(call_delta[first_call:], call_iv[first_call:], wing, finite_delta=finite_delta)
    p = _wing_iv_monotone(put_delta[:last_put], put_iv[:last_put], -wing, finite_delta=finite_delta)
    return c - p, 0.5 * (c + p) - atm


def _descending_interp(delta: FloatArray, iv: FloatArray, lo: int, hi: int, j: int, target: float) -> float:
    """:func:`_wing_iv_monotone`'s interpolation on the strictly decreasing finite deltas
    ``delta[lo:hi]``, ``j`` the index of the first of them ``<= target``: NaN outside
    ``[delta[hi − 1], delta[lo]]``, else ``np.interp``'s formula on the bracketing pair."""
    if j == hi or hi == lo or target > delta.item(lo):
        return math.nan
    x0, v0 = delta.item(j), iv.item(j)
    if target == x0 or j == lo:
        return v0
    x1, v1 = delta.item(j - 1), iv.item(j - 1)
    slope = (v1 - v0) / (x1 - x0)
    return slope * (target - x0) + v0


def _wings_of_legs(delta: FloatArray, iv: FloatArray, calls: int, wing: float) -> tuple[float, float] | None:
    """Call and put wing IVs (at deltas ``+wing`` and ``−wing``) from one slice of the
    chain's ``2N`` legs that holds the OTM calls (the first ``calls`` entries, strikes at
    and above the forward) followed by the OTM puts (strikes at and below it): in the
    legs' layout (calls, then puts, each in strike order) they are adjacent. Deltas must
    be finite wherever the IV is. Call deltas fall from ~0.5 to 0 and put deltas from 0
    to ~−0.5, so when the finite deltas fall strictly across the whole slice (one check
    for both wings, one search for both targets) each wing is :func:`_wing_iv_monotone`'s
    case; None otherwise (the caller takes the per-wing path)."""
    if not wing > 0.0:
        return None
    rows = np.isfinite(iv).nonzero()[0]
    total = rows.shape[0]
    if total < iv.shape[0]:
        delta, iv = delta.take(rows), iv.take(rows)
    if total > 1 and _count_nonzero(delta[1:] < delta[:-1]) != total - 1:
        return None
    split = int(rows.searchsorted(calls))  # finite calls first, then finite puts
    # Searching the negated deltas (ascending): calls' are <= 0 < wing and puts' >= 0 > −wing,
    # so the call target lands among the calls and the put target among the puts.
    j_call, j_put = np.negative(delta).searchsorted(np.array((-wing, wing))).tolist()
    return (
        _descending_interp(delta, iv, 0, split, j_call, wing),
        _descending_interp(delta, iv, split, total, j_put, -wing),
    )


@dataclass(frozen=True, slots=True)
class TermStructure:
    """ATM volatility term structure of one underlying, sorted by time to expiry."""

    t: FloatArray  #: years to each expiry
    atm_iv: FloatArray  #: ATM IV per expiry
    total_variance: FloatArray  #: ``σ²·t``
    forward_vol: FloatArray  #: vol between the previous and this expiry (first = its ATM IV)
    calendar_arbitrage: NDArray[np.bool_]  #: True where the total variance decreases


def term_structure(t: npt.ArrayLike, atm: npt.ArrayLike) -> TermStructure:
    """Term structure across expiries (see module docstring). Expiries with ``t <= 0`` or a
    NaN ATM IV are dropped; never raises."""
    tt = np.asarray(t, dtype=np.float64).reshape(-1)
    vv = np.asarray(atm, dtype=np.float64).reshape(-1)
    ok = (tt > 0.0) & np.isfinite(tt) & np.isfinite(vv) & (vv > 0.0)
    tt, vv = tt[ok], vv[ok]
    order = np.argsort(tt, kind="stable")
    tt, vv = tt[order], vv[order]
    w = vv * vv * tt
    dw = np.diff(w, prepend=0.0)
    dt = np.diff(tt, prepend=0.0)
    with np.errstate(all="ignore"):
        fwd = np.sqrt(np.where(dw >= 0.0, dw, np.nan) / dt)
    arb = dw < 0.0
    return TermStructure(t=tt, atm_iv=vv, total_variance=w, forward_vol=fwd, calendar_arbitrage=arb)
