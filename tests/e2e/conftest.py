"""Pipeline fixtures: a real worker process against the session's broker, registry and a fresh database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from hftengine.config import Settings
from hftengine.runtime.ports import free_port


@dataclass
class Pipeline:
    settings: Settings
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start_worker(self, datadir: Path, *, via_faust: bool = False) -> None:
        """Start a worker process: ``hftengine worker`` or ``faust -A hftengine.worker worker``."""
        log = open(self.log, "ab")  # noqa: SIM115
        if via_faust:
            cmd = [str(Path(sys.executable).parent / "faust"), "-A", "hftengine.worker", "worker", "-l", "info"]
        else:
            cmd = [sys.executable, "-m", "hftengine.cli", "worker", "--datadir", str(datadir), "-l", "info"]
        self.proc = subprocess.Popen(
            cmd,
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()

    def stop_worker(self, sig: int = 15) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:]) if self.log.exists() else ""

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with psycopg.connect(self.settings.database_dsn()) as conn:
            return list(conn.execute(sql, params).fetchall())  # type: ignore[arg-type]

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"worker exited ({self.proc.returncode}) while waiting for {what}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; worker log:\n{self.log_tail()}")
            time.sleep(0.25)


@pytest.fixture
def pipeline(
    kafka_bootstrap: str, registry_url: str, migrated_dsn: str, unique: str, tmp_path: Path
) -> Iterator[Pipeline]:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP": kafka_bootstrap,
        "SCHEMA_REGISTRY_URL": registry_url,
        "DATABASE_URL": migrated_dsn,
        "HFT_APP_ID": f"hft-test-{unique}",
        "HFT_RAW_TOPIC": f"raw-{unique}",
        "HFT_ENRICHED_TOPIC": f"enriched-{unique}",
        "HFT_DEADLETTER_TOPIC": f"dead-{unique}",
        "HFT_ANALYTICS_OI_TOPIC": f"a-oi-{unique}",
        "HFT_ANALYTICS_LEVELS_TOPIC": f"a-levels-{unique}",
        "HFT_ANALYTICS_PATTERNS_TOPIC": f"a-patterns-{unique}",
        "HFT_TOPIC_PARTITIONS": "2",
        "HFT_WORKER_WEB_PORT": str(free_port()),
        "HFT_DATA_DIR": str(tmp_path / "data"),
        "HFT_LOG_LEVEL": "INFO",
    }
    if not os.environ.get("KAFKA_BOOTSTRAP"):  # the fixture's embedded Tansu
        env["HFT_PRODUCER_MAX_BATCH_BYTES"] = "1"
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, schema_registry_url=registry_url, database_url=migrated_dsn,
        app_id=env["HFT_APP_ID"], raw_topic=env["HFT_RAW_TOPIC"], enriched_topic=env["HFT_ENRICHED_TOPIC"],
        deadletter_topic=env["HFT_DEADLETTER_TOPIC"], topic_partitions=2, data_dir=tmp_path / "data",
    )
    p = Pipeline(settings, env, tmp_path / "worker.log")
    try:
        yield p
    finally:
        p.stop_worker()
