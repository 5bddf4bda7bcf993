"""Chain analytics over one option-chain snapshot (one underlying, one expiry).

:func:`analyze_chain` is the entry point of the streaming enrich step: one call per
snapshot, vectorised over the strikes (calls and puts are solved together in one IV
pass). The pieces are public too: :func:`pcr`, :func:`max_pain` here, GEX and walls in
:mod:`~hftengine.analytics.gex`, skew in :mod:`~hftengine.analytics.skew`, build-up in
:mod:`~hftengine.analytics.buildup`, flow in :mod:`~hftengine.analytics.flow`, quality
flags in :mod:`~hftengine.analytics.quality`.

Units: prices in the chain's currency; OI and volume in ``oi_unit`` (``"shares"``, as
Dhan reports, or ``"contracts"``, as NSE does: shares = contracts · lot size); GEX in
currency per ``conventions.gex_move`` relative spot move; IV per 1.00 annualised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from numpy.typing import NDArray

from hftengine.analytics.black76 import parity_forward
from hftengine.analytics.buildup import classify_buildup
from hftengine.analytics.conventions import DEFAULT_CONVENTIONS, Conventions, OiUnit
from hftengine.analytics.flow import flow_scores
from hftengine.analytics.gex import call_wall, gamma_flip, put_wall
from hftengine.analytics.iv import IVStatus, solve_implied_volatility
from hftengine.analytics.normalized_black import FloatArray
from hftengine.analytics.quality import chain_flags, leg_quality
from hftengine.analytics.skew import atm_iv, risk_reversal_butterfly

_LEG_ARRAYS: Final = (
    "last_price",
    "bid",
    "ask",
    "bid_qty",
    "ask_qty",
    "volume",
    "oi",
    "prev_oi",
    "prev_close",
)


@dataclass(frozen=True, slots=True)
class LegQuotes:
    """One side (calls or puts) of a chain; arrays of length N, one per strike.

    ``bid``/``ask`` of 0 or NaN mean no quote. ``oi``/``prev_oi``/``volume`` are in the
    chain's ``oi_unit``. ``prev_last_price`` is the last traded price in the previous
    snapshot (for the build-up); ``None`` falls back to ``prev_close``.
    """

    present: NDArray[np.bool_]
    last_price: NDArray[np.float64]
    bid: NDArray[np.float64]
    ask: NDArray[np.float64]
    bid_qty: NDArray[np.float64]
    ask_qty: NDArray[np.float64]
    volume: NDArray[np.float64]
    oi: NDArray[np.float64]
    prev_oi: NDArray[np.float64]
    prev_close: NDArray[np.float64]
    prev_last_price: NDArray[np.float64] | None = None

    @classmethod
    def missing(cls, n: int) -> LegQuotes:
        """All N legs absent (``present`` False, zeros elsewhere)."""
        zeros = np.zeros(n)
        return cls(np.zeros(n, dtype=np.bool_), *(zeros for _ in _LEG_ARRAYS))

    def take(self, index: NDArray[np.intp]) -> LegQuotes:
        """The legs reordered/selected by ``index``."""
        values: dict[str, Any] = {name: np.asarray(getattr(self, name))[index] for name in _LEG_ARRAYS}
        values["present"] = np.asarray(self.present)[index]
        if self.prev_last_price is not None:
            values["prev_last_price"] = np.asarray(self.prev_last_price)[index]
        return LegQuotes(**values)


@dataclass(frozen=True, slots=True)
class ChainResult:
    """Analytics of one chain snapshot; per-strike arrays have length N, in input order.

    Greeks: BSM w.r.t. the spot (``iv_model="bsm"``) or Black-76 w.r.t. the forward;
    theta/charm per ``conventions.theta_unit``, vega per ``conventions.vega_per`` of vol.
    ``*_iv_status`` are :class:`~hftengine.analytics.iv.IVStatus` codes, ``*_buildup``
    :class:`~hftengine.analytics.buildup.BuildUp` codes, ``*_quality``
    :class:`~hftengine.analytics.quality.LegQuality` bits.

    Flow (see :mod:`~hftengine.analytics.flow`): ``call_flow_score``/``put_flow_score`` per
    leg; ``flow_score`` per strike = the larger of the two; ``flow_flags`` per strike =
    call :class:`~hftengine.analytics.flow.FlowFlag` bits | put bits << 2 (bit 0 call large
    premium, bit 1 call volume/OI, bit 2 put large premium, bit 3 put volume/OI).

    GEX per strike (currency per ``gex_move``): ``gex_call`` ≥ 0 and ``gex_put`` ≤ 0 with
    the default signs, ``gex`` their sum (NaN only if both are); ``gex_profile`` is the
    re-priced total over ``gex_profile_spots`` (the gamma-flip grid).
    """

    conventions_version: str
    time_to_expiry: float
    forward: float
    spot: float
    strikes: FloatArray
    call_iv: FloatArray
    put_iv: FloatArray
    call_delta: FloatArray
    put_delta: FloatArray
    call_gamma: FloatArray
    put_gamma: FloatArray
    call_theta: FloatArray
    put_theta: FloatArray
    call_vega: FloatArray
    put_vega: FloatArray
    call_rho: FloatArray
    put_rho: FloatArray
    call_vanna: FloatArray
    put_vanna: FloatArray
    call_charm: FloatArray
    put_charm: FloatArray
    call_iv_status: NDArray[np.int8]
    put_iv_status: NDArray[np.int8]
    call_buildup: NDArray[np.int8]
    put_buildup: NDArray[np.int8]
    gex_call: FloatArray
    gex_put: FloatArray
    gex: FloatArray
    pcr_oi: float
    pcr_volume: float
    pcr_doi: float
    max_pain: float
    total_gex: float
    gamma_flip: float | None
    call_wall: float | None
    put_wall: float | None
    atm_iv: float
    rr25: float
    bf25: float
    flow_score: FloatArray
    flow_flags: NDArray[np.uint8]
    call_flow_score: FloatArray
    put_flow_score: FloatArray
    call_premium: FloatArray
    put_premium: FloatArray
    call_quality: NDArray[np.uint8]
    put_quality: NDArray[np.uint8]
    quality_flags: tuple[str, ...]
    gex_profile_spots: FloatArray
    gex_profile: FloatArray
    iv_model: str
    oi_unit: str


# ----------------------------------------------------------------------------- pieces
def _ratio(num: float, den: float) -> float:
    return num / den if den != 0.0 and math.isfinite(num) and math.isfinite(den) else math.nan


def pcr(put_values: npt.ArrayLike, call_values: npt.ArrayLike) -> float:
    """Put-call ratio ``Σ put / Σ call`` (NaN entries count as 0); NaN when ``Σ call == 0``.

    Used for OI (``pcr_oi``), volume (``pcr_volume``) and change in OI
    (``pcr_doi = Σ(PE OI − PE prev OI) / Σ(CE OI − CE prev OI)``, may be negative).
    """
    p = np.asarray(put_values, dtype=np.float64)
    c = np.asarray(call_values, dtype=np.float64)
    return _ratio(float(np.nansum(p)), float(np.nansum(c)))


def max_pain(strikes: npt.ArrayLike, call_oi: npt.ArrayLike, put_oi: npt.ArrayLike) -> float:
    """Strike ``K*`` minimising the option writers' payout
    ``Σ_i CE_OI_i·max(0, K* − K_i) + PE_OI_i·max(0, K_i − K*)``, over the listed strikes.

    O(N) after sorting, with prefix sums. At ``K_j`` (the ``i = j`` terms vanish, so
    inclusive sums do): calls pay ``K_j·ΣC_{≤j} − Σ(C·K)_{≤j}``, puts
    ``Σ(P·K)_{>j} − K_j·ΣP_{>j}``; together, up to a constant,
    ``K_j·(Σ(C+P)_{≤j} − ΣP) − Σ((C+P)·K)_{≤j}``.
    Non-finite OI counts as 0; ties go to the lowest strike; NaN for an empty chain.
    OI units (shares or contracts) do not change the answer.
    """
    k = np.asarray(strikes, dtype=np.float64)
    if k.size == 0:
        return math.nan
    c = np.asarray(call_oi, dtype=np.float64)
    p = np.asarray(put_oi, dtype=np.float64)
    c = np.where(np.isfinite(c), c, 0.0)
    p = np.where(np.isfinite(p), p, 0.0)
    if k.size > 1 and not bool(np.all(k[1:] >= k[:-1])):
        order = np.argsort(k, kind="stable")
        k, c, p = k[order], c[order], p[order]
    return _max_pain_sorted(k, c, p)


def _max_pain_sorted(k: FloatArray, c: FloatArray, p: FloatArray) -> float:
    """:func:`max_pain` for ascending strikes and finite OI (the O(N) core)."""
    both = c + p
    pain = np.cumsum(both)
    pain -= p.sum()
    pain *= k
    pain -= np.cumsum(both * k)
    return float(k[int(np.argmin(pain))])


def mid_price(
    bid: FloatArray, ask: FloatArray, last: FloatArray, present: NDArray[np.bool_], source: str = "mid"
) -> FloatArray:
    """Price fed to the IV solver: ``(bid + ask)/2`` when both are quoted (> 0) and not crossed,
    else the last traded price (``source="ltp"``: always the last price); NaN when neither
    is positive or the leg is missing."""
    with np.errstate(invalid="ignore"):
        if source == "ltp":
            px = last.copy()
        else:
            quoted = (bid > 0.0) & (ask >= bid)
            px = np.where(quoted, 0.5 * (bid + ask), last)
        good = present & (px > 0.0)
    result: FloatArray = np.where(good, px, np.nan)
    return result


# ----------------------------------------------------------------------------- entry point
def _as_float(values: Any, n: int) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    return arr if arr.shape == (n,) else np.broadcast_to(arr, (n,)).astype(np.float64)


def analyze_chain(
    strikes: npt.ArrayLike,
    calls: LegQuotes,
    puts: LegQuotes,
    spot: float,
    t: float,
    *,
    r: float,
    q: float,
    lot_size: int,
    oi_unit: OiUnit = "shares",
    conventions: Conventions = DEFAULT_CONVENTIONS,
) -> ChainResult:
    """Every per-snapshot analytic of one chain; never raises on bad rows (NaN + flags).

    ``spot`` in currency, ``t`` in years (see :func:`hftengine.analytics.time_to_expiry`),
    ``r``/``q`` continuously compounded per year, ``lot_size`` shares per contract,
    ``oi_unit`` the unit of ``oi``/``prev_oi``/``volume`` (``"contracts"`` → shares =
    contracts · ``lot_size`` for GEX and flow). ``ValueError`` only for an unknown
    ``oi_unit`` or mismatched array lengths (caller bugs, not data problems).
    """
    cv = conventions
    if oi_unit not in ("shares", "contracts"):
        raise ValueError(f"oi_unit must be 'shares' or 'contracts', not {oi_unit!r}")
    k = np.asarray(strikes, dtype=np.float64).reshape(-1)
    n = k.shape[0]
    if np.asarray(calls.present).shape != (n,) or np.asarray(puts.present).shape != (n,):
        raise ValueError("calls/puts arrays must have one element per strike")
    order: NDArray[np.intp] | None = None
    if n > 1 and not bool(np.all(k[1:] > k[:-1])):
        order = np.argsort(k, kind="stable")
        k, calls, puts = k[order], calls.take(order), puts.take(order)
    spot = float(spot)
    t = float(t)
    spot_ok = math.isfinite(spot) and spot > 0.0
    t_ok = math.isfinite(t) and t > 0.0
    shares_per_unit = float(lot_size) if oi_unit == "contracts" else 1.0

    # Both legs stacked: rows [0, n) are calls, [n, 2n) puts.
    def stack(name: str) -> FloatArray:
        return np.concatenate((_as_float(getattr(calls, name), n), _as_float(getattr(puts, name), n)))

    present = np.concatenate((np.asarray(calls.present, dtype=np.bool_), np.asarray(puts.present, dtype=np.bool_)))
    bid, ask, last = stack("bid"), stack("ask"), stack("last_price")
    volume, oi, prev_oi = stack("volume"), stack("oi"), stack("prev_oi")
    prev_last = np.concatenate(
        (
            _as_float(calls.prev_close if calls.prev_last_price is None else calls.prev_last_price, n),
            _as_float(puts.prev_close if puts.prev_last_price is None else puts.prev_last_price, n),
        )
    )
    k2 = np.concatenate((k, k))
    is_call = np.zeros(2 * n, dtype=np.bool_)
    is_call[:n] = True
    px = mid_price(bid, ask, last, present, cv.price_source)

    # Implied volatility and Greeks, both legs in one pass.
    forward_missing = False
    model_spot = spot if spot_ok else math.nan
    with np.errstate(all="ignore"):
        if cv.iv_model == "black76":
            forward = parity_forward(k, px[:n], px[n:], t, r, n_strikes=cv.parity_strikes) if t_ok else math.nan
            if not math.isfinite(forward):
                forward_missing = True
                forward = model_spot * math.exp((r - q) * t) if t_ok else math.nan
            res = solve_implied_volatility(px, forward, k2, t, r, 0.0, is_call, black76=True)
            ratio = forward / model_spot  # F/S
            carry = math.exp(-r * t) * ratio if t_ok else math.nan
            spot_gamma = res.greeks.gamma * (ratio * ratio)
        else:
            forward = model_spot * math.exp((r - q) * t) if t_ok else math.nan
            res = solve_implied_volatility(px, model_spot, k2, t, r, q, is_call)
            ratio = math.exp((r - q) * t) if t_ok else math.nan
            carry = math.exp(-q * t) if t_ok else math.nan
            spot_gamma = res.greeks.gamma
    iv = res.iv
    g = res.greeks

    # OI / volume in shares; missing legs hold nothing.
    oi_live = np.where(present & np.isfinite(oi), oi, 0.0)
    prev_oi_live = np.where(present & np.isfinite(prev_oi), prev_oi, 0.0)
    vol_live = np.where(present & np.isfinite(volume), volume, 0.0)
    oi_shares = oi_live * shares_per_unit
    signs = np.where(is_call, cv.gex_call_sign, cv.gex_put_sign)

    # GEX per leg: sign · Γ · OI_shares · S² · move (0 where there is no OI).
    with np.errstate(all="ignore"):
        gex_legs = np.where(oi_shares == 0.0, 0.0, signs * spot_gamma * oi_shares * (spot * spot * cv.gex_move))
    if not spot_ok:
        gex_legs = np.full(2 * n, np.nan)
    gex_call, gex_put = gex_legs[:n], gex_legs[n:]
    both_nan = np.isnan(gex_call) & np.isnan(gex_put)
    gex = np.where(
        both_nan,
        np.nan,
        np.where(np.isnan(gex_call), 0.0, gex_call) + np.where(np.isnan(gex_put), 0.0, gex_put),
    )
    finite_gex = np.isfinite(gex_legs)
    total_gex = float(gex_legs[finite_gex].sum()) if finite_gex.any() else math.nan

    flip, grid, profile = (None, np.empty(0), np.empty(0))
    if spot_ok and t_ok and n:
        flip, grid, profile = gamma_flip(
            spot,
            k2,
            iv,
            oi_shares,
            signs,
            t,
            forward_ratio=ratio,
            carry=carry,
            move=cv.gex_move,
            flip_range=cv.flip_range,
            points=cv.flip_points,
        )

    # Open-interest statistics (need no model).
    doi = oi_live - prev_oi_live
    pcr_oi = _ratio(float(oi_live[n:].sum()), float(oi_live[:n].sum()))
    pcr_volume = _ratio(float(vol_live[n:].sum()), float(vol_live[:n].sum()))
    pcr_doi = _ratio(float(doi[n:].sum()), float(doi[:n].sum()))
    pain = _max_pain_sorted(k, oi_live[:n], oi_live[n:]) if n else math.nan

    # Skew.
    call_iv, put_iv = iv[:n], iv[n:]
    atm = atm_iv(k, call_iv, put_iv, forward) if n else math.nan
    rr25, bf25 = (
        risk_reversal_butterfly(k, forward, call_iv, put_iv, g.delta[:n], g.delta[n:], atm, wing=cv.wing_delta)
        if n
        else (math.nan, math.nan)
    )

    # Build-up, flow, quality.
    buildup = classify_buildup(
        last,
        prev_last,
        oi,
        prev_oi,
        present=present,
        price_band=cv.buildup_price_band,
        price_tick=cv.buildup_price_tick,
        oi_band=cv.buildup_oi_band,
        oi_min=cv.buildup_oi_min,
    )
    score, fflags, premium = flow_scores(
        vol_live * shares_per_unit,
        oi_shares,
        px,
        present,
        zscore=cv.flow_zscore,
        min_premium=cv.flow_min_premium,
        volume_oi_ratio=cv.flow_volume_oi_ratio,
    )
    iv_ok = np.isfinite(iv) | (not (spot_ok and t_ok))  # root cause flagged as zero_spot / expired
    bits = leg_quality(present, bid, ask, px, iv_ok)
    flags = chain_flags(
        spot=spot,
        t=t,
        leg_bits=bits,
        oi=oi,
        prev_oi=prev_oi,
        volume=volume,
        present=present,
        forward_missing=forward_missing and cv.iv_model == "black76",
    )

    theta_scale = cv.theta_scale
    vega_scale = cv.vega_per
    theta = g.theta * theta_scale if theta_scale != 1.0 else g.theta
    charm = g.charm * theta_scale if theta_scale != 1.0 else g.charm
    vega = g.vega * vega_scale if vega_scale != 1.0 else g.vega
    status = res.status
    result = ChainResult(
        conventions_version=cv.version,
        time_to_expiry=t,
        forward=float(forward),
        spot=spot,
        strikes=k,
        call_iv=call_iv,
        put_iv=put_iv,
        call_delta=g.delta[:n],
        put_delta=g.delta[n:],
        call_gamma=g.gamma[:n],
        put_gamma=g.gamma[n:],
        call_theta=theta[:n],
        put_theta=theta[n:],
        call_vega=vega[:n],
        put_vega=vega[n:],
        call_rho=g.rho[:n],
        put_rho=g.rho[n:],
        call_vanna=g.vanna[:n],
        put_vanna=g.vanna[n:],
        call_charm=charm[:n],
        put_charm=charm[n:],
        call_iv_status=status[:n],
        put_iv_status=status[n:],
        call_buildup=buildup[:n],
        put_buildup=buildup[n:],
        gex_call=gex_call,
        gex_put=gex_put,
        gex=gex,
        pcr_oi=pcr_oi,
        pcr_volume=pcr_volume,
        pcr_doi=pcr_doi,
        max_pain=pain,
        total_gex=total_gex,
        gamma_flip=flip,
        call_wall=call_wall(k, gex_call, spot) if spot_ok else None,
        put_wall=put_wall(k, gex_put, spot) if spot_ok else None,
        atm_iv=atm,
        rr25=rr25,
        bf25=bf25,
        flow_score=np.fmax(score[:n], score[n:]),
        flow_flags=(fflags[:n] | (fflags[n:] << 2)).astype(np.uint8),
        call_flow_score=score[:n],
        put_flow_score=score[n:],
        call_premium=premium[:n],
        put_premium=premium[n:],
        call_quality=bits[:n],
        put_quality=bits[n:],
        quality_flags=flags,
        gex_profile_spots=grid,
        gex_profile=profile,
        iv_model=cv.iv_model,
        oi_unit=oi_unit,
    )
    if order is not None:
        result = _unsort(result, order, n)
    return result


def _unsort(result: ChainResult, order: NDArray[np.intp], n: int) -> ChainResult:
    """Put per-strike arrays back in the caller's strike order."""
    inverse = np.empty_like(order)
    inverse[order] = np.arange(n)
    changes: dict[str, Any] = {}
    for f in fields(result):
        value = getattr(result, f.name)
        if isinstance(value, np.ndarray) and value.shape == (n,) and f.name not in ("gex_profile_spots", "gex_profile"):
            changes[f.name] = value[inverse]
    return replace(result, **changes)


__all__ = ["ChainResult", "IVStatus", "LegQuotes", "analyze_chain", "max_pain", "mid_price", "pcr"]
