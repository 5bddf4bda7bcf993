"""Retention: drop time-series data older than each table's window.

The windows live in ``timeseries_tables.retention`` (defaults set by the migrations; edit the rows
to change them) and can be overridden per call.  Plain PostgreSQL: whole partitions are dropped
once every row in them is older than the window (so data lives up to one partition width longer
than the window).  TimescaleDB: the migrations also installed retention jobs; this runs
``drop_chunks`` with the same windows, e.g. after a window was shortened.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

from hftengine.storage.rollups import refresh_rollups, storage_layout

log = logging.getLogger(__name__)

RetentionPolicy = Mapping[str, timedelta | None]


def retention_policy(dsn: str) -> dict[str, timedelta | None]:
    """The windows recorded in ``timeseries_tables`` (``None``: keep forever)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT table_name, retention FROM timeseries_tables ORDER BY 1").fetchall()
    return {str(name): keep for name, keep in rows}


def apply_retention(
    dsn: str, policy: RetentionPolicy | None = None, *, now: datetime | None = None,
    close_idle_after: timedelta = timedelta(minutes=10),
) -> dict[str, list[str]]:
    """Drop data older than ``now - window`` per table; returns what was dropped per table.

    ``policy`` maps table names to windows and overrides ``timeseries_tables`` for those tables
    (``None`` keeps the table forever).  On plain PostgreSQL, rollup buckets of idle chains are
    materialized first (``refresh_rollups``) so dropping raw partitions never loses a rollup.
    """
    now = now or datetime.now(UTC)
    windows = retention_policy(dsn)
    unknown = sorted(set(policy or {}) - set(windows))
    if unknown:
        raise ValueError(f"not time-series tables: {', '.join(unknown)}; known: {', '.join(windows)}")
    windows.update(policy or {})
    dropped: dict[str, list[str]] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        layout = storage_layout(conn)
    if layout == "partitioned":
        refresh_rollups(dsn, idle=close_idle_after, now=now)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table, keep in sorted(windows.items()):
            if keep is None:
                continue
            cutoff = now - keep
            with conn.transaction():
                if layout == "timescaledb":
                    rows = conn.execute(sql.SQL("SELECT drop_chunks({}, older_than => %s)").format(
                        sql.Literal(table)), (cutoff,)).fetchall()
                else:
                    rows = conn.execute("SELECT hft_drop_partitions(%s, %s)", (table, cutoff)).fetchall()
            names = [str(r[0]) for r in rows]
            if names:
                log.info("retention: dropped %s from %s (older than %s)", ", ".join(names), table, cutoff)
                dropped[table] = names
    return dropped
