"""`hftengine demo` on a bare machine: everything embedded, serves chains, Ctrl-C leaves nothing running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from hftengine.runtime.ports import free_port
from hftengine.storage.migrations import discover

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def test_demo_runs_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("KAFKA_BOOTSTRAP", "DATABASE_URL", "SCHEMA_REGISTRY_URL", "REDIS_URL")}
    env["HFT_WORKER_WEB_PORT"] = str(free_port())
    log = tmp_path / "demo.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hftengine.cli", "demo", "--api-port", str(port), "--data-dir",
             str(tmp_path / "data"), "--rate", "2", "--underlyings", "NIFTY,BANKNIFTY"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    descendants: set[int] = set()
    try:
        deadline = time.monotonic() + 180
        chain = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"demo exited early:\n{log.read_text()[-3000:]}"
            try:
                descendants |= {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
            except psutil.NoSuchProcess:
                pass
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/v1/option-chain/NIFTY/latest", timeout=2)
                if r.status_code == 200:
                    chain = r.json()
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert chain is not None, f"no chain served within 180 s:\n{log.read_text()[-3000:]}"
        assert chain["metrics"]["pcr_oi"] > 0
        assert any(s["ce"] and s["ce"]["iv"] for s in chain["strikes"])
        descendants |= {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
        assert len(descendants) >= 5  # postgres, tansu, worker, simulator, api (+ postgres backends)
        output = log.read_text()
        assert f"http://127.0.0.1:{port}/docs" in output
        # a fresh database: every migration is reported as applied, even those the registry ran first
        n_migrations = len(discover())
        assert f"migrations: {n_migrations} applied, 0 already there" in output, output[:2000]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"demo did not stop within 90 s of Ctrl-C:\n{log.read_text()[-3000:]}")
    assert code == 0, log.read_text()[-3000:]
    time.sleep(1)
    alive = [p for p in descendants if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"left running after Ctrl-C: {[psutil.Process(p).cmdline() for p in alive]}"
    assert "stopped; nothing left running" in log.read_text()
