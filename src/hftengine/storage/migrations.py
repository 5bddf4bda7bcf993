"""Forward-only, numbered SQL migrations.

``sql/NNNN_name.sql`` are applied in order on every database.  When the
TimescaleDB extension is available, ``sql/timescale/NNNN_name.sql`` (the layer
for the same number) is applied right after its base migration.  Each applied
migration is recorded in ``schema_migrations`` with its checksum; re-running is
a no-op, and a changed file that was already applied is refused.

The storage layout is decided when the first migration runs and recorded in
``storage_features`` (``layout`` = ``timescaledb`` or ``partitioned``): a
database created without TimescaleDB keeps the partitioned layout even if the
extension appears later.  On the partitioned layout, ``migrate`` finishes by
creating the day partitions for today and the next ``days_ahead`` days.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import psycopg

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x48465445  # advisory lock id: one migrator at a time


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    timescale_path: Path | None

    def checksum(self) -> str:
        h = hashlib.sha256(self.path.read_bytes())
        return h.hexdigest()


@dataclass
class MigrationReport:
    applied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    timescale: bool = False
    timescale_version: str | None = None
    layout: str = "partitioned"
    partitions_created: list[str] = field(default_factory=list)


class MigrationError(RuntimeError):
    pass


def sql_dir() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "sql" / "0001_reference.sql").is_file():
            return parent / "sql"
    raise FileNotFoundError("sql/ directory with migrations not found above " + str(here))


def discover(directory: Path | None = None) -> list[Migration]:
    directory = directory or sql_dir()
    out: list[Migration] = []
    seen: set[int] = set()
    for path in sorted(directory.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise MigrationError(f"migration file name {path.name!r} is not NNNN_name.sql")
        version = int(m.group(1))
        if version in seen:
            raise MigrationError(f"two migrations numbered {version:04d}")
        seen.add(version)
        ts = directory / "timescale" / path.name
        out.append(Migration(version, m.group(2), path, ts if ts.is_file() else None))
    return out


def _timescale_available(conn: psycopg.Connection) -> str | None:
    row = conn.execute(
        "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    if row is None:
        return None
    version = str(row[0])
    major, minor = (int(x) for x in version.split(".")[:2])
    if (major, minor) < (2, 13):
        log.warning("TimescaleDB %s is older than 2.13; using the plain PostgreSQL layout", version)
        return None
    return version


def migrate(
    dsn: str, *, directory: Path | None = None, use_timescale: bool | None = None, days_ahead: int = 3
) -> MigrationReport:
    """Apply every pending migration; safe to run concurrently and repeatedly."""
    migrations = discover(directory)
    report = MigrationReport()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version integer PRIMARY KEY,
                       name text NOT NULL,
                       checksum text NOT NULL,
                       timescale boolean NOT NULL DEFAULT false,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            conn.execute(
                """CREATE TABLE IF NOT EXISTS storage_features (
                       feature text PRIMARY KEY, value text, detected_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {
                int(v): (str(c), bool(t))
                for v, c, t in conn.execute("SELECT version, checksum, timescale FROM schema_migrations")
            }
            row = conn.execute("SELECT value FROM storage_features WHERE feature = 'layout'").fetchone()
            fixed_layout = str(row[0]) if row and done else None
            ts_version = _timescale_available(conn) if use_timescale in (None, True) else None
            if use_timescale and ts_version is None:
                raise MigrationError("TimescaleDB was required but the extension (>= 2.13) is not available")
            if fixed_layout == "partitioned" and ts_version:
                if use_timescale:
                    raise MigrationError("this database already uses the plain PostgreSQL (partitioned) layout; "
                                         "TimescaleDB can only be used on a fresh database")
                log.warning("TimescaleDB %s is available but this database was created without it; "
                            "keeping the partitioned layout", ts_version)
                ts_version = None
            if fixed_layout == "timescaledb" and not ts_version:
                raise MigrationError("this database uses the TimescaleDB layout but the extension is not available")
            if ts_version:
                conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
                ts_version = str(row[0]) if row else ts_version
            report.timescale = ts_version is not None
            report.timescale_version = ts_version
            conn.execute(
                """INSERT INTO storage_features (feature, value) VALUES ('timescaledb', %s)
                   ON CONFLICT (feature) DO UPDATE SET value = EXCLUDED.value, detected_at = now()""",
                (ts_version or "absent",),
            )
            report.layout = "timescaledb" if ts_version else "partitioned"
            conn.execute(
                """INSERT INTO storage_features (feature, value) VALUES ('layout', %s)
                   ON CONFLICT (feature) DO UPDATE SET value = EXCLUDED.value, detected_at = now()""",
                (report.layout,),
            )
            for mig in migrations:
                label = f"{mig.version:04d}_{mig.name}"
                if mig.version in done:
                    checksum, _ = done[mig.version]
                    if checksum != mig.checksum():
                        raise MigrationError(
                            f"migration {label} changed after it was applied (checksum mismatch); "
                            "migrations are forward-only: add a new numbered file instead"
                        )
                    report.skipped.append(label)
                    continue
                with conn.transaction():
                    conn.execute(mig.path.read_text(encoding="utf-8"))
                    layered = bool(ts_version and mig.timescale_path)
                    if layered and mig.timescale_path is not None:
                        conn.execute(mig.timescale_path.read_text(encoding="utf-8"))
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum, timescale) VALUES (%s, %s, %s, %s)",
                        (mig.version, mig.name, mig.checksum(), layered),
                    )
                report.applied.append(label)
                log.info("applied migration %s%s", label, " (+timescale layer)" if layered else "")
            if report.layout == "partitioned" and days_ahead >= 0:
                report.partitions_created = ensure_partitions_on(conn, days_ahead)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return report


def ensure_partitions_on(
    conn: psycopg.Connection[Any], days_ahead: int, *, start: date | None = None, end: date | None = None
) -> list[str]:
    """Create the partitions covering ``start`` (default today, UTC) to ``end`` or ``today + days_ahead``."""
    first = start or datetime.now(UTC).date()
    last = end or datetime.now(UTC).date() + timedelta(days=days_ahead)
    lo = datetime.combine(first, time(), UTC)
    hi = datetime.combine(last, time(), UTC) + timedelta(days=1)
    with conn.transaction():
        return [str(r[0]) for r in conn.execute("SELECT hft_ensure_partitions(%s, %s)", (lo, hi))]


def ensure_partitions(
    dsn: str, days_ahead: int = 3, *, start: date | None = None, end: date | None = None
) -> list[str]:
    """Plain PostgreSQL: make sure every time-series table has partitions for the days from ``start``
    (default today, UTC) through ``end`` (default ``today + days_ahead``); returns the names created.
    A no-op under TimescaleDB (chunks are created on insert)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return ensure_partitions_on(conn, days_ahead, start=start, end=end)
