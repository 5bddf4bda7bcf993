"""Rollups and history queries on a real database, plain PostgreSQL and (when reachable) TimescaleDB.

The same suite runs on both layouts: rows go in through the sink (with late and replayed data),
then every rollup level and every history query is compared with aggregates recomputed in Python
from the raw rows.
"""

from __future__ import annotations

import math
import os
import threading
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from hftengine.api import create_api
from hftengine.config import Settings
from hftengine.storage import history
from hftengine.storage import rollups as rollups_module
from hftengine.storage.migrations import migrate
from hftengine.storage.queries import Queries
from hftengine.storage.rollups import (
    FAMILIES,
    LEVELS,
    OPTION_QUOTES,
    ROLLUP_TABLES,
    RollupFamily,
    floor_bucket,
    refresh_rollups,
)
from hftengine.storage.sink import PostgresChainStore
from tests.conftest import with_database
from tests.factories import enriched_for, make_chain

DAY = datetime(2026, 11, 19, tzinfo=UTC)
E1 = date(2026, 11, 26)
E2 = date(2026, 12, 31)
NO_TIMESCALE = ("TimescaleDB path not tested: set TIMESCALEDB_URL to a PostgreSQL server with the "
                "timescaledb extension (>= 2.13) available")


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module", params=["postgresql", "timescaledb"])
def layout_dsn(request: pytest.FixtureRequest, make_database: Callable[..., str]) -> Iterator[str]:
    """A migrated database of each layout (the TimescaleDB one only when TIMESCALEDB_URL is set)."""
    if request.param == "postgresql":
        yield make_database(migrated=False)
        return
    server = os.environ.get("TIMESCALEDB_URL")
    if not server:
        pytest.skip(NO_TIMESCALE)
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(server, name)
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _records() -> list[dict[str, Any]]:
    """Two chains of NIFTY over ~70 minutes across hour boundaries, plus a few next-day snapshots."""
    rng = np.random.default_rng(7)
    out: list[dict[str, Any]] = []
    times = [(E1, DAY + timedelta(hours=3, minutes=57, seconds=float(s))) for s in np.cumsum(rng.uniform(3, 17, 330))]
    times += [(E2, DAY + timedelta(hours=4, seconds=23 * i)) for i in range(60)]
    times += [(E1, DAY + timedelta(days=1, hours=3, minutes=50, seconds=31 * i)) for i in range(5)]
    for i, (expiry, ts) in enumerate(times):
        ts = ts.replace(microsecond=0)
        spot = 25000 + 60 * math.sin(i / 25) + float(rng.normal(0, 3))
        snap = make_chain(ts=ts, spot=spot, n_strikes=5, expiry=expiry, seed=i)
        if i % 3 == 1:  # a contract missing from some snapshots: its buckets' first/last ts are not its chain's
            snap.ce.present[i % 5] = False
        rec = enriched_for(snap)
        rec["atm_iv"] = math.nan if i % 11 == 0 else 0.1 + 0.02 * float(rng.random())
        rec["total_gex"] = float(rng.normal(0, 1e9))
        rec["pcr_oi"] = float(rng.uniform(0.6, 1.4))
        rec["gamma_flip"] = None if i % 5 else spot - 100
        ivs = rec["ce_analytics"]["iv"]
        ivs[2] = math.nan if i % 7 == 0 else ivs[2] * (1 + 0.1 * float(rng.random()))
        out.append(rec)
    return out


def _load(dsn: str, rollup_mode: str = "inline") -> list[dict[str, Any]]:
    """Write the records in batches, holding every 13th back so it arrives late, and replay some."""
    records = _records()
    records.sort(key=lambda r: r["snapshot"]["exchange_ts"])
    held: list[dict[str, Any]] = []
    batches: list[list[dict[str, Any]]] = []
    batch: list[dict[str, Any]] = []
    for i, rec in enumerate(records):
        (held if i % 13 == 5 else batch).append(rec)
        if len(batch) == 4:
            batches.append(batch)
            batch = []
        if len(held) == 3:
            batches.append(held)
            held = []
    batches += [b for b in (batch, held) if b]
    with PostgresChainStore(dsn, rollup_mode=rollup_mode) as store:
        for i, b in enumerate(batches):
            store.write(b)
            if i % 9 == 0:
                store.write(b)  # replay
    return records


@pytest.fixture(scope="module")
def loaded(layout_dsn: str) -> str:
    migrate(layout_dsn, use_timescale=None)
    _load(layout_dsn)
    return layout_dsn


@pytest.fixture
async def queries(loaded: str) -> AsyncIterator[Queries]:
    async with AsyncConnectionPool(loaded, min_size=1, max_size=2, open=False,
                                   kwargs={"autocommit": True}) as pool:
        yield Queries(pool)


# ------------------------------------------------------------------------------ recomputation
def raw_rows(dsn: str, family: RollupFamily) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        cur = conn.cursor(row_factory=dict_row)
        cur.execute(f"SELECT * FROM {family.source} ORDER BY ts")  # noqa: S608
        return list(cur.fetchall())


def recompute(rows: list[dict[str, Any]], family: RollupFamily, level: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Rollup rows computed in Python from raw rows, keyed by (ts, *keys)."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(floor_bucket(r["ts"], level), *(r[k] for k in family.keys))].append(r)
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for key, rs in groups.items():
        rs.sort(key=lambda r: r["ts"])
        row: dict[str, Any] = {"n_snapshots": len(rs), "first_ts": rs[0]["ts"], "last_ts": rs[-1]["ts"]}
        for c in family.columns:
            values = [r[c.source] for r in rs]
            present = [v for v in values if v is not None]
            if c.kind == "first":
                row[c.name] = values[0]
            elif c.kind == "last":
                row[c.name] = values[-1]
            elif c.kind == "min":
                row[c.name] = min(present) if present else None
            else:
                row[c.name] = max(present) if present else None
        out[key] = row
    return out


def keyed(rows: list[dict[str, Any]], family: RollupFamily) -> dict[tuple[Any, ...], dict[str, Any]]:
    skip = {"ts", *family.keys}
    return {(r["ts"], *(r[k] for k in family.keys)): {k: v for k, v in r.items() if k not in skip} for r in rows}


def table_rows(dsn: str, table: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        cur = conn.cursor(row_factory=dict_row)
        cur.execute(f"SELECT * FROM {table}")  # noqa: S608
        return list(cur.fetchall())


# ----------------------------------------------------------------------------------- the suite
@pytest.mark.parametrize("level", list(LEVELS))
async def test_metrics_history_equals_recomputation(loaded: str, queries: Queries, level: str) -> None:
    family = FAMILIES["chain_metrics"]
    expected = recompute(raw_rows(loaded, family), family, level)
    start, end = DAY, DAY + timedelta(days=2)
    fields = ",".join(history.METRIC_ROLLUP_FIELDS)
    rows = await queries.metrics_history("NIFTY", None, start, end, 10_000, bucket=level, fields=fields)
    assert [r["ts"] for r in rows] == sorted(r["ts"] for r in rows)
    assert keyed(rows, family) == expected
    only_e2 = await queries.metrics_history("NIFTY", E2, start, end, 10_000, bucket=level, fields=fields)
    assert keyed(only_e2, family) == {k: v for k, v in expected.items() if k[2] == E2}


@pytest.mark.parametrize("level", list(LEVELS))
async def test_contract_history_equals_recomputation(loaded: str, queries: Queries, level: str) -> None:
    family = FAMILIES["option_quotes"]
    raw = [r for r in raw_rows(loaded, family) if r["expiry"] == E1 and r["strike"] == 25000.0]
    assert len(raw) > 100
    expected = recompute(raw, family, level)
    fields = ",".join(history.CONTRACT_ROLLUP_FIELDS)
    start, end = DAY + timedelta(hours=4, minutes=7, seconds=30), DAY + timedelta(hours=4, minutes=41)
    both = await queries.contract_history("NIFTY", E1, 25000.0, None, start, end, 10_000, bucket=level, fields=fields)
    lo, hi = floor_bucket(start, level), end
    want = {k: v for k, v in expected.items() if lo <= k[0] < hi}
    assert keyed([{**r, "underlying": "NIFTY", "expiry": E1, "strike": 25000.0} for r in both], family) == want
    puts = await queries.contract_history("NIFTY", E1, 25000.0, "PE", start, end, 10_000, bucket=level,
                                          fields="iv,iv_max,oi_open")
    assert {(r["ts"], r["iv"], r["iv_max"], r["oi_open"]) for r in puts} == {
        (k[0], v["iv"], v["iv_max"], v["oi_open"]) for k, v in want.items() if k[4] == "PE"}


async def test_raw_history_is_every_snapshot_in_range(loaded: str, queries: Queries) -> None:
    start, end = DAY + timedelta(hours=4), DAY + timedelta(hours=4, minutes=10)
    rows = await queries.metrics_history("NIFTY", E1, start, end, 10_000, bucket="raw", fields="spot,pcr_oi")
    stored = [r for r in raw_rows(loaded, FAMILIES["chain_metrics"]) if r["expiry"] == E1 and start <= r["ts"] < end]
    assert [(r["ts"], r["spot"], r["pcr_oi"]) for r in rows] == [(r["ts"], r["spot"], r["pcr_oi"]) for r in stored]
    assert set(rows[0]) == {"ts", "underlying", "expiry", "spot", "pcr_oi"}
    limited = await queries.metrics_history("NIFTY", E1, start, end, 5, bucket="raw", fields="spot")
    assert [r["ts"] for r in limited] == [r["ts"] for r in rows[:5]]
    legs = await queries.contract_history("NIFTY", E1, 25000.0, "CE", start, end, 10_000, fields="iv,oi")
    quotes = [r for r in raw_rows(loaded, FAMILIES["option_quotes"]) if r["expiry"] == E1 and r["strike"] == 25000.0
              and r["option_type"] == "CE" and start <= r["ts"] < end]
    assert [(r["ts"], r["iv"], r["oi"]) for r in legs] == [(r["ts"], r["iv"], r["oi"]) for r in quotes]


async def test_history_is_stable_after_rollups_are_refreshed(loaded: str, queries: Queries) -> None:
    """Closing every bucket (plain) / refreshing every continuous aggregate changes no answer."""
    fields = ",".join(history.METRIC_ROLLUP_FIELDS)
    before = {lv: await queries.metrics_history("NIFTY", None, DAY, DAY + timedelta(days=2), 10_000, bucket=lv,
                                                fields=fields) for lv in LEVELS}
    refresh_rollups(loaded, idle=timedelta(0))
    for level, rows in before.items():
        assert await queries.metrics_history("NIFTY", None, DAY, DAY + timedelta(days=2), 10_000, bucket=level,
                                             fields=fields) == rows


@pytest.mark.parametrize("table", [f.table(lv) for f in FAMILIES.values() for lv in LEVELS])
def test_rollup_tables_equal_recomputation(loaded: str, table: str) -> None:
    """Every stored rollup row equals the recomputation; after a refresh every bucket is stored."""
    family = next(f for f in FAMILIES.values() if table.startswith(f.source + "_"))
    level = table.rsplit("_", 1)[1]
    expected = recompute(raw_rows(loaded, family), family, level)
    stored = keyed(table_rows(loaded, table), family)
    assert stored, f"{table} is empty"
    assert {k: expected[k] for k in stored} == stored  # whatever is stored is right (closed buckets)
    refresh_rollups(loaded, idle=timedelta(0))
    assert keyed(table_rows(loaded, table), family) == expected


def test_plain_rollups_hold_exactly_the_closed_buckets(make_database: Callable[..., str]) -> None:
    dsn = make_database(migrated=True)
    _load(dsn)
    with psycopg.connect(dsn) as conn:
        marks = {(u, e): w for u, e, w in conn.execute(
            "SELECT underlying, expiry, materialized_until FROM rollup_watermarks")}
    for family in FAMILIES.values():
        raw = raw_rows(dsn, family)
        for level, width in LEVELS.items():
            expected = recompute(raw, family, level)
            closed = {k: v for k, v in expected.items() if k[0] + width <= marks[(k[1], k[2])]}
            assert keyed(table_rows(dsn, family.table(level)), family) == closed, family.table(level)


def test_deferred_rollups_are_filled_by_the_refresh_job(make_database: Callable[..., str]) -> None:
    """rollup_mode='deferred': the sink leaves closed buckets to refresh_rollups, with the same result."""
    dsn = make_database(migrated=True)
    _load(dsn, rollup_mode="deferred")
    for table in ROLLUP_TABLES:  # only provisional 1 minute quote rows (watermarks have not moved)
        assert (table == "option_quotes_1m") == bool(table_rows(dsn, table)), table
    report = refresh_rollups(dsn, idle=timedelta(days=3650))  # nothing is idle: close up to each newest minute
    assert report.chains_refreshed == 2
    with psycopg.connect(dsn) as conn:
        marks = {(u, e): w for u, e, w in conn.execute(
            "SELECT underlying, expiry, materialized_until FROM rollup_watermarks")}
    for family in FAMILIES.values():
        raw = raw_rows(dsn, family)
        for level, width in LEVELS.items():
            expected = recompute(raw, family, level)
            closed = {k: v for k, v in expected.items() if k[0] + width <= marks[(k[1], k[2])]}
            assert closed
            assert keyed(table_rows(dsn, family.table(level)), family) == closed, family.table(level)


def provisional_entries(dsn: str) -> dict[tuple[str, date, datetime], tuple[int, int]]:
    """``rollup_provisional`` entries: (n_snapshots, snapshots that chain_metrics holds in the minute)."""
    with psycopg.connect(dsn) as conn:
        return {(u, e, ts): (n, c) for u, e, ts, n, c in conn.execute(
            "SELECT p.underlying, p.expiry, p.ts, p.n_snapshots, (SELECT count(*) FROM chain_metrics m "
            "WHERE m.underlying = p.underlying AND m.expiry = p.expiry AND m.ts >= p.ts "
            "AND m.ts < p.ts + interval '1 minute') FROM rollup_provisional p")}


def test_provisional_quote_rollups_equal_recomputation_and_spare_the_refresh(
        make_database: Callable[..., str]) -> None:
    """The deferred sink writes each minute a chain left as option_quotes_1m rows from memory, with
    an entry of the snapshots it folded. Where that count is the minute's count of snapshots, the
    rows equal the recomputation from raw rows (absent legs, NaN IVs, NULL Greeks) and the refresh
    keeps them; where it is not (late snapshots, a second writer), the refresh recomputes."""
    dsn = make_database(migrated=True)
    _load(dsn, rollup_mode="deferred")
    entries = provisional_entries(dsn)
    verified = {k for k, (n, count) in entries.items() if n == count}
    assert len(verified) >= 40 and len(entries) > len(verified)  # the late rows leave some unverified
    expected = recompute(raw_rows(dsn, OPTION_QUOTES), OPTION_QUOTES, "1m")
    stored = keyed(table_rows(dsn, "option_quotes_1m"), OPTION_QUOTES)
    checked = [k for k in stored if k[1:3] + k[:1] in verified]
    assert len(checked) >= 40 * 10
    assert {k: stored[k] for k in checked} == {k: expected[k] for k in checked}
    assert {k for k in expected if k[1:3] + k[:1] in verified} == set(checked)  # no contract left out

    # a second writer of NIFTY/E2 (a rebalance) folds one more snapshot into a verified minute:
    # the entries no longer match and the refresh recomputes that minute from raw rows
    victim = min(k for k in verified if k[1] == E2)
    with PostgresChainStore(dsn, rollup_mode="deferred") as other:
        other.write([enriched_for(make_chain(ts=victim[2] + timedelta(seconds=59), expiry=E2, n_strikes=5,
                                             seed=99)),
                     enriched_for(make_chain(ts=victim[2] + timedelta(minutes=30), expiry=E2, n_strikes=5,
                                             seed=98))])
    assert provisional_entries(dsn)[victim] == (1, entries[victim][1] + 1)

    report = refresh_rollups(dsn, idle=timedelta(days=3650))
    expected = recompute(raw_rows(dsn, OPTION_QUOTES), OPTION_QUOTES, "1m")
    with psycopg.connect(dsn) as conn:
        marks = {(u, e): w for u, e, w in conn.execute(
            "SELECT underlying, expiry, materialized_until FROM rollup_watermarks")}
    closed = {k: v for k, v in expected.items() if k[0] + LEVELS["1m"] <= marks[(k[1], k[2])]}
    assert keyed(table_rows(dsn, "option_quotes_1m"), OPTION_QUOTES) == closed
    rows_1m_written = report.rows_written - sum(
        len(table_rows(dsn, f.table(level))) for f in FAMILIES.values() for level in LEVELS
        if f.table(level) != "option_quotes_1m")
    recomputed = [k for k in closed if k[1:3] + k[:1] not in verified - {victim}]
    assert rows_1m_written == len(recomputed) < len(closed) // 2  # verified minutes were not rewritten
    assert all(ts >= marks[(u, e)] for u, e, ts in provisional_entries(dsn))  # served entries are gone


def test_a_failed_sink_transaction_leaves_no_provisional_count_behind(
        make_database: Callable[..., str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The sink folds snapshots into its minute accumulators in place; when the transaction fails
    they are forgotten, so the rolled back snapshot is not counted (twice, once retried) and the
    minute, with no matching entry, is recomputed from raw rows by the refresh."""
    dsn = make_database(migrated=True)
    t0 = DAY.replace(hour=4)
    at = [t0 + timedelta(seconds=s) for s in (0, 10, 20, 30, 60)]
    snaps = [enriched_for(make_chain(ts=ts, expiry=E2, n_strikes=5, seed=i)) for i, ts in enumerate(at)]
    real_advance = rollups_module.advance
    calls = {"n": 0}

    def failing_advance(*args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 3:  # the third batch: after its snapshot was folded, before commit
            raise psycopg.OperationalError("injected failure")
        real_advance(*args, **kwargs)

    monkeypatch.setattr(rollups_module, "advance", failing_advance)
    with PostgresChainStore(dsn, rollup_mode="deferred") as store:
        store.write([snaps[0]])
        store.write([snaps[1]])
        with pytest.raises(psycopg.OperationalError, match="injected"):
            store.write([snaps[2]])
        for snap in snaps[2:]:  # the failed batch is retried, then the next ones
            store.write([snap])
    (entry,) = provisional_entries(dsn).values()
    assert entry == (2, 4)  # folded by the store since the failure: the retry and 30 s; the minute holds 4
    refresh_rollups(dsn, idle=timedelta(days=3650))
    expected = recompute(raw_rows(dsn, OPTION_QUOTES), OPTION_QUOTES, "1m")
    minute = {k: v for k, v in expected.items() if k[0] == t0}
    assert minute and {k: v for k, v in keyed(table_rows(dsn, "option_quotes_1m"), OPTION_QUOTES).items()
                       if k[0] == t0} == minute


def test_refresh_writes_only_the_planned_chains_and_ranges(make_database: Callable[..., str]) -> None:
    """The refresh groups a whole window at once (``group_first``): buckets of chains it does not
    close, and buckets below a chain's watermark inside that window, are left exactly as they are."""
    dsn = make_database(migrated=True)
    t0 = DAY.replace(hour=4)
    a, b, c = ({"underlying": u, "security_id": i} for u, i in (("NIFTY", 13), ("BANKNIFTY", 25), ("FINNIFTY", 27)))

    def write(chain: dict[str, Any], minutes: range) -> None:
        with PostgresChainStore(dsn, rollup_mode="deferred") as store:
            store.write([enriched_for(make_chain(ts=t0 + timedelta(minutes=m, seconds=s), seed=m, **chain))
                         for m in minutes for s in (5, 35)])

    write(a, range(0, 3))
    write(b, range(0, 3))
    write(c, range(0, 4))
    refresh_rollups(dsn, idle=timedelta(days=3650))  # watermarks: a, b at minute 2; c at minute 3
    tampered = 999
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE option_quotes_1m SET n_snapshots = %s WHERE underlying = 'FINNIFTY' AND ts = %s",
                     (tampered, t0 + timedelta(minutes=2)))
    write(b, range(3, 5))  # b closes minutes 2-3; the window [2, 4) holds a's open minute 2 and c's closed one
    write(c, range(4, 5))  # c closes minute 3 only
    report = refresh_rollups(dsn, idle=timedelta(days=3650))
    assert report.chains_refreshed == 2
    with psycopg.connect(dsn) as conn:
        minutes = {(u, int((ts - t0).total_seconds() // 60)): n for u, ts, n in conn.execute(
            "SELECT underlying, ts, max(n_snapshots) FROM option_quotes_1m GROUP BY 1, 2")}
    assert ("NIFTY", 2) not in minutes  # a: not closed by this refresh, its open minute is not stored
    assert minutes[("FINNIFTY", 2)] == tampered  # c: below its watermark, not rewritten
    assert minutes[("FINNIFTY", 3)] == 2 and minutes[("BANKNIFTY", 3)] == 2 and minutes[("BANKNIFTY", 2)] == 2
    assert ("BANKNIFTY", 4) not in minutes and ("FINNIFTY", 4) not in minutes


# ------------------------------------------------------------------------------------- buckets
def test_auto_bucket_picks_the_coarsest_with_enough_points() -> None:
    t = DAY

    def pick(span: timedelta, fields: str | None = None, n: int = 100) -> str:
        return history.choose_bucket("auto", t, t + span, kind="metrics", fields=fields, min_points=n)

    assert pick(timedelta(days=365)) == "1d"
    assert pick(timedelta(days=30)) == "1h"
    assert pick(timedelta(days=1)) == "5m"
    assert pick(timedelta(hours=3)) == "1m"
    assert pick(timedelta(minutes=30)) == "raw"
    assert pick(timedelta(minutes=30), fields="atm_iv_max") == "1m"  # rollup-only field: never raw
    assert pick(timedelta(minutes=30), fields="quality_flags") == "raw"  # raw-only field
    assert pick(timedelta(days=30), n=30) == "1d"
    assert history.choose_bucket("5m", t, t + timedelta(days=300), kind="contract") == "5m"
    # raw per-contract rows are read by time: long ranges come from the rollups
    def pick_contract(span: timedelta, n: int = 100, bucket: str = "auto") -> str:
        return history.choose_bucket(bucket, t, t + span, kind="contract", min_points=n)

    assert pick_contract(timedelta(minutes=90)) == "raw"
    assert pick_contract(timedelta(hours=3), n=1000) == "1m"
    assert pick_contract(timedelta(hours=2), bucket="raw") == "raw"
    with pytest.raises(history.FieldError, match="raw contract history is limited to 2 h"):
        pick_contract(timedelta(hours=2, minutes=1), bucket="raw")
    with pytest.raises(history.FieldError, match="bucket must be one of"):
        history.choose_bucket("2m", t, t + timedelta(days=1), kind="metrics")
    with pytest.raises(history.FieldError, match="available: .*spot_open"):
        history.parse_fields("metrics", "1h", "spot,bogus")
    with pytest.raises(history.FieldError, match="unknown field"):
        history.parse_fields("contract", "raw", "iv_min")


# ------------------------------------------------------------------------------------------ API
@pytest.fixture
async def api(loaded: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_api(Settings(database_url=loaded))
    async with AsyncConnectionPool(loaded, min_size=1, max_size=2, open=False,
                                   kwargs={"autocommit": True}) as pool:
        app.state.queries = Queries(pool)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
            yield client


async def test_api_metrics_history_buckets_and_fields(loaded: str, api: httpx.AsyncClient) -> None:
    params = {"from": "2026-11-19T04:00:00Z", "to": "2026-11-19T05:00:00Z"}
    r = await api.get("/v1/analytics/NIFTY/metrics/history", params={**params, "bucket": "5m",
                                                                      "fields": "pcr_oi,atm_iv_max"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["bucket"] == "5m" and body["fields"] == ["pcr_oi", "atm_iv_max"]
    expected = recompute(raw_rows(loaded, FAMILIES["chain_metrics"]), FAMILIES["chain_metrics"], "5m")
    got = {(datetime.fromisoformat(m["ts"]), m["expiry"]): (m["pcr_oi"], m["atm_iv_max"]) for m in body["metrics"]}
    assert got == {(k[0], k[2].isoformat()): (v["pcr_oi"], v["atm_iv_max"]) for k, v in expected.items()
                   if DAY + timedelta(hours=4) <= k[0] < DAY + timedelta(hours=5)}
    raw = (await api.get("/v1/analytics/NIFTY/metrics/history", params=params)).json()
    assert raw["bucket"] == "raw" and raw["count"] > 100 and "quality_flags" in raw["metrics"][0]
    auto = (await api.get("/v1/analytics/NIFTY/metrics/history", params={**params, "bucket": "auto",
                                                                          "min_points": 12})).json()
    assert auto["bucket"] == "5m"


async def test_api_contract_history(api: httpx.AsyncClient) -> None:
    r = await api.get("/v1/option-chain/NIFTY/history", params={
        "expiry": E1.isoformat(), "strike": 25000, "option_type": "CE", "fields": "iv,oi",
        "from": "2026-11-19T04:00:00Z", "to": "2026-11-19T05:00:00Z", "bucket": "1m"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["bucket"] == "1m" and body["count"] > 40
    assert set(body["rows"][0]) == {"ts", "option_type", "iv", "oi"}
    auto = (await api.get("/v1/option-chain/NIFTY/history", params={
        "expiry": E1.isoformat(), "strike": 25000, "from": "2026-11-19T00:00:00Z",
        "to": "2026-11-20T00:00:00Z"})).json()
    assert auto["bucket"] == "5m" and {row["option_type"] for row in auto["rows"]} == {"CE", "PE"}


@pytest.mark.parametrize(("path", "params", "message"), [
    ("/v1/analytics/NIFTY/metrics/history", {"fields": "spot,nope"}, "unknown field(s) for raw rows: nope"),
    ("/v1/analytics/NIFTY/metrics/history", {"bucket": "1h", "fields": "quality_flags"}, "available: n_snapshots"),
    ("/v1/analytics/NIFTY/metrics/history", {"bucket": "10m"}, "bucket must be one of raw, 1m, 5m, 1h, 1d, auto"),
    ("/v1/analytics/NIFTY/metrics/history", {"from": "2026-11-19T04:00:00"}, "needs a timezone"),
    ("/v1/option-chain/NIFTY/history", {"strike": 25000, "bucket": "raw", "fields": "iv_min"}, "iv_min"),
    ("/v1/option-chain/NIFTY/history", {"strike": 25000, "option_type": "XX"}, "CE"),
    ("/v1/option-chain/NIFTY/history", {"bucket": "1m"}, "strike"),
    ("/v1/option-chain/NIFTY/history", {"expiry": E1.isoformat(), "strike": 25000, "bucket": "raw",
                                        "from": "2026-11-19T00:00:00Z", "to": "2026-11-20T00:00:00Z"},
     "raw contract history is limited to 2 h"),
])
async def test_api_history_rejects_bad_requests(api: httpx.AsyncClient, path: str, params: dict[str, Any],
                                                message: str) -> None:
    r = await api.get(path, params=params)
    assert r.status_code == 422
    assert message in r.text


def test_deferred_sink_does_not_wait_for_a_running_refresh(make_database: Callable[..., str]) -> None:
    """A refresh holds every watermark row while it materializes (seconds at high rates). A deferred
    sink writes rows in a chain's open minute without waiting for it; a late row, or a chain the
    refresh may be closing as idle, still waits and is folded in once the refresh commits."""
    dsn = make_database(migrated=True)
    now = datetime.now(UTC).replace(microsecond=0)
    start = floor_bucket(now, "1m") - timedelta(minutes=3)

    def snap(ts: datetime, expiry: date = E1, seed: int = 0) -> dict[str, Any]:
        return enriched_for(make_chain(ts=ts, expiry=expiry, n_strikes=5, seed=seed))

    with PostgresChainStore(dsn, rollup_mode="deferred") as store:
        store.write([snap(start + timedelta(seconds=20 * i), seed=i) for i in range(9)])  # 3 minutes of E1
        store.write([snap(start + timedelta(seconds=20 * i), E2, i) for i in range(9)])
    refresh_rollups(dsn)  # watermarks at the newest minute of each chain
    with psycopg.connect(dsn) as conn:
        marks = {(u, e): w for u, e, w in conn.execute(
            "SELECT underlying, expiry, materialized_until FROM rollup_watermarks")}
        conn.execute("UPDATE chain_metrics SET stored_ts = stored_ts - interval '20 minutes' WHERE expiry = %s",
                     (E2,))  # E2 looks idle to a refresh: a new E2 row may land in what it closes
        conn.commit()
    assert marks[("NIFTY", E1)] == start + timedelta(minutes=2)

    def write_in_thread(records: list[dict[str, Any]]) -> threading.Thread:
        def run() -> None:
            with PostgresChainStore(dsn, rollup_mode="deferred") as store:
                store.write(records)
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    refresh = psycopg.connect(dsn)  # stands in for a long refresh: holds every watermark row
    refresh.execute("SELECT * FROM rollup_watermarks FOR UPDATE")
    try:
        in_order = write_in_thread([snap(start + timedelta(minutes=2, seconds=50), seed=50)])
        late = write_in_thread([snap(start + timedelta(seconds=50), seed=51)])  # below E1's watermark
        idle = write_in_thread([snap(start + timedelta(minutes=2, seconds=50), E2, 52)])
        in_order.join(10)
        assert not in_order.is_alive(), "an in-order snapshot waited for the refresh"
        late.join(1.5)
        idle.join(0.1)
        assert late.is_alive() and idle.is_alive(), "a late row or an idle chain did not wait"
    finally:
        refresh.commit()
        refresh.close()
    late.join(10)
    idle.join(10)
    assert not late.is_alive() and not idle.is_alive()
    with psycopg.connect(dsn) as conn:
        stored = conn.execute("SELECT count(*) FROM chain_metrics").fetchone()
        late_bucket = conn.execute(
            "SELECT DISTINCT n_snapshots, last_ts FROM option_quotes_1m "
            "WHERE underlying = 'NIFTY' AND expiry = %s AND ts = %s", (E1, start)).fetchall()
    assert stored == (21,)
    assert late_bucket == [(4, start + timedelta(seconds=50))]  # 0, 20, 40 s and the late 50 s
