"""The idempotent chain sink: enriched chains → PostgreSQL/TimescaleDB.

One transaction per batch:

1. Plain PostgreSQL layout only: lock the chains' ``rollup_watermarks`` rows
   (sorted, so concurrent writers of one chain serialise and never deadlock).
   With deferred rollups, a chain whose row the scheduled refresh holds is not
   waited for when every row of the batch lies in its open minute (see
   ``rollups.lock_watermarks``): a refresh takes seconds at high rates.
2. ``INSERT INTO chain_metrics ... ON CONFLICT DO NOTHING RETURNING`` the keys
   ``(underlying, expiry, ts)`` that are new.  A replayed snapshot conflicts
   and is skipped; a concurrent writer of the same snapshot waits on the
   primary key and then skips it.
3. Binary ``COPY option_quotes`` for the new chains only (rows built with
   numpy, see ``pgcopy``).  ``option_quotes`` has no unique index: this step
   is what keeps (underlying, expiry, ts, strike, option_type) unique, because
   a snapshot's quotes are written exactly when its ``chain_metrics`` row is
   (``gex_profile`` is a view over these rows).
4. Upsert ``chain_latest``, ``underlyings`` and (when a chain's strikes
   change) ``instruments``.
5. Plain PostgreSQL layout only: materialize the rollup buckets these rows
   closed or invalidated (``rollups.advance``).

So a crash before commit writes nothing, and a replay after commit adds no
rows: at-least-once delivery becomes exactly-once storage.  On the plain
layout the day partitions a batch needs are created first, in their own short
transaction, the first time the store sees that day.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from types import TracebackType
from typing import Any, Protocol

import numpy as np
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from hftengine.storage import rollups
from hftengine.storage.pgcopy import HEADER, PG_EPOCH, TRAILER, Column, encode_rows, pg_date, pg_timestamp
from hftengine.storage.provisional import ChainMinutes, MinuteRollups, upsert_sql

log = logging.getLogger(__name__)

#: ``instruments`` columns as the sink stages them (see ``PostgresChainStore._write_instruments``).
INSTRUMENT_COLUMNS: tuple[Column, ...] = (
    Column("underlying", "text"),
    Column("expiry", "date"),
    Column("strike", "float8"),
    Column("option_type", "text"),
    Column("security_id", "int8"),
    Column("lot_size", "int4"),
    Column("first_seen", "timestamptz"),
)

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
#: Tables ``write_rows`` accepts (written by the stateful analytics and the API).
WRITABLE_TABLES = ("cumulative_oi", "velocity", "levels", "pattern_events", "flow_events", "api_usage")

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

    def write_dead_letters(self, letters: Sequence[dict[str, Any]]) -> int: ...

    def write_rows(self, table: str, rows: Sequence[Mapping[str, Any]]) -> int: ...


def _nullable(x: float | None) -> float | None:
    if x is None or not np.isfinite(x):
        return None
    return float(x)


_LEG_SOURCES: tuple[tuple[str, str, type[np.generic]], ...] = (
    ("security_id", "security_id", np.int64), ("last_price", "last_price", np.float64),
    ("bid", "top_bid_price", np.float64), ("ask", "top_ask_price", np.float64),
    ("bid_qty", "top_bid_quantity", np.int64), ("ask_qty", "top_ask_quantity", np.int64),
    ("volume", "volume", np.int64), ("oi", "oi", np.int64), ("prev_oi", "previous_oi", np.int64),
    ("prev_close", "previous_close_price", np.float64), ("avg_price", "average_price", np.float64),
    ("broker_iv", "implied_volatility", np.float64),
)
_ANALYTIC_SOURCES: tuple[tuple[str, type[np.generic]], ...] = (
    ("iv", np.float64), ("delta", np.float64), ("gamma", np.float64), ("theta", np.float64), ("vega", np.float64),
    ("rho", np.float64), ("vanna", np.float64), ("charm", np.float64), ("gex", np.float64), ("buildup", np.int16),
)


def _encode_chains(records: Sequence[dict[str, Any]]) -> tuple[list[bytes], int]:
    """COPY tuples for ``option_quotes`` (present legs) of many chains.

    Columns are gathered with numpy across all chains whose underlying names have the same
    byte length (a text column has one width per ``encode_rows`` call) and encoded in one
    pass, so the cost per chain is small.
    (``gex_profile`` is a view over these rows: nothing else is written per strike.)
    """
    by_width: dict[int, list[tuple[bytes, dict[str, Any]]]] = {}
    for rec in records:
        name = rec["snapshot"]["underlying"].encode()
        by_width.setdefault(len(name), []).append((name, rec))
    quotes: list[bytes] = []
    n_quotes = 0
    for width, recs in by_width.items():
        q: dict[str, list[Any]] = {name: [] for name in ("ts", "underlying", "expiry", "strike", "option_type", "spot")}
        q.update({name: [] for name, _, _ in _LEG_SOURCES})
        q.update({name: [] for name, _ in _ANALYTIC_SOURCES})
        for underlying, rec in recs:
            snap = rec["snapshot"]
            strikes = np.asarray(snap["strikes"], dtype=np.float64)
            ts, expiry, spot = pg_timestamp(snap["exchange_ts"]), pg_date(snap["expiry"]), float(snap["spot"])
            for side, tag, an in (("ce", b"CE", rec["ce_analytics"]), ("pe", b"PE", rec["pe_analytics"])):
                legs = snap[side]
                present = np.asarray(legs["present"], dtype=bool)
                n = int(present.sum())
                if n == 0:
                    continue
                every = n == present.shape[0]  # the common case: no masking copies
                q["ts"].append(np.full(n, ts, dtype=np.int64))
                q["underlying"].append(np.full(n, underlying, dtype=f"S{width}"))
                q["expiry"].append(np.full(n, expiry, dtype=np.int32))
                q["strike"].append(strikes if every else strikes[present])
                q["option_type"].append(np.full(n, tag, dtype="S2"))
                q["spot"].append(np.full(n, spot))
                for name, source, dtype in _LEG_SOURCES:
                    v = np.asarray(legs[source], dtype=dtype)
                    q[name].append(v if every else v[present])
                for name, dtype in _ANALYTIC_SOURCES:
                    v = np.asarray(an[name], dtype=dtype)
                    q[name].append(v if every else v[present])
                n_quotes += n
        if q["ts"]:
            values: dict[str, Any] = {k: np.concatenate(v) for k, v in q.items()}
            quotes.append(encode_rows(QUOTE_COLUMNS, values, int(values["ts"].shape[0])))
    return quotes, n_quotes


def _leg_matrix(rec: dict[str, Any]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Presence and the raw ``option_quotes`` values of a chain's legs as (2, strikes) arrays, CE then PE."""
    snap = rec["snapshot"]
    legs = (snap["ce"], snap["pe"])
    analytics = (rec["ce_analytics"], rec["pe_analytics"])
    present = np.stack([np.asarray(leg["present"], dtype=bool) for leg in legs])
    values: dict[str, np.ndarray] = {"spot": np.full(present.shape, float(snap["spot"]))}
    for name, source, dtype in _LEG_SOURCES:
        values[name] = np.stack([np.asarray(leg[source], dtype=dtype) for leg in legs])
    for name, dtype in _ANALYTIC_SOURCES:
        values[name] = np.stack([np.asarray(an[name], dtype=dtype) for an in analytics])
    return present, values


def _is_missing_partition(exc: BaseException) -> bool:
    return isinstance(exc, psycopg.errors.CheckViolation) and "no partition" in str(exc)


class PostgresChainStore:
    """``ChainStore`` on PostgreSQL (with or without TimescaleDB).

    Not thread-safe: one store per thread (the Faust worker runs it on one DB thread).
    """

    def __init__(self, dsn: str, *, partition_days_ahead: int = 2, rollup_mode: str = "inline") -> None:
        """``rollup_mode`` (plain PostgreSQL layout): ``inline`` materializes closed rollup buckets in each
        write transaction; ``deferred`` leaves that to a scheduled ``rollups.refresh_rollups`` (late
        rows below the watermark are still folded in at once) for a higher write rate."""
        if rollup_mode not in ("inline", "deferred"):
            raise ValueError("rollup_mode must be 'inline' or 'deferred'")
        self._rollups_inline = rollup_mode == "inline"
        self._dsn = dsn
        self._conn: psycopg.Connection[Any] | None = None
        self._layout: str | None = None
        self._days_ready: set[date] = set()
        self._days_ahead = partition_days_ahead
        self._strike_sets: dict[tuple[str, date], int] = {}
        self._table_columns: dict[str, dict[str, tuple[str, int]]] = {}
        self._minutes = MinuteRollups(c.name for c in QUOTE_COLUMNS if c.nullable)

    def __enter__(self) -> PostgresChainStore:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._dsn, autocommit=False)
            with self._conn.transaction():
                self._layout = rollups.storage_layout(self._conn)
        return self._conn

    @property
    def layout(self) -> str:
        """``timescaledb`` or ``partitioned`` (as recorded by the migration runner)."""
        self._connection()
        assert self._layout is not None
        return self._layout

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ------------------------------------------------------------------------- partitions
    def _ensure_days(self, conn: psycopg.Connection[Any], days: set[date]) -> None:
        """Plain layout: create the partitions of days this store has not written yet (own transaction)."""
        if self._layout != "partitioned":
            return
        missing = sorted(days - self._days_ready)
        if not missing:
            return
        with conn.transaction():
            for day in missing:
                lo = datetime.combine(day, time(), UTC)
                created = conn.execute("SELECT hft_ensure_partitions(%s, %s)",
                                       (lo, lo + timedelta(days=1 + self._days_ahead))).fetchall()
                if created:
                    log.info("created partitions %s", ", ".join(str(r[0]) for r in created))
        self._days_ready.update(day + timedelta(days=i) for day in missing for i in range(self._days_ahead + 1))

    def retrying_missing_partition(self, run: Any, days: set[date]) -> Any:
        """Run ``run(conn)``; if a partition was dropped behind our back (retention), recreate it once."""
        conn = self._connection()
        try:
            self._ensure_days(conn, days)
            return run(conn)
        except Exception as exc:
            self.close()
            if not _is_missing_partition(exc):
                raise
            self._days_ready.clear()
            conn = self._connection()
            try:
                self._ensure_days(conn, days)
                return run(conn)
            except Exception:
                self.close()
                raise

    # ------------------------------------------------------------------------------ chains
    def write(self, records: Sequence[dict[str, Any]]) -> SinkResult:
        if not records:
            return SinkResult(0, 0, 0, 0)
        # de-duplicate within the batch (same chain delivered twice in one batch)
        unique: dict[tuple[str, Any, datetime], dict[str, Any]] = {}
        for rec in records:
            s = rec["snapshot"]
            unique.setdefault((s["underlying"], s["expiry"], s["exchange_ts"]), rec)
        days = {ts.astimezone(UTC).date() for _, _, ts in unique}
        new_keys, quote_rows = self.retrying_missing_partition(lambda conn: self._write_chains(conn, unique), days)
        written = len(new_keys)
        return SinkResult(len(records), written, len(records) - written, quote_rows)

    def _write_chains(
        self, conn: psycopg.Connection[Any], unique: dict[tuple[str, Any, datetime], dict[str, Any]]
    ) -> tuple[set[tuple[str, date, datetime]], int]:
        partitioned = self._layout == "partitioned"
        chains = sorted({(u, e) for u, e, _ in unique})
        try:
            with conn.transaction(), conn.cursor() as cur:
                watermarks: dict[tuple[str, date], datetime | None] = {}
                unlocked: set[tuple[str, date]] = set()
                if partitioned:
                    pending: dict[tuple[str, date], list[datetime]] | None = None
                    if not self._rollups_inline:  # no wait on a chain the refresh holds unless a row may be late for it
                        pending = {}
                        for u, e, ts in unique:
                            pending.setdefault((u, e), []).append(ts)
                    watermarks = rollups.lock_watermarks(cur, chains, pending, unlocked)
                columns: list[list[Any]] = [[] for _ in METRIC_COLUMNS]
                for rec in unique.values():
                    for i, value in enumerate(_metric_row(rec)):
                        columns[i].append(value)
                params = ", ".join(f"%s::{t}[]" for t in _METRIC_TYPES)
                cur.execute(
                    _METRICS_INSERT.format(
                        cols=", ".join(METRIC_COLUMNS),
                        select=", ".join(c + "::text[]" if c == "quality_flags" else c for c in METRIC_COLUMNS),
                        params=params,
                    ),
                    columns,
                )
                new_keys = {(u, e, ts) for u, e, ts in cur.fetchall()}
                if not new_keys:
                    return new_keys, 0
                fresh = [rec for key, rec in unique.items() if key in new_keys]
                quote_data, quote_rows = _encode_chains(fresh)
                if quote_rows:
                    with cur.copy(_QUOTE_COPY) as copy:
                        copy.write(HEADER)
                        for chunk in quote_data:
                            copy.write(chunk)
                        copy.write(TRAILER)
                latest: dict[tuple[str, Any], datetime] = {}
                for u, e, ts in new_keys:
                    if (u, e) not in latest or ts > latest[(u, e)]:
                        latest[(u, e)] = ts
                cur.executemany(
                    "INSERT INTO chain_latest (underlying, expiry, ts) VALUES (%s, %s, %s) "
                    "ON CONFLICT (underlying, expiry) DO UPDATE SET ts = EXCLUDED.ts "
                    "WHERE chain_latest.ts < EXCLUDED.ts",
                    sorted((u, e, ts) for (u, e), ts in latest.items()),
                )
                seen: dict[str, tuple[int, str, str, int]] = {}
                for rec in fresh:
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
                instrument_sets = self._write_instruments(cur, fresh)
                minutes: dict[tuple[str, date], ChainMinutes] = {}
                flushed: dict[tuple[str, date], list[int]] = {}
                if partitioned:
                    minutes, flushed = self._write_provisional(cur, fresh, watermarks, unlocked)
                    by_chain: dict[tuple[str, date], list[datetime]] = {}
                    for u, e, ts in new_keys:
                        by_chain.setdefault((u, e), []).append(ts)
                    rollups.advance(cur, watermarks, by_chain, move=self._rollups_inline)
        except BaseException:
            if partitioned:  # accumulators may hold snapshots the rollback took back
                self._minutes.abort(chains)
            raise
        self._strike_sets.update(instrument_sets)
        if partitioned:
            self._minutes.commit(minutes, flushed, datetime.now(UTC))
        return new_keys, quote_rows

    def _write_provisional(
        self, cur: psycopg.Cursor[Any], fresh: list[dict[str, Any]],
        watermarks: Mapping[tuple[str, date], datetime | None], unlocked: set[tuple[str, date]],
    ) -> tuple[dict[tuple[str, date], ChainMinutes], dict[tuple[str, date], list[int]]]:
        """Fold the new snapshots into the chains' minute accumulators (in place: the caller
        aborts them when the transaction fails) and write the minutes a chain has left as
        provisional ``option_quotes_1m`` rows with their ``rollup_provisional`` entries (see
        ``provisional``). Only for chains whose watermark row this transaction holds, and minutes
        at or after the watermark: a minute below it is materialized already, and one a running
        refresh may be closing is never touched. Returns the accumulators folded into and, per
        chain, the minutes to drop from them."""
        work = self._minutes.begin({(r["snapshot"]["underlying"], r["snapshot"]["expiry"]) for r in fresh})
        for rec in sorted(fresh, key=lambda r: r["snapshot"]["exchange_ts"]):
            s = rec["snapshot"]
            chain = (s["underlying"], s["expiry"])
            self._minutes.fold(work, chain, s["exchange_ts"], np.asarray(s["strikes"], dtype=np.float64),
                               *_leg_matrix(rec))
        parts: list[bytes] = []
        entries: list[tuple[str, date, datetime, int]] = []
        dropped: dict[tuple[str, date], list[int]] = {}
        for chain in sorted(work):
            if chain in unlocked:
                continue  # the refresh holds it: keep the minutes for a later batch
            mark = watermarks.get(chain)
            for minute, acc in self._minutes.due(work, chain):
                dropped.setdefault(chain, []).append(minute)
                start = PG_EPOCH + timedelta(microseconds=minute)
                if not acc.valid or (mark is not None and start < mark):
                    continue
                data, n = self._minutes.encode(chain, minute, acc)
                if n:
                    parts.append(data)
                    entries.append((chain[0], chain[1], start, acc.snapshots))
        if parts:
            stage = _create_stage(cur, "option_quotes_1m")
            cols = sql.SQL(", ").join(sql.Identifier(c.name) for c in self._minutes.columns)
            with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(stage, cols)) as copy:
                copy.write(HEADER + b"".join(parts) + TRAILER)
            cur.execute(upsert_sql(stage))
            cur.execute(
                "INSERT INTO rollup_provisional (underlying, expiry, ts, n_snapshots) "
                "SELECT * FROM unnest(%s::text[], %s::date[], %s::timestamptz[], %s::bigint[]) "
                "ON CONFLICT (underlying, expiry, ts) DO UPDATE SET n_snapshots = EXCLUDED.n_snapshots, "
                "written_at = now()", tuple(list(x) for x in zip(*entries, strict=True)))
        return work, dropped

    def _write_instruments(self, cur: psycopg.Cursor[Any], fresh: list[dict[str, Any]]) -> dict[tuple[str, date], int]:
        """Upsert ``instruments`` for chains whose listed contracts changed since this store last looked.

        The listed legs go in with one binary COPY into a temporary stage; per contract the newest
        snapshot's security id and lot size win and ``first_seen`` is the earliest listing (in the
        table and in the batch). Upserted in key order, so concurrent sinks lock rows in one order.
        """
        changed: dict[tuple[str, date], int] = {}
        parts: list[bytes] = []
        for rec in sorted(fresh, key=lambda r: r["snapshot"]["exchange_ts"]):
            s = rec["snapshot"]
            chain = (s["underlying"], s["expiry"])
            strikes = np.asarray(s["strikes"], dtype=np.float64)
            ids = [np.asarray(s[side]["security_id"], dtype=np.int64) for side in ("ce", "pe")]
            present = [np.asarray(s[side]["present"], dtype=bool) for side in ("ce", "pe")]
            lot_size = int(s["lot_size"])
            signature = hash((strikes.tobytes(), *(i.tobytes() for i in ids), *(p.tobytes() for p in present),
                              lot_size))
            if self._strike_sets.get(chain) == signature or changed.get(chain) == signature:
                continue
            changed[chain] = signature  # the newest snapshot's listing is what this store remembers
            common = {"underlying": chain[0].encode(), "expiry": pg_date(chain[1]), "lot_size": lot_size,
                      "first_seen": pg_timestamp(s["exchange_ts"])}
            for tag, sid, mask in zip((b"CE", b"PE"), ids, present, strict=True):
                if mask.any():
                    parts.append(encode_rows(INSTRUMENT_COLUMNS, {
                        **common, "strike": strikes[mask], "option_type": tag, "security_id": sid[mask],
                    }, int(mask.sum())))
        if parts:
            stage = _create_stage(cur, "instruments")
            columns = sql.SQL(", ").join(sql.Identifier(c.name) for c in INSTRUMENT_COLUMNS)
            with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(stage, columns)) as copy:
                copy.write(HEADER + b"".join(parts) + TRAILER)
            cur.execute(sql.SQL(
                "INSERT INTO instruments ({cols}) "
                "SELECT DISTINCT ON (underlying, expiry, strike, option_type) underlying, expiry, strike, option_type, "
                "security_id, lot_size, min(first_seen) OVER (PARTITION BY underlying, expiry, strike, option_type) "
                "FROM {stage} ORDER BY underlying, expiry, strike, option_type, first_seen DESC "
                "ON CONFLICT (underlying, expiry, strike, option_type) DO UPDATE SET "
                "security_id = EXCLUDED.security_id, lot_size = EXCLUDED.lot_size, "
                "first_seen = least(instruments.first_seen, EXCLUDED.first_seen) "
                "WHERE (instruments.security_id, instruments.lot_size) IS DISTINCT FROM "
                "(EXCLUDED.security_id, EXCLUDED.lot_size) OR EXCLUDED.first_seen < instruments.first_seen"
            ).format(cols=columns, stage=stage))
        return changed

    # ---------------------------------------------------------------------- other tables
    def write_rows(self, table: str, rows: Sequence[Mapping[str, Any]]) -> int:
        """Idempotent bulk write into one of ``WRITABLE_TABLES``; returns the rows that were new.

        Rows are mappings from column name to value (``ts`` timezone-aware; jsonb columns take
        dicts/lists).  Columns left out take their defaults.  Rows go through a binary COPY into a
        temporary staging table, then ``INSERT ... ON CONFLICT DO NOTHING`` on the primary key, so a
        replayed batch adds nothing.
        """
        if table not in WRITABLE_TABLES:
            raise ValueError(f"write_rows accepts {', '.join(WRITABLE_TABLES)}; not {table!r}")
        if not rows:
            return 0
        names = sorted({k for row in rows for k in row})
        for row in rows:
            ts = row.get("ts")
            if not isinstance(ts, datetime) or ts.tzinfo is None:
                raise ValueError(f"every {table} row needs a timezone-aware datetime 'ts'")
        days = {row["ts"].astimezone(UTC).date() for row in rows}

        def run(conn: psycopg.Connection[Any]) -> int:
            types = self._columns_of(conn, table)
            unknown = [n for n in names if n not in types]
            if unknown:
                raise ValueError(f"{table} has no column(s) {', '.join(unknown)}; columns: {', '.join(types)}")
            cols = sql.SQL(", ").join(map(sql.Identifier, names))
            with conn.transaction(), conn.cursor() as cur:
                stage = _create_stage(cur, table)
                with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(stage, cols)) as copy:
                    copy.set_types([types[n][1] for n in names])
                    for row in rows:
                        copy.write_row([_adapt(row.get(n), types[n][0]) for n in names])
                cur.execute(sql.SQL("INSERT INTO {t} ({c}) SELECT {c} FROM {s} ON CONFLICT DO NOTHING").format(
                    t=sql.Identifier(table), c=cols, s=stage))
                return max(cur.rowcount, 0)

        result: int = self.retrying_missing_partition(run, days)
        return result

    def _columns_of(self, conn: psycopg.Connection[Any], table: str) -> dict[str, tuple[str, int]]:
        """Column name → (type name, type oid for the binary COPY; text for char/varchar)."""
        if table not in self._table_columns:
            with conn.transaction():
                found = conn.execute(
                    "SELECT attname, format_type(atttypid, NULL), "
                    "CASE WHEN atttypid IN ('bpchar'::regtype, 'varchar'::regtype) THEN 'text'::regtype::oid "
                    "ELSE atttypid END FROM pg_attribute "
                    "WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                    (table,),
                ).fetchall()
            self._table_columns[table] = {str(n): (str(t), int(oid)) for n, t, oid in found}
        return self._table_columns[table]

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


def _create_stage(cur: psycopg.Cursor[Any], table: str) -> sql.Identifier:
    """The temporary ``stage_<table>`` (shaped like ``table``, emptied at commit) for a binary COPY
    followed by an ``INSERT ... SELECT`` into ``table``; created once per connection."""
    stage = sql.Identifier(f"stage_{table}")
    cur.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
                .format(stage, sql.Identifier(table)))
    return stage


def _adapt(value: Any, pg_type: str) -> Any:
    """Python value for a binary COPY field: JSON columns take Jsonb, NaN floats become NULL."""
    if value is None:
        return None
    if pg_type in ("jsonb", "json"):
        return value if isinstance(value, Jsonb) else Jsonb(value)
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


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
