"""Pattern detectors on hand-built inputs: regimes, PCR, IV, gamma flip, flow, level shifts."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import date

import numpy as np
import pytest

from hftengine.analytics.levels import LevelShift
from hftengine.analytics.patterns import (
    PatternConfig,
    PatternEvent,
    PatternInput,
    PatternState,
    grade,
    update_patterns,
)
from hftengine.analytics.velocity import Sample

K = np.array([100.0, 110.0, 120.0, 130.0, 140.0])  # one cluster of 5 strikes (width 50: 100-149)
EXP = date(2026, 11, 24)
CFG = PatternConfig()
NAN2 = np.full((2, 5), np.nan)


def inp(t: int = 1, **kw: object) -> PatternInput:
    base = PatternInput(
        ts_us=t, underlying="NIFTY", expiry=EXP, spot=120.0, strikes=K, present=np.ones((2, 5), dtype=bool),
        oi=np.full((2, 5), 1000.0), price=np.full((2, 5), 10.0), volume=np.zeros((2, 5)), prev_oi=NAN2,
        prev_volume=NAN2, lot_size=50, oi_unit="shares", pcr_oi=1.0, gamma_flip=math.nan, regime_ref=None,
        iv_change=math.nan,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def run(inputs: list[PatternInput], cfg: PatternConfig = CFG,
        state: PatternState | None = None) -> tuple[PatternState, list[list[PatternEvent]]]:
    out = []
    for i in inputs:
        state, events = update_patterns(state, i, cfg)
        out.append(list(events))
    assert state is not None
    return state, out


def test_grade() -> None:
    assert [grade(x, (0.05, 0.15, 0.40)) for x in (0.0, 0.05, 0.1, 0.15, 0.39, 0.4, 2.0)] == [0, 1, 1, 2, 2, 3, 3]


def test_short_buildup_in_a_cluster_after_confirmation() -> None:
    ref = Sample(0, np.full((2, 5), 1000.0), np.full((2, 5), 10.0), 0.15)
    pe_up = np.array([[1000.0] * 5, [1200.0] * 5])  # put OI +20 % in the cluster
    pe_down = np.array([[10.0] * 5, [9.0] * 5])  # put premium -10 %
    _, events = run([inp(t, oi=pe_up, price=pe_down, regime_ref=ref) for t in (1, 2, 3, 4)])
    assert events[:2] == [[], []]
    (ev,) = events[2]  # the third consecutive classification confirms the regime
    assert (ev.event_type, ev.option_type, ev.strike, ev.strike_high) == ("short_buildup", "PE", 100.0, 140.0)
    assert ev.severity == 2 and ev.value == pytest.approx(0.2)  # 15 % <= 20 % < 40 %
    assert dict(ev.details)["premium_change_pct"] == pytest.approx(-0.1)
    assert ev.event_key == "2026-11-24|PE|100-140" and ev.window_s == 300
    assert events[3] == []  # same regime, same severity: nothing new

    # the same regime intensifying to +50 % is reported again with the higher severity
    bigger = np.array([[1000.0] * 5, [1500.0] * 5])
    state, _ = run([inp(t, oi=pe_up, price=pe_down, regime_ref=ref) for t in (1, 2, 3)])
    _, (more,) = run([inp(4, oi=bigger, price=pe_down, regime_ref=ref)], state=state)
    assert [(e.event_type, e.severity) for e in more] == [("short_buildup", 3)]


def test_quadrants_and_dead_bands() -> None:
    ref = Sample(0, np.full((2, 5), 1000.0), np.full((2, 5), 10.0), 0.15)
    fast = replace(CFG, regime_confirm=1)
    cases = {
        ("long_buildup", "CE"): (np.array([[1100.0] * 5, [1000.0] * 5]), np.array([[11.0] * 5, [10.0] * 5])),
        ("short_covering", "CE"): (np.array([[900.0] * 5, [1000.0] * 5]), np.array([[11.0] * 5, [10.0] * 5])),
        ("long_unwinding", "PE"): (np.array([[1000.0] * 5, [900.0] * 5]), np.array([[10.0] * 5, [9.0] * 5])),
    }
    for (name, leg), (oi, price) in cases.items():
        _, (events,) = run([inp(1, oi=oi, price=price, regime_ref=ref)], cfg=fast)
        assert [(e.event_type, e.option_type, e.severity) for e in events] == [(name, leg, 1)], name
    # OI +1 % (inside the 2 % band) or price +0.5 % with no previous regime: neutral, no event
    small_oi = np.array([[1010.0] * 5, [1000.0] * 5])
    _, (events,) = run([inp(1, oi=small_oi, price=np.full((2, 5), 11.0), regime_ref=ref)], cfg=fast)
    assert events == []
    _, (events,) = run([inp(1, oi=np.array([[1100.0] * 5, [1000.0] * 5]), price=np.full((2, 5), 10.05),
                            regime_ref=ref)], cfg=fast)
    assert events == []


def test_pcr_regime_changes_with_hysteresis() -> None:
    _, events = run([inp(t, pcr_oi=p) for t, p in enumerate([1.0, 0.78, 0.76, 0.81, 0.84, 1.25], start=1)])
    flat = [(i, e.event_type, e.severity, e.value) for i, evs in enumerate(events) for e in evs]
    # 0.78 is inside the band below 0.8; 0.76 leaves neutral; 0.81 stays low (needs 0.83); 0.84 neutral; 1.25 high
    assert flat == [(2, "pcr_regime_change", 1, 0.76), (4, "pcr_regime_change", 1, 0.84),
                    (5, "pcr_regime_change", 1, 1.25)]
    _, events = run([inp(1, pcr_oi=0.7), inp(2, pcr_oi=1.3)])
    assert [(e.severity, e.previous) for e in events[1]] == [(2, 0.0)]  # low → high directly


def test_iv_spike_crush_rearm_and_escalation() -> None:
    changes = [0.005, 0.045, 0.05, 0.09, 0.004, 0.02, -0.012]
    _, events = run([inp(t, iv_change=c) for t, c in enumerate(changes, start=1)])
    flat = [(i, e.event_type, e.severity) for i, evs in enumerate(events) for e in evs]
    assert flat == [(1, "iv_spike", 2), (3, "iv_spike", 3), (5, "iv_spike", 1), (6, "iv_crush", 0)]
    assert events[1][0].window_s == 60 and events[1][0].value == 0.045


def test_gamma_flip_cross_both_ways() -> None:
    spots = [101.0, 100.1, 99.7, 99.9, 100.3]
    _, events = run([inp(t, spot=s, gamma_flip=100.0) for t, s in enumerate(spots, start=1)])
    flat = [(i, e.severity, dict(e.details)["direction"]) for i, evs in enumerate(events) for e in evs]
    assert flat == [(2, 2, -1.0), (4, 1, 1.0)]  # 100.1 and 99.9 are inside the 0.2 % band


def test_unusual_flow_with_cooldown() -> None:
    oi = np.full((2, 5), 100_000.0)
    vol0 = np.zeros((2, 5))
    vol1 = vol0.copy()
    vol1[0, 2] = 20_000  # 400 lots at ₹100: ₹20 lakh, 20 % of the OI before it
    price = np.full((2, 5), 100.0)
    s = 1_000_000
    vol2, vol3, vol4 = vol1.copy(), vol1.copy(), vol1.copy()
    vol2[0, 2] += 20_000
    vol3[0, 2] = vol2[0, 2] + 50_000  # 50 %: higher severity inside the cooldown
    vol4[0, 2] = vol3[0, 2] + 20_000
    seq = [(0, vol0, vol0), (10, vol1, vol0), (20, vol2, vol1), (30, vol3, vol2), (100, vol4, vol3)]
    _, events = run([inp(t * s, oi=oi, price=price, volume=v, prev_volume=pv, prev_oi=oi) for t, v, pv in seq])
    flat = [(i, e.event_type, e.severity, e.option_type, e.strike) for i, evs in enumerate(events) for e in evs]
    assert flat == [(1, "unusual_flow", 2, "CE", 120.0), (3, "unusual_flow", 3, "CE", 120.0),
                    (4, "unusual_flow", 2, "CE", 120.0)]
    details = dict(events[1][0].details)
    assert details["lots"] == 400 and details["premium"] == 2_000_000 and details["fraction_of_oi"] == 0.2
    # below the premium floor: nothing
    cheap = inp(2, oi=oi, price=np.full((2, 5), 1.0), volume=vol1, prev_volume=vol0, prev_oi=oi)
    assert update_patterns(None, cheap, CFG)[1] == ()


def test_level_shift_events_are_graded_only_when_positioning_moved() -> None:
    shifts = (LevelShift("support", 100.0, 90.0, -1.0, 1000.0, 0.1, "overtaken"),
              LevelShift("resistance", 120.0, 170.0, 5.0, 1000.0, 0.4, "overtaken"),
              LevelShift("call_wall", 120.0, 220.0, 10.0, 9.0, 0.5, "crossed"),
              LevelShift("put_wall", 100.0, 60.0, -4.0, 9.0, 0.5, "spot"),
              LevelShift("max_pain", 110.0, 130.0, 2.0, math.nan, math.nan, "overtaken"))
    _, (events,) = run([inp(1, shifts=shifts)])
    assert [(e.event_type, e.severity, e.value, e.previous) for e in events] == [
        ("support_shift", 0, 90.0, 100.0), ("resistance_shift", 2, 170.0, 120.0),
        ("call_wall_shift", 0, 220.0, 120.0), ("put_wall_shift", 0, 60.0, 100.0),
        ("max_pain_migration", 1, 130.0, 110.0)]
