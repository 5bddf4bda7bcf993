"""Support/resistance and walls: raw levels, strength, hysteresis and the reason of each shift."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hftengine.analytics.levels import Level, LevelsConfig, LevelsInput, LevelsOutput, update_levels

K = np.array([90.0, 100.0, 110.0, 120.0, 130.0])
CE_OI = [50.0, 100.0, 400.0, 800.0, 600.0]
PE_OI = [500.0, 900.0, 300.0, 100.0, 50.0]
CE_GEX = [1.0, 5.0, 30.0, 20.0, 4.0]
PE_GEX = [-6.0, -25.0, -10.0, -2.0, -1.0]
CFG = LevelsConfig()


def inp(t: int, spot: float = 105.0, ce_oi: list[float] = CE_OI, pe_oi: list[float] = PE_OI,
        ref: list[list[float]] | None = None, max_pain: float = 110.0) -> LevelsInput:
    return LevelsInput(t, spot, K, np.ones((2, 5), dtype=bool), np.array([ce_oi, pe_oi]),
                       np.array([CE_GEX, PE_GEX]), max_pain, 104.5, None if ref is None else np.array(ref))


def by_type(out: LevelsOutput) -> dict[str, Level]:
    return {lv.level_type: lv for lv in out.levels}


def test_raw_levels_and_strength() -> None:
    _, out = update_levels(None, inp(1), CFG)
    lv = by_type(out)
    assert lv["support"].price == 100.0 and lv["support"].strength == pytest.approx(1 - 500 / 900)
    assert lv["support"].value == 900.0
    assert lv["resistance"].price == 120.0 and lv["resistance"].strength == pytest.approx(1 - 600 / 800)
    assert lv["call_wall"].price == 110.0 and lv["call_wall"].strength == pytest.approx(1 - 20 / 30)
    assert lv["put_wall"].price == 100.0 and lv["put_wall"].value == 25.0
    assert lv["max_pain"].price == 110.0 and math.isnan(lv["max_pain"].strength)
    assert lv["gamma_flip"].price == 104.5
    assert out.shifts == ()  # the first snapshot sets the levels


def test_a_strike_spot_sits_on_stays_eligible_within_the_band() -> None:
    # spot 100.1: strike 100 is 0.1 % below spot, inside the 0.2 % band → still eligible as resistance
    _, out = update_levels(None, inp(1, spot=100.1, ce_oi=[50, 900, 400, 800, 600]), CFG)
    assert by_type(out)["resistance"].price == 100.0


def test_shift_needs_confirmation_and_margin_and_is_overtaken_when_positioning_changed() -> None:
    state, _ = update_levels(None, inp(1), CFG)
    grown = [1000.0, 900.0, 300.0, 100.0, 50.0]  # put OI at 90 overtakes 100 by 11 % (> 2 % margin)
    earlier = [CE_OI, PE_OI]  # with the OI of the window start, 100 led clearly
    outs = []
    for t in (2, 3, 4):
        state, out = update_levels(state, inp(t, pe_oi=grown, ref=earlier), CFG)
        outs.append(out)
    assert [o.shifts for o in outs[:2]] == [(), ()]
    assert by_type(outs[1])["support"].candidate == 90.0 and by_type(outs[1])["support"].candidate_count == 2
    (shift,) = [s for s in outs[2].shifts if s.level_type == "support"]
    assert (shift.from_price, shift.to_price, shift.steps, shift.reason) == (100.0, 90.0, -1.0, "overtaken")
    assert shift.value == 1000.0 and shift.strength == pytest.approx(0.1)
    support = by_type(outs[2])["support"]
    assert (support.price, support.previous, support.since_ts_us) == (90.0, 100.0, 4)


def test_no_shift_inside_the_margin() -> None:
    state, _ = update_levels(None, inp(1), CFG)
    for t in range(2, 8):
        state, out = update_levels(state, inp(t, pe_oi=[910.0, 900.0, 300.0, 100.0, 50.0]), CFG)  # +1.1 %
        assert not [s for s in out.shifts if s.level_type == "support"]
    assert by_type(out)["support"].price == 100.0 and by_type(out)["support"].candidate_count == 6


def test_spot_crossing_the_level_is_reason_crossed() -> None:
    state, _ = update_levels(None, inp(1), CFG)
    outs = []
    for t in (2, 3, 4):  # spot 98: support 100 is 2 % above spot, beyond the band
        state, out = update_levels(state, inp(t, spot=98.0), CFG)
        outs.append(out)
    (shift,) = [s for s in outs[2].shifts if s.level_type == "support"]
    assert (shift.from_price, shift.to_price, shift.reason) == (100.0, 90.0, "crossed")


def test_lead_that_existed_before_is_reason_spot() -> None:
    # 120 has more call OI than 130 all along, but with spot at 121 it is below spot: not resistance
    ce = [50.0, 100.0, 400.0, 1000.0, 900.0]
    state, out = update_levels(None, inp(1, spot=121.0, ce_oi=ce), CFG)
    assert by_type(out)["resistance"].price == 130.0
    outs = []
    for t in (2, 3, 4):  # spot back to 119: 120 is eligible again and leads — with the earlier OI too
        state, out = update_levels(state, inp(t, spot=119.0, ce_oi=ce, ref=[ce, PE_OI]), CFG)
        outs.append(out)
    (shift,) = [s for s in outs[2].shifts if s.level_type == "resistance"]
    assert (shift.from_price, shift.to_price, shift.reason) == (130.0, 120.0, "spot")


def test_max_pain_migrates_after_confirmation_without_margin() -> None:
    state, _ = update_levels(None, inp(1), CFG)
    for t in (2, 3):
        state, out = update_levels(state, inp(t, max_pain=120.0), CFG)
        assert not out.shifts
    state, out = update_levels(state, inp(4, max_pain=120.0), CFG)
    (shift,) = out.shifts
    assert (shift.level_type, shift.from_price, shift.to_price, shift.steps) == ("max_pain", 110.0, 120.0, 1.0)
