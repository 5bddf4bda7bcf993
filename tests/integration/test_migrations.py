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
