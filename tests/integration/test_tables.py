"""The chain-state Faust table: RocksDB through rocksdict, co-partitioned changelog, recovery from it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from types import ModuleType

import faust.stores.rocksdb as faust_rocksdb
import pytest

from hftengine.app import create_app
from hftengine.config import Settings
from hftengine.tables.chain_state import CHAIN_STATE_TABLE, changelog_topic_name

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
BENCH = Path(__file__).resolve().parents[2] / "bench" / "recovery.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_recovery", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_table_is_rocksdb_via_rocksdict_with_a_copartitioned_changelog(tmp_path: Path) -> None:
    settings = Settings(kafka_bootstrap="127.0.0.1:1", app_id="hft-tables-test", topic_partitions=3,
                        data_dir=tmp_path)
    app = create_app(settings, datadir=tmp_path / "worker", web_enabled=False)
    table = app.tables[CHAIN_STATE_TABLE]
    assert faust_rocksdb.rocksdb is None  # python-rocksdb is not installed...
    assert faust_rocksdb.USE_ROCKSDICT  # ...so faust-streaming's rocksdb:// store runs on rocksdict
    store = table.data
    assert isinstance(store, faust_rocksdb.Store) and store.use_rocksdict
    assert str(app.conf.store).startswith("rocksdb:")
    # co-partitioned with the enriched topic (keyed by underlying): same partition count, and Faust
    # writes each change to the partition of the event being processed (use_partitioner off)
    assert table.partitions == settings.topic_partitions
    assert not table.use_partitioner
    assert table.changelog_topic.get_topic_name() == changelog_topic_name(settings)
    assert changelog_topic_name(settings) == "hft-tables-test-analytics-chain-state-changelog"
    assert (table.key_serializer, table.value_serializer) == ("raw", "raw")


def test_a_worker_without_local_state_recovers_every_key_from_the_changelog(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    bench = load_bench()
    histories = bench.state_histories(updates=3, steps=12)
    messages, last = bench.changelog_messages(3, histories, 2)
    app_id = f"hft-recovery-{uuid.uuid4().hex[:8]}"
    bench.produce(kafka_bootstrap, changelog_topic_name(Settings(app_id=app_id)), 2, messages)
    result = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--worker", "--app-id", app_id, "--bootstrap", kafka_bootstrap,
         "--partitions", "2", "--datadir", str(tmp_path / "worker"), "--result", str(result)],
        env=os.environ.copy(), capture_output=True, text=True, timeout=150,
    )
    assert result.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(result.read_text())
    assert r["keys"] == len(last) == 6  # 3 underlyings x 2 expiries
    assert r["digest"] == bench.digest(last)  # the last value of every key, byte for byte
