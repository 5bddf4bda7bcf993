"""The rollup refresh's backend runs at a lower CPU priority when the database is on this machine."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest

from hftengine.storage.niceness import is_local_host, lower_backend_priority


def _nice_of(pid: int) -> int:
    # /proc/<pid>/stat: field 19 is the nice value; the command name (field 2) may contain spaces
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[16])


def test_local_hosts() -> None:
    assert is_local_host("/tmp/hft-pg")
    assert is_local_host("127.0.0.1") and is_local_host("localhost") and is_local_host("::1")
    assert not is_local_host("db.internal.example") and not is_local_host("10.0.0.5") and not is_local_host("")


def test_lowers_the_backend_not_the_server(migrated_dsn: str) -> None:
    with psycopg.connect(migrated_dsn, autocommit=True) as conn, psycopg.connect(migrated_dsn) as other:
        if not is_local_host(conn.info.host or "") or not Path("/proc/self/stat").exists():
            pytest.skip("DATABASE_URL points at a server on another machine")
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        other_pid = other.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        if not Path(f"/proc/{pid}").exists():
            pytest.skip("the server's processes are not visible here (a container)")
        if Path(f"/proc/{pid}").stat().st_uid != os.getuid() and os.getuid() != 0:
            assert lower_backend_priority(conn, 5) is False  # not ours to renice: refused, not raised
            pytest.skip("the server runs as another user: its backends are left alone")
        before, other_before = _nice_of(pid), _nice_of(other_pid)
        assert lower_backend_priority(conn, 0) is False  # 0: leave it alone
        assert _nice_of(pid) == before
        assert lower_backend_priority(conn, 5) is True
        assert _nice_of(pid) == min(19, before + 5)
        assert _nice_of(other_pid) == other_before  # only this connection's backend
        assert conn.execute("SELECT 1").fetchone() == (1,)  # and it still works
