"""The composite ``update(state, event) -> (state, emits)``: idempotency, session rollover, codec."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import date, datetime, timedelta

import numpy as np
import pytest

from hftengine.analytics.cumoi import IST
from hftengine.analytics.patterns import PatternConfig
from hftengine.analytics.state import ChainObservation, ChainState, StateConfig, chain_key, update
from hftengine.analytics.velocity import VelocityConfig
from hftengine.codec.packed import pack
from hftengine.enrich import analyze_snapshot, enriched_record
from hftengine.tables.codec import StateCodecError, decode_state, encode_state
from tests.factories import make_chain

EXP = date(2026, 11, 24)
K = np.array([24900.0, 24950.0, 25000.0, 25050.0, 25100.0])


def obs(ts: datetime, ce_oi: list[float], pe_oi: list[float] | None = None, spot: float = 25010.0,
        atm_iv: float = 0.12) -> ChainObservation:
    n = K.shape[0]
    pe = pe_oi or [7500.0] * n
    return ChainObservation(
        underlying="NIFTY", expiry=EXP, ts=ts, spot=spot, lot_size=75, oi_unit="shares", strikes=K,
        present=np.ones((2, n), dtype=bool), oi=np.array([ce_oi, pe]), volume=np.zeros((2, n)),
        price=np.full((2, n), 50.0), iv=np.full((2, n), 0.12), gex=np.array([[1.0] * n, [-1.0] * n]),
        pcr_oi=sum(pe) / sum(ce_oi), atm_iv=atm_iv, max_pain=25000.0, gamma_flip=math.nan,
    )


def day(d: int, hh: int, mm: int, ss: int = 0) -> datetime:
    return datetime(2026, 11, d, hh, mm, ss, tzinfo=IST)


def test_replays_and_duplicates_change_nothing() -> None:
    s1, e1 = update(None, obs(day(20, 9, 15), [7500.0] * 5))
    assert s1 is not None and e1 is not None
    s2, e2 = update(s1, obs(day(20, 9, 15, 5), [7575.0] * 5))
    assert s2 is not None and e2 is not None and s2.last_ts_us > s1.last_ts_us
    for replay in (obs(day(20, 9, 15, 5), [7575.0] * 5), obs(day(20, 9, 15), [7500.0] * 5),
                   obs(day(20, 9, 15, 5), [9999.0] * 5)):  # a different payload at an applied time is ignored too
        same, none = update(s2, replay)
        assert same is s2 and none is None
    assert s2.applied == 2
    assert e2.oi.cum.change_open[0].tolist() == [75.0] * 5


def test_session_rollover_resets_baselines_windows_and_levels() -> None:
    cfg = StateConfig(velocity=VelocityConfig(windows_s=(60,), samples_per_window=2),
                      patterns=PatternConfig(regime_window_s=60, iv_window_s=60))
    st = None
    t = day(20, 15, 20)
    for i in range(12):  # two minutes of Friday's session, every 10 s
        st, em = update(st, obs(t + timedelta(seconds=10 * i), [7500.0 + 75 * i] * 5), cfg)
    assert st is not None and em is not None
    assert st.session == date(2026, 11, 20) and st.applied == 12
    assert em.oi.cum.change_open[0, 0] == 75 * 11
    assert em.oi.velocity[0].span_s == 80.0  # at 110 s the reference is the sample at 30 s

    monday = day(23, 9, 15)
    st2, em2 = update(st, obs(monday, [9000.0] * 5), cfg)
    assert st2 is not None and em2 is not None
    assert st2.session == date(2026, 11, 23) and st2.applied == 1
    assert em2.oi.cum.open_ts_us == st2.last_ts_us
    assert em2.oi.cum.change_open[0].tolist() == [0.0] * 5  # new baseline, not Friday's
    assert np.isnan(em2.oi.cum.change_prev).all()
    assert math.isnan(em2.oi.velocity[0].span_s)  # windows never span two sessions
    assert all(len(r.samples) == 1 for r in st2.velocity.rings)
    assert em2.levels.output.shifts == () and em2.events == ()
    assert em2.oi.session == date(2026, 11, 23)


def test_state_belongs_to_one_chain() -> None:
    st, _ = update(None, obs(day(20, 10, 0), [7500.0] * 5))
    other = replace(obs(day(20, 10, 1), [7500.0] * 5), expiry=date(2026, 12, 1))
    with pytest.raises(ValueError, match="snapshot of NIFTY 2026-12-01"):
        update(st, other)
    assert chain_key("NIFTY", EXP) == "NIFTY|2026-11-24"


def test_state_config_windows_must_cover_the_detectors() -> None:
    with pytest.raises(ValueError, match="regime_window_s"):
        StateConfig(velocity=VelocityConfig(windows_s=(60, 900)))


def test_codec_round_trip_is_exact_and_deterministic() -> None:
    st = None
    for i in range(40):
        st, _ = update(st, obs(day(20, 10, 0) + timedelta(seconds=15 * i), [7500.0 + 75 * (i % 7)] * 5,
                               atm_iv=0.12 + 0.001 * i))
    assert isinstance(st, ChainState)
    data = encode_state(st)
    back = decode_state(data)
    assert isinstance(back, ChainState)
    assert encode_state(back) == data
    assert back.last_ts_us == st.last_ts_us and back.session == st.session
    assert np.array_equal(back.cum.open_oi, st.cum.open_oi, equal_nan=True)
    assert [len(r.samples) for r in back.velocity.rings] == [len(r.samples) for r in st.velocity.rings]
    # the decoded state keeps working
    nxt = obs(day(20, 10, 11), [8000.0] * 5)
    a, ea = update(st, nxt)
    b, eb = update(back, nxt)
    assert a is not None and b is not None and ea is not None and eb is not None
    assert encode_state(a) == encode_state(b)
    for bad in (b"nope", b"HS1garbage", data[:-3]):
        with pytest.raises(StateCodecError):
            decode_state(bad)


def test_observation_from_an_enriched_record_with_packed_vectors() -> None:
    snap = make_chain()
    rec = enriched_record(snap, analyze_snapshot(snap, r=0.065, q=0.0), r=0.065, q=0.0)
    o = ChainObservation.from_enriched(rec)
    assert o.key == f"NIFTY|{snap.expiry.isoformat()}"
    assert o.oi[0].tolist() == snap.ce.oi.astype(float).tolist()
    assert o.price[1].tolist() == snap.pe.last_price.tolist()
    assert o.strikes.tolist() == snap.strikes.tolist()
    # plain lists work too, and absent legs become NaN
    present = snap.ce.present.copy()
    present[0] = False
    rec["snapshot"]["ce"]["present"] = pack(present, "|b1")
    rec["snapshot"]["strikes"] = snap.strikes.tolist()
    o2 = ChainObservation.from_enriched(rec)
    assert math.isnan(o2.oi[0, 0]) and math.isnan(o2.price[0, 0]) and not o2.present[0, 0]
