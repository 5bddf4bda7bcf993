"""Plain PostgreSQL layout: day partitions made ahead, no DEFAULT partition, retention, write_rows."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest

from hftengine.storage.migrations import ensure_partitions, migrate
from hftengine.storage.retention import apply_retention, retention_policy
from hftengine.storage.rollups import ROLLUP_TABLES
from hftengine.storage.sink import WRITABLE_TABLES, PostgresChainStore
from tests.factories import enriched_for, make_chain

RAW_TABLES = ("chain_metrics", "option_quotes", *WRITABLE_TABLES)


def partitions(dsn: str, table: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass ORDER BY 1", (table,))]


def count(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608
    return int(row[0]) if row else 0


def test_migrate_records_the_layout_and_makes_partitions_ahead(make_database: Callable[..., str]) -> None:
    dsn = make_database(migrated=False)
    report = migrate(dsn, days_ahead=2)
    today = datetime.now(UTC).date()
    assert report.layout == "partitioned"
    with psycopg.connect(dsn) as conn:
        layout = conn.execute("SELECT value FROM storage_features WHERE feature = 'layout'").fetchone()
        catalog = dict(conn.execute("SELECT table_name, partition_by FROM timeseries_tables").fetchall())
        defaults = conn.execute(
            "SELECT count(*) FROM pg_partitioned_table WHERE partdefid <> 0").fetchone()
    assert layout == ("partitioned",)
    # these tables plus whatever later migrations register; gex_profile is a view, not a table
    assert {*RAW_TABLES, *ROLLUP_TABLES} <= set(catalog)
    assert "gex_profile" not in catalog
    assert defaults == (0,)  # no DEFAULT partition anywhere
    days = [today + timedelta(days=i) for i in range(3)]
    for table, partition_by in catalog.items():
        if partition_by == "day":
            assert partitions(dsn, table) == [f"{table}_p{d:%Y%m%d}" for d in days], table
    assert partitions(dsn, "option_quotes_5m") == sorted({f"option_quotes_5m_p{d:%Y%m}" for d in
                                                         (today, today + timedelta(days=2))})
    assert migrate(dsn, days_ahead=2).partitions_created == []  # idempotent
    created = ensure_partitions(dsn, 4)
    assert f"option_quotes_p{today + timedelta(days=4):%Y%m%d}" in created
    assert ensure_partitions(dsn, 4) == []


def test_a_day_without_partition_is_refused_not_parked(make_database: Callable[..., str]) -> None:
    dsn = make_database(migrated=True)
    with psycopg.connect(dsn) as conn, pytest.raises(psycopg.errors.CheckViolation, match="no partition"):
        conn.execute(
            "INSERT INTO api_usage (ts, request_id, method, route, status, duration_ms) "
            "VALUES ('2031-05-05T10:00:00Z', gen_random_uuid(), 'GET', '/', 200, 1)")


def test_sink_creates_partitions_for_new_days(make_database: Callable[..., str]) -> None:
    dsn = make_database(migrated=True)
    old_day = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)
    with PostgresChainStore(dsn) as store:
        result = store.write([enriched_for(make_chain(ts=old_day + timedelta(days=d), seed=d)) for d in range(3)])
    assert result.chains_written == 3
    for d in range(3):
        assert f"option_quotes_p{old_day.date() + timedelta(days=d):%Y%m%d}" in partitions(dsn, "option_quotes")
    assert "option_quotes_1m_p20260302" in partitions(dsn, "option_quotes_1m")
    assert "chain_metrics_1d_p202603" in partitions(dsn, "chain_metrics_1d")


def test_retention_drops_old_partitions_and_keeps_rollups(make_database: Callable[..., str]) -> None:
    dsn = make_database(migrated=True)
    start = datetime.now(UTC)
    days = [start - timedelta(days=d) for d in (45, 20, 1)]
    with PostgresChainStore(dsn) as store:
        for day in days:
            store.write([enriched_for(make_chain(ts=day.replace(hour=4) + timedelta(seconds=s), seed=s))
                         for s in range(0, 180, 30)])
    # the job runs after the chain went idle (stored_ts is the database's wall clock, so `now` must
    # follow the real clock: a fixed date stopped closing the chain once the calendar passed it)
    now = datetime.now(UTC) + timedelta(minutes=15)
    assert count(dsn, "option_quotes") == 3 * 6 * 42
    policy = retention_policy(dsn)
    assert policy["option_quotes"] == timedelta(days=30) and policy["option_quotes_1d"] is None
    dropped = apply_retention(dsn, now=now)
    # the old day and the empty days the sink made ahead of it, nothing newer than 30 days
    ahead = [f"{days[0] + timedelta(days=d):%Y%m%d}" for d in range(3)]
    assert dropped["option_quotes"] == [f"option_quotes_p{d}" for d in ahead]
    assert "gex_profile" not in dropped  # a view over option_quotes
    assert "chain_metrics" not in dropped  # 90 days
    assert count(dsn, "option_quotes") == 2 * 6 * 42
    assert count(dsn, "gex_profile") == 2 * 6 * 21
    with psycopg.connect(dsn) as conn:
        # the dropped day's rollups were materialized first and survive
        n_1m = conn.execute("SELECT sum(n_snapshots) FROM option_quotes_1m WHERE ts < %s",
                            (days[0] + timedelta(days=1),)).fetchone()
        n_1d = conn.execute("SELECT count(*) FROM chain_metrics_1d").fetchone()
    assert n_1m == (6 * 42,)
    assert n_1d == (3,)
    # an explicit, shorter window; unknown tables are refused
    dropped = apply_retention(dsn, {"option_quotes": timedelta(days=10), "option_quotes_1m": timedelta(days=10)},
                              now=now)
    assert dropped["option_quotes"] == [f"option_quotes_p{days[1] + timedelta(days=d):%Y%m%d}" for d in range(3)]
    assert [f"option_quotes_1m_p{d:%Y%m%d}" for d in days[:2]] == [
        p for p in dropped["option_quotes_1m"] if p[-8:] in {f"{d:%Y%m%d}" for d in days}]
    assert apply_retention(dsn, now=now) == {}
    with pytest.raises(ValueError, match="not time-series tables"):
        apply_retention(dsn, {"underlyings": timedelta(days=1)}, now=now)


def test_sink_recreates_a_partition_dropped_behind_its_back(make_database: Callable[..., str]) -> None:
    dsn = make_database(migrated=True)
    t = datetime(2026, 6, 1, 4, 0, tzinfo=UTC)
    with PostgresChainStore(dsn) as store:
        store.write([enriched_for(make_chain(ts=t))])
        apply_retention(dsn, {"option_quotes": timedelta(days=1)}, now=t + timedelta(days=3))
        assert f"option_quotes_p{t:%Y%m%d}" not in partitions(dsn, "option_quotes")
        result = store.write([enriched_for(make_chain(ts=t + timedelta(minutes=1)))])
    assert result.chains_written == 1
    assert count(dsn, "option_quotes") == 42


def test_write_rows_is_idempotent_and_validated(make_database: Callable[..., str]) -> None:
    dsn = make_database(migrated=True)
    t = datetime(2026, 11, 20, 4, 0, tzinfo=UTC)
    events = [{"ts": t + timedelta(seconds=i), "underlying": "NIFTY", "expiry": date(2026, 11, 24),
               "event_type": "oi_spike", "event_key": f"25000CE-{i}", "strike": 25000.0, "option_type": "CE",
               "severity": 2, "payload": {"oi_change": 1200 * i, "note": "test"}} for i in range(5)]
    velocity = [{"ts": t, "underlying": "NIFTY", "expiry": date(2026, 11, 24), "strike": 25000.0 + 50 * i,
                 "option_type": "PE", "window_seconds": 60, "oi_velocity": 10.5 * i, "iv_velocity": float("nan")}
                for i in range(4)]
    usage = [{"ts": t, "request_id": uuid.uuid4(), "tenant_id": 1, "method": "GET", "route": "/v1/underlyings",
              "status": 200, "duration_ms": 3.5, "response_bytes": 512}]
    with PostgresChainStore(dsn) as store:
        assert store.write_rows("pattern_events", events) == 5
        assert store.write_rows("pattern_events", events + events[:2]) == 0  # replay
        assert store.write_rows("velocity", velocity) == 4
        assert store.write_rows("api_usage", usage) == 1
        with pytest.raises(ValueError, match="accepts"):
            store.write_rows("chain_metrics", events)
        with pytest.raises(ValueError, match="no column"):
            store.write_rows("levels", [{"ts": t, "bogus": 1}])
        with pytest.raises(ValueError, match="timezone-aware"):
            store.write_rows("levels", [{"ts": t.replace(tzinfo=None)}])
    with psycopg.connect(dsn) as conn:
        payload = conn.execute("SELECT payload, severity FROM pattern_events WHERE event_key = '25000CE-3'").fetchone()
        nan_row = conn.execute("SELECT oi_velocity, iv_velocity FROM velocity WHERE strike = 25050").fetchone()
    assert payload == ({"oi_change": 3600, "note": "test"}, 2)
    assert nan_row == (10.5, None)
