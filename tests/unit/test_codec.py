"""Avro wire-format codec: round trips (hypothesis) and every decode failure."""

from __future__ import annotations

import dataclasses
import struct
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hftengine.codec.avro import AvroDeserializer, AvroSerializer, DecodeError, load_schema_text
from hftengine.snapshot import LEG_FIELDS, ChainSnapshot
from tests.factories import MemoryRegistry, make_chain

finite = st.floats(min_value=1000, max_value=1e6, allow_nan=False, allow_infinity=False)


@pytest.fixture
def codec() -> tuple[AvroSerializer, AvroDeserializer]:
    reg = MemoryRegistry()
    ser = AvroSerializer(reg, "optionchain.raw-value", load_schema_text("optionchain_raw"))
    return ser, AvroDeserializer(reg, load_schema_text("optionchain_raw"))


def assert_same(a: ChainSnapshot, b: ChainSnapshot) -> None:
    for name in ("underlying", "underlying_security_id", "segment", "expiry", "exchange_ts", "received_ts",
                 "spot", "lot_size", "oi_unit", "source", "exchange"):
        assert getattr(a, name) == getattr(b, name), name
    np.testing.assert_array_equal(a.strikes, b.strikes)
    for side in ("ce", "pe"):
        for name, _ in LEG_FIELDS:
            np.testing.assert_array_equal(getattr(getattr(a, side), name), getattr(getattr(b, side), name),
                                          err_msg=f"{side}.{name}")


@settings(max_examples=60, derandomize=True, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=60),
    spot=finite,
    seconds=st.integers(min_value=0, max_value=10**9),
    micros=st.integers(min_value=0, max_value=999_999),
    seed=st.integers(min_value=0, max_value=2**31),
    missing=st.floats(min_value=0, max_value=1),
)
def test_raw_snapshot_round_trip(n: int, spot: float, seconds: int, micros: int, seed: int, missing: float) -> None:
    reg = MemoryRegistry()
    ser = AvroSerializer(reg, "s", load_schema_text("optionchain_raw"))
    de = AvroDeserializer(reg, load_schema_text("optionchain_raw"))
    ts = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds, microseconds=micros)
    snap = make_chain(n_strikes=n, spot=spot, step=round(spot * 0.002, 2), ts=ts, seed=seed % 1000)
    rng = np.random.default_rng(seed)
    present = rng.random(n) >= missing
    snap = dataclasses.replace(snap, ce=snap.ce.replace(present=present))
    schema_id, rec = de.decode(ser.encode(snap.to_record()))
    assert schema_id == ser.schema_id
    assert_same(snap, ChainSnapshot.from_record(rec))


def test_wire_format_header(codec: tuple[AvroSerializer, AvroDeserializer]) -> None:
    ser, _ = codec
    data = ser.encode(make_chain().to_record())
    assert data[0] == 0
    assert struct.unpack(">I", data[1:5])[0] == ser.schema_id


def test_nan_survives_round_trip(codec: tuple[AvroSerializer, AvroDeserializer]) -> None:
    ser, de = codec
    snap = make_chain()
    _, rec = de.decode(ser.encode(snap.to_record()))
    assert np.isnan(np.frombuffer(rec["ce"]["delta"], "<f8")).all()
    assert rec["expiry"] == date(2026, 11, 24)
    assert rec["exchange_ts"].tzinfo is not None


@pytest.mark.parametrize(
    ("data", "error_type"),
    [
        (None, "truncated"),
        (b"\x00\x00", "truncated"),
        (b"\x01\x00\x00\x00\x01abc", "bad_magic_byte"),
        (b"\x00\x00\x00\x03\xe7abc", "unknown_schema_id"),
    ],
)
def test_decode_errors(codec: tuple[AvroSerializer, AvroDeserializer], data: bytes | None, error_type: str) -> None:
    _, de = codec
    with pytest.raises(DecodeError) as info:
        de.decode(data)
    assert info.value.error_type == error_type
    assert info.value.reason


def test_malformed_datum(codec: tuple[AvroSerializer, AvroDeserializer]) -> None:
    ser, de = codec
    good = ser.encode(make_chain().to_record())
    with pytest.raises(DecodeError) as info:
        de.decode(good[:5] + b"\xff" * 7)  # valid header, garbage datum
    assert info.value.error_type == "malformed_avro"
    with pytest.raises(DecodeError) as info:
        de.decode(good[: len(good) // 2])  # truncated datum
    assert info.value.error_type == "malformed_avro"
    with pytest.raises(DecodeError) as info:
        de.decode(good + b"\x00\x01")  # trailing bytes
    assert info.value.error_type == "malformed_avro"


def test_unknown_id_is_negatively_cached(codec: tuple[AvroSerializer, AvroDeserializer]) -> None:
    _, de = codec
    calls = 0
    real = de._registry.get_schema

    def counting(schema_id: int, *a: object, **k: object) -> object:
        nonlocal calls
        calls += 1
        return real(schema_id)

    de._registry.get_schema = counting  # type: ignore[method-assign]
    for _ in range(5):
        with pytest.raises(DecodeError):
            de.decode(b"\x00\x00\x00\x00\x63rest")
    assert calls == 1


def test_enriched_record_reuses_decoded_snapshot_byte_for_byte(codec: tuple[AvroSerializer, AvroDeserializer]) -> None:
    """The enrich agent carries the decoded raw record into the enriched one instead of packing the
    chain again: the encoded enriched message must be the same bytes either way."""
    from hftengine.enrich import analyze_snapshot, enriched_record

    ser, de = codec
    snap = make_chain(n_strikes=41, spot=22_000.0, step=50.0, ts=datetime(2026, 3, 2, 4, 0, tzinfo=UTC), seed=5)
    snap = dataclasses.replace(snap, pe=snap.pe.replace(present=np.arange(41) % 7 != 3))
    _, rec = de.decode(ser.encode(snap.to_record()))
    decoded = ChainSnapshot.from_record(rec)
    res = analyze_snapshot(decoded, r=0.065, q=0.0)
    reg = MemoryRegistry()
    enc = AvroSerializer(reg, "optionchain.enriched-value", load_schema_text("optionchain_enriched"))
    at = datetime(2026, 3, 2, 4, 0, 1, tzinfo=UTC)
    repacked = enc.encode(enriched_record(decoded, res, r=0.065, q=0.0, enriched_ts=at))
    reused = enc.encode(enriched_record(decoded, res, r=0.065, q=0.0, enriched_ts=at, snapshot_record=rec))
    assert reused == repacked
