"""History queries: any chain metric or contract field over a time range, raw or bucketed.

``bucket`` is ``raw`` (every snapshot; per-contract raw ranges are capped at
``MAX_RAW_CONTRACT_SPAN``), ``1m``, ``5m``, ``1h``, ``1d`` (a rollup) or ``auto``:
the coarsest bucket whose nominal number of buckets in ``[start, end)`` is at least
``min_points`` (``raw`` when even 1 m buckets are too few).  Bucketed rows carry ``ts`` = bucket
start; a bucketed query returns every bucket that overlaps ``[start, end)``.

The SQL is built here (pure functions, ``psycopg.sql``) and run by ``queries.Queries``:

* TimescaleDB: the rollup is a continuous aggregate with real-time aggregation; read it.
* Plain PostgreSQL: buckets that end at or before the chain's watermark are read from the rollup
  table; the open ones are merged on the fly from 1 m rows (up to the watermark) and raw rows
  (after it), with the same aggregates, so both layouts give the same answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal

from psycopg import sql

from hftengine.storage.rollups import (
    BOOKKEEPING,
    CHAIN_METRICS,
    LEVELS,
    OPTION_QUOTES,
    ORIGIN,
    RollupFamily,
    aggregate_select,
    ceil_bucket,
    floor_bucket,
    group_by,
)

Bucket = Literal["raw", "1m", "5m", "1h", "1d"]
BUCKETS: tuple[str, ...] = ("raw", "1m", "5m", "1h", "1d")
BUCKET_CHOICES: tuple[str, ...] = (*BUCKETS, "auto")
DEFAULT_MIN_POINTS = 100
#: Longest range of a raw per-contract history: option_quotes has no per-contract index (it is read
#: by time), so long per-contract ranges are served from the rollups (``auto`` picks one).
MAX_RAW_CONTRACT_SPAN = timedelta(hours=2)

#: Raw chain_metrics columns a history query may return (besides ts, underlying, expiry).
METRIC_RAW_FIELDS: tuple[str, ...] = (
    "spot", "forward", "time_to_expiry", "pcr_oi", "pcr_volume", "pcr_doi", "max_pain", "total_gex", "gamma_flip",
    "call_wall", "put_wall", "atm_iv", "rr25", "bf25", "quality_flags", "conventions_version", "source",
    "lot_size", "oi_unit", "n_contracts",
)
#: Raw option_quotes columns a contract history may return (besides ts, option_type).
CONTRACT_RAW_FIELDS: tuple[str, ...] = (
    "security_id", "spot", "last_price", "bid", "ask", "bid_qty", "ask_qty", "volume", "oi", "prev_oi",
    "prev_close", "avg_price", "broker_iv", "iv", "delta", "gamma", "theta", "vega", "rho", "vanna", "charm",
    "gex", "buildup",
)
METRIC_ROLLUP_FIELDS: tuple[str, ...] = (*BOOKKEEPING, *(c.name for c in CHAIN_METRICS.columns))
CONTRACT_ROLLUP_FIELDS: tuple[str, ...] = (*BOOKKEEPING, *(c.name for c in OPTION_QUOTES.columns))

Kind = Literal["metrics", "contract"]
_FAMILY: dict[str, RollupFamily] = {"metrics": CHAIN_METRICS, "contract": OPTION_QUOTES}
_RAW_FIELDS: dict[str, tuple[str, ...]] = {"metrics": METRIC_RAW_FIELDS, "contract": CONTRACT_RAW_FIELDS}
_ROLLUP_FIELDS: dict[str, tuple[str, ...]] = {"metrics": METRIC_ROLLUP_FIELDS, "contract": CONTRACT_ROLLUP_FIELDS}
_DEFAULT_ROLLUP_FIELDS: dict[str, tuple[str, ...]] = {
    "metrics": ("n_snapshots", *(c.name for c in CHAIN_METRICS.columns)),
    "contract": ("n_snapshots", "last_price_open", "last_price_high", "last_price_low", "last_price", "bid", "ask",
                 "volume", "oi", "iv", "delta", "gamma", "theta", "vega", "gex"),
}


class FieldError(ValueError):
    """A requested field or bucket is not available; the message lists what is."""


def available_fields(kind: Kind, bucket: str) -> tuple[str, ...]:
    return _RAW_FIELDS[kind] if bucket == "raw" else _ROLLUP_FIELDS[kind]


def parse_fields(kind: Kind, bucket: str, fields: str | None) -> tuple[str, ...]:
    """Comma-separated field names → validated tuple (default: every field, or a useful subset)."""
    allowed = available_fields(kind, bucket)
    if not fields:
        return allowed if bucket == "raw" else _DEFAULT_ROLLUP_FIELDS[kind]
    names = tuple(dict.fromkeys(f.strip() for f in fields.split(",") if f.strip()))
    unknown = [f for f in names if f not in allowed]
    if unknown:
        where = "raw rows" if bucket == "raw" else f"{bucket} buckets"
        raise FieldError(f"unknown field(s) for {where}: {', '.join(unknown)}; available: {', '.join(allowed)}")
    if not names:
        raise FieldError("fields is empty")
    return names


def choose_bucket(
    bucket: str, start: datetime, end: datetime, *, kind: Kind, fields: str | None = None,
    min_points: int = DEFAULT_MIN_POINTS,
) -> str:
    """Resolve ``auto``: the coarsest bucket with ≥ ``min_points`` buckets in range that has the fields."""
    if bucket not in BUCKET_CHOICES:
        raise FieldError(f"bucket must be one of {', '.join(BUCKET_CHOICES)}; not {bucket!r}")
    span = end - start
    raw_allowed = kind != "contract" or span <= MAX_RAW_CONTRACT_SPAN
    if bucket == "raw" and not raw_allowed:
        parse_fields(kind, bucket, fields)  # an unknown field is reported first
        raise FieldError(
            f"raw contract history is limited to {_span_text(MAX_RAW_CONTRACT_SPAN)} per request "
            f"(asked for {_span_text(span)}); use bucket=1m, 5m, 1h, 1d or auto for longer ranges")
    if bucket != "auto":
        return bucket
    names = [f.strip() for f in (fields or "").split(",") if f.strip()]
    usable = [b for b in BUCKETS if all(n in available_fields(kind, b) for n in names)]
    if not usable:
        raise FieldError(f"no bucket has all of: {', '.join(names)}")
    for b in reversed(BUCKETS):
        if b in usable and b != "raw" and span / LEVELS[b] >= min_points:
            return b
    if "raw" in usable and raw_allowed:
        return "raw"
    if usable == ["raw"]:
        raise FieldError(
            f"fields {', '.join(names)} exist only in raw rows, and raw contract history is limited to "
            f"{_span_text(MAX_RAW_CONTRACT_SPAN)} per request (asked for {_span_text(span)})")
    return "1m"


def _span_text(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    return f"{seconds / 60:g} min"


@dataclass(frozen=True)
class HistoryQuery:
    """One history request, resolved (``bucket`` is never ``auto`` here)."""

    kind: Kind
    underlying: str
    expiry: date | None
    start: datetime
    end: datetime
    bucket: str
    fields: tuple[str, ...]
    limit: int
    strike: float | None = None
    option_type: str | None = None

    @property
    def family(self) -> RollupFamily:
        return _FAMILY[self.kind]

    @property
    def row_keys(self) -> tuple[str, ...]:
        return ("ts", "underlying", "expiry") if self.kind == "metrics" else ("ts", "option_type")

    def _key_filter(self, alias: str, *, chain_only: bool = False) -> tuple[sql.Composable, dict[str, Any]]:
        """``alias.underlying = ... AND ...`` for the request's keys (only the chain's if ``chain_only``)."""
        values: dict[str, Any] = {"underlying": self.underlying, "expiry": self.expiry}
        if not chain_only:
            values.update(strike=self.strike, option_type=self.option_type)
        params = {k: v for k, v in values.items() if v is not None}
        conds = [sql.SQL("{}.{} = %({})s").format(sql.Identifier(alias), sql.Identifier(k), sql.SQL(k))
                 for k in params]
        return sql.SQL(" AND ").join(conds), params

    def _contract_filter(self, alias: str) -> sql.Composable:
        """`` AND alias.strike = ... AND alias.option_type = ...`` (empty for chain metrics)."""
        names = [n for n in ("strike", "option_type") if getattr(self, n) is not None]
        return sql.SQL("").join(sql.SQL(" AND {}.{} = %({})s").format(
            sql.Identifier(alias), sql.Identifier(n), sql.SQL(n)) for n in names)

    def _order(self) -> sql.Composable:
        return sql.SQL("ORDER BY ts, expiry") if self.kind == "metrics" else sql.SQL("ORDER BY ts, option_type")

    def _out_columns(self, alias: str | None = None) -> sql.Composable:
        names = (*self.row_keys, *(f for f in self.fields if f not in self.row_keys))
        if alias is None:
            return sql.SQL(", ").join(map(sql.Identifier, names))
        return sql.SQL(", ").join(sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(n)) for n in names)

    def build(self, layout: str) -> tuple[sql.Composed, dict[str, Any]]:
        if self.bucket == "raw":
            return self._raw()
        if layout == "timescaledb":
            return self._continuous_aggregate()
        return self._materialized_plus_open()

    # ------------------------------------------------------------------------------ raw rows
    def _raw(self) -> tuple[sql.Composed, dict[str, Any]]:
        where, params = self._key_filter("s")
        params.update(start=self.start, end=self.end, limit=self.limit)
        query = sql.SQL("SELECT {cols} FROM {table} s WHERE {where} AND s.ts >= %(start)s AND s.ts < %(end)s "
                        "{order} LIMIT %(limit)s").format(
            cols=self._out_columns("s"), table=sql.Identifier(self.family.source), where=where,
            order=self._order())
        return query, params

    def _bucket_range(self) -> dict[str, Any]:
        return {"start": floor_bucket(self.start, self.bucket), "end": self.end,
                "hi": ceil_bucket(self.end, self.bucket), "limit": self.limit}

    # ------------------------------------------------------------------------- TimescaleDB
    def _continuous_aggregate(self) -> tuple[sql.Composed, dict[str, Any]]:
        where, params = self._key_filter("r")
        params.update(self._bucket_range())
        query = sql.SQL("SELECT {cols} FROM {table} r WHERE {where} AND r.ts >= %(start)s AND r.ts < %(end)s "
                        "{order} LIMIT %(limit)s").format(
            cols=self._out_columns("r"), table=sql.Identifier(self.family.table(self.bucket)), where=where,
            order=self._order())
        return query, params

    # ---------------------------------------------------------------------- plain PostgreSQL
    def _materialized_plus_open(self) -> tuple[sql.Composed, dict[str, Any]]:
        family, level = self.family, self.bucket
        width = sql.Literal(LEVELS[level])
        needed = tuple(c for c in family.columns if c.name in self.fields)
        subset = RollupFamily(family.source, family.keys, family.key_types, needed, family.retention)
        rollup_cols = ("ts", *family.keys, *BOOKKEEPING, *(c.name for c in needed))
        chain_filter, params = self._key_filter("l", chain_only=True)
        _, key_params = self._key_filter("l")
        params.update(key_params)
        params.update(self._bucket_range())
        params["origin"] = ORIGIN

        def join(alias: str) -> sql.Composable:
            a = sql.Identifier(alias)
            return sql.SQL("{0}.underlying = c.underlying AND {0}.expiry = c.expiry{1}").format(
                a, self._contract_filter(alias))

        def cols(alias: str) -> sql.Composable:
            return sql.SQL(", ").join(sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(n))
                                      for n in rollup_cols)

        # open buckets: closed 1 m buckets up to the watermark, then raw rows after it
        open_parts: list[sql.Composable] = []
        if level != "1m":
            open_parts.append(sql.SQL(
                "SELECT {cols} FROM c JOIN {t1m} m ON {join} "
                "WHERE m.ts >= greatest(date_bin({width}, c.w, %(origin)s), %(start)s) "
                "AND m.ts < least(coalesce(c.w, '-infinity'), %(hi)s)").format(
                cols=cols("m"), t1m=sql.Identifier(family.table("1m")), join=join("m"), width=width))
        # raw rows are read by time (BRIN): the scalar lower bound lets the scan and the partition
        # pruning use it; the per-chain bound is applied in the join
        open_parts.append(sql.SQL(
            "SELECT {select} FROM c JOIN {raw} q ON {join} "
            "WHERE q.ts >= greatest((SELECT min(coalesce(c0.w, '-infinity')) FROM c c0), %(start)s) "
            "AND q.ts >= greatest(coalesce(c.w, '-infinity'), %(start)s) AND q.ts < %(hi)s {group}").format(
            select=aggregate_select(subset, "1m", "q", from_raw=True), raw=sql.Identifier(family.source),
            join=join("q"), group=group_by(family, "q")))
        query = sql.SQL(
            "WITH c AS (SELECT l.underlying, l.expiry, w.materialized_until AS w FROM chain_latest l "
            "LEFT JOIN rollup_watermarks w ON w.underlying = l.underlying AND w.expiry = l.expiry WHERE {chain}) "
            "SELECT {out} FROM ("
            "SELECT {cols_r} FROM c JOIN {table} r ON {join_r} "
            "WHERE r.ts >= %(start)s AND r.ts < %(end)s AND r.ts + {width} <= coalesce(c.w, '-infinity') "
            "UNION ALL "
            "SELECT {merge} FROM ({open_parts}) p {group_p}"
            ") x {order} LIMIT %(limit)s").format(
            chain=chain_filter, out=self._out_columns(), cols_r=cols("r"), table=sql.Identifier(family.table(level)),
            join_r=join("r"), width=width, merge=aggregate_select(subset, level, "p", from_raw=False),
            open_parts=sql.SQL(" UNION ALL ").join(open_parts), group_p=group_by(family, "p"),
            order=self._order())
        return query, params
