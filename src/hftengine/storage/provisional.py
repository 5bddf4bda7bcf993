"""Provisional ``option_quotes_1m`` rows built in the sink's memory, verified by count.

Materializing the 1 minute rollup of option quotes from raw rows is the one expensive step of a
rollup refresh: a minute of the whole market is millions of raw rows, and the scheduled refresh
(plain PostgreSQL layout) took about 10 s of a core for it at 100 000 contracts/s, during which
the workers were short of CPU and freshness fell behind. The sink has every one of those rows in
memory anyway, so it keeps one accumulator per chain and minute (count, first/last ts, the values
at them, min/max: the aggregates of ``rollups.OPTION_QUOTES``), folding in exactly the snapshots
its transaction inserted. When a chain's batch reaches a later minute, the minutes it left are
written as ``option_quotes_1m`` rows together with a ``rollup_provisional`` entry
``(underlying, expiry, ts, n_snapshots)``, in the same transaction as the raw rows and without
moving the chain's watermark.

Whoever materializes the minute later (the scheduled refresh, or the inline sink) skips it when
the entry's ``n_snapshots`` equals the number of ``chain_metrics`` rows of that chain and minute
(the primary key index counts them), and computes it from raw rows as before otherwise. The
count is what makes this safe: a snapshot is folded only by the writer whose transaction inserted
it, and only once that transaction committed, so the entry matches the count only when its writer
saw every snapshot of the minute (a quote row is written exactly when its snapshot's
``chain_metrics`` row is). Anything else, such as a rebalance that moved the chain between
workers mid-minute, a late snapshot, a crash, an accumulator evicted or a strike grid that changed
within the minute, leaves a mismatch or no entry, and the minute is computed from raw rows.
Provisional rows lie at or after the chain's watermark, where reads do not use 1 minute rows
(``history`` builds open buckets from raw rows), so a row that is later recomputed is never read.

Aggregates follow PostgreSQL exactly: NULL (a NaN sent to a nullable column) is ignored by min
and max; a NaN stored in a column that is not nullable is a value, the largest of all, so max
returns it and min returns it only when every value is NaN.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray
from psycopg import sql

from hftengine.storage.pgcopy import Column, encode_rows, pg_date, pg_timestamp
from hftengine.storage.rollups import OPTION_QUOTES, floor_bucket

Chain = tuple[str, date]
MINUTE_US = 60_000_000
_KINDS = {"double precision": "float8", "bigint": "int8", "smallint": "int2", "integer": "int4"}
_INT_DTYPES: dict[str, type[np.signedinteger[Any]]] = {"int8": np.int64, "int4": np.int32, "int2": np.int16}
_FIRST_UNSET = np.iinfo(np.int64).max
_LAST_UNSET = np.iinfo(np.int64).min


def rollup_columns(nullable_sources: Iterable[str]) -> tuple[Column, ...]:
    """``option_quotes_1m`` columns as the sink stages them; a column is nullable when its raw source is."""
    nullable = set(nullable_sources)
    return (
        Column("ts", "timestamptz"), Column("underlying", "text"), Column("expiry", "date"),
        Column("strike", "float8"), Column("option_type", "text"), Column("n_snapshots", "int8"),
        Column("first_ts", "timestamptz"), Column("last_ts", "timestamptz"),
        *(Column(c.name, _KINDS[c.sql_type], nullable=c.source in nullable) for c in OPTION_QUOTES.columns),
    )


@dataclass
class MinuteAccumulator:
    """The ``option_quotes_1m`` aggregates of one chain and minute; arrays are (2, strikes): CE, PE."""

    strikes: NDArray[np.float64]
    count: NDArray[np.int64]
    first_ts: NDArray[np.int64]
    last_ts: NDArray[np.int64]
    values: dict[str, NDArray[Any]]
    snapshots: int = 0
    valid: bool = True  # False once the strike grid changed within the minute: written by nobody


@dataclass
class ChainMinutes:
    """The open accumulators of one chain (usually one minute, two around a minute's turn)."""

    minutes: dict[int, MinuteAccumulator] = field(default_factory=dict)
    touched: datetime | None = None


class MinuteRollups:
    """Per chain and minute accumulators of ``option_quotes_1m`` (one sink store's; not thread-safe).

    ``begin`` hands out the accumulators of a transaction's chains; ``fold`` folds snapshots into
    them in place, ``due`` gives the minutes to write, and ``commit`` drops the written minutes
    once the transaction committed. A transaction that fails calls ``abort``, which forgets its
    chains' accumulators altogether: they hold snapshots that were rolled back, and a minute
    without an entry is computed from raw rows (copying every accumulator per transaction
    instead, to keep them, cost ~4 % of a worker's CPU).
    """

    def __init__(self, nullable_sources: Iterable[str], *, idle: timedelta = timedelta(minutes=15)) -> None:
        self.nullable = frozenset(nullable_sources)
        self.columns = rollup_columns(self.nullable)
        self.idle = idle
        self._chains: dict[Chain, ChainMinutes] = {}

    def __len__(self) -> int:
        return sum(len(c.minutes) for c in self._chains.values())

    def begin(self, chains: Iterable[Chain]) -> dict[Chain, ChainMinutes]:
        """The held accumulators of ``chains`` (created empty where there are none), to fold into."""
        return {chain: self._chains.setdefault(chain, ChainMinutes()) for chain in chains}

    def abort(self, chains: Iterable[Chain]) -> None:
        """Forget the accumulators of a failed transaction's chains (their minutes then come from raw rows)."""
        for chain in chains:
            self._chains.pop(chain, None)

    def fold(self, work: dict[Chain, ChainMinutes], chain: Chain, ts: datetime, strikes: NDArray[np.float64],
             present: NDArray[np.bool_], values: Mapping[str, NDArray[Any]]) -> None:
        """Fold one snapshot: ``present`` and every ``values[source]`` are (2, strikes), CE then PE,
        holding what the raw rows hold (``values`` has every raw source of ``OPTION_QUOTES``)."""
        t = pg_timestamp(ts)
        minute = pg_timestamp(floor_bucket(ts, "1m"))
        chain_minutes = work[chain]
        acc = chain_minutes.minutes.get(minute)
        if acc is None:
            acc = chain_minutes.minutes[minute] = self._empty(strikes)
        elif acc.strikes.shape != strikes.shape or not np.array_equal(acc.strikes, strikes):
            acc.valid = False
        acc.snapshots += 1
        if not acc.valid:
            return
        before = acc.count == 0
        acc.count += present
        is_first = present & (t < acc.first_ts)
        is_last = present & (t > acc.last_ts)
        acc.first_ts[is_first] = t
        acc.last_ts[is_last] = t
        for c in OPTION_QUOTES.columns:
            v = values[c.source]
            out = acc.values[c.name]
            if c.kind == "first":
                np.copyto(out, v, where=is_first)
            elif c.kind == "last":
                np.copyto(out, v, where=is_last)
            elif c.kind == "min":  # NaN is PostgreSQL's largest float, and a NULL (nullable) is ignored
                np.copyto(out, np.fmin(out, v), where=present)
            elif c.source in self.nullable:
                np.copyto(out, np.fmax(out, v), where=present)
            else:
                np.copyto(out, np.where(before, v, np.maximum(out, v)), where=present)

    def _empty(self, strikes: NDArray[np.float64]) -> MinuteAccumulator:
        shape = (2, strikes.shape[0])
        values: dict[str, NDArray[Any]] = {}
        for col in self.columns[8:]:
            if col.kind == "float8":
                values[col.name] = np.full(shape, np.nan)
            else:
                values[col.name] = np.zeros(shape, dtype=_INT_DTYPES[col.kind])
        return MinuteAccumulator(strikes, np.zeros(shape, dtype=np.int64), np.full(shape, _FIRST_UNSET),
                                 np.full(shape, _LAST_UNSET), values)

    @staticmethod
    def due(work: dict[Chain, ChainMinutes], chain: Chain) -> list[tuple[int, MinuteAccumulator]]:
        """The chain's minutes before its newest one (closed as far as this writer knows)."""
        minutes = work[chain].minutes
        if not minutes:
            return []
        newest = max(minutes)
        return sorted((m, a) for m, a in minutes.items() if m < newest)

    def commit(self, work: dict[Chain, ChainMinutes], written: Mapping[Chain, Iterable[int]], now: datetime) -> None:
        """After the transaction committed: its ``written`` minutes (and invalid ones) are dropped, as
        are chains not written for ``idle``."""
        for chain, chain_minutes in work.items():
            for minute in written.get(chain, ()):
                chain_minutes.minutes.pop(minute, None)
            chain_minutes.touched = now  # held already: begin installed it
        stale = [c for c, m in self._chains.items() if m.touched is not None and now - m.touched > self.idle]
        for chain in stale:
            del self._chains[chain]

    def encode(self, chain: Chain, minute: int, acc: MinuteAccumulator) -> tuple[bytes, int]:
        """COPY tuples of the minute's ``option_quotes_1m`` rows (contracts seen in it)."""
        seen = acc.count > 0
        n = int(seen.sum())
        if n == 0:
            return b"", 0
        name = chain[0].encode()
        values: dict[str, Any] = {
            "ts": minute, "underlying": name, "expiry": pg_date(chain[1]),
            "strike": np.broadcast_to(acc.strikes, acc.count.shape)[seen],
            "option_type": np.array([[b"CE"], [b"PE"]], dtype="S2").repeat(acc.count.shape[1], axis=1)[seen],
            "n_snapshots": acc.count[seen], "first_ts": acc.first_ts[seen], "last_ts": acc.last_ts[seen],
        }
        for col in self.columns[8:]:
            values[col.name] = acc.values[col.name][seen]
        return encode_rows(self.columns, values, n), n


def upsert_sql(stage: sql.Identifier) -> sql.Composed:
    """Move the staged provisional rows into ``option_quotes_1m``, replacing rows of the same bucket."""
    names = OPTION_QUOTES.column_names
    updates = [n for n in names if n not in OPTION_QUOTES.primary_key]
    return sql.SQL("INSERT INTO {t} ({c}) SELECT {c} FROM {s} ON CONFLICT ({pk}) DO UPDATE SET {u}").format(
        t=sql.Identifier(OPTION_QUOTES.table("1m")), c=sql.SQL(", ").join(map(sql.Identifier, names)), s=stage,
        pk=sql.SQL(", ").join(map(sql.Identifier, OPTION_QUOTES.primary_key)),
        u=sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n)) for n in updates))
