"""`hftengine backfill`: recorded files → same kernels and sink → database, idempotently."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg

from hftengine.feeds.replay import backfill
from hftengine.storage.direct import DirectStorePublisher

DATA = Path(__file__).resolve().parents[1] / "data" / "replay"


def test_backfill_stores_enriched_chains_once(migrated_dsn: str) -> None:
    pub = DirectStorePublisher(migrated_dsn, r=0.065, q=0.0)
    stats = backfill([str(DATA)], pub, progress=False)
    pub.close()
    assert pub.chains_written == stats.snapshots > 0
    assert len(stats.errors) > 0  # the sample files contain malformed lines on purpose
    with psycopg.connect(migrated_dsn) as conn:
        chains = conn.execute("SELECT count(*) FROM chain_metrics").fetchone()
        solved = conn.execute("SELECT count(*) FROM option_quotes WHERE iv IS NOT NULL").fetchone()
        letters = conn.execute("SELECT count(*) FROM dead_letters WHERE reason <> ''").fetchone()
        units = {r[0] for r in conn.execute("SELECT DISTINCT oi_unit FROM chain_metrics")}
    assert chains and chains[0] == stats.snapshots
    assert solved and solved[0] > 0
    assert letters and letters[0] == pub.dead_lettered > 0
    assert units == {"shares", "contracts"}

    again = DirectStorePublisher(migrated_dsn, r=0.065, q=0.0)
    backfill([str(DATA)], again, progress=False)
    again.close()
    assert again.chains_written == 0 and again.chains_duplicate == stats.snapshots


def test_backfill_cli_reports_and_refuses_missing_paths(migrated_dsn: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": migrated_dsn, "PATH": "/usr/bin:/bin", "HFT_DATA_DIR": str(tmp_path)}
    missing = subprocess.run([sys.executable, "-m", "hftengine.cli", "backfill", str(tmp_path / "nope.csv")],
                             env=env, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "no such file" in missing.stderr
    ok = subprocess.run([sys.executable, "-m", "hftengine.cli", "backfill", "--no-progress", str(DATA / "chain.csv")],
                        env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "stored" in ok.stdout and "chain.csv:" in ok.stderr
