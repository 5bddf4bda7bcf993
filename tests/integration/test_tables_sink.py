"""The analytics sink on a real PostgreSQL: rows as documented, and replays add nothing."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest

from hftengine.agents.stateful import apply_enriched, state_config
from hftengine.codec.packed import unpack
from hftengine.config import Settings
from hftengine.enrich import analyze_snapshot, enriched_record
from hftengine.feeds.instruments import IST
from hftengine.feeds.simulator import MarketSimulator, block_trade
from hftengine.storage.analytics_sink import STRIKE_TABLES, AnalyticsSink, rows_for

pytestmark = [pytest.mark.integration]
TABLES = ("cumulative_oi", "velocity", "oi_totals", "levels", "pattern_events", "flow_events")


def records(steps: int) -> list[tuple[str, dict[str, Any]]]:
    sim = MarketSimulator(4, ["RELIANCE"], strikes_per_side=8, expiries_per_underlying=1,
                          interval=timedelta(seconds=10), start=datetime(2026, 11, 16, 9, 15, tzinfo=IST),
                          scenarios=[block_trade("RELIANCE", 3, 1, side="pe")])
    cfg = state_config(Settings())
    value = None
    out: list[tuple[str, dict[str, Any]]] = []
    for _ in range(steps):
        (snap,) = sim.step()
        applied = apply_enriched(value, enriched_record(snap, analyze_snapshot(snap, r=0.065, q=0.0), r=0.065,
                                                         q=0.0), cfg)
        assert applied is not None
        value = applied.state_bytes
        out.extend(applied.records)
    return out


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _int(x: float) -> int | None:
    return int(round(x)) if math.isfinite(x) else None


def strike_rows(recs: list[tuple[str, dict[str, Any]]]) -> dict[str, set[tuple[Any, ...]]]:
    """The documented per-strike rows, one leg at a time in plain Python (the reference for the
    sink's vectorised COPY tuples)."""
    out: dict[str, set[tuple[Any, ...]]] = {"cumulative_oi": set(), "velocity": set()}
    for kind, rec in recs:
        if kind != "oi":
            continue
        ts, und, exp = rec["ts"], rec["underlying"], rec["expiry"]
        strikes = unpack(rec["strikes"], "<f8")
        for side, tag in (("ce", "CE"), ("pe", "PE")):
            leg = rec[side]
            col = {name: unpack(leg[name], "<f8") for name in (
                "oi", "oi_open", "change_open", "change_open_pct", "change_prev", "price_change_open")}
            buildup = unpack(leg["buildup"], "|i1")
            for i in np.flatnonzero(unpack(leg["present"], "|b1")).tolist():
                if not math.isfinite(col["oi"][i]):
                    continue
                base = (ts, und, exp, float(strikes[i]), tag)
                out["cumulative_oi"].add((*base, int(round(col["oi"][i])), _int(col["oi_open"][i]),
                                          _int(col["change_open"][i]), _num(col["change_open_pct"][i]),
                                          _num(col["price_change_open"][i]), max(int(buildup[i]), 0),
                                          _int(col["change_prev"][i])))
                for window, v in zip(rec["windows"], leg["velocity"], strict=True):
                    values = [_num(unpack(v[name], "<f8")[i]) for name in (
                        "oi_per_min", "premium_per_min", "oi_pct_per_min", "oi_accel", "premium_accel")]
                    if window["span_s"] is None or (values[0] is None and values[1] is None):
                        continue
                    out["velocity"].add((*base, window["window_s"], *values, float(window["span_s"])))
    return out


def counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return {t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in TABLES}  # type: ignore[index]  # noqa: S608


def test_rows_are_written_once_however_often_records_arrive(migrated_dsn: str) -> None:
    recs = records(12)  # 2 minutes at 10 s: the 60 s window fills
    expected = rows_for(recs)
    sink = AnalyticsSink(migrated_dsn)
    try:
        first = sink.write(recs)
        assert first.rows_written == first.rows_in == expected.count()
        again = sink.write(recs[5:] + recs[:5])  # a replay, in another order
        assert again.rows_written == 0
        doubled = sink.write([r for rec in recs[-3:] for r in (rec, rec)])  # duplicates inside one batch
        assert doubled.rows_written == 0
    finally:
        sink.close()
    got = counts(migrated_dsn)
    assert got["oi_totals"] == 12
    assert got["cumulative_oi"] == 12 * 2 * 17  # every present leg of every snapshot
    reference = strike_rows(recs)
    assert got["velocity"] == len(reference["velocity"]) > 0
    with psycopg.connect(migrated_dsn) as conn:
        for table, columns in STRIKE_TABLES:
            names = ", ".join(c.name for c in columns)
            stored = {tuple(r) for r in conn.execute(f"SELECT {names} FROM {table}").fetchall()}  # noqa: S608
            assert stored == reference[table], table
    assert got["flow_events"] == 1 and got["pattern_events"] >= 1  # the block trade
    with psycopg.connect(migrated_dsn) as conn:
        row = conn.execute(
            "SELECT event_type, option_type, severity, payload->>'severity_label' FROM pattern_events "
            "WHERE event_type = 'unusual_flow'").fetchone()
        assert row is not None and row[0:2] == ("unusual_flow", "PE") and row[2] >= 1
        first_ts = conn.execute("SELECT min(ts) FROM oi_totals").fetchone()
        assert first_ts is not None
        prev = conn.execute("SELECT count(*) FILTER (WHERE oi_change_prev IS NULL), count(*) FROM cumulative_oi "
                            "WHERE ts = %s", (first_ts[0],)).fetchone()
        assert prev == (34, 34)  # the session's first snapshot has no previous one
        spans = conn.execute("SELECT DISTINCT window_seconds FROM velocity").fetchall()
        assert {s for (s,) in spans} == {60}  # 300 and 900 s windows are not full after 2 minutes
