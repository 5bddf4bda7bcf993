"""Crash safety: SIGKILL the worker at seeded random points, restart it, and end with exactly the
state, topic values and database rows of an uninterrupted run.

The seeded feed is published in full before the first worker starts.  Each round starts the
worker, waits until it has stored something new, sleeps a seeded random 0.2-2 s and kills the
whole process group with SIGKILL.  The third restart also deletes the worker's local RocksDB
directory, so that state comes back from the changelog topic alone.  After the last kill the
worker runs to the end and is stopped gracefully.

Expected values come from an uninterrupted in-process run of the same pure functions
(``reference_run``), written through the same sink code into a second database.
"""

from __future__ import annotations

import random
import shutil
import signal
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from rocksdict import AccessType, Options, Rdict

from hftengine.agents.stateful import KINDS
from hftengine.feeds.simulator import MarketSimulator
from hftengine.tables.chain_state import CHAIN_STATE_TABLE
from tests.e2e.conftest import Pipeline
from tests.e2e.test_stateful import (
    ANALYTICS_TABLES,
    START,
    changelog_finals,
    count,
    final_values,
    publish,
    reference_run,
    table_rows,
    wait_stored,
    with_analytics_topics,
    write_reference_db,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
KILLS = 5
SEED = 20261122


def local_table(datadir: Path) -> dict[bytes, bytes]:
    """The chain-state table as the worker's RocksDB files hold it (worker stopped)."""
    out: dict[bytes, bytes] = {}
    for path in sorted((datadir / "v1" / "tables").glob(f"{CHAIN_STATE_TABLE}-*.db")):
        opts = Options(raw_mode=True)
        db = Rdict(str(path), options=opts, access_type=AccessType.read_only())
        try:
            for key, value in db.items():
                if b"|" in key and not key.startswith(b"__faust"):
                    out[bytes(key)] = bytes(value)
        finally:
            db.close()
    return out


def test_sigkill_at_random_points_loses_and_duplicates_nothing(
    pipeline: Pipeline, unique: str, tmp_path: Path, make_database: Callable[..., str]
) -> None:
    p = with_analytics_topics(pipeline, unique)
    # a killed member leaves the group when its session expires: keep that short so restarts are quick
    p.env["HFT_SESSION_TIMEOUT"] = "3"
    sim = MarketSimulator.with_demo_scenarios(3, ["NIFTY", "BANKNIFTY"], strikes_per_side=10,
                                              expiries_per_underlying=2, interval=timedelta(seconds=2),
                                              start=START)
    snaps = publish(p, sim, steps=250)
    ref = reference_run(snaps, p.settings)
    n_oi = sum(1 for k, _ in ref.records if k == "oi")
    rng = random.Random(SEED)
    datadir = tmp_path / "tables"
    started = time.monotonic()
    log: list[str] = []
    mid_stream = 0

    for round_ in range(KILLS):
        if round_ == 2:
            shutil.rmtree(datadir, ignore_errors=True)  # local state lost: recover from the changelog
        before = count(p, "oi_totals")
        p.start_worker(datadir)
        p.wait_for("progress after a restart",
                   lambda before=before: count(p, "oi_totals") > before or before >= n_oi, 90)  # type: ignore[misc]
        delay = rng.uniform(0.2, 2.0)
        time.sleep(delay)
        stored = count(p, "oi_totals")
        p.stop_worker(signal.SIGKILL)
        mid_stream += stored < n_oi
        log.append(f"kill {round_ + 1}: {delay:.2f}s after progress, {stored}/{n_oi} snapshots stored"
                   + (", local state deleted before this run" if round_ == 2 else ""))

    p.start_worker(datadir)
    wait_stored(p, ref)
    p.stop_worker(signal.SIGTERM)
    elapsed = time.monotonic() - started

    # database rows: equal to the uninterrupted run's, table by table (primary keys absorb replays)
    ref_dsn = make_database(migrated=True)
    write_reference_db(ref, ref_dsn)
    for table in ANALYTICS_TABLES:
        got, want = table_rows(p.settings.database_dsn(), table), table_rows(ref_dsn, table)
        assert len(got) == len(want), f"{table}: {len(got)} rows, uninterrupted run {len(want)}"
        assert got == want, table
    assert count(p, "chain_metrics") == len(snaps)

    # topics: every record present, duplicates (replays) byte-identical, final value per key = reference
    bootstrap = p.settings.kafka_bootstrap
    assert bootstrap
    duplicates = 0
    for kind in KINDS:
        seen, messages = final_values(bootstrap, p.settings, kind)
        assert set(seen) == set(ref.encoded[kind]), f"{kind}: missing or extra records"
        differing = [k for k, values in seen.items() if values != {ref.encoded[kind][k]}]
        assert not differing, f"{kind}: {len(differing)} keys with other values, e.g. {differing[0]}"
        duplicates += messages - len(seen)

    # tables: the changelog's last values and the local RocksDB store hold the reference's final states
    assert changelog_finals(bootstrap, p.settings) == ref.states
    assert local_table(datadir) == ref.states

    report = "\n".join(log)
    print(f"\n{report}\nsurvived {KILLS} SIGKILLs ({mid_stream} mid-stream) in {elapsed:.0f}s: "
          f"{len(snaps)} snapshots, {len(ref.states)} table keys, {len(ref.records)} analytics records, "
          f"{duplicates} duplicate messages on the analytics topics (identical bytes), "
          f"database rows equal to the uninterrupted run's")
