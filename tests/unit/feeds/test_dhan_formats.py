"""Dhan response -> ChainSnapshot conversion and broker-defect mapping (pure, no I/O)."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from hftengine.feeds.fake_dhan import fake_chain_body
from hftengine.feeds.formats import (
    DEFAULT_UNDERLYINGS,
    DEFECT_EXPIRY_ITM_ZERO_GREEKS,
    DEFECT_NULL_LEG,
    DEFECT_ZERO_GREEKS,
    IST,
    DhanRecord,
    DhanUnderlying,
    FeedDefect,
    parse_dhan_chain,
    resolve_underlying,
    underlying_by_id,
)

NIFTY = DhanUnderlying("NIFTY", 13, "IDX_I", 75)
EXPIRY = date(2024, 10, 31)
RECEIVED = datetime(2024, 10, 24, 4, 0, 5, 123456, tzinfo=UTC)  # 09:30 IST, a week before expiry


def make_leg(**over: Any) -> dict[str, Any]:
    leg: dict[str, Any] = {
        "average_price": 146.99,
        "greeks": {"delta": 0.53871, "theta": -15.1539, "gamma": 0.00132, "vega": 12.18593},
        "implied_volatility": 9.789193798280868,
        "last_price": 134.0,
        "oi": 3786445,
        "previous_close_price": 244.85,
        "previous_oi": 402220,
        "previous_volume": 31931705,
        "security_id": 42528,
        "top_ask_price": 134.05,
        "top_ask_quantity": 1365,
        "top_bid_price": 133.55,
        "top_bid_quantity": 1625,
        "volume": 117567970,
    }
    leg.update(over)
    return leg


def make_body(oc: dict[str, Any], spot: float = 25642.8) -> dict[str, Any]:
    return {"data": {"last_price": spot, "oc": oc}, "status": "success"}


def test_documented_example_converts_field_by_field() -> None:
    body = make_body(
        {
            "25700.000000": {"ce": make_leg(security_id=3), "pe": make_leg(security_id=4)},
            "25650.000000": {"ce": make_leg(), "pe": None},
            "25600.000000": {"ce": make_leg(security_id=1), "pe": make_leg(security_id=2, oi=10, volume=7)},
        }
    )
    parsed = parse_dhan_chain(body, NIFTY, EXPIRY, RECEIVED)
    snap = parsed.snapshot
    assert snap.problems() == []
    assert snap.underlying == "NIFTY" and snap.underlying_security_id == 13 and snap.segment == "IDX_I"
    assert snap.exchange == "NSE" and snap.source == "dhan"
    assert snap.expiry == EXPIRY
    assert snap.exchange_ts == RECEIVED and snap.received_ts == RECEIVED
    assert snap.exchange_ts.tzinfo is not None and snap.exchange_ts.utcoffset() == timedelta(0)
    assert snap.spot == 25642.8
    assert snap.lot_size == 75
    assert snap.oi_unit == "shares"
    assert snap.strikes.tolist() == [25600.0, 25650.0, 25700.0]  # sorted from unsorted string keys
    # the documented leg at 25650 CE, every field
    i = 1
    ce = snap.ce
    assert bool(ce.present[i]) is True
    assert ce.security_id[i] == 42528
    assert ce.last_price[i] == 134.0
    assert ce.top_bid_price[i] == 133.55 and ce.top_bid_quantity[i] == 1625
    assert ce.top_ask_price[i] == 134.05 and ce.top_ask_quantity[i] == 1365
    assert ce.volume[i] == 117567970
    assert ce.oi[i] == 3786445  # shares, unchanged
    assert ce.previous_oi[i] == 402220
    assert ce.previous_close_price[i] == 244.85
    assert ce.previous_volume[i] == 31931705
    assert ce.average_price[i] == 146.99
    assert ce.implied_volatility[i] == pytest.approx(9.789193798280868)  # percent, as Dhan sends it
    assert (ce.delta[i], ce.theta[i], ce.gamma[i], ce.vega[i]) == (0.53871, -15.1539, 0.00132, 12.18593)
    # null PE leg at 25650: absent, counts 0, analytics NaN
    pe = snap.pe
    assert bool(pe.present[i]) is False
    assert pe.oi[i] == 0 and pe.last_price[i] == 0.0 and pe.security_id[i] == 0
    assert math.isnan(pe.implied_volatility[i]) and math.isnan(pe.delta[i])
    # ordering follows the strikes
    assert ce.security_id.tolist() == [1, 42528, 3]
    assert pe.security_id.tolist() == [2, 0, 4]
    assert pe.oi[0] == 10 and pe.volume[0] == 7
    assert snap.n_contracts == 5
    assert parsed.defects == (DEFECT_NULL_LEG,)
    # dtypes match the schema arrays
    assert ce.oi.dtype == np.int64 and ce.last_price.dtype == np.float64 and ce.present.dtype == np.bool_


def test_whole_strike_null_and_missing_greeks() -> None:
    leg = make_leg()
    del leg["greeks"]
    snap = parse_dhan_chain(
        make_body({"25000.000000": None, "25050.000000": {"ce": leg, "pe": {}}}), NIFTY, EXPIRY, RECEIVED
    ).snapshot
    assert snap.ce.present.tolist() == [False, True]
    assert snap.pe.present.tolist() == [False, False]
    assert math.isnan(snap.ce.delta[1]) and snap.ce.implied_volatility[1] == pytest.approx(9.789193798280868)


def test_zero_spot_is_dead_lettered_as_holiday() -> None:
    with pytest.raises(FeedDefect) as info:
        parse_dhan_chain(
            make_body({"25000.000000": {"ce": make_leg(), "pe": make_leg()}}, spot=0), NIFTY, EXPIRY, RECEIVED
        )
    assert info.value.error_type == "broker_defect"
    assert info.value.reason == "spot 0 (holiday?)"
    assert info.value.kinds == ("zero_spot",)


def test_all_zero_chain_is_dead_lettered() -> None:
    zero: dict[str, Any] = dict.fromkeys(make_leg(), 0)
    zero["greeks"] = {"delta": 0, "theta": 0, "gamma": 0, "vega": 0}
    zero["security_id"] = 42528
    body = make_body({"25000.000000": {"ce": zero, "pe": zero}, "25050.000000": {"ce": zero, "pe": None}})
    with pytest.raises(FeedDefect) as info:
        parse_dhan_chain(body, NIFTY, EXPIRY, RECEIVED)
    assert info.value.error_type == "broker_defect"
    assert info.value.reason.startswith("all-zero chain")
    assert info.value.kinds == ("all_zero_chain",)


def test_zero_spot_and_zero_chain_report_both() -> None:
    body = make_body({"25000.000000": {"ce": None, "pe": None}}, spot=0)
    with pytest.raises(FeedDefect) as info:
        parse_dhan_chain(body, NIFTY, EXPIRY, RECEIVED)
    assert info.value.reason == "spot 0 (holiday?); all-zero chain: every leg is null"


def test_empty_chain_failure_status_and_malformed_bodies() -> None:
    with pytest.raises(FeedDefect, match="empty chain") as info:
        parse_dhan_chain(make_body({}), NIFTY, EXPIRY, RECEIVED)
    assert info.value.error_type == "broker_defect"
    failure = {
        "status": "failure",
        "data": "",
        "remarks": {"error_code": "811", "error_type": "Data_Error", "error_message": "Invalid Expiry Date"},
    }
    with pytest.raises(FeedDefect) as info:
        parse_dhan_chain(failure, NIFTY, EXPIRY, RECEIVED)
    assert info.value.error_type == "broker_failure"
    assert info.value.reason == "dhan status 'failure': error 811: Invalid Expiry Date"
    bad = [
        ("not a dict", "not a JSON object"),
        ({"status": "success", "data": ""}, "data is not an object"),
        ({"status": "success", "data": {"last_price": 1}}, "data.oc"),
        (make_body({"abc": {"ce": make_leg()}}), "strike key 'abc'"),
        (make_body({"25000.000000": {"ce": make_leg(oi="many")}}), "oi is not a number"),
        (make_body({"25000.000000": {"ce": [1, 2]}}), "is not an object"),
    ]
    for body, text in bad:
        with pytest.raises(FeedDefect, match=text) as info:
            parse_dhan_chain(body, NIFTY, EXPIRY, RECEIVED)
        assert info.value.error_type == "malformed_response"


def test_expiry_day_itm_zero_greeks_become_nan_and_snapshot_is_kept() -> None:
    zero_greeks = {"implied_volatility": 0, "greeks": {"delta": 0, "theta": 0, "gamma": 0, "vega": 0}}
    expiry = date(2024, 10, 31)
    received = datetime(2024, 10, 31, 11, 0, tzinfo=IST)  # expiry day, 11:00 IST
    body = make_body(
        {
            "25500.000000": {"ce": make_leg(**zero_greeks), "pe": make_leg()},  # CE ITM (K < S)
            "25800.000000": {"ce": make_leg(), "pe": make_leg(**zero_greeks)},  # PE ITM (K > S)
        },
        spot=25642.8,
    )
    parsed = parse_dhan_chain(body, NIFTY, expiry, received)
    snap = parsed.snapshot
    assert snap.problems() == []
    for legs, i in ((snap.ce, 0), (snap.pe, 1)):
        for name in ("implied_volatility", "delta", "theta", "gamma", "vega"):
            assert math.isnan(getattr(legs, name)[i]), name
        assert legs.last_price[i] == 134.0 and legs.oi[i] == 3786445  # the rest of the leg is kept
    assert snap.ce.implied_volatility[1] == pytest.approx(9.789193798280868)
    assert snap.pe.delta[0] == 0.53871
    assert parsed.defects == (DEFECT_EXPIRY_ITM_ZERO_GREEKS,)
    assert "expiry-day ITM" in parsed.notes[0]
    assert snap.exchange_ts == received.astimezone(UTC) and snap.exchange_ts.tzinfo is UTC


def test_zero_greeks_outside_expiry_day_are_nan_too_but_counted_separately() -> None:
    zero_greeks = {"implied_volatility": 0, "greeks": {"delta": 0, "theta": 0, "gamma": 0, "vega": 0}}
    body = make_body({"25500.000000": {"ce": make_leg(**zero_greeks), "pe": make_leg(implied_volatility=0)}})
    parsed = parse_dhan_chain(body, NIFTY, EXPIRY, RECEIVED)
    assert math.isnan(parsed.snapshot.ce.implied_volatility[0]) and math.isnan(parsed.snapshot.ce.vega[0])
    # IV 0 with non-zero Greeks is not the defect pattern: left alone
    assert parsed.snapshot.pe.implied_volatility[0] == 0.0 and parsed.snapshot.pe.delta[0] == 0.53871
    assert parsed.defects == (DEFECT_ZERO_GREEKS,)


def test_naive_receive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_dhan_chain(make_body({"1.000000": {"ce": make_leg()}}), NIFTY, EXPIRY, datetime(2024, 1, 1))  # noqa: DTZ001


def test_fake_chain_body_is_deterministic_and_valid() -> None:
    today = date(2024, 10, 24)
    a = fake_chain_body(13, EXPIRY, 5, today=today)
    b = fake_chain_body(13, EXPIRY, 5, today=today)
    assert json.dumps(a) == json.dumps(b)
    assert json.dumps(a) != json.dumps(fake_chain_body(13, EXPIRY, 6, today=today))
    snap = parse_dhan_chain(a, DEFAULT_UNDERLYINGS["NIFTY"], EXPIRY, RECEIVED).snapshot
    assert snap.problems() == [] and len(snap.strikes) == 21 and snap.n_contracts == 42
    assert np.all(snap.ce.oi % 75 == 0)  # shares, whole lots
    assert all(k.endswith(".000000") for k in a["data"]["oc"])


def test_dhan_record_round_trip_and_errors() -> None:
    rec = DhanRecord(RECEIVED, 13, "IDX_I", EXPIRY, {"status": "success"}, "NIFTY", 50, 200)
    back = DhanRecord.from_obj(json.loads(rec.to_json()))
    assert back == rec
    with pytest.raises(ValueError, match="missing field"):
        DhanRecord.from_obj({"received_ts": RECEIVED.isoformat()})
    with pytest.raises(ValueError, match="timezone-aware"):
        DhanRecord.from_obj(
            {
                "received_ts": "2024-10-24T09:30:00",
                "security_id": 13,
                "segment": "IDX_I",
                "expiry": "2024-10-31",
                "body": {},
            }
        )
    bare = DhanRecord(RECEIVED, 25, "IDX_I", EXPIRY, {})
    assert bare.underlying() == DEFAULT_UNDERLYINGS["BANKNIFTY"]
    assert rec.underlying().lot_size == 50  # the recorded lot size wins
    with pytest.raises(ValueError, match="unknown underlying"):
        DhanRecord(RECEIVED, 999, "NSE_EQ", EXPIRY, {}).underlying()


def test_underlying_lookup() -> None:
    assert resolve_underlying("nifty") is DEFAULT_UNDERLYINGS["NIFTY"]
    assert resolve_underlying(NIFTY) is NIFTY
    assert underlying_by_id(25, "IDX_I") is DEFAULT_UNDERLYINGS["BANKNIFTY"]
    assert DEFAULT_UNDERLYINGS["NIFTY"].security_id == 13 and DEFAULT_UNDERLYINGS["BANKNIFTY"].security_id == 25
    with pytest.raises(KeyError):
        resolve_underlying("ACMEIDX")
    with pytest.raises(ValueError):
        DhanUnderlying("X", 1, "IDX_I", 0)
