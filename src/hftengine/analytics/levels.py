"""Support/resistance from OI concentration, GEX walls, max pain, and their confirmed shifts.

Raw levels of one snapshot (spot ``S``; arrays over strikes ``K``):

- ``support``: the strike ``K <= S·(1 + band)`` with the largest put OI;
- ``resistance``: the strike ``K >= S·(1 - band)`` with the largest call OI;
- ``call_wall``: the strike ``K >= S·(1 - band)`` with the largest call GEX;
- ``put_wall``: the strike ``K <= S·(1 + band)`` with the largest |put GEX|;
- ``max_pain``: the chain's max-pain strike (from the enrich step);
- ``gamma_flip``: the spot level where the re-priced GEX profile crosses zero (from the enrich
  step; reported as is, never confirmed).

``band`` (0.2 %) keeps a strike that spot is sitting on eligible on both sides, so spot
ticking around a big strike does not flip the levels; a level is *crossed* (no longer valid)
once spot is beyond it by more than the band.  Ties go to the lower strike.  ``value`` is the
level's metric (OI in the chain's unit, or GEX in rupees per 1 % move);
``strength = 1 - runner_up / value`` over the same side of spot (0: a tie with the runner-up,
1: no competitor).

Confirmation (hysteresis): the tracked level moves to a new raw level only when that raw level
has been the same strike for ``confirm_snapshots`` consecutive snapshots **and** either its
metric beats the tracked level's current metric by ``margin`` (relative) or the tracked level
is no longer valid (on the wrong side of spot, or its strike left the chain).  Each move is a
:class:`LevelShift`; the first snapshot of a session sets the levels without a shift.

Why a level moved (``reason``): ``crossed`` when the old level is no longer valid; otherwise
the comparison is repeated with the OI at the start of the positioning window (``ref_oi``;
GEX rescaled by ``OI_ref / OI``, i.e. today's gamma): only if the *old* level led by the margin
with that OI has positioning changed, ``overtaken``; otherwise the new level's lead comes from
spot moving (eligibility or gamma), ``spot``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from hftengine.analytics.cumoi import F64

LevelType = Literal["support", "resistance", "call_wall", "put_wall", "max_pain", "gamma_flip"]
TRACKED: tuple[LevelType, ...] = ("support", "resistance", "call_wall", "put_wall", "max_pain")
SOURCES: dict[LevelType, str] = {
    "support": "oi", "resistance": "oi", "call_wall": "gex", "put_wall": "gex", "max_pain": "oi",
    "gamma_flip": "gex",
}


@dataclass(frozen=True, slots=True)
class LevelsConfig:
    confirm_snapshots: int = 3
    margin: float = 0.02
    band: float = 0.002


@dataclass(frozen=True, slots=True)
class LevelsInput:
    ts_us: int
    spot: float
    strikes: F64
    present: np.ndarray  # (2, n) bool
    oi: F64  # (2, n)
    gex: F64  # (2, n) signed per conventions
    max_pain: float  # NaN if none
    gamma_flip: float  # NaN if none
    ref_oi: F64 | None = None  # (2, n) OI at the start of the positioning window (None: use ``oi``)


@dataclass(frozen=True, slots=True)
class TrackedLevel:
    price: float
    since_ts_us: int
    previous: float  # the level before the latest shift (NaN: none this session)
    candidate: float  # raw level waiting for confirmation (NaN: none)
    candidate_count: int


@dataclass(frozen=True, slots=True)
class LevelsState:
    levels: tuple[tuple[LevelType, TrackedLevel], ...]

    def get(self, kind: LevelType) -> TrackedLevel | None:
        for k, level in self.levels:
            if k == kind:
                return level
        return None


@dataclass(frozen=True, slots=True)
class Level:
    level_type: LevelType
    price: float
    strength: float  # NaN where not defined (max pain, gamma flip)
    value: float  # OI or GEX at the level (NaN for max pain, gamma flip)
    source: str
    previous: float
    since_ts_us: int
    candidate: float
    candidate_count: int


@dataclass(frozen=True, slots=True)
class LevelShift:
    level_type: LevelType
    from_price: float
    to_price: float
    steps: float  # (to - from) / strike step
    value: float  # metric at the new level
    strength: float
    reason: Literal["overtaken", "spot", "crossed"]


@dataclass(frozen=True, slots=True)
class LevelsOutput:
    levels: tuple[Level, ...]
    shifts: tuple[LevelShift, ...]


def _below(kind: LevelType) -> bool:
    return kind in ("support", "put_wall")


def _metric(kind: LevelType, inp: LevelsInput, band: float) -> tuple[F64, np.ndarray]:
    """The metric per strike and the side-of-spot mask for an OI/GEX level."""
    k = inp.strikes
    side = k <= inp.spot * (1.0 + band) if _below(kind) else k >= inp.spot * (1.0 - band)
    if kind == "support":
        return np.where(inp.present[1], inp.oi[1], np.nan), side
    if kind == "resistance":
        return np.where(inp.present[0], inp.oi[0], np.nan), side
    if kind == "call_wall":
        return np.where(inp.present[0], inp.gex[0], np.nan), side
    return np.where(inp.present[1], np.abs(inp.gex[1]), np.nan), side


def _raw(kind: LevelType, inp: LevelsInput, band: float) -> tuple[float, float, F64, np.ndarray]:
    """(raw level, its metric, metric array, side mask); level NaN when nothing qualifies."""
    if kind == "max_pain":
        return inp.max_pain, math.nan, np.empty(0), np.empty(0, dtype=bool)
    metric, side = _metric(kind, inp, band)
    usable = side & np.isfinite(metric) & (metric > 0.0)
    if not usable.any():
        return math.nan, math.nan, metric, side
    masked = np.where(usable, metric, -np.inf)
    i = int(np.argmax(masked))
    return float(inp.strikes[i]), float(metric[i]), metric, side


def _at(strikes: F64, values: F64, price: float) -> float:
    if values.shape[0] == 0 or not math.isfinite(price):
        return math.nan
    i = int(np.searchsorted(strikes, price))
    if i < strikes.shape[0] and strikes[i] == price:
        v = float(values[i])
        return v if math.isfinite(v) else 0.0
    return math.nan


def _strength(strikes: F64, metric: F64, side: np.ndarray, price: float) -> float:
    value = _at(strikes, metric, price)
    if not math.isfinite(value) or value <= 0.0:
        return 0.0 if math.isfinite(value) else math.nan
    others = side & np.isfinite(metric) & (strikes != price)
    runner = float(np.max(metric[others])) if others.any() else 0.0
    return float(min(1.0, max(0.0, 1.0 - runner / value)))


def _metric_at_ref(kind: LevelType, inp: LevelsInput, metric: F64) -> F64:
    """The metric with the OI of the positioning window's start (GEX rescaled by OI_ref / OI)."""
    if inp.ref_oi is None:
        return metric
    row = 1 if _below(kind) else 0
    ref = np.where(np.isfinite(inp.ref_oi[row]), inp.ref_oi[row], 0.0)
    if kind in ("support", "resistance"):
        return np.where(np.isfinite(metric), ref, np.nan)
    oi = inp.oi[row]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(oi > 0.0, metric * ref / oi, np.where(np.isfinite(metric), 0.0, np.nan))


def _valid(kind: LevelType, price: float, inp: LevelsInput, band: float) -> bool:
    if not math.isfinite(price):
        return False
    if kind == "max_pain":
        return True
    listed = bool(np.any(inp.strikes == price))
    if _below(kind):
        return listed and price <= inp.spot * (1.0 + band)
    return listed and price >= inp.spot * (1.0 - band)


def update_levels(state: LevelsState | None, inp: LevelsInput,
                  cfg: LevelsConfig) -> tuple[LevelsState, LevelsOutput]:
    """Raw levels of this snapshot, the confirmed levels after hysteresis, and their shifts."""
    tracked: list[tuple[LevelType, TrackedLevel]] = []
    levels: list[Level] = []
    shifts: list[LevelShift] = []
    steps_of = np.median(np.diff(inp.strikes)) if inp.strikes.shape[0] >= 2 else math.nan
    for kind in TRACKED:
        raw, raw_value, metric, side = _raw(kind, inp, cfg.band)
        cur = state.get(kind) if state is not None else None
        if cur is None or not math.isfinite(cur.price):
            new = TrackedLevel(raw, inp.ts_us, math.nan, math.nan, 0) if math.isfinite(raw) else None
        elif not math.isfinite(raw) or raw == cur.price:
            new = replace(cur, candidate=math.nan, candidate_count=0)
        else:
            count = cur.candidate_count + 1 if raw == cur.candidate else 1
            valid = _valid(kind, cur.price, inp, cfg.band)
            if kind == "max_pain":
                beats = True
            else:
                current_value = _at(inp.strikes, metric, cur.price) if valid else math.nan
                beats = (not valid or not math.isfinite(current_value)
                         or raw_value >= current_value * (1.0 + cfg.margin))
            if count >= cfg.confirm_snapshots and beats:
                new = TrackedLevel(raw, inp.ts_us, cur.price, math.nan, 0)
                strength = math.nan if kind == "max_pain" else _strength(inp.strikes, metric, side, raw)
                reason: Literal["overtaken", "spot", "crossed"] = "overtaken"
                if not valid:
                    reason = "crossed"
                elif kind != "max_pain":
                    ref = _metric_at_ref(kind, inp, metric)
                    old_ref, new_ref = _at(inp.strikes, ref, cur.price), _at(inp.strikes, ref, raw)
                    if not old_ref >= new_ref * (1.0 + cfg.margin):
                        reason = "spot"  # no clear lead for the old level with the earlier OI: not positioning
                shifts.append(LevelShift(kind, cur.price, raw, float((raw - cur.price) / steps_of),
                                         raw_value, strength, reason))
            else:
                new = replace(cur, candidate=raw, candidate_count=count)
        if new is None:
            continue
        tracked.append((kind, new))
        if kind == "max_pain":
            strength = value = math.nan
        else:
            strength = _strength(inp.strikes, metric, side, new.price)
            value = _at(inp.strikes, metric, new.price)
        levels.append(Level(kind, new.price, strength, value, SOURCES[kind], new.previous, new.since_ts_us,
                            new.candidate, new.candidate_count))
    if math.isfinite(inp.gamma_flip):
        levels.append(Level("gamma_flip", float(inp.gamma_flip), math.nan, math.nan, "gex", math.nan, inp.ts_us,
                            math.nan, 0))
    return LevelsState(tuple(tracked)), LevelsOutput(tuple(levels), tuple(shifts))
