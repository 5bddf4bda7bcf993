"""Recovery time of the stateful-analytics table from its changelog after a crash.

For 1, 10 and 100 underlyings' worth of state (two expiries each, like the demo), this:

1. builds realistic :class:`~hftengine.analytics.state.ChainState` values by running the pure
   update over simulated chains (the catalog's instruments, relabelled ``U001``, ``U002``...,
   30 minutes of market at 15 s, so every velocity window is full);
2. writes them to the changelog topic ``<app_id>-analytics-chain-state-changelog`` as the worker
   would (``--updates`` successive values per key: an uncompacted changelog, as Tansu keeps it);
3. starts a worker process with an **empty** data directory (the crash lost the local RocksDB),
   which declares the same table and restores it from the changelog; the worker reports when
   Faust's recovery completes, and checks that every key decodes to the value written last.

Printed per size: keys, changelog messages and bytes, the restore time (Faust's recovery
start → complete: reading the changelog into RocksDB) and the time from process start until
the table is ready (imports, group join, restore).

    python bench/recovery.py                      # embedded Tansu broker
    KAFKA_BOOTSTRAP=host:9092 python bench/recovery.py --underlyings 1,10,100 --updates 30
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from hftengine.analytics.state import ChainObservation, ChainState, chain_key, update  # noqa: E402
from hftengine.config import Settings  # noqa: E402
from hftengine.enrich import analyze_snapshot, enriched_record  # noqa: E402
from hftengine.feeds.instruments import INSTRUMENTS, IST  # noqa: E402
from hftengine.feeds.simulator import MarketSimulator  # noqa: E402
from hftengine.tables.chain_state import changelog_topic_name  # noqa: E402
from hftengine.tables.codec import decode_state, encode_state  # noqa: E402


# ------------------------------------------------------------------------------ state
def state_histories(updates: int, steps: int = 130) -> list[list[ChainState]]:
    """Per (instrument, expiry) of the catalog: its last ``updates`` states after ``steps`` ticks."""
    sim = MarketSimulator(11, list(INSTRUMENTS), interval=timedelta(seconds=15),
                          start=datetime(2026, 11, 16, 9, 15, tzinfo=IST))
    states: dict[str, list[ChainState]] = {}
    for _ in range(steps):
        for snap in sim.step():
            rec = enriched_record(snap, analyze_snapshot(snap, r=0.065, q=0.0), r=0.065, q=0.0)
            obs = ChainObservation.from_enriched(rec)
            hist = states.setdefault(obs.key, [])
            new, _ = update(hist[-1] if hist else None, obs)
            assert new is not None
            hist.append(new)
            del hist[:-updates]
    return list(states.values())


def changelog_messages(n_underlyings: int, histories: list[list[ChainState]],
                       partitions: int) -> tuple[list[tuple[int, bytes, bytes]], dict[bytes, bytes]]:
    """(partition, key, value) in write order (keys interleaved round by round, as a live stream
    writes them), and the last value per key."""
    by_instrument: dict[str, list[list[ChainState]]] = {}
    for hist in histories:
        by_instrument.setdefault(hist[-1].underlying, []).append(hist)
    names = sorted(by_instrument)
    per_key: list[list[tuple[int, bytes, bytes]]] = []
    for i in range(n_underlyings):
        name = f"U{i + 1:03d}"
        partition = zlib.crc32(name.encode()) % partitions
        for hist in by_instrument[names[i % len(names)]]:
            key = chain_key(name, hist[-1].expiry).encode()
            per_key.append([(partition, key, encode_state(dataclasses.replace(st, underlying=name))) for st in hist])
    out = [msgs[r] for r in range(max(len(m) for m in per_key)) for msgs in per_key if r < len(msgs)]
    last = {msgs[-1][1]: msgs[-1][2] for msgs in per_key}
    return out, last


def digest(items: dict[bytes, bytes]) -> str:
    h = hashlib.sha256()
    for k in sorted(items):
        h.update(k)
        h.update(hashlib.sha256(items[k]).digest())
    return h.hexdigest()


# ------------------------------------------------------------------------------ worker
def run_worker(app_id: str, bootstrap: str, partitions: int, datadir: str, result: str) -> None:
    """A worker with just the chain-state table (and an agent so its partitions are assigned);
    writes one JSON object to ``result`` when the table has been recovered, then exits."""
    import faust

    from hftengine.tables.chain_state import chain_state_table

    born = float(os.environ.get("BENCH_SPAWNED_AT", time.time()))
    settings = Settings(kafka_bootstrap=bootstrap, app_id=app_id, topic_partitions=partitions)
    app = faust.App(app_id, broker=settings.kafka_broker_url, store="rocksdb://", datadir=datadir,
                    key_serializer="raw", value_serializer="raw", topic_partitions=partitions,
                    broker_session_timeout=6.0, broker_heartbeat_interval=1.0, web_enabled=False,
                    consumer_auto_offset_reset="earliest")
    table = chain_state_table(app, settings)
    source = app.topic(f"{app_id}-source", partitions=partitions)

    @app.agent(source)
    async def noop(stream: Any) -> None:
        async for _ in stream.events():
            pass

    @table.on_recover  # type: ignore[misc]
    async def recovered() -> None:
        recovery = app.tables.recovery
        started, ended = getattr(recovery, "_recovery_started_at", None), time.monotonic()
        t0 = time.perf_counter()
        items = {bytes(k): bytes(v) for k, v in table.data._iteritems()
                 if isinstance(k, bytes | bytearray) and b"|" in k}
        for value in items.values():
            decode_state(value)
        decode_s = time.perf_counter() - t0
        Path(result).write_text(json.dumps({
            "keys": len(items), "digest": digest(items),
            "restore_s": (ended - started) if started is not None else None,
            "ready_s": time.time() - born, "decode_all_s": decode_s,
        }))
        os._exit(0)

    worker = faust.Worker(app, loglevel=os.environ.get("BENCH_LOGLEVEL", "warning"), quiet=True)
    worker.execute_from_commandline()


# ------------------------------------------------------------------------------ driver
def produce(bootstrap: str, topic: str, partitions: int, messages: list[tuple[int, bytes, bytes]]) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        fut.result(30)
    # one record per batch, as the worker's own changelog writes are (state values exceed aiokafka's
    # 16 kB batch size): Tansu reports a partition's high watermark as the last batch's base offset + 1,
    # so the tail of a multi-record last batch would be invisible to Faust's recovery
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "batch.num.messages": 1,
                         "message.max.bytes": 8_000_000, "log.connection.close": False})
    for partition, key, value in messages:
        while True:
            try:
                producer.produce(topic, value, key, partition=partition)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(120):
        raise RuntimeError("changelog messages not delivered")


def bench(bootstrap: str, sizes: list[int], updates: int, partitions: int) -> None:
    print(f"building state histories ({updates} values per key)...", flush=True)
    t0 = time.perf_counter()
    histories = state_histories(updates)
    print(f"  {len(histories)} chains of {len(INSTRUMENTS)} instruments in {time.perf_counter() - t0:.1f}s\n")
    print(f"{'underlyings':>11} {'keys':>5} {'messages':>8} {'MB':>7} {'restore s':>9} {'MB/s':>7} "
          f"{'ready s':>8} {'decode s':>8}  check")
    for n in sizes:
        app_id = f"bench-recovery-{n}-{uuid.uuid4().hex[:6]}"
        messages, last = changelog_messages(n, histories, partitions)
        mb = sum(len(k) + len(v) for _, k, v in messages) / 1e6
        produce(bootstrap, changelog_topic_name(Settings(app_id=app_id)), partitions, messages)
        with tempfile.TemporaryDirectory(prefix="recovery-") as datadir:
            result = Path(datadir) / "result.json"
            env = {**os.environ, "BENCH_SPAWNED_AT": repr(time.time())}
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", "--app-id", app_id, "--bootstrap", bootstrap,
                 "--partitions", str(partitions), "--datadir", str(Path(datadir) / "worker"),
                 "--result", str(result)],
                env=env, capture_output=True, text=True, timeout=600,
            )
            if not result.exists():
                print(f"{n:>11} worker failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
                continue
            r = json.loads(result.read_text())
        ok = r["keys"] == len(last) and r["digest"] == digest(last)
        restore = r["restore_s"]
        rate = mb / restore if restore else float("nan")
        print(f"{n:>11} {len(last):>5} {len(messages):>8} {mb:>7.1f} {restore:>9.2f} {rate:>7.1f} "
              f"{r['ready_s']:>8.2f} {r['decode_all_s']:>8.2f}  {'ok' if ok else 'MISMATCH'}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--underlyings", default="1,10,100", help="comma-separated sizes")
    ap.add_argument("--updates", type=int, default=30, help="changelog values per key")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--app-id", help=argparse.SUPPRESS)
    ap.add_argument("--bootstrap", help=argparse.SUPPRESS)
    ap.add_argument("--datadir", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        sys.argv = [sys.argv[0], "worker"]
        run_worker(args.app_id, args.bootstrap, args.partitions, args.datadir, args.result)
        return
    sizes = [int(x) for x in args.underlyings.split(",") if x.strip()]
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
    if bootstrap:
        bench(bootstrap, sizes, args.updates, args.partitions)
        return
    from hftengine.runtime.broker import EmbeddedBroker

    with tempfile.TemporaryDirectory(prefix="tansu-") as tmp:
        broker = EmbeddedBroker(log_path=Path(tmp) / "tansu.log")
        broker.start()
        try:
            bench(broker.bootstrap, sizes, args.updates, args.partitions)
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
