"""Replay of the committed sample files (tests/data/replay/), checked field by field and unit by unit."""

from __future__ import annotations

import csv
import gzip
import json
import math
import shutil
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pytest

from hftengine.feeds.formats import (
    CSV_COLUMNS,
    DhanUnderlying,
    parse_nse_date,
    parse_nse_timestamp,
    snapshot_to_csv_rows,
)
from hftengine.feeds.replay import ReplayStats, backfill, detect_format, replay
from tests.factories import RecordingPublisher

DATA = Path(__file__).resolve().parents[2] / "data" / "replay"
DHAN = DATA / "dhan_recording.jsonl"
NSE = DATA / "nse_nifty.json"
CSV = DATA / "chain.csv"


def run(path: Path | list[Path], **kw: object) -> tuple[RecordingPublisher, ReplayStats]:
    pub = RecordingPublisher()
    stats = replay(path, pub, speed=None, progress=False, **kw)  # type: ignore[arg-type]
    return pub, stats


# --------------------------------------------------------------------------- Dhan JSON lines
def test_dhan_recording_field_by_field() -> None:
    pub, stats = run(DHAN)
    assert stats.records == 7 and stats.snapshots == 3 and stats.contracts == 11
    first, bank, expiry_day = pub.published
    # line 1: NIFTY with recorded symbol and lot size; strikes sorted from unsorted keys; OI in shares
    assert (first.underlying, first.underlying_security_id, first.segment) == ("NIFTY", 13, "IDX_I")
    assert first.source == "replay-dhan" and first.oi_unit == "shares" and first.lot_size == 75
    assert first.expiry == date(2026, 11, 26)
    assert first.exchange_ts == datetime(2026, 11, 20, 4, 0, tzinfo=UTC) == first.received_ts
    assert first.spot == 24012.35
    assert first.strikes.tolist() == [23950.0, 24000.0, 24050.0]
    ce, pe = first.ce, first.pe
    assert ce.present.tolist() == [True, True, True] and pe.present.tolist() == [False, True, True]
    assert ce.security_id.tolist() == [50001, 50003, 50005]
    assert ce.last_price.tolist() == [140.25, 108.0, 80.1]
    assert ce.top_bid_price.tolist() == [140.1, 107.9, 80.0]
    assert ce.top_bid_quantity.tolist() == [1500, 900, 1125]
    assert ce.top_ask_price.tolist() == [140.4, 108.15, 80.25]
    assert ce.top_ask_quantity.tolist() == [750, 1200, 750]
    assert ce.volume.tolist() == [3000000, 4100000, 2500000]
    assert ce.oi.tolist() == [1500000, 2500000, 1800000]  # shares (20000, 33333.3, 24000 lots of 75)
    assert ce.previous_oi.tolist() == [1450000, 2400000, 1700000]
    assert ce.previous_close_price.tolist() == [133.0, 104.0, 85.5]
    assert ce.previous_volume.tolist() == [2000000, 3900000, 2100000]
    assert ce.average_price.tolist() == [138.7, 106.6, 82.3]
    assert ce.implied_volatility.tolist() == [12.5, 12.1, 11.8]
    assert ce.delta.tolist() == [0.62, 0.52, 0.42]
    assert ce.theta.tolist() == [-12.5, -13.0, -13.1]
    assert ce.gamma.tolist() == [0.0011, 0.0013, 0.00125]
    assert ce.vega.tolist() == [11.2, 12.0, 11.9]
    assert pe.oi.tolist() == [0, 2750000, 1600000] and math.isnan(pe.implied_volatility[0])
    assert pe.implied_volatility[1:].tolist() == [13.2, 12.9]
    # line 2: no symbol/lot size in the record -> completed from the underlyings mapping by id/segment
    assert (bank.underlying, bank.underlying_security_id, bank.lot_size) == ("BANKNIFTY", 25, 35)
    assert bank.ce.oi.tolist() == [600000] and bank.pe.previous_oi.tolist() == [520000]
    # line 6: expiry day, ITM legs with IV 0 and Greeks 0 -> NaN; the OTM legs keep the broker values
    assert expiry_day.expiry == date(2026, 11, 26) and expiry_day.strikes.tolist() == [23950.0, 24050.0]
    for name in ("implied_volatility", "delta", "theta", "gamma", "vega"):
        assert math.isnan(getattr(expiry_day.ce, name)[0]) and math.isnan(getattr(expiry_day.pe, name)[1])
    assert expiry_day.pe.implied_volatility[0] == 45.0 and expiry_day.ce.implied_volatility[1] == 30.5
    assert expiry_day.ce.last_price[0] == 62.5  # the rest of the leg is kept
    assert stats.defects["expiry_day_itm_zero_greeks"] == 1 and stats.defects["null_leg"] == 1


def test_dhan_recording_malformed_lines_are_reported_with_line_numbers_and_skipped() -> None:
    pub, stats = run(DHAN)
    errors = stats.errors
    assert [(e.line, e.reason) for e in errors] == [
        (3, "invalid JSON (Expecting value at column 125)"),
        (5, "missing field(s): expiry"),
    ]
    assert str(errors[0]) == f"{DHAN}:3: invalid JSON (Expecting value at column 125)"
    malformed = [d for d in pub.dead if d.error_type == "malformed_input"]
    assert [d.reason for d in malformed] == [str(e) for e in errors]
    assert all(d.stage == "feed" and d.value for d in malformed)
    # recorded broker defects are dead-lettered exactly as in the live feed
    others = [(d.error_type, d.reason) for d in pub.dead if d.error_type != "malformed_input"]
    assert others == [
        ("broker_failure", "NIFTY 2026-12-03: dhan status 'failure': error 811: Invalid Expiry Date"),
        ("broker_defect", "NIFTY 2026-12-03: spot 0 (holiday?)"),
    ]
    assert stats.dead_lettered == 2 and pub.flushes == 1


# --------------------------------------------------------------------------- NSE
def test_nse_document_splits_into_one_snapshot_per_expiry_field_by_field() -> None:
    pub, stats = run(NSE)
    assert stats.errors == [] and stats.snapshots == 2 and stats.contracts == 9
    nov, dec = pub.published
    ts = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)  # 20-Nov-2026 15:30:00 IST
    for snap in (nov, dec):
        assert snap.exchange_ts == ts and snap.received_ts == ts and snap.exchange_ts.tzinfo is not None
        assert (snap.underlying, snap.underlying_security_id, snap.segment) == ("NIFTY", 13, "IDX_I")
        assert snap.oi_unit == "contracts" and snap.lot_size == 75 and snap.source == "replay-nse"
        assert snap.spot == 24012.35
    assert nov.expiry == date(2026, 11, 27) and dec.expiry == date(2026, 12, 4)
    assert nov.strikes.tolist() == [23950.0, 24000.0, 24050.0]
    ce, pe = nov.ce, nov.pe
    assert ce.present.all() and pe.present.all()
    assert ce.oi.tolist() == [18000, 33000, 24000]  # contracts, as NSE reports them
    assert ce.previous_oi.tolist() == [16000, 30000, 22500]  # openInterest - changeinOpenInterest
    assert pe.previous_oi.tolist() == [26000, 35000, 21800]  # includes a negative change (-800)
    assert ce.volume.tolist() == [40000, 120000, 61000]
    assert ce.last_price.tolist() == [155.0, 124.55, 95.3]
    assert ce.previous_close_price.tolist() == pytest.approx([149.0, 122.3, 100.0])  # lastPrice - change
    assert ce.top_bid_price.tolist() == [154.8, 124.4, 95.2] and ce.top_ask_price.tolist() == [
        155.2,
        124.7,
        95.45,
    ]
    assert ce.top_bid_quantity.tolist() == [1625, 1300, 975] and ce.top_ask_quantity.tolist() == [
        975,
        650,
        1300,
    ]
    assert ce.implied_volatility.tolist() == [12.4, 12.1, 11.8]  # percent
    # NSE sends no Greeks, no security ids, no average price
    assert np.isnan(ce.delta).all() and np.isnan(pe.vega).all()
    assert ce.security_id.tolist() == [0, 0, 0] and ce.average_price.tolist() == [0.0, 0.0, 0.0]
    # an untraded leg: IV 0 means "not computed" -> NaN, price 0, no previous close
    assert math.isnan(pe.implied_volatility[0]) and pe.last_price[0] == 0.0 and pe.previous_close_price[0] == 0
    assert pe.oi[0] == 30500
    # second expiry: a strike with only a PE
    assert dec.strikes.tolist() == [24000.0, 24100.0]
    assert dec.ce.present.tolist() == [False, True] and dec.pe.present.tolist() == [True, True]
    assert dec.ce.previous_oi.tolist() == [0, 7500]


def test_nse_bad_entries_and_bad_documents(tmp_path: Path) -> None:
    doc = json.loads(NSE.read_text())
    doc["records"]["data"][1]["strikePrice"] = "n/a"
    doc["records"]["data"][2]["CE"]["openInterest"] = "lots"
    (tmp_path / "bad_entry.json").write_text(json.dumps(doc))
    pub, stats = run(tmp_path / "bad_entry.json")
    reasons = [e.reason for e in stats.errors]
    assert reasons[0] == "records.data[1].strikePrice is not a number: 'n/a'"
    assert reasons[1] == "2026-11-27 24000 CE.openInterest is not a number: 'lots'"
    assert [s.strikes.tolist() for s in pub.published] == [[24050.0], [24000.0, 24100.0]]  # rest ingested
    broken = tmp_path / "broken.json"
    broken.write_text(NSE.read_text().replace('"timestamp"', '"timestamp" "', 1))
    pub, stats = run(broken)
    (err,) = stats.errors
    expected_line = 1 + NSE.read_text().split('"timestamp"')[0].count("\n")
    assert err.line == expected_line and err.reason == "invalid JSON (Expecting ':' delimiter at column 15)"
    assert pub.published == [] and pub.dead[0].error_type == "malformed_input"
    assert f"{broken}:{err.line}:" in pub.dead[0].reason
    doc = json.loads(NSE.read_text())
    for entry in doc["records"]["data"]:
        for side in ("CE", "PE"):
            if side in entry:
                entry[side]["underlying"] = "ACMEIDX"
    (tmp_path / "unknown.json").write_text(json.dumps(doc))
    _, stats = run(tmp_path / "unknown.json")
    assert "no lot size for 'ACMEIDX'" in stats.errors[0].reason
    _, stats = run(tmp_path / "unknown.json", underlyings={"ACMEIDX": DhanUnderlying("ACMEIDX", 99, "IDX_I", 60)})
    assert stats.errors == [] and stats.snapshots == 2


def test_nse_dates() -> None:
    assert parse_nse_date("27-Nov-2026") == date(2026, 11, 27)
    assert parse_nse_timestamp("21-Nov-2026 15:30:00") == datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    with pytest.raises(ValueError):
        parse_nse_date("2026-11-27")


# --------------------------------------------------------------------------- CSV
def test_csv_rows_grouped_into_snapshots_field_by_field() -> None:
    pub, stats = run(CSV)
    assert stats.records == 10 and stats.snapshots == 3 and stats.contracts == 7
    bank, nifty, nifty2 = pub.published  # same ts: sorted by underlying, expiry
    t0 = datetime(2026, 11, 20, 3, 45, tzinfo=UTC)  # 09:15 +05:30
    assert bank.exchange_ts == t0 == nifty.exchange_ts and nifty2.exchange_ts == datetime(
        2026, 11, 20, 3, 45, 3, tzinfo=UTC
    )
    assert bank.oi_unit == "contracts" and nifty.oi_unit == "shares"  # per-row unit, kept as given
    assert (bank.underlying, bank.underlying_security_id, bank.segment, bank.lot_size) == (
        "BANKNIFTY",
        25,
        "IDX_I",
        35,
    )
    assert bank.expiry == date(2026, 11, 27) and bank.spot == 51234.5
    assert bank.ce.oi.tolist() == [20000] and bank.pe.oi.tolist() == [16000]
    assert nifty.source == "replay-csv" and nifty.lot_size == 75 and nifty.spot == 24012.35
    assert nifty.strikes.tolist() == [24000.0, 24050.0]  # 24100 PE (line 6) was malformed and skipped
    ce, pe = nifty.ce, nifty.pe
    assert ce.present.tolist() == [True, True] and pe.present.tolist() == [True, False]
    assert ce.security_id.tolist() == [50003, 50005]
    assert ce.last_price.tolist() == [108.0, 80.1]
    assert ce.top_bid_price.tolist() == [107.9, 80.0] and ce.top_bid_quantity.tolist() == [900, 1125]
    assert ce.top_ask_price.tolist() == [108.15, 80.25] and ce.top_ask_quantity.tolist() == [1200, 750]
    assert ce.volume.tolist() == [4100000, 2500000]
    assert ce.oi.tolist() == [2500000, 1800000] and ce.previous_oi.tolist() == [2400000, 1700000]
    assert ce.previous_close_price.tolist() == [104.0, 85.5]
    assert ce.implied_volatility.tolist() == [12.1, 11.8]
    assert ce.delta.tolist() == [0.52, 0.42] and ce.gamma.tolist() == [0.0013, 0.00125]
    assert ce.theta.tolist() == [-13.0, -13.1] and ce.vega.tolist() == [12.0, 11.9]
    # empty cells: NaN analytics; optional columns absent from the file: 0
    assert math.isnan(pe.delta[0]) and math.isnan(pe.implied_volatility[0]) and pe.oi[0] == 2750000
    assert ce.average_price.tolist() == [0.0, 0.0] and ce.previous_volume.tolist() == [0, 0]
    assert nifty2.spot == 24013.1 and nifty2.ce.present.tolist() == [True, True]
    assert nifty2.pe.present.tolist() == [False, False]  # line 9 (24000 PE) was malformed and skipped


def test_csv_malformed_lines_are_reported_with_line_numbers_and_skipped(tmp_path: Path) -> None:
    pub, stats = run(CSV)
    assert [(e.line, e.reason) for e in stats.errors] == [
        (6, "oi is not a number: 'abc'"),
        (9, "more fields than header columns"),
    ]
    assert [d.reason for d in pub.dead] == [
        f"{CSV}:6: oi is not a number: 'abc'",
        f"{CSV}:9: more fields than header columns",
    ]
    lines = CSV.read_text().splitlines()
    bad = tmp_path / "more_bad.csv"
    bad.write_text(
        "\n".join(
            [
                lines[0],
                lines[1],
                lines[1].replace("+05:30", ""),  # naive timestamp
                lines[2].replace(",CE,", ",XX,"),
                lines[1],  # duplicate contract
                lines[3].replace("24012.35", "24999"),  # spot differs within the snapshot
                lines[2],
            ]
        )
        + "\n"
    )
    pub, stats = run(bad)
    assert [(e.line, e.reason.split(":")[0]) for e in stats.errors] == [
        (3, "ts has no UTC offset"),
        (4, "option_type must be CE or PE, got 'XX'"),
        (5, "duplicate CE 24050 in this snapshot"),
        (6, "spot/lot_size/oi_unit differ from earlier rows of this snapshot"),
    ]
    assert pub.published[0].n_contracts == 2
    header_only = tmp_path / "no_spot.csv"
    header_only.write_text("ts,underlying,expiry\n")
    _, stats = run(header_only)
    assert stats.errors[0].line == 1 and "spot" in stats.errors[0].reason


def test_csv_writer_round_trip_and_gzip(tmp_path: Path) -> None:
    pub, _ = run(CSV)
    out = tmp_path / "round.csv.gz"
    with gzip.open(out, "wt", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS))
        writer.writeheader()
        for snap in pub.published:
            writer.writerows(snapshot_to_csv_rows(snap))
    again, stats = run(out)
    assert stats.errors == [] and len(again.published) == 3
    for a, b in zip(pub.published, again.published, strict=True):
        for side in ("ce", "pe"):
            la, lb = getattr(a, side), getattr(b, side)
            for name in ("present", "oi", "last_price", "top_bid_quantity"):
                assert getattr(la, name).tolist() == getattr(lb, name).tolist()
            np.testing.assert_array_equal(la.implied_volatility, lb.implied_volatility)
        assert (a.exchange_ts, a.spot, a.oi_unit, a.lot_size) == (
            b.exchange_ts,
            b.spot,
            b.oi_unit,
            b.lot_size,
        )


def test_publisher_rejections_are_counted_not_fatal(tmp_path: Path) -> None:
    lines = CSV.read_text().splitlines()
    path = tmp_path / "neg.csv"
    path.write_text("\n".join([lines[0], lines[1].replace(",80.1,", ",-80.1,"), lines[7]]) + "\n")
    pub, stats = run(path)
    assert stats.rejected == 1 and stats.snapshots == 1
    assert pub.dead[0].error_type == "invalid_chain" and "last_price" in pub.dead[0].reason


# --------------------------------------------------------------------------- several files
def test_directory_and_format_detection(tmp_path: Path) -> None:
    for f in (DHAN, NSE, CSV):
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "README.txt").write_text("ignored")
    pub = RecordingPublisher()
    stats = backfill(tmp_path, pub, progress=False)
    assert stats.files == 3 and stats.snapshots == 8 and len(stats.errors) == 4
    assert detect_format("x.jsonl") == "dhan" and detect_format("x.ndjson.gz") == "dhan"
    assert detect_format("x.json") == "nse" and detect_format("X.CSV") == "csv"
    with pytest.raises(ValueError, match="fmt="):
        detect_format("x.txt")
    explicit = tmp_path / "dump.txt"
    shutil.copy(CSV, explicit)
    _, stats = run(explicit, fmt="csv")
    assert stats.snapshots == 3
    with pytest.raises(FileNotFoundError):
        run(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="unknown format"):
        run(CSV, fmt="parquet")
