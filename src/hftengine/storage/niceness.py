"""Run a connection's PostgreSQL backend at a lower CPU priority (maintenance work).

The scheduled rollup refresh aggregates a minute of quotes (millions of rows at full market
rates) in one backend, which takes a whole core for seconds.  When the database runs on the
workers' machine — the embedded default, or a local PostgreSQL — that burst competes with the
pipeline it serves and shows up as a freshness spike once a minute.  A backend at ``nice`` 10
gets the CPU the pipeline leaves idle instead, so the refresh takes a little longer and the
pipeline does not notice it.

Only a backend that is verifiably this connection's is touched: the connection goes to a loopback
address or a Unix socket, and a process with the backend's pid exists here, is named ``postgres``
and started when the server says the backend did.  Anything else (a remote server, a server in a
container, whose pids are not ours) is left alone, and so is a server of another user unless this
process may renice it (root: the embedded server runs as its own system user).  The
priority dies with the backend process when the connection closes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import psycopg

log = logging.getLogger(__name__)

_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


def is_local_host(host: str) -> bool:
    """A Unix-socket directory or a loopback address (what libpq reports as the connection's host)."""
    return host.startswith("/") or host in _LOOPBACK or host.startswith("127.")


def _process_started(pid: int) -> float | None:
    """Start time of a local process (Unix seconds), from /proc; None if there is no such process."""
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
        btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                     if line.startswith("btime "))
    except (OSError, StopIteration, ValueError):
        return None
    ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22: starttime, in clock ticks after boot
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def _is_this_backend(pid: int, backend_start: float) -> bool:
    """The local process ``pid`` is a PostgreSQL process started when the server says the backend was."""
    try:
        comm = (Path("/proc") / str(pid) / "comm").read_text().strip()
    except OSError:
        return False
    started = _process_started(pid)
    return comm.startswith("postgres") and started is not None and abs(started - backend_start) < 2.0


def lower_backend_priority(conn: psycopg.Connection[Any], nice: int) -> bool:
    """Raise the niceness of ``conn``'s backend by ``nice`` (0: no change); True if it was lowered."""
    if nice <= 0 or not hasattr(os, "setpriority") or not is_local_host(conn.info.host or ""):
        return False
    row = conn.execute(
        "SELECT pid, extract(epoch FROM backend_start)::float8 FROM pg_stat_activity WHERE pid = pg_backend_pid()"
    ).fetchone()
    if row is None or not _is_this_backend(int(row[0]), float(row[1])):
        return False
    pid = int(row[0])
    try:
        current = os.getpriority(os.PRIO_PROCESS, pid)
        os.setpriority(os.PRIO_PROCESS, pid, min(19, current + nice))
    except OSError as exc:
        log.debug("could not lower the priority of backend %d: %s", pid, exc)
        return False
    log.debug("backend %d now runs at nice %d", pid, min(19, current + nice))
    return True
