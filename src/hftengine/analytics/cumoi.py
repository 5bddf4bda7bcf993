"""Cumulative open interest per strike and leg: change since the session open and since the
previous snapshot, and chain totals.  Also the exchange session calendar and the strike
re-alignment that every stateful module uses.

Arrays are ``(2, n)``: row 0 calls (CE), row 1 puts (PE), one column per strike.  OI and
volume are in the chain's ``oi_unit`` (shares or contracts), prices in rupees.

Definitions (see ``docs/analytics.md``):

- session: the IST calendar date of the snapshot's exchange time (NSE trades 09:15-15:30 IST);
  a snapshot on a new IST date starts a new session, whatever the wall clock says;
- ``oi_open``: the leg's OI in the first snapshot of the session that listed it (the
  baseline; a strike listed mid-session starts from its first OI);
- ``change_open = oi - oi_open``; ``change_open_pct = change_open / oi_open`` (NaN if
  ``oi_open`` is 0);
- ``change_prev = oi - oi_prev`` against the previous applied snapshot of the session (NaN
  for the first snapshot of a session and for legs absent from the previous one);
- ``price_change_open = price - price_open`` (``price_open``: first positive last price of
  the session);
- ``buildup``: :func:`~hftengine.analytics.buildup.classify_buildup` of (price, OI) against
  (``price_open``, ``oi_open``) with its default dead-bands;
- totals: sums over present legs; ``pcr_oi = ΣPE OI / ΣCE OI``;
  ``pcr_change_open = ΣPE change_open / ΣCE change_open`` (NaN when the CE sum is 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone

import numpy as np
from numpy.typing import NDArray

from hftengine.analytics.buildup import classify_buildup

F64 = NDArray[np.float64]
#: India Standard Time (UTC+05:30, no daylight saving): the NSE calendar's time zone.
IST = timezone(timedelta(hours=5, minutes=30), name="IST")
SESSION_OPEN = time(9, 15)
SESSION_CLOSE = time(15, 30)
LEGS = ("CE", "PE")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# ------------------------------------------------------------------------------ calendar
def session_date(ts: datetime) -> date:
    """The trading session a snapshot belongs to: the IST date of its exchange time."""
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError("exchange timestamps must be timezone-aware")
    return ts.astimezone(IST).date()


def session_open(day: date) -> datetime:
    """09:15 IST of ``day`` (tz-aware)."""
    return datetime.combine(day, SESSION_OPEN, tzinfo=IST)


def ts_micros(ts: datetime) -> int:
    """Microseconds since the Unix epoch of a tz-aware datetime (exact, integer)."""
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError("exchange timestamps must be timezone-aware")
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(us: int) -> datetime:
    """Inverse of :func:`ts_micros` (UTC)."""
    return _EPOCH + timedelta(microseconds=us)


# ----------------------------------------------------------------------------- strikes
def align(old_strikes: F64, new_strikes: F64, values: F64, fill: float = math.nan) -> F64:
    """``values`` (``(..., m)`` over ``old_strikes``) re-indexed onto ``new_strikes`` by exact
    strike match; strikes not in ``old_strikes`` get ``fill``.  Both strike vectors ascending."""
    if old_strikes.shape == new_strikes.shape and np.array_equal(old_strikes, new_strikes):
        return values
    out = np.full((*values.shape[:-1], new_strikes.shape[0]), fill, dtype=values.dtype)
    if old_strikes.shape[0] == 0 or new_strikes.shape[0] == 0:
        return out
    idx = np.clip(np.searchsorted(old_strikes, new_strikes), 0, old_strikes.shape[0] - 1)
    hit = old_strikes[idx] == new_strikes
    out[..., hit] = values[..., idx[hit]]
    return out


def strike_step(strikes: F64) -> float:
    """The chain's strike interval: the median gap between adjacent strikes (NaN below 2 strikes)."""
    if strikes.shape[0] < 2:
        return math.nan
    return float(np.median(np.diff(strikes)))


# ------------------------------------------------------------------------------- update
@dataclass(frozen=True, slots=True)
class OIInput:
    """What the cumulative-OI update reads from one chain snapshot."""

    ts_us: int
    strikes: F64  # (n,) ascending
    present: NDArray[np.bool_]  # (2, n)
    oi: F64  # (2, n), NaN where absent
    price: F64  # (2, n) last traded price
    volume: F64  # (2, n) session volume


@dataclass(frozen=True, slots=True)
class CumOIState:
    """Per-session baselines and the previous snapshot, aligned to ``strikes``."""

    open_ts_us: int
    strikes: F64
    open_oi: F64  # (2, n) NaN: leg not seen yet this session
    open_price: F64  # (2, n) NaN: no positive price seen yet
    prev_oi: F64  # (2, n) NaN: absent in the previous snapshot
    prev_volume: F64


@dataclass(frozen=True, slots=True)
class OITotals:
    ce_oi: float
    pe_oi: float
    ce_oi_open: float
    pe_oi_open: float
    ce_change_open: float
    pe_change_open: float
    ce_change_prev: float
    pe_change_prev: float
    pcr_oi: float
    pcr_change_open: float


@dataclass(frozen=True, slots=True)
class CumOI:
    """Cumulative OI of one snapshot (arrays ``(2, n)``, NaN where the leg is absent)."""

    open_ts_us: int
    strikes: F64
    present: NDArray[np.bool_]
    oi: F64
    oi_open: F64
    change_open: F64
    change_open_pct: F64
    change_prev: F64
    price: F64
    price_change_open: F64
    buildup: NDArray[np.int8]
    prev_volume: F64  # the previous snapshot's session volume (NaN if none): for flow detection
    prev_oi: F64
    totals: OITotals


def _ratio(num: float, den: float) -> float:
    return num / den if den != 0.0 and math.isfinite(den) and math.isfinite(num) else math.nan


def update_cumulative_oi(state: CumOIState | None, event: OIInput) -> tuple[CumOIState, CumOI]:
    """Advance the session's cumulative OI by one snapshot (``state=None``: first of the session)."""
    strikes = event.strikes
    present = event.present
    nan = np.full(present.shape, np.nan)
    oi = np.where(present, event.oi, np.nan)
    price = np.where(present, event.price, np.nan)
    volume = np.where(present, event.volume, np.nan)
    if state is None:
        open_ts = event.ts_us
        open_oi, open_price, prev_oi, prev_volume = nan, nan, nan, nan
    else:
        open_ts = state.open_ts_us
        old = state.strikes
        open_oi = align(old, strikes, state.open_oi)
        open_price = align(old, strikes, state.open_price)
        prev_oi = align(old, strikes, state.prev_oi)
        prev_volume = align(old, strikes, state.prev_volume)
    with np.errstate(invalid="ignore", divide="ignore"):
        open_oi = np.where(np.isnan(open_oi) & present & np.isfinite(oi), oi, open_oi)
        open_price = np.where(np.isnan(open_price) & present & (price > 0.0), price, open_price)
        change_open = np.where(present, oi - open_oi, np.nan)
        change_open_pct = np.where(present & (open_oi > 0.0), change_open / open_oi, np.nan)
        change_prev = np.where(present, oi - prev_oi, np.nan)
        price_change_open = np.where(present, price - open_price, np.nan)
    buildup = classify_buildup(np.nan_to_num(price), np.nan_to_num(open_price), np.nan_to_num(oi),
                               np.nan_to_num(open_oi), present=present & np.isfinite(open_price))

    def total(values: F64, row: int) -> float:
        v = values[row]
        return float(np.sum(v[np.isfinite(v)]))

    ce_oi, pe_oi = total(oi, 0), total(oi, 1)
    ce_chg, pe_chg = total(change_open, 0), total(change_open, 1)
    totals = OITotals(
        ce_oi=ce_oi, pe_oi=pe_oi, ce_oi_open=total(np.where(present, open_oi, np.nan), 0),
        pe_oi_open=total(np.where(present, open_oi, np.nan), 1), ce_change_open=ce_chg, pe_change_open=pe_chg,
        ce_change_prev=total(change_prev, 0) if state is not None else math.nan,
        pe_change_prev=total(change_prev, 1) if state is not None else math.nan,
        pcr_oi=_ratio(pe_oi, ce_oi), pcr_change_open=_ratio(pe_chg, ce_chg),
    )
    new_state = CumOIState(open_ts_us=open_ts, strikes=strikes, open_oi=open_oi, open_price=open_price,
                           prev_oi=oi, prev_volume=volume)
    out = CumOI(open_ts_us=open_ts, strikes=strikes, present=present, oi=oi, oi_open=np.where(present, open_oi, np.nan),
                change_open=change_open, change_open_pct=change_open_pct, change_prev=change_prev, price=price,
                price_change_open=price_change_open, buildup=buildup, prev_volume=prev_volume, prev_oi=prev_oi,
                totals=totals)
    return new_state, out
