"""End to end: simulator (scripted scenarios) → enrich → stateful agent → analytics.* topics → database → API.

The stored rows and topic records are compared with an in-process run of the same pure update
functions over the same seeded feed (the reference, written through the same sink code into a
second database).  Helpers here are shared with ``test_crash.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition

from hftengine.agents.stateful import KINDS, SCHEMAS, apply_enriched, state_config, topic_for
from hftengine.analytics.state import chain_key
from hftengine.api import create_api
from hftengine.codec.avro import AvroSerializer, load_schema_text, make_registry_client, subject_for
from hftengine.config import Settings
from hftengine.enrich import analyze_snapshot, enriched_record
from hftengine.feeds.instruments import IST
from hftengine.feeds.publisher import KafkaPublisher
from hftengine.feeds.simulator import MarketSimulator, block_trade, iv_spike, oi_buildup, wall_shift
from hftengine.runtime.serve import UvicornThread
from hftengine.snapshot import ChainSnapshot
from hftengine.storage.analytics_sink import AnalyticsSink
from hftengine.tables.chain_state import changelog_topic_name
from tests.e2e.conftest import Pipeline

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

#: A fixed session (a Monday), so runs do not depend on today's date.
START = datetime(2026, 11, 16, 9, 15, tzinfo=IST)
#: Tables the analytics sink writes, with an ORDER BY covering their primary keys.
ANALYTICS_TABLES = {
    "cumulative_oi": "underlying, expiry, ts, strike, option_type",
    "velocity": "underlying, expiry, ts, strike, option_type, window_seconds",
    "oi_totals": "underlying, expiry, ts",
    "levels": "underlying, expiry, ts, level_type, price",
    "pattern_events": "underlying, ts, event_type, event_key",
    "flow_events": "underlying, ts, expiry, strike, option_type, event_type, event_key",
}


# ------------------------------------------------------------------------------ helpers
def with_analytics_topics(p: Pipeline, unique: str) -> Pipeline:
    """Give the pipeline's worker its own analytics topics (the broker is shared by the session)."""
    names = {"HFT_ANALYTICS_OI_TOPIC": f"aoi-{unique}", "HFT_ANALYTICS_LEVELS_TOPIC": f"alevels-{unique}",
             "HFT_ANALYTICS_PATTERNS_TOPIC": f"apatterns-{unique}"}
    p.env.update(names)
    p.settings = p.settings.model_copy(update={
        "analytics_oi_topic": names["HFT_ANALYTICS_OI_TOPIC"],
        "analytics_levels_topic": names["HFT_ANALYTICS_LEVELS_TOPIC"],
        "analytics_patterns_topic": names["HFT_ANALYTICS_PATTERNS_TOPIC"],
    })
    return p


def publish(p: Pipeline, sim: MarketSimulator, steps: int) -> list[ChainSnapshot]:
    pub = KafkaPublisher.for_settings(p.settings)
    snaps: list[ChainSnapshot] = []
    for _ in range(steps):
        for snap in sim.step():
            assert pub.publish(snap)
            snaps.append(snap)
    assert pub.flush(30) == 0
    return snaps


@dataclass
class Reference:
    """An uninterrupted in-process run: final table values and every published record."""

    states: dict[bytes, bytes]
    records: list[tuple[str, dict[str, Any]]]
    encoded: dict[str, dict[tuple[Any, ...], bytes]]  # topic kind → logical key → encoded value


def logical_key(kind: str, rec: dict[str, Any]) -> tuple[Any, ...]:
    """The identity of an analytics record (what "final value per key" is keyed by)."""
    if kind == "patterns":
        return (rec["underlying"], rec["ts"], rec["event_type"], rec["event_key"])
    return (rec["underlying"], rec["expiry"], rec["ts"])


def reference_run(snaps: list[ChainSnapshot], settings: Settings) -> Reference:
    config = state_config(settings)
    registry = make_registry_client(settings.registry_url())
    encoders = {k: AvroSerializer(registry, subject_for(topic_for(settings, k)), load_schema_text(SCHEMAS[k]))
                for k in KINDS}
    states: dict[bytes, bytes] = {}
    records: list[tuple[str, dict[str, Any]]] = []
    encoded: dict[str, dict[tuple[Any, ...], bytes]] = {k: {} for k in KINDS}
    for snap in snaps:
        rec = enriched_record(snap, analyze_snapshot(snap, r=settings.risk_free_rate, q=settings.dividend_yield),
                              r=settings.risk_free_rate, q=settings.dividend_yield)
        key = chain_key(snap.underlying, snap.expiry).encode()
        applied = apply_enriched(states.get(key), rec, config)
        if applied is None:
            continue
        states[key] = applied.state_bytes
        for kind, r in applied.records:
            records.append((kind, r))
            encoded[kind][logical_key(kind, r)] = encoders[kind].encode(r)
    return Reference(states, records, encoded)


def consume_all(bootstrap: str, topic: str, timeout: float = 30.0) -> list[tuple[bytes | None, bytes | None]]:
    """Every message of ``topic`` (all partitions, from the beginning to the current end)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{time.monotonic_ns()}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        ends: dict[int, int] = {}
        tps = []
        for part in meta.partitions:
            lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, part), timeout=10)
            if hi > lo:
                ends[part] = hi
                tps.append(TopicPartition(topic, part, lo))
        out: list[tuple[bytes | None, bytes | None]] = []
        if not tps:
            return out
        consumer.assign(tps)
        done: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(done) < len(ends):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}: partitions {sorted(set(ends) - done)} not finished")
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            out.append((msg.key(), msg.value()))
            if msg.offset() + 1 >= ends[msg.partition()]:
                done.add(msg.partition())
        return out
    finally:
        consumer.close()


def final_values(bootstrap: str, settings: Settings, kind: str) -> tuple[dict[tuple[Any, ...], set[bytes]], int]:
    """Logical key → the distinct encoded values seen on the kind's topic, and the message count."""
    from hftengine.codec.avro import AvroDeserializer

    decoder = AvroDeserializer(make_registry_client(settings.registry_url()))
    seen: dict[tuple[Any, ...], set[bytes]] = {}
    messages = consume_all(bootstrap, topic_for(settings, kind))
    for _, value in messages:
        assert value is not None
        _, rec = decoder.decode(value)
        seen.setdefault(logical_key(kind, rec), set()).add(value)
    return seen, len(messages)


def changelog_finals(bootstrap: str, settings: Settings) -> dict[bytes, bytes]:
    """Last value per key of the chain-state table's changelog."""
    out: dict[bytes, bytes] = {}
    for key, value in consume_all(bootstrap, changelog_topic_name(settings)):
        assert key is not None
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def table_rows(dsn: str, table: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return list(conn.execute(f"SELECT * FROM {table} ORDER BY {ANALYTICS_TABLES[table]}").fetchall())  # noqa: S608


def write_reference_db(ref: Reference, dsn: str) -> None:
    sink = AnalyticsSink(dsn)
    try:
        for i in range(0, len(ref.records), 200):
            sink.write(ref.records[i:i + 200])
    finally:
        sink.close()


def count(p: Pipeline, table: str) -> int:
    return int(p.query(f"SELECT count(*) FROM {table}")[0][0])  # type: ignore[call-overload]


def wait_stored(p: Pipeline, ref: Reference, timeout: float = 150.0,
                check: Callable[[], bool] | None = None) -> None:
    want = {
        "oi_totals": sum(1 for k, _ in ref.records if k == "oi"),
        "pattern_events": sum(1 for k, _ in ref.records if k == "patterns"),
    }
    p.wait_for(f"analytics stored {want}",
               lambda: all(count(p, t) >= n for t, n in want.items()) and (check is None or check()),
               timeout=timeout)


# -------------------------------------------------------------------------------- test
def scripted_sim() -> MarketSimulator:
    return MarketSimulator(
        seed=5, underlyings=["NIFTY"], strikes_per_side=12, expiries_per_underlying=2,
        interval=timedelta(seconds=5), start=START,
        scenarios=[oi_buildup("NIFTY", 8, -3, side="pe", steps=12), block_trade("NIFTY", 30, 2, side="ce"),
                   iv_spike("NIFTY", 50, 4.0, half_life_steps=30), wall_shift("NIFTY", 65, 4, side="ce", steps=10)],
    )


def test_stateful_analytics_reach_topics_database_and_api(
    pipeline: Pipeline, unique: str, tmp_path: Path, make_database: Callable[..., str]
) -> None:
    p = with_analytics_topics(pipeline, unique)
    snaps = publish(p, scripted_sim(), steps=100)
    ref = reference_run(snaps, p.settings)
    p.start_worker(tmp_path / "tables")
    wait_stored(p, ref)

    # database: exactly the reference run's rows
    ref_dsn = make_database(migrated=True)
    write_reference_db(ref, ref_dsn)
    for table in ANALYTICS_TABLES:
        got, want = table_rows(p.settings.database_dsn(), table), table_rows(ref_dsn, table)
        assert len(got) == len(want), table
        assert got == want, table
    assert count(p, "cumulative_oi") == sum(s.n_contracts for s in snaps)

    # topics: every record of the reference, byte for byte; table: the reference's final states
    bootstrap = p.settings.kafka_bootstrap
    assert bootstrap
    for kind in KINDS:
        seen, _ = final_values(bootstrap, p.settings, kind)
        assert set(seen) == set(ref.encoded[kind]), kind
        assert all(values == {ref.encoded[kind][k]} for k, values in seen.items()), kind
    assert changelog_finals(bootstrap, p.settings) == ref.states

    # every scripted scenario shows up as an event above info
    events = [r for k, r in ref.records if k == "patterns"]
    kinds = {e["event_type"] for e in events if e["severity"] >= 1}
    assert {"unusual_flow", "iv_spike"} <= kinds
    assert kinds & {"long_buildup", "short_buildup", "short_covering", "long_unwinding"}
    assert kinds & {"resistance_shift", "call_wall_shift"}

    # API
    last = {s.expiry: s for s in snaps}
    with UvicornThread(create_api(p.settings)) as api:
        client = httpx.Client(base_url=api.url, timeout=10)
        oi = client.get("/v1/analytics/NIFTY/oi")
        assert oi.status_code == 200, oi.text
        body = oi.json()
        assert [e["expiry"] for e in body["expiries"]] == sorted(d.isoformat() for d in last)
        for e in body["expiries"]:
            snap = next(s for d, s in last.items() if d.isoformat() == e["expiry"])
            assert e["totals"]["ce_oi"] == pytest.approx(float(snap.ce.oi.sum()))
            assert e["totals"]["pe_oi"] == pytest.approx(float(snap.pe.oi.sum()))
            assert len(e["strikes"]) == len(snap.strikes)
            atm = min(e["strikes"], key=lambda r: abs(r["strike"] - snap.spot))
            assert set(atm["ce"]["velocity"]) == {"60", "300"}  # 900 s not full after 500 s of market
            assert atm["ce"]["oi"] == int(snap.ce.oi[list(snap.strikes).index(atm["strike"])])
        window = {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}
        some_strike = body["expiries"][0]["strikes"][5]["strike"]
        hist = client.get("/v1/analytics/13/oi", params={**window, "strike": some_strike})
        assert hist.status_code == 200, hist.text
        assert hist.json()["count"] == len(snaps)
        assert len(hist.json()["strike_rows"]) == 2 * len(snaps)  # CE and PE of one strike per snapshot

        lv = client.get("/v1/analytics/NIFTY/levels").json()
        types = {r["level_type"] for r in lv["expiries"][0]["levels"]}
        assert {"support", "resistance", "call_wall", "put_wall", "max_pain"} <= types
        lh = client.get("/v1/analytics/NIFTY/levels", params={**window, "level_type": "resistance"}).json()
        assert lh["count"] == len(snaps)

        pats = client.get("/v1/analytics/NIFTY/patterns", params={"min_severity": 1}).json()
        assert pats["count"] == sum(1 for e in events if e["severity"] >= 1)
        ph = client.get("/v1/analytics/nifty/patterns", params=window).json()
        assert ph["count"] == len(events)
        assert ph["events"][0]["payload"]["description"]
        assert client.get("/v1/analytics/NIFTY/oi", params={"from": "2026-01-01T00:00:00"}).status_code == 422
        assert client.get("/v1/analytics/NOPE/levels").status_code == 404

    # the schemas are registered under the analytics topics' subjects
    registry = make_registry_client(p.settings.registry_url())
    subjects = set(registry.get_subjects())
    assert {subject_for(topic_for(p.settings, k)) for k in KINDS} <= subjects
