"""Rollups of chain metrics and option quotes at 1 minute, 5 minutes, 1 hour and 1 day.

Every rollup row describes one bucket ``[ts, ts + width)`` of one key (a chain, or one contract)
with mergeable aggregates only, so a coarser level is computed exactly from the finer one:

``n_snapshots``  count of raw rows (merge: sum)
``first_ts``     earliest raw ts in the bucket (merge: min)
``last_ts``      latest raw ts in the bucket (merge: max)
``first``        the column's value at ``first_ts`` (merge: the one with the smallest ``first_ts``)
``last``         the column's value at ``last_ts``, NULL included (merge: largest ``last_ts``)
``min``/``max``  NULLs ignored (merge: min/max)

Buckets are aligned like TimescaleDB's ``time_bucket``: to 2000-01-03 00:00 UTC, so days are UTC
days (an NSE session, 03:45-10:00 UTC, lies inside one) and hours start at hh:30 IST.

TimescaleDB: the rollups are hierarchical continuous aggregates with real-time aggregation
(``sql/timescale/0004_rollups.sql``).  Plain PostgreSQL: they are tables that the sink fills in
the same transaction as the raw rows: per chain, ``rollup_watermarks.materialized_until`` (W) says
which buckets are stored (those ending at or before W).  When a chain's newest snapshot moves into
a later minute, the buckets it closed are computed from raw rows (1 m) or from the finer level
(5 m from 1 m, 1 h from 5 m, 1 d from 1 h); a late row below W recomputes its buckets.  Reads add
the open buckets (after W) from 1 m rows and raw rows: see ``history``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import psycopg
from psycopg import sql

from hftengine.storage.niceness import lower_backend_priority

log = logging.getLogger(__name__)

AggKind = Literal["first", "last", "min", "max"]

ORIGIN = datetime(2000, 1, 3, tzinfo=UTC)
LEVELS: dict[str, timedelta] = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
}
PARENT: dict[str, str] = {"5m": "1m", "1h": "5m", "1d": "1h"}
BOOKKEEPING = ("n_snapshots", "first_ts", "last_ts")


def floor_bucket(ts: datetime, level: str) -> datetime:
    """Start of the ``level`` bucket holding ``ts`` (timezone-aware, UTC)."""
    width = LEVELS[level]
    return ORIGIN + ((ts - ORIGIN) // width) * width


def ceil_bucket(ts: datetime, level: str) -> datetime:
    """Smallest bucket start ``>= ts``."""
    start = floor_bucket(ts, level)
    return start if start == ts else start + LEVELS[level]


@dataclass(frozen=True)
class RollupColumn:
    name: str
    kind: AggKind
    source: str
    sql_type: str
    doc: str = ""


@dataclass(frozen=True)
class RollupFamily:
    """The rollups of one raw table: ``<source>_1m``, ``_5m``, ``_1h``, ``_1d``."""

    source: str
    keys: tuple[str, ...]            # identity besides ts; the chain is always (underlying, expiry)
    key_types: tuple[str, ...]
    columns: tuple[RollupColumn, ...]
    retention: dict[str, str | None]  # per level, SQL interval text

    def table(self, level: str) -> str:
        return f"{self.source}_{level}"

    @property
    def extra_keys(self) -> tuple[str, ...]:
        return self.keys[2:]

    @property
    def column_names(self) -> tuple[str, ...]:
        return ("ts", *self.keys, *BOOKKEEPING, *(c.name for c in self.columns))

    @property
    def primary_key(self) -> tuple[str, ...]:
        return (*self.keys, "ts")


def _last(names: Iterable[tuple[str, str]], source_table: str) -> list[RollupColumn]:
    return [RollupColumn(n, "last", n, t, f"{source_table}.{n} at last_ts") for n, t in names]


F8 = "double precision"

CHAIN_METRICS = RollupFamily(
    source="chain_metrics",
    keys=("underlying", "expiry"),
    key_types=("text", "date"),
    columns=(
        RollupColumn("spot_open", "first", "spot", F8, "spot at first_ts"),
        RollupColumn("spot_high", "max", "spot", F8, "highest spot"),
        RollupColumn("spot_low", "min", "spot", F8, "lowest spot"),
        *_last([("spot", F8), ("forward", F8), ("time_to_expiry", F8), ("pcr_oi", F8)], "chain_metrics"),
        RollupColumn("pcr_oi_min", "min", "pcr_oi", F8, "lowest pcr_oi"),
        RollupColumn("pcr_oi_max", "max", "pcr_oi", F8, "highest pcr_oi"),
        *_last([("pcr_volume", F8), ("pcr_doi", F8), ("max_pain", F8), ("total_gex", F8)], "chain_metrics"),
        RollupColumn("total_gex_min", "min", "total_gex", F8, "lowest total_gex"),
        RollupColumn("total_gex_max", "max", "total_gex", F8, "highest total_gex"),
        *_last([("gamma_flip", F8), ("call_wall", F8), ("put_wall", F8), ("atm_iv", F8)], "chain_metrics"),
        RollupColumn("atm_iv_min", "min", "atm_iv", F8, "lowest atm_iv"),
        RollupColumn("atm_iv_max", "max", "atm_iv", F8, "highest atm_iv"),
        *_last([("rr25", F8), ("bf25", F8), ("lot_size", "integer"), ("n_contracts", "integer"),
                ("conventions_version", "text")], "chain_metrics"),
    ),
    retention={"1m": "400 days", "5m": "400 days", "1h": None, "1d": None},
)

OPTION_QUOTES = RollupFamily(
    source="option_quotes",
    keys=("underlying", "expiry", "strike", "option_type"),
    key_types=("text", "date", F8, "char(2)"),
    columns=(
        *_last([("security_id", "bigint"), ("spot", F8)], "option_quotes"),
        RollupColumn("last_price_open", "first", "last_price", F8, "last_price at first_ts"),
        RollupColumn("last_price_high", "max", "last_price", F8, "highest last_price"),
        RollupColumn("last_price_low", "min", "last_price", F8, "lowest last_price"),
        *_last([("last_price", F8), ("bid", F8), ("ask", F8), ("bid_qty", "bigint"), ("ask_qty", "bigint"),
                ("volume", "bigint")], "option_quotes"),
        RollupColumn("oi_open", "first", "oi", "bigint", "oi at first_ts"),
        *_last([("oi", "bigint"), ("prev_oi", "bigint"), ("prev_close", F8), ("avg_price", F8),
                ("broker_iv", F8), ("iv", F8)], "option_quotes"),
        RollupColumn("iv_min", "min", "iv", F8, "lowest iv"),
        RollupColumn("iv_max", "max", "iv", F8, "highest iv"),
        *_last([("delta", F8), ("gamma", F8), ("theta", F8), ("vega", F8), ("rho", F8), ("vanna", F8),
                ("charm", F8), ("gex", F8), ("buildup", "smallint")], "option_quotes"),
    ),
    retention={"1m": "90 days", "5m": "400 days", "1h": None, "1d": None},
)

FAMILIES: dict[str, RollupFamily] = {f.source: f for f in (CHAIN_METRICS, OPTION_QUOTES)}
ROLLUP_TABLES: tuple[str, ...] = tuple(f.table(level) for f in FAMILIES.values() for level in LEVELS)


# ----------------------------------------------------------------------------------- SQL builders
def bucket_expr(level: str, column: sql.Composable) -> sql.Composable:
    """``date_bin`` with TimescaleDB's default origin (identical to ``time_bucket(width, ts)``)."""
    seconds = int(LEVELS[level].total_seconds())
    return sql.SQL("date_bin({}, {}, {})").format(
        sql.Literal(timedelta(seconds=seconds)), column, sql.Literal(ORIGIN))


def aggregate_select(family: RollupFamily, level: str, alias: str, *, from_raw: bool) -> sql.Composed:
    """Select list computing ``level`` buckets from raw rows or from the finer rollup (alias ``alias``)."""
    a = sql.Identifier(alias)

    def col(name: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(a, sql.Identifier(name))

    items: list[sql.Composable] = [sql.SQL("{} AS ts").format(bucket_expr(level, col("ts")))]
    items += [col(k) for k in family.keys]
    if from_raw:
        items += [sql.SQL("count(*) AS n_snapshots"), sql.SQL("min({}) AS first_ts").format(col("ts")),
                  sql.SQL("max({}) AS last_ts").format(col("ts"))]
        order = col("ts")
    else:
        items += [sql.SQL("sum({})::bigint AS n_snapshots").format(col("n_snapshots")),
                  sql.SQL("min({}) AS first_ts").format(col("first_ts")),
                  sql.SQL("max({}) AS last_ts").format(col("last_ts"))]
        order = col("last_ts")  # finer buckets do not overlap: last_ts and first_ts order them alike
    # Every ordered aggregate uses the same ORDER BY, so PostgreSQL sorts the input once
    # (presorted aggregation) instead of once per column: "first" is the last element of the
    # descending array.
    for c in family.columns:
        src = col(c.source if from_raw else c.name)
        name = sql.Identifier(c.name)
        if c.kind == "first":
            items.append(sql.SQL("(array_agg({} ORDER BY {} DESC))[count(*)::int] AS {}").format(src, order, name))
        elif c.kind == "last":
            items.append(sql.SQL("(array_agg({} ORDER BY {} DESC))[1] AS {}").format(src, order, name))
        else:
            items.append(sql.SQL("{}({}) AS {}").format(sql.SQL(c.kind), src, name))
    return sql.SQL(", ").join(items)


def group_by(family: RollupFamily, alias: str) -> sql.Composed:
    a = sql.Identifier(alias)
    return sql.SQL("GROUP BY 1, {}").format(
        sql.SQL(", ").join(sql.SQL("{}.{}").format(a, sql.Identifier(k)) for k in family.keys))


AGG_TABLE = "hft_rollup_agg"


def _source_table(family: RollupFamily, level: str) -> str:
    """What ``level`` buckets are computed from: raw rows for 1 m, else the next finer rollup."""
    return family.source if level == "1m" else family.table(PARENT[level])


def _aggregate_sql(family: RollupFamily, level: str, *, group_first: bool = False) -> sql.Composed:
    """Step 1 of a materialization: ``CREATE TEMP TABLE`` of the ``level`` buckets' order-free
    aggregates (count, first/last ts, min, max) for the chain ranges given as four arrays, all
    inside ``[%s, %s)``. The source is read by time once for every chain of the call (BRIN on ts
    for raw rows, which have no per-row btree), joined to the chains by hash, and grouped by hash:
    nothing is sorted.

    ``group_first``: group every row of the window first and keep the planned chains' buckets
    after (parameters: the window, then the four arrays). The same buckets, as ranges are aligned
    to the level's buckets, without a join per raw row: cheaper when the plan covers most chains
    with rows in the window, as the scheduled refresh's does (a minute of 180 chains, 2.7 M quote
    rows, whole materialization: 7.4-7.7 s instead of 8.6-8.8 s, identical rows); a sink batch's
    few chains keep the join, which drops the other chains' rows before grouping."""
    from_raw = level == "1m"
    source = _source_table(family, level)
    a = sql.Identifier("s")

    def col(name: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(a, sql.Identifier(name))

    items: list[sql.Composable] = [sql.SQL("{} AS ts").format(bucket_expr(level, col("ts")))]
    items += [col(k) for k in family.keys]
    if from_raw:
        items += [sql.SQL("count(*) AS n_snapshots"), sql.SQL("min({}) AS first_ts").format(col("ts")),
                  sql.SQL("max({}) AS last_ts").format(col("ts"))]
    else:
        items += [sql.SQL("sum({})::bigint AS n_snapshots").format(col("n_snapshots")),
                  sql.SQL("min({}) AS first_ts").format(col("first_ts")),
                  sql.SQL("max({}) AS last_ts").format(col("last_ts"))]
    for c in family.columns:
        if c.kind in ("min", "max"):
            items.append(sql.SQL("{}({}) AS {}").format(
                sql.SQL(c.kind), col(c.source if from_raw else c.name), sql.Identifier(c.name)))
    ranges = "unnest(%s::text[], %s::date[], %s::timestamptz[], %s::timestamptz[]) AS r(u, e, lo, hi)"
    if group_first:
        template = (
            "CREATE TEMP TABLE {agg} ON COMMIT DROP AS SELECT g.* FROM ("
            "SELECT {select} FROM {source} s WHERE s.ts >= %s AND s.ts < %s GROUP BY 1, {keys}) g "
            f"JOIN {ranges} ON g.underlying = r.u AND g.expiry = r.e AND g.ts >= r.lo AND g.ts < r.hi")
    else:
        template = (
            f"CREATE TEMP TABLE {{agg}} ON COMMIT DROP AS SELECT {{select}} FROM {{source}} s JOIN {ranges} "
            "ON s.underlying = r.u AND s.expiry = r.e AND s.ts >= r.lo AND s.ts < r.hi "
            "WHERE s.ts >= %s AND s.ts < %s GROUP BY 1, {keys}")
    return sql.SQL(template).format(
        agg=sql.Identifier(AGG_TABLE),
        select=sql.SQL(", ").join(items),
        source=sql.Identifier(source),
        keys=sql.SQL(", ").join(col(k) for k in family.keys),
    )


def _pick_sql(family: RollupFamily, level: str) -> sql.Composed:
    """Step 2: upsert the buckets of :data:`AGG_TABLE`, taking the "first" and "last" columns from
    the source rows at each bucket's ``first_ts`` / ``last_ts`` (raw rows: ``ts``; a finer rollup:
    its own ``first_ts`` / ``last_ts``, as finer buckets do not overlap). The source window
    ``[%s, %s)`` is scanned once more and probed against a hash of the buckets; only two rows per
    bucket match, so the final grouping is small. Same semantics as :func:`aggregate_select`
    ("last" keeps NULLs: exactly one row matches).

    From raw rows the scan is also limited to ``ts <= %s OR ts >= %s``: the latest ``first_ts``
    and the earliest ``last_ts`` of the buckets (parameters after the window). Every row the pick
    needs lies there, and since a chain snapshot's legs share one ts, that is the window's first
    and last seconds, which the BRIN index on ts finds without reading the rest: a minute of 180
    chains (5.6 M quote rows) picked in 0.9 s instead of 7.4 s, the whole refresh 4.8 s instead of
    11.5 s. A bucket whose contract first traded mid-window widens the edges, never the result."""
    from_raw = level == "1m"
    source = _source_table(family, level)
    first_at = sql.SQL("q.ts = a.first_ts" if from_raw else "q.first_ts = a.first_ts")
    last_at = sql.SQL("q.ts = a.last_ts" if from_raw else "q.last_ts = a.last_ts")
    kept = ["ts", *family.keys, *BOOKKEEPING, *(c.name for c in family.columns if c.kind in ("min", "max"))]
    columns = {c.name: c for c in family.columns}
    items: list[sql.Composable] = []
    for name in family.column_names:
        column = columns.get(name)
        if column is None or column.kind in ("min", "max"):
            items.append(sql.SQL("a.{}").format(sql.Identifier(name)))
        else:
            items.append(sql.SQL("max(q.{}) FILTER (WHERE {}) AS {}").format(
                sql.Identifier(column.source if from_raw else column.name),
                first_at if column.kind == "first" else last_at, sql.Identifier(name)))
    names = family.column_names
    updates = [n for n in names if n not in family.primary_key]
    return sql.SQL(
        "INSERT INTO {table} ({cols}) SELECT {select} FROM {agg} a JOIN {source} q ON {keys} "
        "AND ({first_at} OR {last_at}) WHERE q.ts >= %s AND q.ts < %s {edges} GROUP BY {kept} "
        "ON CONFLICT ({pk}) DO UPDATE SET {set}"
    ).format(
        edges=sql.SQL("AND (q.ts <= %s OR q.ts >= %s)" if from_raw else ""),
        table=sql.Identifier(family.table(level)),
        cols=sql.SQL(", ").join(map(sql.Identifier, names)),
        select=sql.SQL(", ").join(items),
        agg=sql.Identifier(AGG_TABLE),
        source=sql.Identifier(source),
        keys=sql.SQL(" AND ").join(sql.SQL("q.{0} = a.{0}").format(sql.Identifier(k)) for k in family.keys),
        first_at=first_at,
        last_at=last_at,
        kept=sql.SQL(", ").join(sql.SQL("a.{}").format(sql.Identifier(n)) for n in kept),
        pk=sql.SQL(", ").join(map(sql.Identifier, family.primary_key)),
        set=sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n)) for n in updates),
    )


# ------------------------------------------------------------------- materialization planning
Chain = tuple[str, date]
Range = tuple[datetime, datetime]


def merge_ranges(ranges: Iterable[Range]) -> list[Range]:
    out: list[Range] = []
    for lo, hi in sorted(r for r in ranges if r[0] < r[1]):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def plan_materialization(
    old: datetime | None, new: datetime, late_minutes: Iterable[datetime], first_ts: datetime | None
) -> dict[str, list[Range]]:
    """Bucket ranges to (re)compute per level when a chain's watermark moves from ``old`` to ``new``.

    ``late_minutes`` are 1 m bucket starts that received rows although they were already closed
    (below ``old``); ``first_ts`` is the chain's earliest raw ts (used when ``old`` is None).
    """
    start = old if old is not None else (floor_bucket(first_ts, "1m") if first_ts is not None else new)
    late = sorted(set(late_minutes))
    plan: dict[str, list[Range]] = {"1m": merge_ranges([(start, new), *((b, b + LEVELS["1m"]) for b in late)])}
    for level, width in LEVELS.items():
        if level == "1m":
            continue
        ranges: list[Range] = [(floor_bucket(start, level), floor_bucket(new, level))]
        for b in late:
            lb = floor_bucket(b, level)
            if lb + width <= new:
                ranges.append((lb, lb + width))
        plan[level] = merge_ranges(ranges)
    return plan


#: Longest time span one materialization statement reads (keeps each hash table in memory).
MAX_SPAN: dict[str, timedelta] = {"1m": timedelta(hours=1), "5m": timedelta(hours=6), "1h": timedelta(days=2),
                                  "1d": timedelta(days=62)}


def materialize(
    cur: psycopg.Cursor[Any], plans: dict[Chain, dict[str, list[Range]]], *, group_first: bool = False,
    kept: Mapping[Chain, Iterable[datetime]] | None = None,
) -> int:
    """Run the plans (every family, finest level first) in the caller's transaction; rows written.

    Per level and family, the chains' ranges are merged into time windows (at most ``MAX_SPAN``
    long) and each window is read once for all chains with a range in it. ``group_first``: see
    :func:`_aggregate_sql`. ``kept``: per chain, ``option_quotes_1m`` buckets whose stored rows are
    already exact (verified provisional rows, see ``provisional``): not recomputed.
    """
    written = 0
    cur.execute(sql.SQL("SELECT {}").format(sql.SQL(", ").join(
        sql.SQL("current_setting({})").format(sql.Literal(name)) for name in MATERIALIZE_SETTINGS)))
    saved = cur.fetchone()
    assert saved is not None
    _set_local(cur, list(MATERIALIZE_SETTINGS.values()))
    for level in LEVELS:
        ranges = [(c, lo, hi) for c, plan in sorted(plans.items()) for lo, hi in plan.get(level, [])]
        for family in FAMILIES.values():
            todo = ranges
            if kept and level == "1m" and family is OPTION_QUOTES:
                todo = [(c, lo, hi) for c, lo0, hi0 in ranges
                        for lo, hi in subtract_minutes(lo0, hi0, kept.get(c, ()))]
            if todo:
                written += _materialize_ranges(cur, family, level, todo, group_first=group_first)
    _set_local(cur, saved)  # (on error the rollback undoes the local settings too)
    return written


def subtract_minutes(lo: datetime, hi: datetime, minutes: Iterable[datetime]) -> list[Range]:
    """``[lo, hi)`` without the 1 minute buckets starting at ``minutes``."""
    out: list[Range] = []
    start = lo
    for m in sorted(m for m in set(minutes) if lo <= m < hi):
        if m > start:
            out.append((start, m))
        start = max(start, m + LEVELS["1m"])
    if start < hi:
        out.append((start, hi))
    return out


def _materialize_ranges(
    cur: psycopg.Cursor[Any], family: RollupFamily, level: str, ranges: list[tuple[Chain, datetime, datetime]],
    *, group_first: bool,
) -> int:
    written = 0
    windows: list[Range] = []
    for glo, ghi in merge_ranges((lo, hi) for _, lo, hi in ranges):
        while glo < ghi:
            step = min(ghi, floor_bucket(glo + MAX_SPAN[level], level))
            if step <= glo:
                step = ghi
            windows.append((glo, step))
            glo = step
    for wlo, whi in windows:
        inside = [(c, max(lo, wlo), min(hi, whi)) for c, lo, hi in ranges if lo < whi and hi > wlo]
        arrays = ([c[0] for c, _, _ in inside], [c[1] for c, _, _ in inside],
                  [lo for _, lo, _ in inside], [hi for _, _, hi in inside])
        params = (wlo, whi, *arrays) if group_first else (*arrays, wlo, whi)
        cur.execute(_aggregate_sql(family, level, group_first=group_first), params)
        cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(AGG_TABLE)))  # true sizes for step 2
        pick_params: tuple[Any, ...] = (wlo, whi)
        if level == "1m":
            cur.execute(sql.SQL("SELECT max(first_ts), min(last_ts) FROM {}").format(sql.Identifier(AGG_TABLE)))
            edges = cur.fetchone()
            pick_params += (edges[0], edges[1]) if edges else (None, None)
        cur.execute(_pick_sql(family, level), pick_params)
        written += max(cur.rowcount, 0)
        cur.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(AGG_TABLE)))
    return written


def verified_minutes(cur: psycopg.Cursor[Any], ranges: Mapping[Chain, list[Range]]) -> dict[Chain, set[datetime]]:
    """Minutes inside ``ranges`` whose provisional ``option_quotes_1m`` rows are exact: their
    ``rollup_provisional`` entry counts as many snapshots as ``chain_metrics`` holds for the chain
    and minute (see ``provisional``)."""
    flat = [(c, lo, hi) for c, rs in sorted(ranges.items()) for lo, hi in rs]
    if not flat:
        return {}
    cur.execute(
        "SELECT p.underlying, p.expiry, p.ts FROM rollup_provisional p "
        "JOIN unnest(%s::text[], %s::date[], %s::timestamptz[], %s::timestamptz[]) AS r(u, e, lo, hi) "
        "ON p.underlying = r.u AND p.expiry = r.e AND p.ts >= r.lo AND p.ts < r.hi "
        "WHERE p.n_snapshots = (SELECT count(*) FROM chain_metrics m WHERE m.underlying = p.underlying "
        "AND m.expiry = p.expiry AND m.ts >= p.ts AND m.ts < p.ts + interval '1 minute')",
        ([c[0] for c, _, _ in flat], [c[1] for c, _, _ in flat], [lo for _, lo, _ in flat],
         [hi for _, _, hi in flat]))
    out: dict[Chain, set[datetime]] = {}
    for u, e, ts in cur.fetchall():
        out.setdefault((u, e), set()).add(ts)
    return out


#: Planner settings for a materialization, local to its transaction and restored afterwards.
#: PostgreSQL multiplies the selectivities of the key columns and of the chains' time ranges as if
#: they were independent and expects a few thousand rows where a minute of quotes holds millions,
#: so left alone it sorts them: for step 1 a disk-spilling sort feeding a grouped aggregate instead
#: of a hash aggregate, for step 2 a sort of the whole source window for a merge join, or a nested
#: loop over it. A minute of 180 chains (4.2 M quote rows) took 8.8 s that way against 5.1 s hashed.
#: No parallel workers either: a refresh runs beside the pipeline it serves, and two more backends
#: scanning would take every core of a small machine from the workers for the refresh's duration.
#: JIT off: the same inflated estimates make PostgreSQL compile every statement (0.7 s per
#: statement, more than the pick itself now takes). work_mem: the hash tables of a minute of the
#: whole market (about 70 000 contracts) fit in memory instead of spilling in 20-odd batches.
MATERIALIZE_SETTINGS: dict[str, str] = {
    "enable_sort": "off", "enable_mergejoin": "off", "enable_nestloop": "off", "max_parallel_workers_per_gather": "0",
    "jit": "off", "work_mem": "64MB",
}


def _set_local(cur: psycopg.Cursor[Any], values: Sequence[str]) -> None:
    cur.execute(sql.SQL("SELECT {}").format(sql.SQL(", ").join(
        sql.SQL("set_config({}, %s, true)").format(sql.Literal(name)) for name in MATERIALIZE_SETTINGS)),
        list(values))


#: A deferred-mode sink does not wait for a watermark row that another transaction holds (the
#: scheduled refresh, for the whole of its materialization) when the chain's newest snapshot was
#: stored within this interval and none of the sink's rows reach back before that snapshot's minute:
#: such rows lie in the chain's open minute, which no refresh materializes (it closes a chain up to
#: its newest minute, or to the end of the day only once it has been idle for ``idle`` >= 10 min).
BUSY_CHAIN_RECENT = timedelta(minutes=1)


def lock_watermarks(
    cur: psycopg.Cursor[Any], chains: Sequence[Chain], pending: Mapping[Chain, Sequence[datetime]] | None = None,
    unlocked: set[Chain] | None = None,
) -> dict[Chain, datetime | None]:
    """Create missing watermark rows and lock them (sorted, so concurrent writers never deadlock).

    ``pending`` (a deferred-mode sink: the snapshot times it is about to write, per chain): chains
    whose rows another transaction holds are not waited for when none of the pending rows can be
    late for them (see :data:`BUSY_CHAIN_RECENT`); their committed watermark is returned, unlocked,
    and the sink folds nothing into their rollups; they are added to ``unlocked`` when given. If
    any chain must be waited for, every lock is given up and all are taken in order, as without
    ``pending``.
    """
    keys = sorted(set(chains))
    us, es = [k[0] for k in keys], [k[1] for k in keys]
    cur.execute(
        "INSERT INTO rollup_watermarks (underlying, expiry) SELECT * FROM unnest(%s::text[], %s::date[]) "
        "ORDER BY 1, 2 ON CONFLICT DO NOTHING", (us, es))
    select = (
        "SELECT w.underlying, w.expiry, w.materialized_until FROM rollup_watermarks w "
        "JOIN unnest(%s::text[], %s::date[]) AS k(u, e) ON w.underlying = k.u AND w.expiry = k.e "
        "ORDER BY 1, 2 FOR UPDATE OF w"
    )
    if pending is None:
        cur.execute(select, (us, es))
        return {(u, e): w for u, e, w in cur.fetchall()}
    cur.execute("SAVEPOINT hft_watermarks")
    cur.execute(select + " SKIP LOCKED", (us, es))
    marks: dict[Chain, datetime | None] = {(u, e): w for u, e, w in cur.fetchall()}
    busy = [k for k in keys if k not in marks]
    if busy:
        cur.execute(
            "SELECT k.u, k.e, w.materialized_until, l.ts, m.stored_ts > clock_timestamp() - %s "
            "FROM unnest(%s::text[], %s::date[]) AS k(u, e) "
            "JOIN rollup_watermarks w ON w.underlying = k.u AND w.expiry = k.e "
            "LEFT JOIN chain_latest l ON l.underlying = k.u AND l.expiry = k.e "
            "LEFT JOIN chain_metrics m ON m.underlying = l.underlying AND m.expiry = l.expiry AND m.ts = l.ts",
            (BUSY_CHAIN_RECENT, [k[0] for k in busy], [k[1] for k in busy]))
        for u, e, mark, latest, recent in cur.fetchall():
            times = pending.get((u, e), ())
            first = min(times, default=None)
            if first is None or latest is None or not recent or first < floor_bucket(latest, "1m") or (
                    mark is not None and first < mark):
                cur.execute("ROLLBACK TO SAVEPOINT hft_watermarks")  # hold nothing while waiting: no deadlock
                cur.execute(select, (us, es))
                marks = {(u2, e2): w for u2, e2, w in cur.fetchall()}
                busy = []
                break
            marks[(u, e)] = mark
    if unlocked is not None:
        unlocked.update(busy)
    cur.execute("RELEASE SAVEPOINT hft_watermarks")
    return marks


def first_snapshot_ts(cur: psycopg.Cursor[Any], chains: Sequence[Chain]) -> dict[Chain, datetime | None]:
    if not chains:
        return {}
    cur.execute(
        "SELECT k.u, k.e, (SELECT min(m.ts) FROM chain_metrics m WHERE m.underlying = k.u AND m.expiry = k.e) "
        "FROM unnest(%s::text[], %s::date[]) AS k(u, e)",
        ([c[0] for c in chains], [c[1] for c in chains]))
    return {(u, e): ts for u, e, ts in cur.fetchall()}


def advance(
    cur: psycopg.Cursor[Any],
    watermarks: dict[Chain, datetime | None],
    new_rows: dict[Chain, list[datetime]],
    *,
    close_until: dict[Chain, datetime] | None = None,
    move: bool = True,
    group_first: bool = False,
) -> int:
    """Materialize what ``new_rows`` (raw ts per chain, just written) closed or invalidated.

    The watermark of a chain becomes the start of the minute of its newest row (that minute is
    still open), or ``close_until[chain]`` when given (used by ``refresh_rollups``).  With
    ``move=False`` watermarks stay put and only late rows (below the watermark) are folded in.
    Watermark rows must be locked by ``lock_watermarks`` in the same transaction.
    ``group_first``: see :func:`_aggregate_sql` (for a call that covers most chains).
    """
    plans: dict[Chain, dict[str, list[Range]]] = {}
    new_w: dict[Chain, datetime] = {}
    chains = sorted(set(new_rows) | set(close_until or {}))
    unknown = [c for c in chains if watermarks.get(c) is None]
    firsts = first_snapshot_ts(cur, unknown)
    for chain in chains:
        old = watermarks.get(chain)
        times = new_rows.get(chain, [])
        target = (close_until or {}).get(chain)
        if target is None:
            target = floor_bucket(max(times), "1m") if times and move else old
        if target is None:
            continue
        if old is not None and target < old:
            target = old
        late = [floor_bucket(t, "1m") for t in times if old is not None and t < old]
        if old is not None and target == old and not late:
            continue
        if old is None and firsts.get(chain) is None:
            continue
        plans[chain] = plan_materialization(old, target, late, firsts.get(chain))
        if target != old:
            new_w[chain] = target
    if not plans:
        return 0
    kept = verified_minutes(cur, {c: p["1m"] for c, p in plans.items() if p.get("1m")})
    written = materialize(cur, plans, group_first=group_first, kept=kept)
    if new_w:
        keys = sorted(new_w)
        arrays = ([k[0] for k in keys], [k[1] for k in keys], [new_w[k] for k in keys])
        cur.execute(
            "UPDATE rollup_watermarks w SET materialized_until = k.w, updated_at = now() "
            "FROM unnest(%s::text[], %s::date[], %s::timestamptz[]) AS k(u, e, w) "
            "WHERE w.underlying = k.u AND w.expiry = k.e", arrays)
        cur.execute(  # entries below the watermark have served their purpose
            "DELETE FROM rollup_provisional p USING unnest(%s::text[], %s::date[], %s::timestamptz[]) AS k(u, e, w) "
            "WHERE p.underlying = k.u AND p.expiry = k.e AND p.ts < k.w", arrays)
    return written


# --------------------------------------------------------------------------------- refreshing
@dataclass(frozen=True)
class RefreshReport:
    layout: str
    chains_refreshed: int = 0
    rows_written: int = 0


def storage_layout(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT hft_storage_layout()").fetchone()
    return str(row[0]) if row else "partitioned"


def refresh_rollups(
    dsn: str, *, idle: timedelta = timedelta(minutes=10), now: datetime | None = None, nice: int = 0
) -> RefreshReport:
    """Bring every rollup up to date (the scheduled job; the sink's inline mode needs it only for idle chains).

    Plain PostgreSQL: every chain's closed buckets are materialized (up to the minute of its newest
    snapshot); chains whose newest snapshot was stored more than ``idle`` before ``now`` (wall
    clock) are closed up to the end of that snapshot's day (a snapshot arriving later is handled as
    late data).  TimescaleDB: refreshes every continuous aggregate, finest first, over its whole
    range.  ``nice`` > 0 runs the refresh's backend at that lower CPU priority when the database
    is on this machine (see ``niceness``).
    """
    now = now or datetime.now(UTC)
    with psycopg.connect(dsn, autocommit=True) as conn:
        lower_backend_priority(conn, nice)
        layout = storage_layout(conn)
        if layout == "timescaledb":
            for level in LEVELS:
                for family in FAMILIES.values():
                    conn.execute(sql.SQL("CALL refresh_continuous_aggregate({}, NULL, NULL)").format(
                        sql.Literal(family.table(level))))
            return RefreshReport(layout)
        rows = conn.execute(
            """SELECT l.underlying, l.expiry, l.ts, m.stored_ts <= %s FROM chain_latest l
               JOIN chain_metrics m ON m.underlying = l.underlying AND m.expiry = l.expiry AND m.ts = l.ts
               LEFT JOIN rollup_watermarks w ON w.underlying = l.underlying AND w.expiry = l.expiry
               WHERE w.materialized_until IS NULL OR w.materialized_until < date_bin('1 minute', l.ts, %s)
                  OR (m.stored_ts <= %s AND w.materialized_until < date_bin('1 day', l.ts, %s) + interval '1 day')
               ORDER BY 1, 2""",
            (now - idle, ORIGIN, now - idle, ORIGIN),
        ).fetchall()
        targets = {(u, e): floor_bucket(latest, "1d") + LEVELS["1d"] if is_idle else floor_bucket(latest, "1m")
                   for u, e, latest, is_idle in rows}
        if not targets:
            return RefreshReport(layout)
        # all chains in one transaction: each time window of raw rows is read once for all of them
        with conn.transaction(), conn.cursor() as cur:
            marks = lock_watermarks(cur, sorted(targets))
            close = {c: t for c, t in targets.items() if (m := marks.get(c)) is None or m < t}
            written = advance(cur, marks, {}, close_until=close, group_first=True) if close else 0
        return RefreshReport(layout, len(close), written)
