"""Storage benchmark: one simulated trading day through the sink's COPY path, then API query latency.

Loads a full NSE session (09:15-15:30 IST) of synthetic enriched chains for several underlyings
(``--underlyings`` x ``--expiries`` chains of ``--strikes`` strikes, CE and PE) into PostgreSQL
through ``PostgresChainStore.write`` (binary COPY, idempotent, rollups maintained), and prints:

* ingest: option_quotes rows/s (and all rows/s: quotes + GEX profile + chain metrics);
* bytes on disk per quote row (and after compression under TimescaleDB; "n/a" without it);
* p50/p95 latency of typical API requests, in-process through the FastAPI app:
  the latest chain; one strike's IV for the day at 1-minute buckets; a month of daily PCR
  (the 30 earlier days are synthesized cheaply as one chain-metrics row per minute).

``--scale`` is the snapshot rate relative to one per second: at 1.0 a chain is sampled every
second (22 500 snapshots per chain, 4 x 3 chains x 200 contracts = 54 million quote rows); at
0.1 every 10 seconds.  Database: DATABASE_URL's server (a fresh database is created and dropped),
else an embedded PostgreSQL in a temporary directory.

Usage: python bench/storage.py --scale 0.1 [--underlyings 4 --expiries 3 --strikes 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from hftengine.api import create_api  # noqa: E402
from hftengine.config import Settings  # noqa: E402
from hftengine.runtime.postgres import EmbeddedPostgres  # noqa: E402
from hftengine.storage.migrations import ensure_partitions, migrate  # noqa: E402
from hftengine.storage.queries import Queries  # noqa: E402
from hftengine.storage.rollups import ROLLUP_TABLES, refresh_rollups  # noqa: E402
from hftengine.storage.sink import PostgresChainStore  # noqa: E402

SESSION_OPEN = timedelta(hours=3, minutes=45)  # 09:15 IST in UTC
SESSION_SECONDS = 22_500  # 6 h 15 min
UNDERLYINGS = [("NIFTY", 13, 25000.0, 50.0, 75), ("BANKNIFTY", 25, 52000.0, 100.0, 35),
               ("FINNIFTY", 27, 23500.0, 50.0, 65), ("MIDCPNIFTY", 442, 12500.0, 25.0, 140),
               ("SENSEX", 51, 82000.0, 100.0, 20), ("BANKEX", 69, 60000.0, 100.0, 30)]
TARGET_ROWS_PER_S = 200_000
TARGET_P95_MS = 50.0


class Chain:
    """One synthetic chain: fixed strikes and ids, a random-walk spot, OI and a smile."""

    def __init__(self, symbol: str, sec_id: int, spot: float, step: float, lot: int, expiry: date,
                 n_strikes: int, rng: np.random.Generator, id_base: int) -> None:
        self.symbol, self.sec_id, self.spot, self.lot, self.expiry = symbol, sec_id, spot, lot, expiry
        atm = round(spot / step) * step
        self.strikes = atm + step * (np.arange(n_strikes) - n_strikes // 2)
        self.n = n_strikes
        self.ids = {"ce": np.arange(id_base, id_base + n_strikes, dtype=np.int64),
                    "pe": np.arange(id_base + n_strikes, id_base + 2 * n_strikes, dtype=np.int64)}
        self.oi = {s: rng.integers(100, 20_000, n_strikes).astype(np.int64) * lot for s in ("ce", "pe")}
        self.prev_oi = {s: self.oi[s].copy() for s in ("ce", "pe")}
        self.volume = {s: np.zeros(n_strikes, dtype=np.int64) for s in ("ce", "pe")}
        self.rng = rng
        self.present = np.ones(n_strikes, dtype=bool)

    def record(self, ts: datetime) -> dict[str, Any]:
        rng, n = self.rng, self.n
        self.spot *= 1 + rng.normal(0, 0.0002)
        m = np.log(self.strikes / self.spot)
        iv = 0.12 + 0.8 * m * m - 0.05 * m + rng.normal(0, 0.002, n)
        tte = max((datetime.combine(self.expiry, datetime.min.time(), UTC) - ts).days, 1) / 365
        intrinsic = {"ce": np.maximum(self.spot - self.strikes, 0), "pe": np.maximum(self.strikes - self.spot, 0)}
        tv = 0.4 * self.spot * iv * np.sqrt(tte) * np.exp(-m * m / (2 * iv * iv * tte))
        legs: dict[str, Any] = {}
        analytics: dict[str, Any] = {}
        for side, sign in (("ce", 1.0), ("pe", -1.0)):
            price = np.round((intrinsic[side] + tv) / 0.05) * 0.05 + 0.05
            self.oi[side] = np.maximum(self.oi[side] + rng.integers(-3, 4, n) * self.lot, 0)
            self.volume[side] = self.volume[side] + rng.integers(0, 20, n) * self.lot
            gamma = np.exp(-m * m / (2 * iv * iv * tte)) / (self.spot * iv * np.sqrt(2 * np.pi * tte))
            legs[side] = {
                "present": self.present, "security_id": self.ids[side], "last_price": price,
                "top_bid_price": price - 0.05, "top_ask_price": price + 0.05,
                "top_bid_quantity": np.full(n, 10 * self.lot, dtype=np.int64),
                "top_ask_quantity": np.full(n, 8 * self.lot, dtype=np.int64),
                "volume": self.volume[side], "oi": self.oi[side], "previous_oi": self.prev_oi[side],
                "previous_close_price": price, "average_price": price, "implied_volatility": iv * 100,
            }
            analytics[side] = {
                "iv": iv, "delta": sign * 0.5 + 0.4 * np.tanh(-m * 10), "gamma": gamma,
                "theta": -price / tte * 0.1, "vega": np.full(n, self.spot * np.sqrt(tte) * 0.4),
                "rho": sign * 0.01 * price, "vanna": gamma * 0.1, "charm": gamma * 0.01,
                "gex": sign * gamma * self.oi[side] * self.spot**2 * 0.01,
                "buildup": rng.integers(0, 5, n).astype(np.int16),
            }
        net = analytics["ce"]["gex"] + analytics["pe"]["gex"]
        atm = int(np.argmin(np.abs(m)))
        return {
            "snapshot": {
                "underlying": self.symbol, "underlying_security_id": self.sec_id, "segment": "IDX_I",
                "exchange": "NSE", "expiry": self.expiry, "exchange_ts": ts,
                "received_ts": ts + timedelta(milliseconds=30), "spot": self.spot, "lot_size": self.lot,
                "oi_unit": "shares", "source": "bench", "strikes": self.strikes, "ce": legs["ce"], "pe": legs["pe"],
            },
            "enriched_ts": ts + timedelta(milliseconds=40), "conventions_version": "bench", "time_to_expiry": tte,
            "rate": 0.065, "dividend_yield": 0.0, "forward": self.spot, "ce_analytics": analytics["ce"],
            "pe_analytics": analytics["pe"], "gex": net,
            "pcr_oi": float(self.oi["pe"].sum() / max(self.oi["ce"].sum(), 1)),
            "pcr_volume": float(self.volume["pe"].sum() / max(self.volume["ce"].sum(), 1)), "pcr_doi": 1.0,
            "max_pain": float(self.strikes[atm]), "total_gex": float(net.sum()), "gamma_flip": None,
            "call_wall": float(self.strikes[atm + 2]), "put_wall": float(self.strikes[atm - 2]),
            "atm_iv": float(iv[atm]), "rr25": -0.01, "bf25": 0.005, "flow_score": np.zeros(n), "quality_flags": [],
        }


def with_database(dsn: str, name: str) -> str:
    params = conninfo_to_dict(dsn)
    params["dbname"] = name
    return make_conninfo(**params)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def batches(chains: list[Chain], day: datetime, step_s: float, per_batch: int) -> Iterator[list[dict[str, Any]]]:
    """All chains at each timestamp, ``per_batch`` timestamps per sink batch, in time order."""
    times = np.arange(0, SESSION_SECONDS, step_s)
    for i in range(0, len(times), per_batch):
        yield [c.record(day + SESSION_OPEN + timedelta(seconds=float(t))) for t in times[i:i + per_batch]
               for c in chains]


def synthesize_month(dsn: str, chains: list[Chain], day: datetime) -> int:
    """30 earlier sessions of chain metrics, one row per minute per chain (SQL, no quotes)."""
    first = (day - timedelta(days=30)).date()
    ensure_partitions(dsn, start=first, end=day.date())
    with psycopg.connect(dsn) as conn:
        n = 0
        for c in chains:
            cur = conn.execute(
                """INSERT INTO chain_metrics (ts, underlying, expiry, spot, forward, time_to_expiry, pcr_oi,
                       pcr_volume, pcr_doi, max_pain, total_gex, call_wall, put_wall, atm_iv, rr25, bf25,
                       conventions_version, source, lot_size, oi_unit, n_contracts, received_ts, enriched_ts)
                   SELECT t, %(u)s, %(e)s, %(spot)s * (1 + 0.01 * sin(extract(epoch FROM t) / 86400)),
                          %(spot)s, 0.05, 0.8 + 0.4 * random(), 1.0, 1.0, %(spot)s, 1e9, %(spot)s, %(spot)s,
                          0.12, -0.01, 0.005, 'bench', 'bench', %(lot)s, 'shares', %(n)s, t, t
                   FROM generate_series(%(first)s::timestamptz, %(last)s::timestamptz, interval '1 minute') t
                   WHERE t - date_trunc('day', t) >= %(open)s AND t - date_trunc('day', t) < %(close)s""",
                {"u": c.symbol, "e": c.expiry, "spot": c.spot, "lot": c.lot, "n": 2 * c.n,
                 "first": datetime.combine(first, datetime.min.time(), UTC), "last": day - timedelta(minutes=1),
                 "open": SESSION_OPEN, "close": SESSION_OPEN + timedelta(seconds=SESSION_SECONDS)})
            n += cur.rowcount
            conn.execute(
                "INSERT INTO chain_latest (underlying, expiry, ts) SELECT underlying, expiry, max(ts) "
                "FROM chain_metrics WHERE underlying = %s AND expiry = %s GROUP BY 1, 2 "
                "ON CONFLICT (underlying, expiry) DO UPDATE SET ts = EXCLUDED.ts", (c.symbol, c.expiry))
        conn.commit()
    refresh_rollups(dsn, idle=timedelta(0))  # close those days (plain) / refresh aggregates (TimescaleDB)
    return n


def disk_usage(dsn: str, layout: str) -> dict[str, float | None]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        def size(table: str) -> int:
            if layout == "timescaledb":
                row = conn.execute("SELECT hypertable_size(%s::regclass)", (table,)).fetchone()
            else:
                row = conn.execute(
                    "SELECT coalesce(sum(pg_total_relation_size(i.inhrelid)), 0) FROM pg_inherits i "
                    "WHERE i.inhparent = %s::regclass", (table,)).fetchone()
            return int(row[0] or 0) if row else 0

        rows_row = conn.execute("SELECT count(*) FROM option_quotes").fetchone()
        rows = int(rows_row[0]) if rows_row else 0
        out: dict[str, float | None] = {"rows": rows, "before": size("option_quotes") / max(rows, 1), "after": None,
                                        "rollups": sum(size(f"option_quotes_{lv}") for lv in ("1m", "5m", "1h", "1d"))
                                        if layout != "timescaledb" else None}
        if layout == "timescaledb":
            conn.execute("SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks('option_quotes') c")
            out["after"] = size("option_quotes") / max(rows, 1)
        return out


async def measure_queries(dsn: str, chains: list[Chain], day: datetime, n: int) -> dict[str, list[float]]:
    app = create_api(Settings(database_url=dsn))
    rng = np.random.default_rng(3)
    timings: dict[str, list[float]] = {"latest chain": [], "IV of one strike, 1 day at 1m": [],
                                       "PCR, 30 days at 1d": []}
    async with AsyncConnectionPool(dsn, min_size=2, max_size=4, open=False, kwargs={"autocommit": True}) as pool:
        app.state.queries = Queries(pool)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
            for i in range(n + 5):
                c = chains[int(rng.integers(len(chains)))]
                strike = float(c.strikes[int(rng.integers(c.n // 4, 3 * c.n // 4))])
                requests = {
                    "latest chain": (f"/v1/option-chain/{c.symbol}/latest", {"expiry": c.expiry.isoformat()}),
                    "IV of one strike, 1 day at 1m": (f"/v1/option-chain/{c.symbol}/history", {
                        "expiry": c.expiry.isoformat(), "strike": strike, "option_type": "CE", "fields": "iv",
                        "bucket": "1m", "from": day.isoformat(), "to": (day + timedelta(days=1)).isoformat()}),
                    "PCR, 30 days at 1d": (f"/v1/analytics/{c.symbol}/metrics/history", {
                        "expiry": c.expiry.isoformat(), "fields": "pcr_oi", "bucket": "1d",
                        "from": (day - timedelta(days=30)).isoformat(), "to": (day + timedelta(days=1)).isoformat()}),
                }
                for name, (path, params) in requests.items():
                    started = time.perf_counter()
                    r = await client.get(path, params=params)
                    elapsed = (time.perf_counter() - started) * 1000
                    if r.status_code != 200:
                        raise RuntimeError(f"{path} {params} -> {r.status_code}: {r.text[:300]}")
                    if i >= 5:  # warm-up
                        timings[name].append(elapsed)
            body = (await client.get(f"/v1/analytics/{chains[0].symbol}/metrics/history", params={
                "expiry": chains[0].expiry.isoformat(), "fields": "pcr_oi", "bucket": "1d",
                "from": (day - timedelta(days=30)).isoformat(), "to": (day + timedelta(days=1)).isoformat()})).json()
            assert body["count"] >= 30, body["count"]
    return timings


def rollup_fingerprint(dsn: str) -> list[tuple[str, int, int]]:
    """Row count and an order-free hash of every rollup table's rows."""
    with psycopg.connect(dsn) as conn:
        return [(t, *conn.execute(  # noqa: S608 - table names from the code
            f"SELECT count(*), coalesce(sum(hashtextextended(r::text, 0)), 0) FROM {t} r").fetchone())
                for t in ROLLUP_TABLES]


def refresh_from_raw(dsn: str) -> tuple[float, bool]:
    """Reference for the refresh just timed: forget every watermark and provisional entry, refresh
    again (every bucket from raw rows or the finer level, as without the sink's provisional 1 m quote
    rows), and compare the rollup rows with what the first refresh left."""
    before = rollup_fingerprint(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE rollup_watermarks SET materialized_until = NULL")
        conn.execute("DELETE FROM rollup_provisional")
    started = time.perf_counter()
    refresh_rollups(dsn, idle=timedelta(0))
    elapsed = time.perf_counter() - started
    return elapsed, rollup_fingerprint(dsn) == before


def run(dsn: str, args: argparse.Namespace) -> None:
    report = migrate(dsn)
    layout = report.layout
    rng = np.random.default_rng(1)
    day = datetime(2026, 11, 20, tzinfo=UTC)
    expiries = [date(2026, 11, 26) + timedelta(days=7 * i) for i in range(args.expiries)]
    chains = [Chain(sym, sid, spot, step, lot, e, args.strikes, rng, 100_000 * (i + 1) + 1_000 * j)
              for i, (sym, sid, spot, step, lot) in enumerate(UNDERLYINGS[:args.underlyings])
              for j, e in enumerate(expiries)]
    step_s = 1.0 / args.scale
    snapshots = int(np.ceil(SESSION_SECONDS / step_s))
    print(f"database: PostgreSQL {layout} layout" + (f" (TimescaleDB {report.timescale_version})"
                                                       if report.timescale else " (no TimescaleDB)"))
    print(f"load: {len(chains)} chains ({args.underlyings} underlyings x {args.expiries} expiries) x "
          f"{2 * args.strikes} contracts x {snapshots} snapshots (every {step_s:g} s) "
          f"= {len(chains) * 2 * args.strikes * snapshots:,} quote rows")
    month_rows = synthesize_month(dsn, chains, day)
    ensure_partitions(dsn, start=day.date(), end=day.date())
    print(f"synthesized 30 earlier days of chain metrics: {month_rows:,} rows")

    write_s = 0.0
    quotes = chains_written = 0
    with PostgresChainStore(dsn, rollup_mode=args.rollups) as store:
        for batch in batches(chains, day, step_s, args.batch):
            started = time.perf_counter()
            result = store.write(batch)
            write_s += time.perf_counter() - started
            quotes += result.quote_rows
            chains_written += result.chains_written
    total = quotes + chains_written  # gex_profile is a view over option_quotes: nothing more is written
    started = time.perf_counter()
    refresh = refresh_rollups(dsn, idle=timedelta(0))  # the scheduled job's work (all of it when deferred)
    rollup_s = time.perf_counter() - started
    reference = None
    if layout == "partitioned" and args.rollups == "deferred":
        reference = refresh_from_raw(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    disk = disk_usage(dsn, layout)
    timings = asyncio.run(measure_queries(dsn, chains, day, args.queries))

    rate = quotes / write_s
    print()
    if layout == "partitioned":
        mode = ("rollups materialized in the same transaction" if args.rollups == "inline"
                else "rollups deferred to refresh_rollups")
    else:
        mode = "rollups are continuous aggregates"
    print(f"ingest: {quotes:,} option_quotes rows in {write_s:.1f} s through PostgresChainStore.write "
          f"(binary COPY, {mode})")
    print(f"  option_quotes rows/s        {rate:>12,.0f}   target >= {TARGET_ROWS_PER_S:,}   "
          f"{'OK' if rate >= TARGET_ROWS_PER_S else 'MISSED'}")
    print(f"  all rows/s (+chain_metrics; gex_profile is a view) {total / write_s:>10,.0f}")
    print(f"  chains/s                    {chains_written / write_s:>12,.0f}")
    print(f"  refresh_rollups after the load: {rollup_s:.1f} s ({refresh.chains_refreshed} chains); "
          f"option_quotes rows/s including it: {quotes / (write_s + rollup_s):,.0f}")
    if reference is not None:
        raw_s, identical = reference
        print(f"  the same refresh recomputing every bucket from raw rows (no provisional 1 m quote rows): "
              f"{raw_s:.1f} s; rollup rows identical: {'yes' if identical else 'NO'}")
    before, after = disk["before"], disk["after"]
    print(f"disk: option_quotes {disk['rows']:,} rows")
    print(f"  bytes/row before compression {before:>10.1f}")
    print("  bytes/row after compression  " + (f"{after:>10.1f}" if after is not None
                                                 else "       n/a without TimescaleDB"))
    if disk["rollups"] is not None:
        print(f"  option_quotes rollups (1m..1d) {disk['rollups'] / 2**20:,.1f} MiB "
              f"({disk['rollups'] / max(disk['rows'], 1):.1f} bytes per raw row)")
    print(f"API latency ({args.queries} requests each, in-process FastAPI + psycopg pool):")
    print(f"  {'query':<34} {'p50 ms':>8} {'p95 ms':>8}   target p95")
    for name, values in timings.items():
        p95 = pct(values, 95)
        print(f"  {name:<34} {pct(values, 50):>8.2f} {p95:>8.2f}   <= {TARGET_P95_MS:g} ms "
              f"{'OK' if p95 <= TARGET_P95_MS else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="snapshots per second per chain (1.0 = full)")
    parser.add_argument("--underlyings", type=int, default=4, choices=range(1, len(UNDERLYINGS) + 1))
    parser.add_argument("--expiries", type=int, default=3)
    parser.add_argument("--strikes", type=int, default=100, help="strikes per chain (2 contracts each)")
    parser.add_argument("--batch", type=int, default=10, help="timestamps per sink batch (x chains)")
    parser.add_argument("--queries", type=int, default=200, help="timed requests per query type")
    parser.add_argument("--rollups", choices=("inline", "deferred"), default="inline",
                        help="plain PostgreSQL: rollups in the write transaction, or by the refresh job")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    args = parser.parse_args()
    server = os.environ.get("DATABASE_URL")
    if server:
        name = "bench_storage_" + uuid.uuid4().hex[:8]
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            run(with_database(server, name), args)
        finally:
            if not args.keep:
                with psycopg.connect(server, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        return
    with tempfile.TemporaryDirectory(prefix="hft-bench-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg")
        pg.start()
        try:
            run(pg.dsn, args)
        finally:
            pg.stop()


if __name__ == "__main__":
    main()
