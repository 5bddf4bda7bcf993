"""Minute accumulators of the sink (pure logic): the same aggregates PostgreSQL computes from raw rows.

The reference below follows PostgreSQL: NULL (NaN in a nullable column) is ignored by min/max; a
NaN in a column that is not nullable is a value, larger than every number.  The database side
is checked against the accumulators in tests/integration/test_storage_history.py.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from hftengine.storage.pgcopy import pg_timestamp
from hftengine.storage.provisional import MinuteRollups
from hftengine.storage.rollups import OPTION_QUOTES
from hftengine.storage.sink import QUOTE_COLUMNS

CHAIN = ("NIFTY", date(2026, 11, 26))
T0 = datetime(2026, 11, 19, 4, 0, tzinfo=UTC)
NULLABLE = {c.name for c in QUOTE_COLUMNS if c.nullable}
DTYPES = {c.name: (np.float64 if c.kind == "float8" else {"int8": np.int64, "int2": np.int16}[c.kind])
          for c in QUOTE_COLUMNS if c.name in {col.source for col in OPTION_QUOTES.columns}}


def snapshot(rng: np.random.Generator, n: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    present = rng.random((2, n)) > 0.2
    values: dict[str, np.ndarray] = {}
    for name, dtype in DTYPES.items():
        if dtype is np.float64:
            v = rng.normal(100, 10, (2, n))
            v[rng.random((2, n)) < 0.25] = np.nan  # NULL when nullable, a NaN value otherwise
        else:
            v = rng.integers(-5, 10_000, (2, n)).astype(dtype)
        values[name] = v
    return present, values


def pg_min(values: list[float], nullable: bool) -> float | None:
    numbers = [v for v in values if not math.isnan(v)]
    if numbers:
        return min(numbers)
    return None if nullable or not values else math.nan


def pg_max(values: list[float], nullable: bool) -> float | None:
    if nullable:
        numbers = [v for v in values if not math.isnan(v)]
        return max(numbers) if numbers else None
    return math.nan if any(math.isnan(v) for v in values) else max(values)


def reference(snaps: list[tuple[datetime, np.ndarray, dict[str, np.ndarray]]], side: int, i: int) -> dict[str, Any]:
    rows = sorted((ts, vals) for ts, present, vals in snaps if present[side, i]
                  for vals in [{k: v[side, i] for k, v in vals.items()}])
    out: dict[str, Any] = {"n_snapshots": len(rows), "first_ts": pg_timestamp(rows[0][0]),
                           "last_ts": pg_timestamp(rows[-1][0])}
    for c in OPTION_QUOTES.columns:
        series = [r[1][c.source] for r in rows]
        nullable = c.source in NULLABLE
        if c.kind == "first":
            out[c.name] = series[0]
        elif c.kind == "last":
            out[c.name] = series[-1]
        elif c.kind == "min":
            out[c.name] = pg_min(series, nullable)
        else:
            out[c.name] = pg_max(series, nullable)
        if nullable and isinstance(out[c.name], float) and math.isnan(out[c.name]):
            out[c.name] = None
    return out


def same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return bool(a == b)


@pytest.mark.parametrize("seed", range(6))
def test_accumulator_equals_the_aggregates_of_raw_rows(seed: int) -> None:
    """Snapshots folded in any order (several batches, out of time order) give PostgreSQL's aggregates."""
    rng = np.random.default_rng(seed)
    n = 7
    strikes = 25000.0 + 50 * np.arange(n)
    snaps = []
    for k in rng.permutation(12):
        present, values = snapshot(rng, n)
        snaps.append((T0 + timedelta(seconds=int(k) * 5 + 0.25), present, values))
    acc = MinuteRollups(NULLABLE)
    for batch in (snaps[:5], snaps[5:6], snaps[6:]):
        work = acc.begin([CHAIN])
        for ts, present, values in batch:
            acc.fold(work, CHAIN, ts, strikes, present, values)
        acc.commit(work, {}, T0)
    work = acc.begin([CHAIN])
    (minute, m), = work[CHAIN].minutes.items()
    assert minute == pg_timestamp(T0) and m.snapshots == 12 and m.valid
    for side in (0, 1):
        for i in range(n):
            if not any(p[side, i] for _, p, _ in snaps):
                assert m.count[side, i] == 0
                continue
            want = reference(snaps, side, i)
            got: dict[str, Any] = {"n_snapshots": m.count[side, i], "first_ts": m.first_ts[side, i],
                                   "last_ts": m.last_ts[side, i]}
            for c in OPTION_QUOTES.columns:
                v = m.values[c.name][side, i].item()
                got[c.name] = None if c.source in NULLABLE and isinstance(v, float) and math.isnan(v) else v
            assert all(same(got[k], want[k]) for k in want), {k: (got[k], want[k]) for k in want
                                                               if not same(got[k], want[k])}


def test_a_failed_transaction_forgets_its_chains() -> None:
    """``abort`` drops the accumulators of a failed transaction's chains (they hold rolled back
    snapshots), so no provisional row is written for those minutes; other chains keep theirs."""
    rng = np.random.default_rng(1)
    strikes = np.array([100.0, 110.0])
    other = ("BANKNIFTY", CHAIN[1])
    acc = MinuteRollups(NULLABLE)
    work = acc.begin([CHAIN, other])
    acc.fold(work, CHAIN, T0, strikes, *snapshot(rng, 2))
    acc.fold(work, other, T0, strikes, *snapshot(rng, 2))
    acc.commit(work, {}, T0)
    failed = acc.begin([CHAIN])
    acc.fold(failed, CHAIN, T0 + timedelta(seconds=1), strikes, *snapshot(rng, 2))
    acc.fold(failed, CHAIN, T0 + timedelta(minutes=1), strikes, *snapshot(rng, 2))
    assert [m for m, _ in MinuteRollups.due(failed, CHAIN)] == [pg_timestamp(T0)]
    acc.abort([CHAIN])
    again = acc.begin([CHAIN, other])
    assert again[CHAIN].minutes == {}  # its minute T0 is computed from raw rows
    assert again[other].minutes[pg_timestamp(T0)].snapshots == 1
    assert len(acc) == 1


def test_written_minutes_are_dropped_and_idle_chains_evicted() -> None:
    rng = np.random.default_rng(2)
    strikes = np.array([100.0])
    acc = MinuteRollups(NULLABLE, idle=timedelta(minutes=15))
    work = acc.begin([CHAIN])
    for minute in range(3):
        acc.fold(work, CHAIN, T0 + timedelta(minutes=minute), strikes, *snapshot(rng, 1))
    due = [m for m, _ in MinuteRollups.due(work, CHAIN)]
    assert due == [pg_timestamp(T0), pg_timestamp(T0 + timedelta(minutes=1))]
    acc.commit(work, {CHAIN: due}, T0)
    assert len(acc) == 1
    other = ("BANKNIFTY", CHAIN[1])
    work = acc.begin([other])
    acc.fold(work, other, T0, strikes, *snapshot(rng, 1))
    acc.commit(work, {}, T0 + timedelta(minutes=16))
    assert len(acc) == 1 and list(acc.begin([CHAIN])[CHAIN].minutes) == []


def test_a_strike_grid_that_changes_within_a_minute_invalidates_it() -> None:
    rng = np.random.default_rng(3)
    acc = MinuteRollups(NULLABLE)
    work = acc.begin([CHAIN])
    acc.fold(work, CHAIN, T0, np.array([100.0, 110.0]), *snapshot(rng, 2))
    acc.fold(work, CHAIN, T0 + timedelta(seconds=5), np.array([100.0, 110.0, 120.0]), *snapshot(rng, 3))
    acc.fold(work, CHAIN, T0 + timedelta(minutes=1), np.array([100.0, 110.0, 120.0]), *snapshot(rng, 3))
    (_, first), = MinuteRollups.due(work, CHAIN)
    assert not first.valid and first.snapshots == 2
    assert work[CHAIN].minutes[pg_timestamp(T0 + timedelta(minutes=1))].valid


def test_encoded_rows_are_the_contracts_seen() -> None:
    rng = np.random.default_rng(4)
    acc = MinuteRollups(NULLABLE)
    work = acc.begin([CHAIN])
    present, values = snapshot(rng, 4)
    present[:] = True
    present[1, 2] = False
    acc.fold(work, CHAIN, T0, np.arange(4.0), present, values)
    (minute, m), = work[CHAIN].minutes.items()
    data, n = acc.encode(CHAIN, minute, m)
    assert n == 7 and len(data) > 7 * 2
