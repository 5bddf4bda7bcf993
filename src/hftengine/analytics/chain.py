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

import functools
import math
from dataclasses import dataclass, fields, replace
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from numpy.typing import NDArray

from hftengine.analytics.black76 import parity_forward
from hftengine.analytics.buildup import buildup_codes
from hftengine.analytics.conventions import DEFAULT_CONVENTIONS, Conventions, OiUnit
from hftengine.analytics.flow import _flow_scores
from hftengine.analytics.gex import _gamma_flip
from hftengine.analytics.iv import IVStatus, _solve_single_expiry
from hftengine.analytics.normalized_black import FloatArray, _count_nonzero
from hftengine.analytics.quality import chain_flags, quality_bits, quality_features
from hftengine.analytics.skew import _wings_of_legs, atm_iv, atm_iv_sorted, risk_reversal_butterfly_sorted

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


#: Slot setters of :class:`ChainResult` by field name (see :func:`_chain_result`).
_RESULT_SLOTS: Final[dict[str, Any]] = {f.name: getattr(ChainResult, f.name).__set__ for f in fields(ChainResult)}


def _chain_result(**values: Any) -> ChainResult:
    """``ChainResult(**values)`` for the hot path: the frozen dataclass ``__init__`` sets
    each of the 53 fields through ``object.__setattr__`` (20 µs a result); the slot
    descriptors do it for half of that. Same object, same checks on names (every
    field, nothing else)."""
    result = object.__new__(ChainResult)
    try:
        for name, value in values.items():
            _RESULT_SLOTS[name](result, value)
    except KeyError as exc:
        raise TypeError(f"ChainResult has no field {exc}") from None
    if len(values) != len(_RESULT_SLOTS):  # all names known and distinct: equal length = every field
        raise TypeError(f"ChainResult fields missing: {sorted(set(_RESULT_SLOTS) - set(values))}")
    return result


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


def _max_pain_sorted(k: FloatArray, c: FloatArray, p: FloatArray, p_total: float | None = None) -> float:
    """:func:`max_pain` for ascending strikes and finite OI (the O(N) core); ``p_total``
    is ``p.sum()`` when the caller has it. Both prefix sums in one ``accumulate``."""
    sums = np.empty((2, k.shape[0]))
    both, both_k = sums[0], sums[1]
    np.add(c, p, both)
    np.multiply(both, k, both_k)
    np.add.accumulate(sums, axis=1, out=sums)  # Σ(C+P)_{≤j}, Σ((C+P)·K)_{≤j}
    pain = np.subtract(both, p.sum() if p_total is None else p_total)
    pain *= k
    pain -= both_k
    return float(k[int(pain.argmin())])


def mid_price(
    bid: FloatArray, ask: FloatArray, last: FloatArray, present: NDArray[np.bool_], source: str = "mid"
) -> FloatArray:
    """Price fed to the IV solver: ``(bid + ask)/2`` when both are quoted (> 0) and not crossed,
    else the last traded price (``source="ltp"``: always the last price); NaN when neither
    is positive or the leg is missing."""
    with np.errstate(invalid="ignore"):
        return _mid_price(bid, ask, last, present, source)


def _mid_price(
    bid: FloatArray, ask: FloatArray, last: FloatArray, present: NDArray[np.bool_], source: str
) -> FloatArray:
    """:func:`mid_price` under the caller's ``errstate``."""
    if source == "ltp":
        px = last.copy()
    else:
        quoted = bid > _ZERO
        quoted &= ask >= bid
        px = np.add(bid, ask)
        np.multiply(px, _HALF, px)
        px = np.where(quoted, px, last)
    usable = px > _ZERO
    usable &= present
    return np.where(usable, px, _nans(px.shape[0]))


_ZERO: Final = np.array(0.0)
_HALF: Final = np.array(0.5)
_TWO_BITS: Final = np.uint8(2)


# ----------------------------------------------------------------------------- entry point
def _as_float(values: Any, n: int) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    return arr if arr.shape == (n,) else np.broadcast_to(arr, (n,)).astype(np.float64)


#: Rows of the ``(7, 2N)`` leg matrix (calls in columns ``[0, N)``, puts in ``[N, 2N)``),
#: ordered so that rows used together are slices: last/OI/previous last/previous OI
#: (the build-up block), OI to volume (open-interest statistics).
_BID, _ASK, _LAST, _OI, _PREV_LAST, _PREV_OI, _VOLUME = range(7)


def _leg_matrix(calls: LegQuotes, puts: LegQuotes, n: int) -> FloatArray:
    """Both legs' quotes as one float64 ``(7, 2N)`` array (one conversion instead of 14)."""
    parts = (
        calls.bid,
        puts.bid,
        calls.ask,
        puts.ask,
        calls.last_price,
        puts.last_price,
        calls.oi,
        puts.oi,
        calls.prev_close if calls.prev_last_price is None else calls.prev_last_price,
        puts.prev_close if puts.prev_last_price is None else puts.prev_last_price,
        calls.prev_oi,
        puts.prev_oi,
        calls.volume,
        puts.volume,
    )
    try:
        rows: FloatArray | None = np.array(parts, dtype=np.float64)
    except (ValueError, TypeError):  # scalars or ragged input: broadcast one by one
        rows = None
    if rows is None or rows.shape != (14, n):
        rows = np.array([_as_float(v, n) for v in parts])
    return rows.reshape(7, 2 * n)


@functools.lru_cache(maxsize=16)
def _zeros(shape: tuple[int, ...]) -> FloatArray:
    """A read-only array of zeros (cached): ``np.where(mask, x, zeros)`` is twice as fast
    as ``np.where(mask, x, 0.0)``."""
    zeros = np.zeros(shape)
    zeros.setflags(write=False)
    return zeros


@functools.lru_cache(maxsize=16)
def _nans(n: int) -> FloatArray:
    """A read-only array of ``n`` NaNs (cached)."""
    nans = np.full(n, np.nan)
    nans.setflags(write=False)
    return nans


@functools.lru_cache(maxsize=16)
def _put_call(n: int) -> FloatArray:
    """Rows ``(1 − sign)/2`` and ``(1 + sign)/2`` of the legs (puts, then calls, are 1),
    read-only, cached per chain size."""
    rows = np.stack((_leg_values(n, 0.0, 1.0), _leg_values(n, 1.0, 0.0)))
    rows.setflags(write=False)
    return rows


@functools.lru_cache(maxsize=32)
def _leg_values(n: int, call_value: float, put_value: float) -> FloatArray:
    """``call_value`` N times then ``put_value`` N times (read-only, cached per chain size)."""
    values = np.empty(2 * n)
    values[:n] = call_value
    values[n:] = put_value
    values.setflags(write=False)
    return values


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

    Both legs live side by side in one ``(7, 2N)`` matrix (calls then puts), so IV and
    Greeks are one small-batch solve over the priced legs and every per-leg analytic is
    one pass; a chain costs a few hundred numpy calls, not a few thousand.
    """
    cv = conventions
    if oi_unit not in ("shares", "contracts"):
        raise ValueError(f"oi_unit must be 'shares' or 'contracts', not {oi_unit!r}")
    k = np.asarray(strikes, dtype=np.float64).reshape(-1)
    n = k.shape[0]
    call_present, put_present = np.asarray(calls.present), np.asarray(puts.present)
    if call_present.shape != (n,) or put_present.shape != (n,):
        raise ValueError("calls/puts arrays must have one element per strike")
    present = np.concatenate((call_present, put_present))
    if present.dtype != np.bool_:
        present = present.astype(np.bool_)
    legs = _leg_matrix(calls, puts, n)
    order: NDArray[np.intp] | None = None
    increasing = n < 2 or _count_nonzero(k[1:] > k[:-1]) == n - 1
    if not increasing:
        order = np.argsort(k, kind="stable")
        k = k[order]
        columns = np.concatenate((order, order + n))
        legs, present = legs[:, columns], present[columns]
        increasing = _count_nonzero(k[1:] > k[:-1]) == n - 1  # else duplicate strikes
    # Rows by index: unpacking an ndarray ends its iteration with a formatted IndexError (~1 µs).
    bid, ask, last, oi, prev_oi, volume = legs[_BID], legs[_ASK], legs[_LAST], legs[_OI], legs[_PREV_OI], legs[_VOLUME]
    spot = float(spot)
    t = float(t)
    spot_ok = math.isfinite(spot) and spot > 0.0
    t_ok = math.isfinite(t) and t > 0.0
    shares_per_unit = float(lot_size) if oi_unit == "contracts" else 1.0
    black76 = cv.iv_model == "black76"

    with np.errstate(all="ignore"):
        px = _mid_price(bid, ask, last, present, cv.price_source)

        # Implied volatility and Greeks, both legs in one pass.
        k2 = np.concatenate((k, k))
        sign = _leg_values(n, 1.0, -1.0)
        forward_missing = False
        model_spot = spot if spot_ok else math.nan
        if black76:
            forward = parity_forward(k, px[:n], px[n:], t, r, n_strikes=cv.parity_strikes) if t_ok else math.nan
            if not math.isfinite(forward):
                forward_missing = True
                forward = model_spot * math.exp((r - q) * t) if t_ok else math.nan
            res, status = _solve_single_expiry(px, forward, k2, t, r, 0.0, sign, True, _put_call(n))
            ratio = forward / model_spot  # F/S
            carry = math.exp(-r * t) * ratio if t_ok else math.nan
            spot_gamma = res[2] * (ratio * ratio)
        else:
            forward = model_spot * math.exp((r - q) * t) if t_ok else math.nan
            res, status = _solve_single_expiry(px, model_spot, k2, t, r, q, sign, False, _put_call(n))
            ratio = math.exp((r - q) * t) if t_ok else math.nan
            carry = math.exp(-q * t) if t_ok else math.nan
            spot_gamma = res[2]
        iv = res[0]
        if cv.theta_unit != "year":
            theta_scale = cv.theta_scale
            res[3] *= theta_scale
            res[7] *= theta_scale
        if cv.vega_per != 1.0:
            res[4] *= cv.vega_per

        # OI / volume in shares; missing legs hold nothing.
        counts = legs[_OI : _VOLUME + 1]  # OI, previous last price (not a count: unused), previous OI, volume
        live = np.isfinite(counts)
        live &= present
        counts = np.where(live, counts, _zeros(counts.shape))
        oi_live, prev_oi_live = counts[0], counts[2]
        oi_vol = counts[::3]  # OI and volume rows
        if shares_per_unit != 1.0:
            oi_vol = oi_vol * shares_per_unit
        oi_shares, vol_shares = oi_vol[0], oi_vol[1]

        # GEX per leg: sign · Γ · OI_shares · S² · move (0 where there is no OI).
        signs = _leg_values(n, cv.gex_call_sign, cv.gex_put_sign)
        if spot_ok:
            gex_legs = np.multiply(signs, spot_gamma)
            gex_legs *= oi_shares
            np.multiply(gex_legs, np.array(spot * spot * cv.gex_move), gex_legs)
            gex_legs[oi_shares == _ZERO] = 0.0
        else:
            gex_legs = np.full(2 * n, np.nan)
        gex_call, gex_put = gex_legs[:n], gex_legs[n:]
        gex, total_gex, exposure = _gex_totals(gex_legs, n)
        flip, grid, profile = (None, np.empty(0), np.empty(0))
        if spot_ok and t_ok and n:
            flip, grid, profile = _gamma_flip(
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
                trusted=True,  # IVs from the solver (NaN or > 0), OI cleaned (finite)
            )
        walls: tuple[float | None, float | None] = (None, None)
        if spot_ok:
            above = int(k.searchsorted(spot, "left"))  # strikes >= spot
            below = int(k.searchsorted(spot, "right"))  # strikes <= spot
            walls = (_wall(k, exposure[above:n], above), _wall(k, exposure[n : n + below], 0))

        # Open-interest statistics (need no model): per-leg sums in one reduction.
        # Row 1 of the counts (the previous last price, no count) becomes OI − previous OI.
        np.subtract(oi_live, prev_oi_live, counts[1])
        (oi_c, oi_p), (doi_c, doi_p), _, (vol_c, vol_p) = np.add.reduce(counts.reshape(4, 2, n), axis=2).tolist()
        pain = _max_pain_sorted(k, oi_live[:n], oi_live[n:], oi_p) if n else math.nan

        # Skew.
        call_iv, put_iv = iv[:n], iv[n:]
        delta = res[1]
        if not n:
            atm, rr25, bf25 = math.nan, math.nan, math.nan
        else:
            atm = atm_iv_sorted(k, call_iv, put_iv, forward) if increasing else atm_iv(k, call_iv, put_iv, forward)
            wings = None
            if math.isfinite(forward):  # OTM calls (K >= F), then OTM puts (K <= F): adjacent legs
                first_call = int(k.searchsorted(forward, "left"))
                otm = slice(first_call, n + int(k.searchsorted(forward, "right")))
                wings = _wings_of_legs(delta[otm], iv[otm], n - first_call, cv.wing_delta)
            if wings is not None:
                rr25, bf25 = wings[0] - wings[1], 0.5 * (wings[0] + wings[1]) - atm
            else:
                rr25, bf25 = risk_reversal_butterfly_sorted(
                    k, forward, call_iv, put_iv, delta[:n], delta[n:], atm, wing=cv.wing_delta, finite_delta=True
                )

        # Build-up, flow, quality.
        buildup = buildup_codes(
            legs[_LAST : _PREV_OI + 1],  # last, OI, previous last, previous OI
            present,
            (cv.buildup_price_band, cv.buildup_oi_band),
            (cv.buildup_price_tick, cv.buildup_oi_min),
        )
        priced = np.isfinite(px)  # implies present, and px > 0 (see mid_price)
        flow_live = priced if shares_per_unit == 1.0 else priced & np.isfinite(vol_shares)
        traded = vol_shares > _ZERO
        traded &= flow_live
        score, fflags, premium = _flow_scores(
            oi_vol,
            px,
            flow_live,
            traded,
            cv.flow_zscore,
            cv.flow_min_premium,
            cv.flow_volume_oi_ratio,
        )
        features = quality_features(2 * n)
        np.greater(bid, _ZERO, out=features[:, 0])
        np.greater(ask, _ZERO, out=features[:, 1])
        np.greater(bid, ask, out=features[:, 2])
        # (np.isfinite into a strided bool view is wrong for n >= 16 in numpy 2.4: assign)
        features[:, 3] = priced
        if spot_ok and t_ok:
            features[:, 4] = np.isfinite(iv)
        else:  # root cause flagged as zero_spot / expired
            features[:, 4] = True
        features[:, 5] = present
        bits = quality_bits(features)
        flags = chain_flags(
            spot=spot,
            t=t,
            leg_bits=bits,
            oi=oi,
            prev_oi=prev_oi,
            volume=volume,
            present=present,
            forward_missing=forward_missing and black76,
        )

    result = _chain_result(
        conventions_version=cv.version,
        time_to_expiry=t,
        forward=float(forward),
        spot=spot,
        strikes=k,
        call_iv=call_iv,
        put_iv=put_iv,
        call_delta=delta[:n],
        put_delta=delta[n:],
        call_gamma=res[2, :n],
        put_gamma=res[2, n:],
        call_theta=res[3, :n],
        put_theta=res[3, n:],
        call_vega=res[4, :n],
        put_vega=res[4, n:],
        call_rho=res[5, :n],
        put_rho=res[5, n:],
        call_vanna=res[6, :n],
        put_vanna=res[6, n:],
        call_charm=res[7, :n],
        put_charm=res[7, n:],
        call_iv_status=status[:n],
        put_iv_status=status[n:],
        call_buildup=buildup[:n],
        put_buildup=buildup[n:],
        gex_call=gex_call,
        gex_put=gex_put,
        gex=gex,
        pcr_oi=_ratio(oi_p, oi_c),
        pcr_volume=_ratio(vol_p, vol_c),
        pcr_doi=_ratio(doi_p, doi_c),
        max_pain=pain,
        total_gex=total_gex,
        gamma_flip=flip,
        call_wall=walls[0],
        put_wall=walls[1],
        atm_iv=atm,
        rr25=rr25,
        bf25=bf25,
        flow_score=np.fmax(score[:n], score[n:]),
        flow_flags=np.bitwise_or(fflags[:n], np.left_shift(fflags[n:], _TWO_BITS)),
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


def _gex_totals(gex_legs: FloatArray, n: int) -> tuple[FloatArray, float, FloatArray]:
    """Per-strike GEX (call + put: NaN counts as 0 unless both legs are NaN), the total
    (Σ over the finite legs, NaN if none) and the exposure ``|GEX|`` per leg with
    non-finite legs as 0 (the walls' score, see :func:`~hftengine.analytics.gex.wall_in`).
    Legs without a volatility are NaN: the common case is NaN but no ±inf."""
    if not n:
        return np.empty(0), math.nan, np.empty(0)
    nan_legs = np.isnan(gex_legs)
    if not _count_nonzero(nan_legs):
        total = float(np.add.reduce(gex_legs))
        if math.isfinite(total):  # a ±inf leg makes the sum non-finite
            return np.add(gex_legs[:n], gex_legs[n:]), total, np.abs(gex_legs)
    finite = np.isfinite(gex_legs)
    rows = finite.nonzero()[0]
    total = float(np.add.reduce(gex_legs.take(rows))) if rows.shape[0] else math.nan  # compacted: the same sum
    zeroed = np.where(nan_legs, _zeros(nan_legs.shape), gex_legs)
    gex = np.add(zeroed[:n], zeroed[n:])
    both_nan = np.logical_and(nan_legs[:n], nan_legs[n:])
    if _count_nonzero(both_nan):
        gex[both_nan] = np.nan
    exposure = np.abs(zeroed)
    if rows.shape[0] + _count_nonzero(nan_legs) != 2 * n:  # ±inf legs: no exposure either
        exposure = np.where(finite, exposure, _zeros(finite.shape))
    return gex, total, exposure


def _wall(strikes: FloatArray, exposure: FloatArray, start: int) -> float | None:
    """:func:`~hftengine.analytics.gex.wall_in` on the exposure of its candidates
    ``strikes[start:start + len(exposure)]`` (finite, ≥ 0)."""
    if not exposure.shape[0]:
        return None
    best = int(exposure.argmax())
    if not exposure[best] > 0.0:
        return None
    return float(strikes[start + best])


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
