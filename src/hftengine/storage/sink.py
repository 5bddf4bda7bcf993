"""The idempotent chain sink: enriched chains → PostgreSQL/TimescaleDB.

One transaction per batch:

1. ``INSERT INTO chain_metrics ... ON CONFLICT DO NOTHING RETURNING`` the keys
   ``(underlying, expiry, ts)`` that are new.  A replayed snapshot conflicts
   and is skipped; a concurrent writer of the same snapshot waits on the
   primary key and then skips it.
2. Binary ``COPY option_quotes`` for the new chains only (rows built with numpy,
   see ``pgcopy``).
3. Upsert ``chain_latest`` and ``underlyings``.

So a crash before commit writes nothing, and a replay after commit adds no
rows: at-least-once delivery becomes exactly-once storage.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import psycopg

from hftengine.storage.pgcopy import HEADER, TRAILER, Column, encode_rows, pg_date, pg_timestamp

log = logging.getLogger(__name__)

QUOTE_COLUMNS: tuple[Column, ...] = (
    Column("ts", "timestamptz"),
    Column("underlying", "text"),
    Column("expiry", "date"),
    Column("strike", "float8"),
    Column("option_type", "text"),
    Column("security_id", "int8"),
    Column("spot", "float8"),
    Column("last_price", "float8"),
    Column("bid", "float8"),
    Column("ask", "float8"),
    Column("bid_qty", "int8"),
    Column("ask_qty", "int8"),
    Column("volume", "int8"),
    Column("oi", "int8"),
    Column("prev_oi", "int8"),
    Column("prev_close", "float8"),
    Column("avg_price", "float8"),
    Column("broker_iv", "float8", nullable=True),
    Column("iv", "float8", nullable=True),
    Column("delta", "float8", nullable=True),
    Column("gamma", "float8", nullable=True),
    Column("theta", "float8", nullable=True),
    Column("vega", "float8", nullable=True),
    Column("rho", "float8", nullable=True),
    Column("vanna", "float8", nullable=True),
    Column("charm", "float8", nullable=True),
    Column("gex", "float8", nullable=True),
    Column("buildup", "int2"),
)
_QUOTE_COPY = "COPY option_quotes ({}) FROM STDIN (FORMAT BINARY)".format(
    ", ".join(c.name for c in QUOTE_COLUMNS)
)

METRIC_COLUMNS = (
    "ts", "underlying", "expiry", "spot", "forward", "time_to_expiry", "pcr_oi", "pcr_volume", "pcr_doi",
    "max_pain", "total_gex", "gamma_flip", "call_wall", "put_wall", "atm_iv", "rr25", "bf25",
    "quality_flags", "conventions_version", "source", "lot_size", "oi_unit", "n_contracts",
    "received_ts", "enriched_ts",
)
_METRICS_INSERT = (
    "INSERT INTO chain_metrics ({cols}) SELECT {select} FROM unnest({params}) AS u({cols}) "
    "ON CONFLICT (underlying, expiry, ts) DO NOTHING RETURNING underlying, expiry, ts"
)
_METRIC_TYPES = (
    "timestamptz", "text", "date", "float8", "float8", "float8", "float8", "float8", "float8",
    "float8", "float8", "float8", "float8", "float8", "float8", "float8", "float8",
    "text", "text", "text", "int4", "text", "int4", "timestamptz", "timestamptz",
)


@dataclass(frozen=True)
class SinkResult:
    chains_in: int
    chains_written: int
    chains_duplicate: int
    quote_rows: int


class ChainStore(Protocol):
    def write(self, records: Sequence[dict[str, Any]]) -> SinkResult: ...


def _nullable(x: float | None) -> float | None:
    if x is None or not np.isfinite(x):
        return None
    return float(x)


def _quote_rows(rec: dict[str, Any]) -> tuple[bytes, int]:
    snap = rec["snapshot"]
    strikes = np.asarray(snap["strikes"], dtype=np.float64)
    parts: list[bytes] = []
    rows = 0
    for side, tag, an_key in (("ce", b"CE", "ce_analytics"), ("pe", b"PE", "pe_analytics")):
        legs = snap[side]
        an = rec[an_key]
        present = np.asarray(legs["present"], dtype=bool)
        n = int(present.sum())
        if n == 0:
            continue

        def col(d: dict[str, Any], name: str, dtype: type[np.generic], present: Any = present) -> Any:
            return np.asarray(d[name], dtype=dtype)[present]

        values: dict[str, Any] = {
            "ts": pg_timestamp(snap["exchange_ts"]),
            "underlying": snap["underlying"].encode(),
            "expiry": pg_date(snap["expiry"]),
            "strike": strikes[present],
            "option_type": tag,
            "security_id": col(legs, "security_id", np.int64),
            "spot": float(snap["spot"]),
            "last_price": col(legs, "last_price", np.float64),
            "bid": col(legs, "top_bid_price", np.float64),
            "ask": col(legs, "top_ask_price", np.float64),
            "bid_qty": col(legs, "top_bid_quantity", np.int64),
            "ask_qty": col(legs, "top_ask_quantity", np.int64),
            "volume": col(legs, "volume", np.int64),
            "oi": col(legs, "oi", np.int64),
            "prev_oi": col(legs, "previous_oi", np.int64),
            "prev_close": col(legs, "previous_close_price", np.float64),
            "avg_price": col(legs, "average_price", np.float64),
            "broker_iv": col(legs, "implied_volatility", np.float64),
            "iv": col(an, "iv", np.float64),
            "delta": col(an, "delta", np.float64),
            "gamma": col(an, "gamma", np.float64),
            "theta": col(an, "theta", np.float64),
            "vega": col(an, "vega", np.float64),
            "rho": col(an, "rho", np.float64),
            "vanna": col(an, "vanna", np.float64),
            "charm": col(an, "charm", np.float64),
            "gex": col(an, "gex", np.float64),
            "buildup": col(an, "buildup", np.int16),
        }
        parts.append(encode_rows(QUOTE_COLUMNS, values, n))
        rows += n
    return b"".join(parts), rows


class PostgresChainStore:
    """``ChainStore`` on PostgreSQL (with or without TimescaleDB)."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._dsn, autocommit=False)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def write(self, records: Sequence[dict[str, Any]]) -> SinkResult:
        if not records:
            return SinkResult(0, 0, 0, 0)
        # de-duplicate within the batch (same chain delivered twice in one batch)
        unique: dict[tuple[str, Any, datetime], dict[str, Any]] = {}
        for rec in records:
            s = rec["snapshot"]
            unique.setdefault((s["underlying"], s["expiry"], s["exchange_ts"]), rec)
        conn = self._connection()
        try:
            with conn.transaction(), conn.cursor() as cur:
                columns: list[list[Any]] = [[] for _ in METRIC_COLUMNS]
                for rec in unique.values():
                    for i, value in enumerate(_metric_row(rec)):
                        columns[i].append(value)
                params = ", ".join(f"%s::{t}[]" for t in _METRIC_TYPES)
                cur.execute(
                    _METRICS_INSERT.format(  # type: ignore[arg-type]
                        cols=", ".join(METRIC_COLUMNS),
                        select=", ".join(c + "::text[]" if c == "quality_flags" else c for c in METRIC_COLUMNS),
                        params=params,
                    ),
                    columns,
                )
                new_keys = {(u, e, ts) for u, e, ts in cur.fetchall()}
                quote_rows = 0
                if new_keys:
                    with cur.copy(_QUOTE_COPY) as copy:  # type: ignore[arg-type]
                        copy.write(HEADER)
                        for key, rec in unique.items():
                            if key in new_keys:
                                data, n = _quote_rows(rec)
                                if n:
                                    copy.write(data)
                                    quote_rows += n
                        copy.write(TRAILER)
                    latest: dict[tuple[str, Any], datetime] = {}
                    for u, e, ts in new_keys:
                        if (u, e) not in latest or ts > latest[(u, e)]:
                            latest[(u, e)] = ts
                    cur.executemany(
                        "INSERT INTO chain_latest (underlying, expiry, ts) VALUES (%s, %s, %s) "
                        "ON CONFLICT (underlying, expiry) DO UPDATE SET ts = EXCLUDED.ts "
                        "WHERE chain_latest.ts < EXCLUDED.ts",
                        [(u, e, ts) for (u, e), ts in latest.items()],
                    )
                    seen: dict[str, tuple[int, str, str, int]] = {}
                    for rec in unique.values():
                        s = rec["snapshot"]
                        seen[s["underlying"]] = (
                            s["underlying_security_id"], s["segment"], s.get("exchange", "NSE"), s["lot_size"],
                        )
                    cur.executemany(
                        "INSERT INTO underlyings (symbol, security_id, segment, exchange, lot_size) "
                        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (symbol) DO UPDATE SET "
                        "last_seen = now(), lot_size = EXCLUDED.lot_size",
                        [(sym, *vals) for sym, vals in sorted(seen.items())],
                    )
        except Exception:
            self.close()
            raise
        written = len(new_keys)
        return SinkResult(len(records), written, len(records) - written, quote_rows)

    def write_dead_letters(self, letters: Sequence[dict[str, Any]]) -> int:
        """Store dead letters (idempotent per source topic position)."""
        if not letters:
            return 0
        conn = self._connection()
        try:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO dead_letters (failed_ts, stage, error_type, reason, source_topic, "
                    "source_partition, source_offset, schema_id, underlying, key, value, dlq_partition, dlq_offset) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    [
                        (d["failed_ts"], d["stage"], d["error_type"], d["reason"], d.get("source_topic"),
                         d.get("source_partition"), d.get("source_offset"), d.get("schema_id"),
                         d.get("underlying"), d.get("key"), d.get("value"), d.get("dlq_partition"),
                         d.get("dlq_offset"))
                        for d in letters
                    ],
                )
        except Exception:
            self.close()
            raise
        return len(letters)


def _metric_row(rec: dict[str, Any]) -> tuple[Any, ...]:
    s = rec["snapshot"]
    n_contracts = int(np.count_nonzero(s["ce"]["present"]) + np.count_nonzero(s["pe"]["present"]))
    return (
        s["exchange_ts"], s["underlying"], s["expiry"], float(s["spot"]), _nullable(rec["forward"]),
        float(rec["time_to_expiry"]), _nullable(rec["pcr_oi"]), _nullable(rec["pcr_volume"]),
        _nullable(rec["pcr_doi"]), _nullable(rec["max_pain"]), _nullable(rec["total_gex"]),
        _nullable(rec["gamma_flip"]), _nullable(rec["call_wall"]), _nullable(rec["put_wall"]),
        _nullable(rec["atm_iv"]), _nullable(rec["rr25"]), _nullable(rec["bf25"]),
        "{" + ",".join('"' + f.replace('"', "") + '"' for f in rec["quality_flags"]) + "}",
        rec["conventions_version"], s["source"], int(s["lot_size"]), s["oi_unit"], n_contracts,
        s["received_ts"], rec["enriched_ts"],
    )
