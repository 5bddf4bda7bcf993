"""Pipeline benchmark: simulator → broker → enrich/sink workers → PostgreSQL.

Prints, in one run on this machine:
  1. the Avro layout comparison for one 400-contract chain (struct-of-arrays,
     which the engine uses, vs an array of nullable leg records) — encode and
     decode times with fastavro;
  2. the sink's ceiling: enriched chains written straight to PostgreSQL
     (binary COPY, idempotent), no broker — the reference for step 3;
  3. the whole pipeline at increasing offered rates: sustained contracts/s
     stored and p50/p99 freshness (exchange timestamp → row visible to a
     reader polling the database every 50 ms).

Services: KAFKA_BOOTSTRAP / DATABASE_URL / SCHEMA_REGISTRY_URL when set, else
embedded ones.  Usage: python bench/pipeline.py [--quick] [--workers N]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import psycopg
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hftengine.codec.avro import AvroSerializer, load_schema_text, make_registry_client, subject_for  # noqa: E402
from hftengine.config import Settings  # noqa: E402
from hftengine.enrich import analyze_snapshot, enriched_record, unpack_enriched  # noqa: E402
from hftengine.feeds.publisher import KafkaPublisher  # noqa: E402
from hftengine.feeds.simulator import MarketSimulator  # noqa: E402
from hftengine.services import Services  # noqa: E402
from hftengine.snapshot import LEG_FIELDS, ChainSnapshot  # noqa: E402
from hftengine.storage.migrations import migrate  # noqa: E402
from hftengine.storage.rollups import ROLLUP_TABLES  # noqa: E402
from hftengine.storage.sink import PostgresChainStore  # noqa: E402
from hftengine.topics import create_topics, topic_specs  # noqa: E402


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values), q))


def chain_pool(n_strikes_side: int = 100, underlyings: int = 9) -> list[ChainSnapshot]:
    """Two expiries of ``underlyings`` underlyings, about 400 contracts a chain.

    The simulator knows 9 underlyings; beyond that they are repeated under numbered names
    (``NIFTY2``, ... with security ids offset by a million).  The raw and enriched topics are
    keyed by underlying, so with only 9 keys on 4 partitions one worker gets about two thirds of
    the load; the listed market has about 190 underlyings, which spread evenly.
    """
    base = MarketSimulator(seed=3, strikes_per_side=n_strikes_side, expiries_per_underlying=2).step()
    copies = -(-underlyings // 9)
    pool = [snap if k == 0 else replace(snap, underlying=f"{snap.underlying}{k + 1}",
                                        underlying_security_id=snap.underlying_security_id + 1_000_000 * k)
            for k in range(copies) for snap in base]
    names = list(dict.fromkeys(s.underlying for s in pool))[:underlyings]
    return [s for s in pool if s.underlying in set(names)]


# ------------------------------------------------------------------ 1. layouts
def layout_comparison(snap: ChainSnapshot, repeat: int = 200) -> None:
    soa_schema = fastavro.parse_schema(json.loads(load_schema_text("optionchain_raw")))
    leg_fields = [
        {
            "name": n,
            "type": "boolean" if n == "present" else ("long" if np.dtype(t).kind == "i" else "double"),
        }
        for n, t in LEG_FIELDS
        if n != "present"
    ]
    aor_schema = fastavro.parse_schema(
        {
            "type": "record",
            "name": "ChainAoR",
            "fields": [
                {"name": "underlying", "type": "string"},
                {
                    "name": "legs",
                    "type": {
                        "type": "array",
                        "items": {
                            "type": "record",
                            "name": "Strike",
                            "fields": [
                                {"name": "strike", "type": "double"},
                                {
                                    "name": "ce",
                                    "type": ["null", {"type": "record", "name": "Leg", "fields": leg_fields}],
                                },
                                {"name": "pe", "type": ["null", "Leg"]},
                            ],
                        },
                    },
                },
            ],
        }
    )
    soa_rec = snap.to_record()
    arrays_schema = fastavro.parse_schema(json.loads((ROOT / "bench" / "optionchain_raw_avro_arrays.avsc").read_text()))
    arrays_rec = {**soa_rec, "strikes": snap.strikes.tolist(),
                  "ce": {n: getattr(snap.ce, n).tolist() for n, _ in LEG_FIELDS},
                  "pe": {n: getattr(snap.pe, n).tolist() for n, _ in LEG_FIELDS}}

    def leg(side: Any, i: int) -> dict[str, Any] | None:
        if not side.present[i]:
            return None
        return {n: getattr(side, n)[i].item() for n, _ in LEG_FIELDS if n != "present"}

    aor_rec = {
        "underlying": snap.underlying,
        "legs": [
            {"strike": float(k), "ce": leg(snap.ce, i), "pe": leg(snap.pe, i)}
            for i, k in enumerate(snap.strikes)
        ],
    }

    def timeit(fn: Any) -> float:
        fn()
        t = time.perf_counter()
        for _ in range(repeat):
            fn()
        return (time.perf_counter() - t) / repeat * 1e3

    def enc(schema: Any, rec: Any) -> bytes:
        b = io.BytesIO()
        fastavro.schemaless_writer(b, schema, rec)
        return b.getvalue()

    soa_bytes, aor_bytes = enc(soa_schema, soa_rec), enc(aor_schema, aor_rec)
    arr_bytes = enc(arrays_schema, arrays_rec)

    def soa_decode() -> ChainSnapshot:
        return ChainSnapshot.from_record(fastavro.schemaless_reader(io.BytesIO(soa_bytes), soa_schema, None))

    def arrays_decode() -> ChainSnapshot:
        return ChainSnapshot.from_record(fastavro.schemaless_reader(io.BytesIO(arr_bytes), arrays_schema, None))

    rows = [
        ("struct of packed vectors (engine)", timeit(lambda: enc(soa_schema, snap.to_record())),
         timeit(soa_decode), len(soa_bytes)),
        ("struct of Avro arrays", timeit(lambda: enc(arrays_schema, arrays_rec)), timeit(arrays_decode),
         len(arr_bytes)),
        ("array of nullable leg records", timeit(lambda: enc(aor_schema, aor_rec)),
         timeit(lambda: fastavro.schemaless_reader(io.BytesIO(aor_bytes), aor_schema, None)), len(aor_bytes)),
    ]
    print(f"\n1. Avro layout, one chain of {snap.n_contracts} contracts ({len(snap.strikes)} strikes), fastavro")
    print(f"   {'layout':<36}{'encode ms':>11}{'decode ms':>11}{'bytes':>9}")
    for name, e, d, size in rows:
        print(f"   {name:<36}{e:>11.3f}{d:>11.3f}{size:>9}")
    print("   (the first two decode into a numpy-backed ChainSnapshot; array-of-records is the bare fastavro decode)")


# --------------------------------------------------------------- 2. sink ceiling
def sink_ceiling(dsn: str, pool: list[ChainSnapshot], seconds: float, settings: Settings) -> float:
    store = PostgresChainStore(dsn, rollup_mode=settings.sink_rollup_mode)
    base = datetime.now(UTC) - timedelta(days=30)
    enriched = [
        unpack_enriched(enriched_record(s, analyze_snapshot(s, r=settings.risk_free_rate, q=0.0), r=0.065, q=0.0))
        for s in pool
    ]
    rows = 0
    t0 = time.perf_counter()
    i = 0
    while time.perf_counter() - t0 < seconds:
        batch = []
        for rec in enriched:
            snap = dict(rec["snapshot"])
            snap["exchange_ts"] = base + timedelta(seconds=i)
            batch.append({**rec, "snapshot": snap})
        i += 1
        rows += store.write(batch).quote_rows
    elapsed = time.perf_counter() - t0
    store.close()
    rate = rows / elapsed
    print(
        f"\n2. Sink ceiling (no broker): {rows:,} quote rows in {elapsed:.1f}s = {rate:,.0f} contracts/s "
        f"(batches of {len(pool)} chains, binary COPY + idempotent metrics insert, "
          f"rollups {settings.sink_rollup_mode})"
    )
    with psycopg.connect(dsn, autocommit=True) as conn:  # the pipeline starts on empty tables
        conn.execute("TRUNCATE chain_metrics, option_quotes, chain_latest, rollup_watermarks, rollup_provisional, "
                     + ", ".join(ROLLUP_TABLES))
    return rate


# ---------------------------------------------------------------- 3. pipeline
class Observer(threading.Thread):
    """Polls chain_metrics for newly visible rows; freshness = first seen − exchange ts."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.stop = threading.Event()
        self.samples: list[tuple[float, float, int]] = []  # (seen_wall, freshness_s, contracts)
        self.cursor = datetime.now(UTC) - timedelta(minutes=1)  # before the run's first row

    def run(self) -> None:
        # stored_ts (clock_timestamp() at insert) is never before its transaction's start, and two
        # workers commit concurrently: a row can become visible after rows stamped later.  Each
        # poll therefore reads back to the oldest transaction running at this or the previous check
        # (or the previous check itself) and skips rows it has already counted.
        seen: dict[tuple[str, Any, datetime], datetime] = {}
        prev: list[datetime] = []
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                check, oldest = conn.execute(
                    "SELECT clock_timestamp(), min(xact_start) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL"
                ).fetchone() or (None, None)
                low = min([*prev, *([oldest] if oldest else [])], default=self.cursor)
                prev = [check, *([oldest] if oldest else [])]
                rows = conn.execute(
                    "SELECT underlying, expiry, ts, stored_ts, n_contracts FROM chain_metrics "
                    "WHERE stored_ts > %s AND ts > %s",  # ts: BRIN-indexed, and never after stored_ts
                    (low, low - timedelta(minutes=2)),
                ).fetchall()
                now = datetime.now(UTC)
                wall = time.time()
                for und, exp, ts, stored, n in rows:
                    if (und, exp, ts) in seen:
                        continue
                    seen[(und, exp, ts)] = stored
                    self.samples.append((wall, (now - ts).total_seconds(), int(n)))
                for key in [k for k, st in seen.items() if st <= low]:
                    del seen[key]
                self.stop.wait(0.05)


class RefreshMeter:
    """Scheduled rollup refreshes (count, seconds) so far, from the workers' ``/metrics`` pages
    (``hft_rollup_refresh_seconds``; only the leader refreshes): the once-a-minute burst that
    freshness spikes line up with."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports

    def sample(self) -> tuple[float, float]:
        count = total = 0.0
        for port in self.ports:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as page:
                    text = page.read().decode()
            except OSError:
                continue  # a worker without its web page yet: counts nothing
            for family in text_string_to_metric_families(text):
                if family.name == "hft_rollup_refresh_seconds":
                    for sample in family.samples:
                        if sample.name.endswith("_count"):
                            count += sample.value
                        elif sample.name.endswith("_sum"):
                            total += sample.value
        return count, total


class CpuMeter:
    """CPU time by component, from the process table (psutil, a test dependency; None without it).

    workers: the worker processes this bench started and their children; broker: Tansu;
    database: the PostgreSQL server whose data directory is under ``root`` (embedded; an external
    DATABASE_URL server is not on this machine's books); feed+observer: this process (the
    simulated feed's encoding and producing, and the freshness observer).
    """

    def __init__(self, worker_pids: list[int], root: Path) -> None:
        try:
            import psutil
        except ImportError:
            self.psutil = None
            return
        self.psutil = psutil
        self.worker_pids = set(worker_pids)
        self.root = str(root)

    def sample(self) -> dict[str, float] | None:
        if self.psutil is None:
            return None
        totals = dict.fromkeys(("workers", "broker", "database", "feed+observer"), 0.0)
        me = os.getpid()
        for proc in self.psutil.process_iter(["pid", "ppid", "name", "cmdline", "cpu_times"]):
            info = proc.info
            cmd = " ".join(info["cmdline"] or [])
            times = info["cpu_times"]
            if times is None:
                continue
            if info["pid"] == me:
                group = "feed+observer"
            elif info["pid"] in self.worker_pids or info["ppid"] in self.worker_pids:
                group = "workers"
            elif "tansu" in (info["name"] or "") or "tansu" in cmd.split(" ")[0]:
                group = "broker"
            elif info["name"] == "postgres" and (self.root in cmd or self._postmaster_under_root(info["ppid"])):
                group = "database"
            else:
                continue
            totals[group] += times.user + times.system
        return totals

    def _postmaster_under_root(self, ppid: int) -> bool:
        try:
            return self.root in " ".join(self.psutil.Process(ppid).cmdline())
        except self.psutil.Error:
            return False


def run_rate(
    pub: KafkaPublisher, pool: list[ChainSnapshot], contracts_per_s: float, seconds: float, obs: Observer,
    meter: CpuMeter | None = None, refreshes: RefreshMeter | None = None,
) -> dict[str, Any]:
    per_chain = statistics.mean(s.n_contracts for s in pool)
    chains_per_s = contracts_per_s / per_chain
    sent_contracts = 0
    cpu0 = meter.sample() if meter else None
    refresh0 = refreshes.sample() if refreshes else (0.0, 0.0)
    t0 = time.perf_counter()
    start_wall = time.time()
    k = 0
    while (elapsed := time.perf_counter() - t0) < seconds:
        due = int(elapsed * chains_per_s) + 1
        while k < due:
            snap = pool[k % len(pool)]
            now = datetime.now(UTC)
            pub.publish_encoded(snap.key, pub.encode(replace(snap, exchange_ts=now, received_ts=now)))
            sent_contracts += snap.n_contracts
            k += 1
        time.sleep(0.001)
    pub.flush(60)
    offered = sent_contracts / (time.perf_counter() - t0)
    cpu1 = meter.sample() if meter else None
    cores = (
        {g: (cpu1[g] - cpu0[g]) / (time.perf_counter() - t0) for g in cpu1} if cpu0 is not None and cpu1 else None
    )
    deadline = time.time() + 30
    n_before = len(obs.samples)
    while time.time() < deadline:  # drain
        time.sleep(0.5)
        if len(obs.samples) == n_before and sum(1 for s in obs.samples if s[0] >= start_wall) >= k:
            break
        n_before = len(obs.samples)
    refresh1 = refreshes.sample() if refreshes else (0.0, 0.0)
    window = [s for s in obs.samples if s[0] >= start_wall]
    stored = sum(s[2] for s in window)
    if window:
        span = max(s[0] for s in window) - start_wall
    else:
        span = seconds
    fresh = [s[1] for s in window]
    worst: dict[int, float] = {}  # per 10 s of sending (seen − freshness = exchange ts): the worst freshness
    for seen, f, _ in window:
        slot = int((seen - f - start_wall) // 10)
        worst[slot] = max(worst.get(slot, 0.0), f)
    return {
        "worst_by_10s": [worst[k] for k in sorted(worst) if k >= 0],
        "offered": offered,
        "stored_rate": stored / max(span, 1e-9),
        "stored": stored,
        "sent": sent_contracts,
        "p50": pct(fresh, 50),
        "p99": pct(fresh, 99),
        "chains": k,
        "cores": cores,
        "refreshes": (int(refresh1[0] - refresh0[0]), refresh1[1] - refresh0[1]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short run (CI smoke)")
    ap.add_argument("--workers", type=int, default=1,
                    help="worker processes (default 1: on 2 cores one worker stores more at p99 <= 2 s than two, "
                         "which spend ~25 %% more CPU on the same load; partitions = max(2, 2 x workers))")
    ap.add_argument("--seconds", type=float, default=None, help="seconds per rate step")
    ap.add_argument("--rates", default=None, help="comma-separated offered contracts/s")
    defaults = Settings()
    ap.add_argument("--sink-batch", type=int, default=defaults.sink_batch_size,
                    help="chains per sink transaction (default: the engine's HFT_SINK_BATCH)")
    ap.add_argument("--sink-within", type=float, default=defaults.sink_batch_seconds,
                    help="max seconds the sink waits for a batch (default: the engine's HFT_SINK_WITHIN)")
    ap.add_argument("--underlyings", type=int, default=90,
                    help="distinct underlyings (partition keys) in the offered load; the market has ~190")
    ap.add_argument("--no-stateful", action="store_true",
                    help="workers without the stateful analytics agents (enrich + sink only)")
    ap.add_argument("--keep", action="store_true", help="keep the run's data directory (database, logs)")
    args = ap.parse_args()
    seconds = args.seconds or (5.0 if args.quick else 20.0)
    rates = (
        [float(r) for r in args.rates.split(",")]
        if args.rates
        else ([20_000, 60_000] if args.quick else [25_000, 50_000, 100_000, 150_000, 250_000])
    )

    print(f"pipeline benchmark on {os.cpu_count()} cores; python {sys.version.split()[0]}")
    pool = chain_pool(underlyings=args.underlyings)
    print(
        f"chain pool: {len({s.underlying for s in pool})} underlyings, {len(pool)} chains, "
        f"{sum(s.n_contracts for s in pool)} contracts "
        f"(avg {statistics.mean(s.n_contracts for s in pool):.0f}/chain)"
    )
    layout_comparison(max(pool, key=lambda s: s.n_contracts))

    tmp = Path(tempfile.mkdtemp(prefix="hft-bench-"))
    settings = Settings(
        data_dir=tmp,
        topic_partitions=max(2, args.workers * 2),
        app_id=f"bench-{uuid.uuid4().hex[:6]}",
        sink_batch_size=args.sink_batch,
        sink_batch_seconds=args.sink_within,
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        run_pipeline(args, pool, settings, seconds, rates, tmp, procs)
    finally:  # the embedded database holds GBs after a few minutes at these rates
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")


def run_pipeline(args: argparse.Namespace, pool: list[ChainSnapshot], settings: Settings, seconds: float,
                 rates: list[float], tmp: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    with Services(settings, say=lambda m: print("  ·", m)) as s:
        dsn = s.database_dsn()
        migrate(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("TRUNCATE chain_metrics, option_quotes, chain_latest")
        ceiling = sink_ceiling(dsn, pool, 5.0 if args.quick else 10.0, s)
        assert s.kafka_bootstrap
        create_topics(s.kafka_bootstrap, topic_specs(s))
        reg = make_registry_client(s.registry_url())
        AvroSerializer(reg, subject_for(s.enriched_topic), load_schema_text("optionchain_enriched"))
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP": s.kafka_bootstrap,
            "DATABASE_URL": dsn,
            "SCHEMA_REGISTRY_URL": s.registry_url(),
            "HFT_APP_ID": s.app_id,
            "HFT_TOPIC_PARTITIONS": str(s.topic_partitions),
            "HFT_SINK_BATCH": str(args.sink_batch),
            "HFT_SINK_WITHIN": str(args.sink_within),
            "HFT_LOG_LEVEL": "WARNING",
            "HFT_STATEFUL_ENABLED": "0" if args.no_stateful else "1",
        }
        web_ports = [6100 + w for w in range(args.workers)]  # each worker's /metrics (RefreshMeter)
        for w, web_port in enumerate(web_ports):
            log = open(tmp / f"worker{w}.log", "ab")  # noqa: SIM115
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "hftengine.cli",
                        "worker",
                        "--datadir",
                        str(tmp / f"w{w}"),
                        "--web-port",
                        str(web_port),
                    ],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        pub = KafkaPublisher.for_settings(s)
        obs = Observer(dsn)
        obs.start()
        meter = CpuMeter([p.pid for p in procs], tmp)
        refreshes = RefreshMeter(web_ports)
        try:
            stateful = "off" if args.no_stateful else "on"
            print("\n   warming up (group join, first batches)…")
            run_rate(pub, pool, 5_000, 8.0, obs)
            print(
                f"\n3. Pipeline, {args.workers} worker process(es), {s.topic_partitions} partitions, "
                f"stateful analytics {stateful}, {seconds:.0f}s per step"
            )
            print(
                f"   {'offered c/s':>12}{'stored c/s':>12}{'stored/sent':>12}{'p50 fresh s':>12}{'p99 fresh s':>12}"
                "   CPU cores while offering: workers / broker / database / feed+observer"
                "   rollup refreshes: runs, mean s"
            )
            best = 0.0
            for rate in rates:
                r = run_rate(pub, pool, rate, seconds, obs, meter, refreshes)
                best = max(best, r["stored_rate"] if r["p99"] <= 2.0 else 0.0)
                cores = r["cores"]
                split = " / ".join(f"{v:.2f}" for v in cores.values()) if cores else "(install psutil)"
                runs, busy = r["refreshes"]
                print(
                    f"   {r['offered']:>12,.0f}{r['stored_rate']:>12,.0f}{r['stored'] / max(r['sent'], 1):>12.2%}"
                    f"{r['p50']:>12.3f}{r['p99']:>12.3f}   {split:<69}   {runs}, {busy / max(runs, 1):.1f}"
                )
                print("      worst freshness (s) per 10 s of sending: "
                      + " ".join(f"{w:.1f}" for w in r["worst_by_10s"]))
            print(
                f"\n   best sustained rate with p99 freshness <= 2 s: {best:,.0f} contracts/s "
                f"(target 100,000; stretch 250,000); sink-only ceiling {ceiling:,.0f}; "
                f"stateful analytics {stateful}"
            )
        finally:
            obs.stop.set()
            pub.close(10)  # before the broker stops: no reconnect noise from a dangling producer
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()


if __name__ == "__main__":
    main()
