"""The idempotent analytics sink: ``analytics.*`` records → PostgreSQL rows.

Rows are a pure function of the decoded topic records (:func:`rows_for`), keyed by event time
and identity.  Levels and events are written with ``INSERT ... ON CONFLICT DO NOTHING``
(``PostgresChainStore.write_rows``); a snapshot's ``oi_totals`` row guards its per-strike rows,
which are built as binary COPY tuples with numpy (no Python loop over strikes) and COPYed only
when that row is new (:meth:`AnalyticsSink.write_snapshots`).  A record delivered
twice, or a batch replayed after a crash, adds no rows.

Tables (docs/analytics.md): ``cumulative_oi`` and ``velocity`` (one row per present leg per
strike, and per window), ``oi_totals`` (one per chain snapshot), ``levels`` (one per level per
snapshot), ``pattern_events`` (one per event) and ``flow_events`` (unusual-flow events again,
in the flow table's shape).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import psycopg

from hftengine.codec.packed import unpack
from hftengine.storage.pgcopy import HEADER, TRAILER, Column, encode_rows, pg_date, pg_timestamp
from hftengine.storage.sink import PostgresChainStore

log = logging.getLogger(__name__)

TOTALS_COLUMNS = (
    "ts", "underlying", "expiry", "session", "session_open_ts", "spot", "ce_oi", "pe_oi", "ce_oi_open",
    "pe_oi_open", "ce_change_open", "pe_change_open", "ce_change_prev", "pe_change_prev", "pcr_oi",
    "pcr_change_open", "oi_unit", "lot_size", "analytics_version",
)
_TOTALS_TYPES = (
    "timestamptz", "text", "date", "date", "timestamptz", "float8", "float8", "float8", "float8", "float8",
    "float8", "float8", "float8", "float8", "float8", "float8", "text", "int4", "text",
)
_TOTALS_INSERT = ("INSERT INTO oi_totals ({cols}) SELECT * FROM unnest({params}) ON CONFLICT DO NOTHING "
                  "RETURNING underlying, expiry, ts").format(
    cols=", ".join(TOTALS_COLUMNS), params=", ".join(f"%s::{t}[]" for t in _TOTALS_TYPES))
LEGS = (("ce", "CE"), ("pe", "PE"))


def _num(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


#: Per-strike tables written by binary COPY straight from an ``analytics_oi`` record's vectors.
CUMULATIVE_OI_COLUMNS = (
    Column("ts", "timestamptz"), Column("underlying", "text"), Column("expiry", "date"),
    Column("strike", "float8"), Column("option_type", "text"), Column("oi", "int8"),
    Column("oi_session_open", "int8", nullable=True), Column("oi_change", "int8", nullable=True),
    Column("oi_change_pct", "float8", nullable=True), Column("price_change", "float8", nullable=True),
    Column("buildup", "int2"), Column("oi_change_prev", "int8", nullable=True),
)
VELOCITY_COLUMNS = (
    Column("ts", "timestamptz"), Column("underlying", "text"), Column("expiry", "date"),
    Column("strike", "float8"), Column("option_type", "text"), Column("window_seconds", "int4"),
    Column("oi_velocity", "float8", nullable=True), Column("price_velocity", "float8", nullable=True),
    Column("oi_velocity_pct", "float8", nullable=True), Column("oi_acceleration", "float8", nullable=True),
    Column("price_acceleration", "float8", nullable=True), Column("span_seconds", "float8"),
)
STRIKE_TABLES = (("cumulative_oi", CUMULATIVE_OI_COLUMNS), ("velocity", VELOCITY_COLUMNS))
SnapshotKey = tuple[str, date, datetime]


@dataclass
class CopyRows:
    """Binary COPY tuples (no header/trailer) of one table, and how many rows they hold."""

    data: bytes
    n: int


@dataclass
class AnalyticsRows:
    """Rows per table for one batch of records.

    ``tables``: rows as mappings (levels, pattern and flow events; a few per snapshot).
    ``totals``: one ``oi_totals`` tuple per chain snapshot (:data:`TOTALS_COLUMNS`), keyed by
    ``(underlying, expiry, ts)``; ``strikes``: that snapshot's ``cumulative_oi`` and ``velocity``
    rows as COPY tuples, written only when its totals row is new.
    """

    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    totals: dict[SnapshotKey, tuple[Any, ...]] = field(default_factory=dict)
    strikes: dict[SnapshotKey, dict[str, CopyRows]] = field(default_factory=dict)

    def add(self, table: str, row: dict[str, Any]) -> None:
        self.tables.setdefault(table, []).append(row)

    def count(self) -> int:
        """Distinct rows (a snapshot delivered twice counts once)."""
        return (sum(len(r) for r in self.tables.values()) + len(self.totals)
                + sum(c.n for tables in self.strikes.values() for c in tables.values()))


def _oi_rows(rec: Mapping[str, Any], out: AnalyticsRows) -> None:
    """``oi_totals``, ``cumulative_oi`` (one row per present leg with a finite OI) and ``velocity``
    (those legs again, per window whose span is known, where the OI or premium rate is finite)."""
    ts, und, exp = rec["ts"], rec["underlying"], rec["expiry"]
    key = (und, exp, ts)
    if key in out.totals:
        return
    strikes = unpack(rec["strikes"], "<f8")
    common: dict[str, Any] = {"ts": pg_timestamp(ts), "underlying": str(und).encode(), "expiry": pg_date(exp)}
    cum: list[bytes] = []
    vel: list[bytes] = []
    n_cum = n_vel = 0
    for side, tag in LEGS:
        leg = rec[side]
        oi = unpack(leg["oi"], "<f8")
        rows = np.flatnonzero(unpack(leg["present"], "|b1") & np.isfinite(oi))
        if not rows.size:
            continue
        per_leg: dict[str, Any] = {**common, "strike": strikes[rows], "option_type": tag.encode()}
        cum.append(encode_rows(CUMULATIVE_OI_COLUMNS, {
            **per_leg, "oi": np.rint(oi[rows]), "oi_session_open": np.rint(unpack(leg["oi_open"], "<f8")[rows]),
            "oi_change": np.rint(unpack(leg["change_open"], "<f8")[rows]),
            "oi_change_pct": unpack(leg["change_open_pct"], "<f8")[rows],
            "price_change": unpack(leg["price_change_open"], "<f8")[rows],
            "buildup": np.maximum(unpack(leg["buildup"], "|i1")[rows], 0),
            "oi_change_prev": np.rint(unpack(leg["change_prev"], "<f8")[rows]),
        }, rows.size))
        n_cum += rows.size
        for window, v in zip(rec["windows"], leg["velocity"], strict=True):
            if window["span_s"] is None:
                continue
            oi_rate = unpack(v["oi_per_min"], "<f8")[rows]
            premium_rate = unpack(v["premium_per_min"], "<f8")[rows]
            keep = np.flatnonzero(np.isfinite(oi_rate) | np.isfinite(premium_rate))
            if not keep.size:
                continue
            vel.append(encode_rows(VELOCITY_COLUMNS, {
                **per_leg, "strike": per_leg["strike"][keep], "window_seconds": int(window["window_s"]),
                "oi_velocity": oi_rate[keep], "price_velocity": premium_rate[keep],
                "oi_velocity_pct": unpack(v["oi_pct_per_min"], "<f8")[rows][keep],
                "oi_acceleration": unpack(v["oi_accel"], "<f8")[rows][keep],
                "price_acceleration": unpack(v["premium_accel"], "<f8")[rows][keep],
                "span_seconds": float(window["span_s"]),
            }, keep.size))
            n_vel += keep.size
    out.strikes[key] = {"cumulative_oi": CopyRows(b"".join(cum), n_cum), "velocity": CopyRows(b"".join(vel), n_vel)}
    t = rec["totals"]
    out.totals[key] = (
        ts, und, exp, rec["session"], rec["session_open_ts"], float(rec["spot"]), t["ce_oi"], t["pe_oi"],
        t["ce_oi_open"], t["pe_oi_open"], t["ce_change_open"], t["pe_change_open"], _num(t["ce_change_prev"]),
        _num(t["pe_change_prev"]), _num(t["pcr_oi"]), _num(t["pcr_change_open"]), rec["oi_unit"],
        int(rec["lot_size"]), rec["analytics_version"],
    )


def _level_rows(rec: Mapping[str, Any], out: AnalyticsRows) -> None:
    for lv in rec["levels"]:
        out.add("levels", {
            "ts": rec["ts"], "underlying": rec["underlying"], "expiry": rec["expiry"],
            "level_type": lv["level_type"], "price": float(lv["price"]), "strength": _num(lv["strength"]),
            "source": lv["source"],
            "payload": {
                "value": _num(lv["value"]), "previous": _num(lv["previous"]),
                "since_ts": lv["since_ts"].isoformat(), "candidate": _num(lv["candidate"]),
                "candidate_count": int(lv["candidate_count"]), "spot": float(rec["spot"]),
                "session": rec["session"].isoformat(), "analytics_version": rec["analytics_version"],
            },
        })


def _pattern_rows(rec: Mapping[str, Any], out: AnalyticsRows) -> None:
    details = {k: _num(v) for k, v in sorted(rec["details"].items())}
    payload = {
        "severity_label": rec["severity_label"], "value": _num(rec["value"]), "previous": _num(rec["previous"]),
        "threshold": _num(rec["threshold"]), "window_s": rec["window_s"], "strike_high": _num(rec["strike_high"]),
        "spot": float(rec["spot"]), "description": rec["description"], "details": details,
        "analytics_version": rec["analytics_version"],
    }
    out.add("pattern_events", {
        "ts": rec["ts"], "underlying": rec["underlying"], "expiry": rec["expiry"], "strike": _num(rec["strike"]),
        "option_type": rec["option_type"], "event_type": rec["event_type"], "event_key": rec["event_key"],
        "severity": int(rec["severity"]), "payload": payload,
    })
    if rec["event_type"] == "unusual_flow" and rec["expiry"] is not None and rec["strike"] is not None:
        volume = details.get("volume")
        out.add("flow_events", {
            "ts": rec["ts"], "underlying": rec["underlying"], "expiry": rec["expiry"], "strike": float(rec["strike"]),
            "option_type": rec["option_type"], "event_type": "block", "event_key": rec["event_key"],
            "side": "unknown", "quantity": int(round(volume)) if volume is not None else None,
            "price": details.get("price"), "premium": details.get("premium"), "severity": int(rec["severity"]),
            "payload": {"description": rec["description"], "details": details, "source": "analytics.patterns"},
        })


ROW_BUILDERS = {"oi": _oi_rows, "levels": _level_rows, "patterns": _pattern_rows}


def rows_for(records: Sequence[tuple[str, Mapping[str, Any]]]) -> AnalyticsRows:
    """Rows of a batch of ``(kind, record)`` with kind ``oi`` / ``levels`` / ``patterns``."""
    out = AnalyticsRows()
    for kind, rec in records:
        ROW_BUILDERS[kind](rec, out)
    return out


@dataclass(frozen=True)
class AnalyticsWriteResult:
    rows_in: int
    rows_written: int


class AnalyticsSink:
    """Writes :class:`AnalyticsRows` idempotently, through one :class:`PostgresChainStore` connection.

    Per-strike rows are guarded like ``option_quotes``: in one transaction the snapshots'
    ``oi_totals`` rows are inserted with ``ON CONFLICT DO NOTHING RETURNING`` the keys that are
    new, and only those snapshots' ``cumulative_oi``/``velocity`` rows are COPYed, straight into
    the tables (no staging table, no per-row conflict check).  A concurrent writer of the same
    snapshot waits on the totals row's key and then finds it taken.
    """

    def __init__(self, dsn: str) -> None:
        self.store = PostgresChainStore(dsn)

    def close(self) -> None:
        self.store.close()

    def write(self, records: Sequence[tuple[str, Mapping[str, Any]]]) -> AnalyticsWriteResult:
        rows = rows_for(records)
        written = 0
        for table in ("levels", "pattern_events", "flow_events"):
            if rows.tables.get(table):
                written += self.store.write_rows(table, rows.tables[table])
        written += self.write_snapshots(rows)
        return AnalyticsWriteResult(rows.count(), written)

    def write_snapshots(self, rows: AnalyticsRows) -> int:
        """``oi_totals`` and, for the snapshots new to it, their per-strike rows (one transaction)."""
        if not rows.totals:
            return 0
        totals = list(rows.totals.values())
        days = {ts.astimezone(UTC).date() for _, _, ts in rows.totals}

        def run(conn: psycopg.Connection[Any]) -> int:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(_TOTALS_INSERT, [list(col) for col in zip(*totals, strict=True)])
                new = [(u, e, ts) for u, e, ts in cur.fetchall()]
                written = len(new)
                for table, columns in STRIKE_TABLES:
                    parts = [rows.strikes[key][table] for key in new]
                    if not any(p.n for p in parts):
                        continue
                    names = ", ".join(c.name for c in columns)
                    with cur.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)") as copy:  # noqa: S608
                        copy.write(HEADER)
                        for part in parts:
                            copy.write(part.data)
                        copy.write(TRAILER)
                    written += sum(p.n for p in parts)
                return written

        result: int = self.store.retrying_missing_partition(run, days)
        return result
