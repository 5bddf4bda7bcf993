"""Stateful intraday analytics of one chain (underlying, expiry): ``update(state, event) -> (state, emits)``.

The state of a chain is a frozen :class:`ChainState`; :func:`update` never mutates it and
returns a new one (the Faust agent assigns ``table[key] = new_state``).  One snapshot
(:class:`ChainObservation`, built from an enriched record) advances, in order:

1. the session: a snapshot on a new IST date starts a fresh state (baselines, windows,
   levels and detectors of the previous session are dropped), see
   :func:`~hftengine.analytics.cumoi.session_date`;
2. cumulative OI (:mod:`~hftengine.analytics.cumoi`);
3. velocity windows (:mod:`~hftengine.analytics.velocity`);
4. support/resistance, GEX walls, max pain (:mod:`~hftengine.analytics.levels`);
5. pattern detectors (:mod:`~hftengine.analytics.patterns`).

Idempotency: the state remembers the exchange time of the last applied snapshot; a snapshot
at or before it (a replay after a crash, a duplicate) returns the *same* state object and no
emits, so at-least-once delivery never double-counts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hftengine.analytics.cumoi import (
    F64,
    CumOI,
    CumOIState,
    OIInput,
    session_date,
    strike_step,
    ts_micros,
    update_cumulative_oi,
)
from hftengine.analytics.levels import LevelsConfig, LevelsInput, LevelsOutput, LevelsState, update_levels
from hftengine.analytics.patterns import PatternConfig, PatternEvent, PatternInput, PatternState, update_patterns
from hftengine.analytics.velocity import VelocityConfig, VelocityInput, VelocityState, WindowVelocity, update_velocity

#: Version of the stateful definitions, carried in every analytics.* record.
ANALYTICS_VERSION = "state-1"


@dataclass(frozen=True, slots=True)
class StateConfig:
    velocity: VelocityConfig = field(default_factory=VelocityConfig)
    levels: LevelsConfig = field(default_factory=LevelsConfig)
    patterns: PatternConfig = field(default_factory=PatternConfig)

    def __post_init__(self) -> None:
        for name, w in (("regime_window_s", self.patterns.regime_window_s),
                        ("iv_window_s", self.patterns.iv_window_s)):
            if w not in self.velocity.windows_s:
                raise ValueError(f"patterns.{name}={w} must be one of the velocity windows {self.velocity.windows_s}")


DEFAULT_CONFIG = StateConfig()


@dataclass(frozen=True, slots=True)
class ChainObservation:
    """The part of one enriched chain snapshot the stateful analytics read.  Arrays ``(2, n)``
    are (calls, puts) per strike; OI and volume in ``oi_unit``; NaN where a leg is absent."""

    underlying: str
    expiry: date
    ts: datetime
    spot: float
    lot_size: int
    oi_unit: str
    strikes: F64
    present: NDArray[np.bool_]
    oi: F64
    volume: F64
    price: F64
    iv: F64
    gex: F64
    pcr_oi: float
    atm_iv: float
    max_pain: float
    gamma_flip: float

    @property
    def ts_us(self) -> int:
        return ts_micros(self.ts)

    @property
    def key(self) -> str:
        """The state key: ``UNDERLYING|YYYY-MM-DD``."""
        return chain_key(self.underlying, self.expiry)

    @classmethod
    def from_enriched(cls, rec: Mapping[str, Any]) -> ChainObservation:
        """From a decoded ``optionchain_enriched`` record."""
        snap = rec["snapshot"]
        f = np.float64

        def both(name: str, src: str = "snap", dtype: str = "<f8") -> F64:
            if src == "snap":
                a, b = snap["ce"][name], snap["pe"][name]
            else:
                a, b = rec["ce_analytics"][name], rec["pe_analytics"][name]
            return np.stack([vector(a, dtype), vector(b, dtype)]).astype(f)

        present = np.stack([vector(snap["ce"]["present"], "|b1"), vector(snap["pe"]["present"], "|b1")]).astype(bool)

        def opt(x: Any) -> float:
            return math.nan if x is None else float(x)

        return cls(
            underlying=str(snap["underlying"]), expiry=snap["expiry"], ts=snap["exchange_ts"],
            spot=float(snap["spot"]), lot_size=int(snap["lot_size"]), oi_unit=str(snap["oi_unit"]),
            strikes=vector(snap["strikes"], "<f8").astype(f), present=present,
            oi=np.where(present, both("oi", dtype="<i8"), np.nan),
            volume=np.where(present, both("volume", dtype="<i8"), np.nan),
            price=np.where(present, both("last_price"), np.nan), iv=np.where(present, both("iv", "an"), np.nan),
            gex=np.where(present, both("gex", "an"), np.nan), pcr_oi=opt(rec.get("pcr_oi")),
            atm_iv=opt(rec.get("atm_iv")), max_pain=opt(rec.get("max_pain")), gamma_flip=opt(rec.get("gamma_flip")),
        )


def vector(value: Any, dtype: str) -> NDArray[Any]:
    """A per-strike vector of a decoded record: packed bytes (``hft.ndarray``, little-endian
    ``dtype``) or a plain sequence."""
    if isinstance(value, bytes | bytearray | memoryview):
        return np.frombuffer(value, dtype=np.dtype(dtype))
    return np.asarray(value, dtype=np.dtype(dtype))


def chain_key(underlying: str, expiry: date) -> str:
    return f"{underlying}|{expiry.isoformat()}"


@dataclass(frozen=True, slots=True)
class ChainState:
    underlying: str
    expiry: date
    session: date
    last_ts_us: int  # exchange time of the last applied snapshot (the idempotency guard)
    applied: int  # snapshots applied this session
    cum: CumOIState
    velocity: VelocityState
    levels: LevelsState
    patterns: PatternState


@dataclass(frozen=True, slots=True)
class OIAnalytics:
    """Cumulative OI and velocities of one snapshot (the ``analytics.oi`` record)."""

    underlying: str
    expiry: date
    ts_us: int
    session: date
    spot: float
    lot_size: int
    oi_unit: str
    cum: CumOI
    velocity: tuple[WindowVelocity, ...]


@dataclass(frozen=True, slots=True)
class LevelsAnalytics:
    underlying: str
    expiry: date
    ts_us: int
    session: date
    spot: float
    strike_step: float
    output: LevelsOutput


@dataclass(frozen=True, slots=True)
class Emits:
    oi: OIAnalytics
    levels: LevelsAnalytics
    events: tuple[PatternEvent, ...]


def update(state: ChainState | None, obs: ChainObservation,
           config: StateConfig = DEFAULT_CONFIG) -> tuple[ChainState | None, Emits | None]:
    """Apply one snapshot.  Replays and duplicates (``ts <= last_ts``) return ``(state, None)``
    with the identical state object."""
    t = obs.ts_us
    if state is not None:
        if (state.underlying, state.expiry) != (obs.underlying, obs.expiry):
            raise ValueError(f"state of {state.underlying} {state.expiry} given a snapshot of "
                             f"{obs.underlying} {obs.expiry}")
        if t <= state.last_ts_us:
            return state, None
    session = session_date(obs.ts)
    same_session = state is not None and state.session == session
    prev = state if same_session else None

    cum_state, cum = update_cumulative_oi(
        prev.cum if prev else None,
        OIInput(t, obs.strikes, obs.present, obs.oi, obs.price, obs.volume),
    )
    vel_state, velocity = update_velocity(
        prev.velocity if prev else None,
        VelocityInput(t, obs.strikes, cum.oi, cum.price, obs.atm_iv),
        config.velocity,
    )
    by_window = {v.window_s: v for v in velocity}
    positioning = by_window[min(config.velocity.windows_s)].reference
    lev_state, lev_out = update_levels(
        prev.levels if prev else None,
        LevelsInput(t, obs.spot, obs.strikes, obs.present, obs.oi, obs.gex, obs.max_pain, obs.gamma_flip,
                    ref_oi=positioning.oi if positioning is not None else cum.oi_open),
        config.levels,
    )
    pcfg = config.patterns
    pat_state, events = update_patterns(
        prev.patterns if prev else None,
        PatternInput(
            ts_us=t, underlying=obs.underlying, expiry=obs.expiry, spot=obs.spot, strikes=obs.strikes,
            present=obs.present, oi=cum.oi, price=cum.price, volume=np.where(obs.present, obs.volume, np.nan),
            prev_oi=cum.prev_oi, prev_volume=cum.prev_volume, lot_size=obs.lot_size, oi_unit=obs.oi_unit,
            pcr_oi=obs.pcr_oi, gamma_flip=obs.gamma_flip, regime_ref=by_window[pcfg.regime_window_s].reference,
            iv_change=by_window[pcfg.iv_window_s].atm_iv_change, shifts=lev_out.shifts,
        ),
        pcfg,
    )
    new_state = ChainState(
        underlying=obs.underlying, expiry=obs.expiry, session=session, last_ts_us=t,
        applied=(prev.applied + 1) if prev else 1, cum=cum_state, velocity=vel_state, levels=lev_state,
        patterns=pat_state,
    )
    emits = Emits(
        oi=OIAnalytics(obs.underlying, obs.expiry, t, session, obs.spot, obs.lot_size, obs.oi_unit, cum, velocity),
        levels=LevelsAnalytics(obs.underlying, obs.expiry, t, session, obs.spot, strike_step(obs.strikes), lev_out),
        events=events,
    )
    return new_state, emits
