"""Migrations on a real PostgreSQL: idempotent, recorded, forward-only."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from hftengine.storage.migrations import MigrationError, discover, migrate, sql_dir


def test_every_migration_runs_twice(make_database: Callable[..., str]) -> None:
    dsn = make_database(migrated=False)
    first = migrate(dsn)
    assert first.applied == [f"{m.version:04d}_{m.name}" for m in discover()]
    second = migrate(dsn)
    assert second.applied == []
    assert second.skipped == first.applied
    with psycopg.connect(dsn) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
        feature = conn.execute("SELECT value FROM storage_features WHERE feature = 'timescaledb'").fetchone()
    assert versions == [m.version for m in discover()]
    assert feature is not None


def test_each_sql_file_is_itself_idempotent(make_database: Callable[..., str]) -> None:
    """Running the raw SQL again (outside the runner) must not fail either."""
    dsn = make_database(migrated=True)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for mig in discover():
            conn.execute(mig.path.read_text())


def test_changed_migration_is_refused(make_database: Callable[..., str], tmp_path: Path) -> None:
    dsn = make_database(migrated=False)
    for src in sql_dir().glob("*.sql"):
        (tmp_path / src.name).write_text(src.read_text())
    migrate(dsn, directory=tmp_path)
    first = sorted(tmp_path.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(MigrationError, match="forward-only"):
        migrate(dsn, directory=tmp_path)


def test_bad_file_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / "1_oops.sql").write_text("SELECT 1")
    with pytest.raises(MigrationError, match="NNNN_name"):
        discover(tmp_path)


def test_timescale_required_but_absent(make_database: Callable[..., str]) -> None:
    dsn = make_database(migrated=False)
    with psycopg.connect(dsn) as conn:
        available = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
    if available:
        pytest.skip("this server has TimescaleDB")
    with pytest.raises(MigrationError, match="TimescaleDB"):
        migrate(dsn, use_timescale=True)


def test_rollup_and_timeseries_columns_match_the_code(make_database: Callable[..., str]) -> None:
    """The SQL schema and the Python rollup spec / history field lists agree (plain layout)."""
    from hftengine.storage.history import CONTRACT_RAW_FIELDS, METRIC_RAW_FIELDS
    from hftengine.storage.rollups import FAMILIES, LEVELS

    dsn = make_database(migrated=True)
    with psycopg.connect(dsn) as conn:
        def columns(table: str) -> list[tuple[str, str]]:
            return [(str(n), str(t)) for n, t in conn.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum", (table,))]

        for family in FAMILIES.values():
            expected = [("ts", "timestamp with time zone"),
                        *((k, t.replace("char(2)", "character(2)")) for k, t in zip(family.keys, family.key_types,
                                                                                    strict=True)),
                        ("n_snapshots", "bigint"), ("first_ts", "timestamp with time zone"),
                        ("last_ts", "timestamp with time zone"),
                        *((c.name, c.sql_type) for c in family.columns)]
            for level in LEVELS:
                assert columns(family.table(level)) == expected, family.table(level)
        assert set(METRIC_RAW_FIELDS) <= {n for n, _ in columns("chain_metrics")}
        assert set(CONTRACT_RAW_FIELDS) <= {n for n, _ in columns("option_quotes")}


def test_timescale_layout(make_database: Callable[..., str]) -> None:
    """With TIMESCALEDB_URL: hypertables, continuous aggregates with the same columns, jobs; twice."""
    import os
    import uuid

    from hftengine.storage.rollups import FAMILIES, LEVELS
    from tests.conftest import with_database

    server = os.environ.get("TIMESCALEDB_URL")
    if not server:
        pytest.skip("TimescaleDB path not tested: set TIMESCALEDB_URL to a PostgreSQL server with the "
                    "timescaledb extension (>= 2.13) available")
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = with_database(server, name)
    try:
        first = migrate(dsn, use_timescale=True)
        assert first.layout == "timescaledb" and first.partitions_created == []
        assert migrate(dsn, use_timescale=True).applied == []
        with psycopg.connect(dsn) as conn:
            hypertables = {r[0] for r in conn.execute(
                "SELECT hypertable_name FROM timescaledb_information.hypertables")}
            caggs = {r[0] for r in conn.execute(
                "SELECT view_name FROM timescaledb_information.continuous_aggregates")}
            jobs = {r[0] for r in conn.execute("SELECT proc_name FROM timescaledb_information.jobs")}
            layered = [r[0] for r in conn.execute("SELECT timescale FROM schema_migrations WHERE version IN (3, 4, 5)")]
            for family in FAMILIES.values():
                raw_cols = [r[0] for r in conn.execute(
                    "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
                    "AND NOT attisdropped ORDER BY attnum", (family.table("1m"),))]
                assert raw_cols == list(family.column_names)
        assert {"chain_metrics", "option_quotes", "cumulative_oi", "velocity", "levels",
                "pattern_events", "flow_events", "api_usage"} <= hypertables
        assert "gex_profile" not in hypertables  # a view over option_quotes
        assert {f.table(lv) for f in FAMILIES.values() for lv in LEVELS} == caggs
        assert {"policy_refresh_continuous_aggregate", "policy_retention"} <= jobs
        assert jobs & {"policy_compression", "policy_columnstore"}
        assert layered == [True, True, True]
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
