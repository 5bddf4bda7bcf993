"""The idempotent analytics sink: ``analytics.*`` records → PostgreSQL rows.

Rows are a pure function of the decoded topic records (:func:`rows_for`), keyed by event time
and identity, and written with ``INSERT ... ON CONFLICT DO NOTHING`` (``PostgresChainStore.write_rows``
for the 0005 tables, :meth:`AnalyticsSink.write_totals` for ``oi_totals``).  A record delivered
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
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import psycopg

from hftengine.codec.packed import unpack
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
_TOTALS_INSERT = "INSERT INTO oi_totals ({cols}) SELECT * FROM unnest({params}) ON CONFLICT DO NOTHING".format(
    cols=", ".join(TOTALS_COLUMNS), params=", ".join(f"%s::{t}[]" for t in _TOTALS_TYPES))
LEGS = (("ce", "CE"), ("pe", "PE"))


def _num(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _int(x: float) -> int | None:
    return int(round(x)) if math.isfinite(x) else None


@dataclass
class AnalyticsRows:
    """Rows per table for one batch of records."""

    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    totals: list[tuple[Any, ...]] = field(default_factory=list)

    def add(self, table: str, row: dict[str, Any]) -> None:
        self.tables.setdefault(table, []).append(row)

    def count(self) -> int:
        return sum(len(r) for r in self.tables.values()) + len(self.totals)


def _oi_rows(rec: Mapping[str, Any], out: AnalyticsRows) -> None:
    ts, und, exp = rec["ts"], rec["underlying"], rec["expiry"]
    strikes = unpack(rec["strikes"], "<f8")
    windows = [w["window_s"] for w in rec["windows"]]
    spans = [w["span_s"] for w in rec["windows"]]
    for side, tag in LEGS:
        leg = rec[side]
        present = unpack(leg["present"], "|b1")
        cols = {name: unpack(leg[name], "<f8") for name in (
            "oi", "oi_open", "change_open", "change_open_pct", "change_prev", "price_change_open")}
        buildup = unpack(leg["buildup"], "|i1")
        vel = [{name: unpack(v[name], "<f8") for name in (
            "oi_per_min", "oi_pct_per_min", "premium_per_min", "oi_accel", "premium_accel")} for v in leg["velocity"]]
        for i in np.flatnonzero(present).tolist():
            strike = float(strikes[i])
            oi = cols["oi"][i]
            if not math.isfinite(oi):
                continue
            out.add("cumulative_oi", {
                "ts": ts, "underlying": und, "expiry": exp, "strike": strike, "option_type": tag,
                "oi": int(round(oi)), "oi_session_open": _int(cols["oi_open"][i]),
                "oi_change": _int(cols["change_open"][i]), "oi_change_pct": _num(cols["change_open_pct"][i]),
                "price_change": _num(cols["price_change_open"][i]), "buildup": max(int(buildup[i]), 0),
                "oi_change_prev": _int(cols["change_prev"][i]),
            })
            for w, span, v in zip(windows, spans, vel, strict=True):
                if span is None:
                    continue
                values = {k: _num(a[i]) for k, a in v.items()}
                if values["oi_per_min"] is None and values["premium_per_min"] is None:
                    continue
                out.add("velocity", {
                    "ts": ts, "underlying": und, "expiry": exp, "strike": strike, "option_type": tag,
                    "window_seconds": int(w), "oi_velocity": values["oi_per_min"],
                    "price_velocity": values["premium_per_min"], "oi_velocity_pct": values["oi_pct_per_min"],
                    "oi_acceleration": values["oi_accel"], "price_acceleration": values["premium_accel"],
                    "span_seconds": float(span),
                })
    t = rec["totals"]
    out.totals.append((
        ts, und, exp, rec["session"], rec["session_open_ts"], float(rec["spot"]), t["ce_oi"], t["pe_oi"],
        t["ce_oi_open"], t["pe_oi_open"], t["ce_change_open"], t["pe_change_open"], _num(t["ce_change_prev"]),
        _num(t["pe_change_prev"]), _num(t["pcr_oi"]), _num(t["pcr_change_open"]), rec["oi_unit"],
        int(rec["lot_size"]), rec["analytics_version"],
    ))


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
    """Writes :class:`AnalyticsRows` idempotently (one connection for ``write_rows``, one for totals)."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self.store = PostgresChainStore(dsn)
        self._conn: psycopg.Connection[Any] | None = None
        self._days: set[date] = set()

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._dsn, autocommit=False)
        return self._conn

    def close(self) -> None:
        self.store.close()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def write(self, records: Sequence[tuple[str, Mapping[str, Any]]]) -> AnalyticsWriteResult:
        rows = rows_for(records)
        written = 0
        for table in ("cumulative_oi", "velocity", "levels", "pattern_events", "flow_events"):
            if rows.tables.get(table):
                written += self.store.write_rows(table, rows.tables[table])
        written += self.write_totals(rows.totals)
        return AnalyticsWriteResult(rows.count(), written)

    def write_totals(self, rows: Sequence[tuple[Any, ...]]) -> int:
        if not rows:
            return 0
        days = {r[0].astimezone(UTC).date() for r in rows}
        conn = self._connection()
        try:
            with conn.transaction(), conn.cursor() as cur:
                missing = sorted(days - self._days)
                if missing:
                    lo = datetime.combine(missing[0], datetime.min.time(), UTC)
                    hi = datetime.combine(missing[-1], datetime.min.time(), UTC) + timedelta(days=1)
                    cur.execute("SELECT hft_ensure_partitions(%s, %s)", (lo, hi))
                cur.execute(_TOTALS_INSERT, [list(col) for col in zip(*rows, strict=True)])
                n = max(cur.rowcount, 0)
        except Exception:
            self.close()
            raise
        self._days |= days
        return n
