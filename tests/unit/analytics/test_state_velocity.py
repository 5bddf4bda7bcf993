"""Velocity windows on hand-built sequences: rates, normalisation, acceleration, expiry of samples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hftengine.analytics.velocity import (
    VelocityConfig,
    VelocityInput,
    VelocityState,
    WindowVelocity,
    update_velocity,
)

S = 1_000_000
CFG = VelocityConfig(windows_s=(60,), samples_per_window=2)  # period 30 s


def oi_at(t: float) -> float:
    return 1000.0 + t * t / 10.0  # quadratic: constant acceleration


def event(t: int, oi: float | None = None, price: float | None = None, iv: float = 0.15) -> VelocityInput:
    o = oi_at(t) if oi is None else oi
    p = 10.0 + 0.01 * t if price is None else price
    return VelocityInput(t * S, np.array([100.0]), np.array([[o], [2 * o]]), np.array([[p], [p]]), iv)


def run(times: list[int], state: VelocityState | None = None) -> tuple[VelocityState, WindowVelocity]:
    out = None
    for t in times:
        state, outs = update_velocity(state, event(t), CFG)
        out = outs[0]
    assert state is not None and out is not None
    return state, out


def test_window_not_full_gives_nan() -> None:
    _, v = run([0, 10, 20, 30, 40, 50])
    assert math.isnan(v.span_s)
    assert np.isnan(v.oi_per_min).all() and v.reference is None


def test_rates_per_minute_and_normalisation() -> None:
    state, v = run(list(range(0, 61, 10)))
    assert v.span_s == 60.0
    assert v.reference is not None and v.reference.ts_us == 0
    # OI 1000 → 1360 over one minute; the PE row has twice the OI
    assert v.oi_per_min[:, 0].tolist() == pytest.approx([360.0, 720.0])
    assert v.oi_pct_per_min[:, 0].tolist() == pytest.approx([0.36, 0.36])  # of the OI at the window start
    assert v.premium_per_min[0, 0] == pytest.approx(0.6)
    assert np.isnan(v.oi_accel).all()  # needs a reference one window before the reference
    assert [s.ts_us // S for s in state.rings[0].samples] == [0, 30, 60]  # sampled every 30 s

    _, v70 = update_velocity(state, event(70), CFG)
    # reference is still the sample at 0 (newest at or before 70 - 60): span 70 s
    assert v70[0].span_s == 70.0
    assert v70[0].oi_per_min[0, 0] == pytest.approx((oi_at(70) - 1000.0) / (70 / 60))


def test_acceleration_is_the_change_of_velocity_per_minute() -> None:
    _, v = run(list(range(0, 121, 10)))
    # v(120) over [60, 120] = (2440 - 1360) / 1 = 1080; v(60) over [0, 60] = 360; accel = 720 per min²
    assert v.oi_per_min[0, 0] == pytest.approx(1080.0)
    assert v.oi_accel[0, 0] == pytest.approx(720.0)
    assert v.oi_accel[1, 0] == pytest.approx(1440.0)
    assert v.premium_accel[0, 0] == pytest.approx(0.0)
    assert v.atm_iv_change == pytest.approx(0.0)


def test_samples_expire_and_a_feed_gap_empties_the_window() -> None:
    state, _ = run(list(range(0, 121, 10)))
    assert [s.ts_us // S for s in state.rings[0].samples] == [0, 30, 60, 90, 120]
    # a 3-minute gap: no sample in [240 - 60, 240] → the window has expired
    state, outs = update_velocity(state, event(300), CFG)
    assert math.isnan(outs[0].span_s) and np.isnan(outs[0].oi_per_min).all()
    # samples older than t - 2W - 4p = 300 - 120 - 120 = 60 are dropped; 300 is sampled
    assert [s.ts_us // S for s in state.rings[0].samples] == [60, 90, 120, 300]
    state, outs = update_velocity(state, event(350), CFG)
    assert math.isnan(outs[0].span_s)  # newest sample at or before 290 is 120: older than W + 2p
    state, outs = update_velocity(state, event(360), CFG)
    assert outs[0].span_s == 60.0  # refilled from the sample at 300
    assert outs[0].reference is not None and outs[0].reference.ts_us == 300 * S


def test_strike_changes_realign_the_samples() -> None:
    state, _ = run([0, 30])
    wider = VelocityInput(60 * S, np.array([90.0, 100.0]), np.array([[5.0, oi_at(60)], [6.0, 2 * oi_at(60)]]),
                          np.array([[1.0, 10.6], [1.0, 10.6]]), 0.15)
    state, outs = update_velocity(state, wider, CFG)
    v = outs[0]
    assert math.isnan(v.oi_per_min[0, 0])  # strike 90 has no history
    assert v.oi_per_min[0, 1] == pytest.approx(360.0)
    assert state.strikes.tolist() == [90.0, 100.0]


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        VelocityConfig(windows_s=())
    with pytest.raises(ValueError):
        VelocityConfig(windows_s=(60, 60))
    with pytest.raises(ValueError):
        VelocityConfig(samples_per_window=0)
    assert VelocityConfig().period_us(300) == 75 * S
