"""Pattern detector: typed, graded events from one chain's stream of snapshots.

Every event has the snapshot's exchange time, the underlying and expiry, the strike (and leg)
where it applies, and a severity 0-3 (0 info, 1 low, 2 medium, 3 high).  Detectors and their
thresholds (defaults of :class:`PatternConfig`; every one is explained in ``docs/analytics.md``):

``long_buildup`` / ``short_buildup`` / ``short_covering`` / ``long_unwinding``
    Per strike cluster (``cluster_strikes`` adjacent strike steps, aligned to multiples of the
    cluster width) and leg, over the regime window (``regime_window_s``, one of the velocity
    windows): ``r_oi = ΣOI_t / ΣOI_ref - 1`` and the OI-weighted premium change
    ``r_p = Σ OI_ref·p_t / Σ OI_ref·p_ref - 1``.  OI direction counts when
    ``|r_oi| >= regime_oi_band`` and ``|ΔOI| >= regime_min_total_share`` of the leg's total
    OI; price direction when ``|r_p| >= regime_price_band`` (inside the price band the
    regime keeps its previous classification if the OI direction agrees, else it is neutral).
    Quadrants: price up/OI up long build-up, price down/OI up short build-up, price up/OI down
    short covering, price down/OI down long unwinding.  A new regime takes effect after
    ``regime_confirm`` consecutive snapshots; entering a non-neutral regime is an event, and so
    is a later rise of its severity.  Severity: ``|r_oi|`` against ``buildup_severity``.
``support_shift`` / ``resistance_shift`` / ``call_wall_shift`` / ``put_wall_shift`` / ``max_pain_migration``
    A confirmed level move (:mod:`~hftengine.analytics.levels`); severity from the distance in
    strike steps against ``shift_severity_steps`` when positioning moved (the new level overtook
    the old one, reason ``overtaken``); 0 when spot crossed the old level or the new level's lead
    comes from spot moving (reasons ``crossed``, ``spot``: price action, not a change of
    positioning).
``pcr_regime_change``
    PCR (OI) regimes low ``< pcr_low``, neutral, high ``> pcr_high``; leaving the current regime
    needs the boundary crossed by ``pcr_hysteresis``.  Severity 1 (2 for low <-> high).
``iv_spike`` / ``iv_crush``
    ATM IV change over ``iv_window_s`` of at least ``iv_threshold`` (decimal vol) up or down;
    severity against ``iv_severity``.  Re-armed when the change falls back under half the
    threshold; a higher severity within one episode is reported again.
``gamma_flip_cross``
    Spot crosses the gamma-flip level by more than ``flip_band`` (relative): severity 2 when spot
    falls below the flip (dealers short gamma), 1 when it rises above.
``unusual_flow``
    A block print: volume traded at one leg between consecutive snapshots with premium
    ``>= flow_min_premium`` rupees, size ``>= flow_min_fraction`` of the leg's OI before it
    and ``>= flow_min_chain_share`` of the chain's total OI (calls and puts).  Severity: the
    fraction of the leg's OI against ``flow_severity``.  Within ``flow_cooldown_s`` of an
    event on the same leg only a higher severity is reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date

import numpy as np
from numpy.typing import NDArray

from hftengine.analytics.buildup import BuildUp
from hftengine.analytics.cumoi import F64, LEGS, align
from hftengine.analytics.levels import LevelShift
from hftengine.analytics.velocity import Sample

SEVERITY_LABELS = ("info", "low", "medium", "high")
REGIME_NAMES = {
    int(BuildUp.LONG_BUILDUP): "long_buildup",
    int(BuildUp.SHORT_BUILDUP): "short_buildup",
    int(BuildUp.SHORT_COVERING): "short_covering",
    int(BuildUp.LONG_UNWINDING): "long_unwinding",
}
PCR_REGIMES = ("low", "neutral", "high")
SHIFT_EVENTS = {
    "support": "support_shift", "resistance": "resistance_shift", "call_wall": "call_wall_shift",
    "put_wall": "put_wall_shift", "max_pain": "max_pain_migration",
}
EVENT_TYPES = (*REGIME_NAMES.values(), *SHIFT_EVENTS.values(), "pcr_regime_change", "iv_spike", "iv_crush",
               "gamma_flip_cross", "unusual_flow")
_NEUTRAL = int(BuildUp.NEUTRAL)
_US_PER_S = 1_000_000


@dataclass(frozen=True, slots=True)
class PatternConfig:
    regime_window_s: int = 300
    cluster_strikes: int = 5
    regime_oi_band: float = 0.02
    regime_min_total_share: float = 0.005
    regime_price_band: float = 0.01
    regime_confirm: int = 3
    buildup_severity: tuple[float, float, float] = (0.05, 0.15, 0.40)
    shift_severity_steps: tuple[float, float, float] = (2.0, 4.0, 8.0)
    pcr_low: float = 0.8
    pcr_high: float = 1.2
    pcr_hysteresis: float = 0.03
    iv_window_s: int = 60
    iv_threshold: float = 0.01
    iv_severity: tuple[float, float, float] = (0.02, 0.04, 0.08)
    flip_band: float = 0.002
    flow_min_premium: float = 5.0e4
    flow_min_fraction: float = 0.01
    flow_min_chain_share: float = 5.0e-4
    flow_severity: tuple[float, float, float] = (0.05, 0.15, 0.40)
    flow_cooldown_s: int = 60


@dataclass(frozen=True, slots=True)
class PatternInput:
    ts_us: int
    underlying: str
    expiry: date
    spot: float
    strikes: F64
    present: NDArray[np.bool_]
    oi: F64
    price: F64
    volume: F64
    prev_oi: F64  # previous snapshot of the session, aligned (NaN: none)
    prev_volume: F64
    lot_size: int
    oi_unit: str
    pcr_oi: float
    gamma_flip: float
    regime_ref: Sample | None  # start of the regime window (aligned to strikes), None while not full
    iv_change: float  # ATM IV change over the IV window (NaN while not full)
    shifts: tuple[LevelShift, ...] = ()


@dataclass(frozen=True, slots=True)
class PatternEvent:
    ts_us: int
    underlying: str
    expiry: date | None
    event_type: str
    event_key: str
    severity: int
    value: float
    previous: float
    threshold: float
    window_s: int  # 0: not a windowed detector
    strike: float  # NaN: chain-level event
    strike_high: float  # upper strike of a cluster (NaN otherwise)
    option_type: str  # "CE", "PE" or "" (both / chain-level)
    spot: float
    description: str
    details: tuple[tuple[str, float], ...] = ()

    @property
    def severity_label(self) -> str:
        return SEVERITY_LABELS[self.severity]


@dataclass(frozen=True, slots=True)
class PatternState:
    clusters: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    regime: NDArray[np.int8] = field(default_factory=lambda: np.zeros((2, 0), dtype=np.int8))
    pending: NDArray[np.int8] = field(default_factory=lambda: np.zeros((2, 0), dtype=np.int8))
    pending_count: NDArray[np.int16] = field(default_factory=lambda: np.zeros((2, 0), dtype=np.int16))
    reported: NDArray[np.int8] = field(default_factory=lambda: np.zeros((2, 0), dtype=np.int8))
    pcr_regime: int = -1
    iv_up_armed: bool = True
    iv_up_reported: int = -1
    iv_down_armed: bool = True
    iv_down_reported: int = -1
    flip_side: int = 0
    flow_strikes: F64 = field(default_factory=lambda: np.zeros(0))
    flow_last_ts: NDArray[np.int64] = field(default_factory=lambda: np.zeros((2, 0), dtype=np.int64))
    flow_last_severity: NDArray[np.int8] = field(default_factory=lambda: np.zeros((2, 0), dtype=np.int8))


def grade(x: float, thresholds: tuple[float, float, float]) -> int:
    """Severity 0-3: the number of ``thresholds`` that ``x`` reaches."""
    return int(sum(1 for t in thresholds if x >= t))


def _pct(x: float) -> str:
    return f"{x * 100:+.1f} %"


def _fmt(x: float) -> str:
    return f"{x:g}"


def _rupees(x: float) -> str:
    """Indian notation: crore (1e7) from one crore, else lakh (1e5)."""
    return f"₹{x / 1e7:,.2f} cr" if abs(x) >= 1e7 else f"₹{x / 1e5:,.2f} lakh"


# ------------------------------------------------------------------------------ regimes
def _realign_clusters(state: PatternState, ids: NDArray[np.int64]) -> tuple[NDArray[np.int8], ...]:
    if np.array_equal(state.clusters, ids):
        return state.regime, state.pending, state.pending_count.astype(np.int8), state.reported
    out = []
    for arr, fill in ((state.regime, _NEUTRAL), (state.pending, _NEUTRAL), (state.pending_count, 0),
                      (state.reported, -1)):
        out.append(align(state.clusters.astype(np.float64), ids.astype(np.float64),
                         arr.astype(np.float64), fill=fill).astype(np.int8))
    return tuple(out)


def _regimes(state: PatternState, inp: PatternInput, cfg: PatternConfig, step: float,
             events: list[PatternEvent]) -> dict[str, object]:
    width = cfg.cluster_strikes * step
    strikes = inp.strikes
    cid = np.floor(strikes / width + 1e-9).astype(np.int64) if math.isfinite(width) and width > 0 else \
        np.zeros(strikes.shape, dtype=np.int64)
    ids = np.unique(cid)
    regime, pending, count, reported = (a.copy() for a in _realign_clusters(state, ids))
    count16 = count.astype(np.int16)
    ref = inp.regime_ref
    if ref is not None and ids.shape[0] > 0:
        col = np.searchsorted(ids, cid)
        m = ids.shape[0]
        for row in (0, 1):
            ok = inp.present[row] & np.isfinite(inp.oi[row]) & np.isfinite(ref.oi[row])
            oi_now = np.bincount(col[ok], inp.oi[row][ok], m)
            oi_ref = np.bincount(col[ok], ref.oi[row][ok], m)
            pok = ok & (inp.price[row] > 0.0) & (ref.price[row] > 0.0) & (ref.oi[row] > 0.0)
            w_now = np.bincount(col[pok], ref.oi[row][pok] * inp.price[row][pok], m)
            w_ref = np.bincount(col[pok], ref.oi[row][pok] * ref.price[row][pok], m)
            total_ref = float(oi_ref.sum())
            with np.errstate(invalid="ignore", divide="ignore"):
                d_oi = oi_now - oi_ref
                r_oi = np.where(oi_ref > 0.0, d_oi / oi_ref, np.nan)
                r_p = np.where(w_ref > 0.0, w_now / w_ref - 1.0, np.nan)
            big = np.abs(d_oi) >= cfg.regime_min_total_share * total_ref
            oi_dir = np.where(big & (r_oi >= cfg.regime_oi_band), 1, np.where(big & (r_oi <= -cfg.regime_oi_band),
                                                                               -1, 0))
            p_dir = np.where(r_p >= cfg.regime_price_band, 1, np.where(r_p <= -cfg.regime_price_band, -1, 0))
            quadrant = np.where(oi_dir > 0, np.where(p_dir > 0, 1, 2), np.where(p_dir > 0, 3, 4))
            prev_oi_dir = np.where(np.isin(regime[row], (1, 2)), 1, np.where(np.isin(regime[row], (3, 4)), -1, 0))
            keep = (p_dir == 0) & (prev_oi_dir == oi_dir)
            cls = np.where(oi_dir == 0, _NEUTRAL, np.where(p_dir != 0, quadrant,
                                                           np.where(keep, regime[row], _NEUTRAL)))
            for j in range(m):
                c = int(cls[j])
                if c == int(regime[row, j]):
                    pending[row, j], count16[row, j] = c, 0
                    sev = grade(abs(float(r_oi[j])), cfg.buildup_severity)
                    if c != _NEUTRAL and sev > int(reported[row, j]):
                        reported[row, j] = sev
                        events.append(_regime_event(inp, cfg, row, ids[j], width, c, sev, float(r_oi[j]),
                                                    float(r_p[j]), float(d_oi[j]), escalation=True))
                    continue
                count16[row, j] = count16[row, j] + 1 if c == int(pending[row, j]) else 1
                pending[row, j] = c
                if count16[row, j] >= cfg.regime_confirm:
                    regime[row, j], count16[row, j] = c, 0
                    reported[row, j] = -1
                    if c != _NEUTRAL:
                        sev = grade(abs(float(r_oi[j])), cfg.buildup_severity)
                        reported[row, j] = sev
                        events.append(_regime_event(inp, cfg, row, ids[j], width, c, sev, float(r_oi[j]),
                                                    float(r_p[j]), float(d_oi[j]), escalation=False))
    return {"clusters": ids, "regime": regime, "pending": pending, "pending_count": count16, "reported": reported}


def _regime_event(inp: PatternInput, cfg: PatternConfig, row: int, cluster: np.int64, width: float, code: int,
                  sev: int, r_oi: float, r_p: float, d_oi: float, *, escalation: bool) -> PatternEvent:
    lo = float(cluster) * width
    in_cluster = inp.strikes[(inp.strikes >= lo - 1e-9) & (inp.strikes < lo + width - 1e-9)]
    k_lo = float(in_cluster[0]) if in_cluster.shape[0] else lo
    k_hi = float(in_cluster[-1]) if in_cluster.shape[0] else lo + width
    name = REGIME_NAMES[code]
    leg = LEGS[row]
    text = (f"{name.replace('_', ' ')} in {inp.underlying} {inp.expiry} {leg} {_fmt(k_lo)}-{_fmt(k_hi)}: "
            f"OI {_pct(r_oi)}, premium {_pct(r_p)} over {cfg.regime_window_s // 60} min"
            + (" (intensifying)" if escalation else ""))
    return PatternEvent(
        inp.ts_us, inp.underlying, inp.expiry, name, f"{inp.expiry}|{leg}|{_fmt(k_lo)}-{_fmt(k_hi)}", sev,
        r_oi, math.nan, cfg.regime_oi_band, cfg.regime_window_s, k_lo, k_hi, leg, inp.spot, text,
        (("oi_change", d_oi), ("oi_change_pct", r_oi), ("premium_change_pct", r_p)),
    )


# ------------------------------------------------------------------------------ chain-level
def _pcr_regime(pcr: float, current: int, cfg: PatternConfig) -> int:
    low, high, h = cfg.pcr_low, cfg.pcr_high, cfg.pcr_hysteresis
    if current == 0:
        low += h
    elif current == 2:
        high -= h
    elif current == 1:
        low, high = low - h, high + h
    return 0 if pcr < low else 2 if pcr > high else 1


def _flow(state: PatternState, inp: PatternInput, cfg: PatternConfig,
          events: list[PatternEvent]) -> tuple[NDArray[np.int64], NDArray[np.int8]]:
    strikes = inp.strikes
    last_ts = align(state.flow_strikes, strikes, state.flow_last_ts.astype(np.float64), fill=0.0).astype(np.int64)
    last_sev = align(state.flow_strikes, strikes, state.flow_last_severity.astype(np.float64),
                     fill=-1.0).astype(np.int8)
    unit = float(inp.lot_size) if inp.oi_unit == "contracts" else 1.0
    lot_units = 1.0 if inp.oi_unit == "contracts" else float(inp.lot_size)
    with np.errstate(invalid="ignore"):
        d_vol = np.where(inp.present, inp.volume - inp.prev_volume, np.nan)
        premium = d_vol * unit * inp.price
        before = np.maximum(inp.prev_oi, lot_units)
        fraction = d_vol / before
        chain_oi = float(np.sum(inp.oi[np.isfinite(inp.oi)]))
        hit = (np.isfinite(d_vol) & np.isfinite(fraction) & (d_vol > 0.0) & (premium >= cfg.flow_min_premium)
               & (fraction >= cfg.flow_min_fraction) & (d_vol >= cfg.flow_min_chain_share * chain_oi))
    cooldown = cfg.flow_cooldown_s * _US_PER_S
    for row, j in zip(*np.nonzero(hit), strict=True):
        sev = grade(float(fraction[row, j]), cfg.flow_severity)
        recent = last_ts[row, j] > 0 and inp.ts_us - int(last_ts[row, j]) < cooldown
        if recent and sev <= int(last_sev[row, j]):
            continue
        last_ts[row, j], last_sev[row, j] = inp.ts_us, sev
        k = float(strikes[j])
        leg = LEGS[row]
        lots = float(d_vol[row, j]) * unit / float(inp.lot_size)
        events.append(PatternEvent(
            inp.ts_us, inp.underlying, inp.expiry, "unusual_flow", f"{inp.expiry}|{leg}|{_fmt(k)}", sev,
            float(fraction[row, j]), math.nan, cfg.flow_min_fraction, 0, k, math.nan, leg, inp.spot,
            f"block print in {inp.underlying} {inp.expiry} {_fmt(k)} {leg}: {lots:,.0f} lots, "
            f"premium {_rupees(float(premium[row, j]))}, {fraction[row, j] * 100:.1f} % of the OI before it",
            (("volume", float(d_vol[row, j])), ("lots", lots), ("premium", float(premium[row, j])),
             ("price", float(inp.price[row, j])), ("oi_before", float(inp.prev_oi[row, j])),
             ("fraction_of_oi", float(fraction[row, j]))),
        ))
    return last_ts, last_sev


def update_patterns(state: PatternState | None, inp: PatternInput,
                    cfg: PatternConfig) -> tuple[PatternState, tuple[PatternEvent, ...]]:
    """Advance every detector by one snapshot; returns the new state and the events it raised."""
    st = state if state is not None else PatternState()
    events: list[PatternEvent] = []
    step = float(np.median(np.diff(inp.strikes))) if inp.strikes.shape[0] >= 2 else math.nan
    exp = inp.expiry
    ts, und, spot = inp.ts_us, inp.underlying, inp.spot

    regimes = _regimes(st, inp, cfg, step, events)

    for shift in inp.shifts:
        name = SHIFT_EVENTS[shift.level_type]
        sev = grade(abs(shift.steps), cfg.shift_severity_steps) if math.isfinite(shift.steps) else 0
        if shift.reason != "overtaken":
            sev = 0
        label = shift.level_type.replace("_", " ")
        events.append(PatternEvent(
            ts, und, exp, name, f"{exp}", sev, shift.to_price, shift.from_price, cfg.shift_severity_steps[0], 0,
            shift.to_price, math.nan, "", spot,
            f"{label} of {und} {exp} moved {_fmt(shift.from_price)} → {_fmt(shift.to_price)} "
            f"({shift.steps:+.0f} strikes, {shift.reason})",
            (("steps", shift.steps), ("value", shift.value), ("strength", shift.strength)),
        ))

    pcr_regime = st.pcr_regime
    if math.isfinite(inp.pcr_oi):
        new = _pcr_regime(inp.pcr_oi, pcr_regime, cfg)
        if pcr_regime >= 0 and new != pcr_regime:
            sev = 2 if abs(new - pcr_regime) == 2 else 1
            events.append(PatternEvent(
                ts, und, exp, "pcr_regime_change", f"{exp}", sev, inp.pcr_oi, float(pcr_regime),
                cfg.pcr_high if new == 2 or pcr_regime == 2 else cfg.pcr_low, 0, math.nan, math.nan, "", spot,
                f"PCR of {und} {exp} {PCR_REGIMES[pcr_regime]} → {PCR_REGIMES[new]} at {inp.pcr_oi:.3f}",
                (("pcr_oi", inp.pcr_oi), ("from_regime", float(pcr_regime)), ("to_regime", float(new))),
            ))
        pcr_regime = new

    up_armed, up_rep, down_armed, down_rep = st.iv_up_armed, st.iv_up_reported, st.iv_down_armed, st.iv_down_reported
    d = inp.iv_change
    if math.isfinite(d):
        for sign, name in ((1.0, "iv_spike"), (-1.0, "iv_crush")):
            x = sign * d
            armed, rep = (up_armed, up_rep) if sign > 0 else (down_armed, down_rep)
            if x >= cfg.iv_threshold:
                sev = grade(x, cfg.iv_severity)
                if armed or sev > rep:
                    events.append(PatternEvent(
                        ts, und, exp, name, f"{exp}", sev, d, math.nan, cfg.iv_threshold * sign, cfg.iv_window_s,
                        math.nan, math.nan, "", spot,
                        f"ATM IV of {und} {exp} {'up' if sign > 0 else 'down'} {abs(d) * 100:.2f} vol points "
                        f"in {cfg.iv_window_s} s", (("atm_iv_change", d),),
                    ))
                    rep = max(rep, sev)
                armed = False
            elif x < cfg.iv_threshold / 2:
                armed, rep = True, -1
            if sign > 0:
                up_armed, up_rep = armed, rep
            else:
                down_armed, down_rep = armed, rep

    side = st.flip_side
    flip = inp.gamma_flip
    if math.isfinite(flip) and flip > 0:
        new_side = 1 if spot > flip * (1 + cfg.flip_band) else -1 if spot < flip * (1 - cfg.flip_band) else side
        if side != 0 and new_side != side:
            events.append(PatternEvent(
                ts, und, exp, "gamma_flip_cross", f"{exp}", 2 if new_side < 0 else 1, spot, flip, flip, 0,
                math.nan, math.nan, "", spot,
                f"{und} spot {spot:g} crossed {'below' if new_side < 0 else 'above'} the gamma flip {flip:.1f} "
                f"({exp})", (("gamma_flip", flip), ("direction", float(new_side))),
            ))
        side = new_side

    flow_ts, flow_sev = _flow(st, inp, cfg, events)
    new_state = PatternState(
        clusters=regimes["clusters"], regime=regimes["regime"], pending=regimes["pending"],  # type: ignore[arg-type]
        pending_count=regimes["pending_count"], reported=regimes["reported"],  # type: ignore[arg-type]
        pcr_regime=pcr_regime, iv_up_armed=up_armed, iv_up_reported=up_rep, iv_down_armed=down_armed,
        iv_down_reported=down_rep, flip_side=side, flow_strikes=inp.strikes, flow_last_ts=flow_ts,
        flow_last_severity=flow_sev,
    )
    return new_state, tuple(events)
