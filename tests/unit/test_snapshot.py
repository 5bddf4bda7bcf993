"""Snapshot validation: what goes to the dead-letter topic and why."""

from __future__ import annotations

from datetime import datetime

import numpy as np

from hftengine.snapshot import ChainSnapshot, Legs
from tests.factories import make_chain


def with_(snap: ChainSnapshot, **changes: object) -> ChainSnapshot:
    return ChainSnapshot(**{**{f: getattr(snap, f) for f in snap.__dataclass_fields__}, **changes})


def test_good_chain_has_no_problems() -> None:
    assert make_chain().problems() == []


def test_nan_and_negative_prices_are_problems() -> None:
    snap = make_chain()
    lp = snap.ce.last_price.copy()
    lp[3] = np.nan
    bid = snap.pe.top_bid_price.copy()
    bid[5] = -1.0
    problems = with_(snap, ce=snap.ce.replace(last_price=lp), pe=snap.pe.replace(top_bid_price=bid)).problems()
    assert any("ce.last_price" in p and f"{snap.strikes[3]:g}" in p for p in problems)
    assert any("pe.top_bid_price" in p for p in problems)


def test_missing_leg_values_are_ignored() -> None:
    snap = make_chain()
    present = np.ones(len(snap.strikes), dtype=bool)
    present[0] = False
    lp = snap.ce.last_price.copy()
    lp[0] = np.nan  # a null leg's values don't matter
    assert with_(snap, ce=snap.ce.replace(present=present, last_price=lp)).problems() == []


def test_structural_problems() -> None:
    snap = make_chain()
    assert any("strictly increasing" in p for p in with_(snap, strikes=snap.strikes[::-1].copy()).problems())
    assert any("values for" in p for p in with_(snap, ce=Legs.empty(3)).problems())
    assert any("spot" in p for p in with_(snap, spot=float("nan")).problems())
    assert any("lot_size" in p for p in with_(snap, lot_size=0).problems())
    assert any("oi_unit" in p for p in with_(snap, oi_unit="lots").problems())  # type: ignore[arg-type]
    assert any("timezone" in p for p in with_(snap, exchange_ts=datetime(2026, 1, 1)).problems())  # noqa: DTZ001
    oi = snap.pe.oi.copy()
    oi[2] = -5
    assert any("pe.oi is negative" in p for p in with_(snap, pe=snap.pe.replace(oi=oi)).problems())


def test_zero_spot_is_not_a_dead_letter() -> None:
    # zero spot is a soft defect: the analytics flag it
    assert make_chain(spot=25000).problems() == []
    assert with_(make_chain(), spot=0.0).problems() == []
