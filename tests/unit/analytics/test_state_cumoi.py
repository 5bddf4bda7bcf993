"""Cumulative OI on hand-built chains: baselines, change since open / previous, totals, rollover."""

from __future__ import annotations

import math
from datetime import date, datetime

import numpy as np
import pytest

from hftengine.analytics.buildup import BuildUp
from hftengine.analytics.cumoi import (
    IST,
    OIInput,
    align,
    from_micros,
    session_date,
    strike_step,
    ts_micros,
    update_cumulative_oi,
)

NAN = math.nan


def at(hh: int, mm: int, ss: int = 0, day: int = 20) -> int:
    return ts_micros(datetime(2026, 11, day, hh, mm, ss, tzinfo=IST))


def chain(ts: int, ce_oi: list[float], pe_oi: list[float], ce_px: list[float], pe_px: list[float],
          strikes: list[float] | None = None, present: list[list[bool]] | None = None) -> OIInput:
    k = np.array(strikes or [100.0, 110.0, 120.0])
    pres = np.array(present) if present is not None else np.ones((2, k.shape[0]), dtype=bool)
    return OIInput(ts, k, pres, np.array([ce_oi, pe_oi], dtype=float), np.array([ce_px, pe_px], dtype=float),
                   np.zeros((2, k.shape[0])))


def test_session_is_the_ist_date_not_the_utc_one() -> None:
    late_utc = datetime(2026, 11, 20, 20, 0, tzinfo=IST).astimezone(IST)  # 20:00 IST = 14:30 UTC
    assert session_date(late_utc) == date(2026, 11, 20)
    early = datetime.fromisoformat("2026-11-20T03:50:00+00:00")  # 09:20 IST
    assert session_date(early) == date(2026, 11, 20)
    just_after_midnight_ist = datetime.fromisoformat("2026-11-20T18:40:00+00:00")  # 00:10 IST on the 21st
    assert session_date(just_after_midnight_ist) == date(2026, 11, 21)
    with pytest.raises(ValueError):
        session_date(datetime(2026, 11, 20, 9, 15))  # noqa: DTZ001
    assert from_micros(ts_micros(early)) == early


def test_change_since_open_and_previous_with_buildup_and_totals() -> None:
    s0, out0 = update_cumulative_oi(None, chain(at(9, 15), [1000, 2000, 3000], [4000, 5000, 6000],
                                                [12.0, 6.0, 2.0], [1.0, 4.0, 11.0]))
    assert out0.open_ts_us == at(9, 15)
    assert out0.change_open.tolist() == [[0, 0, 0], [0, 0, 0]]
    assert np.isnan(out0.change_prev).all()  # no previous snapshot in the session
    assert math.isnan(out0.totals.ce_change_prev)

    s1, out1 = update_cumulative_oi(s0, chain(at(9, 15, 5), [1100, 2000, 2900], [4000, 5500, 6000],
                                              [12.5, 6.0, 1.5], [1.0, 4.5, 11.0]))
    assert out1.oi_open.tolist() == [[1000, 2000, 3000], [4000, 5000, 6000]]
    assert out1.change_open.tolist() == [[100, 0, -100], [0, 500, 0]]
    assert out1.change_open_pct[0].tolist() == pytest.approx([0.1, 0.0, -1 / 30])
    assert out1.change_open_pct[1].tolist() == pytest.approx([0.0, 0.1, 0.0])
    assert out1.change_prev.tolist() == [[100, 0, -100], [0, 500, 0]]
    assert out1.price_change_open.tolist() == [[0.5, 0.0, -0.5], [0.0, 0.5, 0.0]]
    assert out1.buildup.tolist() == [
        [BuildUp.LONG_BUILDUP, BuildUp.NEUTRAL, BuildUp.LONG_UNWINDING],
        [BuildUp.NEUTRAL, BuildUp.LONG_BUILDUP, BuildUp.NEUTRAL],
    ]
    t = out1.totals
    assert (t.ce_oi, t.pe_oi, t.ce_oi_open, t.pe_oi_open) == (6000, 15500, 6000, 15000)
    assert (t.ce_change_open, t.pe_change_open, t.ce_change_prev, t.pe_change_prev) == (0, 500, 0, 500)
    assert t.pcr_oi == pytest.approx(15500 / 6000)
    assert math.isnan(t.pcr_change_open)  # ΣCE change is 0

    _, out2 = update_cumulative_oi(s1, chain(at(9, 15, 10), [1200, 2100, 2900], [3900, 5500, 6000],
                                             [12.5, 6.0, 1.5], [1.0, 4.5, 11.0]))
    assert out2.change_open.tolist() == [[200, 100, -100], [-100, 500, 0]]
    assert out2.change_prev.tolist() == [[100, 100, 0], [-100, 0, 0]]
    assert out2.totals.pcr_change_open == pytest.approx(400 / 200)


def test_new_strike_mid_session_starts_from_its_first_oi_and_absent_legs_are_nan() -> None:
    s0, _ = update_cumulative_oi(None, chain(at(10, 0), [1000, 2000, 3000], [4000, 5000, 6000],
                                             [12.0, 6.0, 2.0], [1.0, 4.0, 11.0]))
    _, out = update_cumulative_oi(s0, chain(
        at(10, 1), [1000, 2100, 3000, 700], [4000, 5000, 6000, 0], [12.0, 6.0, 2.0, 0.5], [1.0, 4.0, 11.0, 0.0],
        strikes=[100.0, 110.0, 120.0, 130.0],
        present=[[True, True, False, True], [True, True, True, False]],
    ))
    assert out.oi_open[0].tolist()[:2] == [1000, 2000]
    assert out.oi_open[0][3] == 700  # listed now: its own baseline
    assert out.change_open[0].tolist()[:2] == [0, 100]
    assert math.isnan(out.change_open[0][2])  # absent CE 120
    assert out.change_open[0][3] == 0
    assert math.isnan(out.change_prev[0][3])  # nothing to compare with
    assert math.isnan(out.change_open[1][3])  # absent PE 130
    assert out.totals.ce_oi == 1000 + 2100 + 700


def test_align_and_strike_step() -> None:
    old = np.array([100.0, 110.0, 120.0])
    new = np.array([90.0, 110.0, 120.0, 130.0])
    values = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    out = align(old, new, values)
    assert np.array_equal(out, [[NAN, 2.0, 3.0, NAN], [NAN, 5.0, 6.0, NAN]], equal_nan=True)
    assert align(old, old, values) is values
    assert strike_step(np.array([100.0, 150.0, 200.0, 250.0])) == 50.0
    assert math.isnan(strike_step(np.array([100.0])))
