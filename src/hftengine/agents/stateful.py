"""``stateful``: enriched chains → RocksDB table → ``analytics.*`` topics; ``analytics-sink``: those → PostgreSQL.

The stateful agent takes the enriched snapshots in batches (``HFT_STATEFUL_BATCH``,
``HFT_STATEFUL_WITHIN``).  For each snapshot it reads the chain's state (from the batch when
an earlier snapshot of the batch already advanced it, else from the ``analytics-chain-state``
table) and applies the pure :func:`hftengine.analytics.state.update`.  Then, for the whole batch:

1. sends every analytics record (``analytics.oi``, ``analytics.levels``, one
   ``analytics.patterns`` record per event) and **waits until the broker has them all**;
2. assigns ``table[key] = new_state`` once per chain, with the chain's last snapshot of the
   batch as the current event (RocksDB + changelog, both partitioned by that event), and
   **waits until the broker has those changelog writes** (Faust's own commit does not wait for
   them: :mod:`hftengine.tables.chain_state`);
3. acknowledges the batch's events (``take_events`` acks them when the next batch is taken).

A crash before 2 replays the batch and re-sends the same records (duplicates on the topics,
identical bytes; the database absorbs them by primary key).  A crash during or after 2 replays
snapshots whose time the written states already hold: :func:`update` ignores them, and their
records were delivered in step 1; the chains not yet written are applied again.  So nothing is
lost and nothing is counted twice.  One broker round trip per batch, not per snapshot, is what
lets the agent keep up with the sink on the shared enriched-topic consumer.

The analytics sink batches the three topics and writes rows idempotently
(:mod:`hftengine.storage.analytics_sink`), acknowledging a batch only after it is committed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any

import faust

from hftengine.agents.context import WorkerContext
from hftengine.agents.dlq import send_dead_letter
from hftengine.agents.retry import retry_forever
from hftengine.analytics.cumoi import from_micros
from hftengine.analytics.levels import LevelsConfig
from hftengine.analytics.patterns import PatternConfig, PatternEvent
from hftengine.analytics.state import (
    ANALYTICS_VERSION,
    ChainObservation,
    ChainState,
    Emits,
    LevelsAnalytics,
    OIAnalytics,
    StateConfig,
    chain_key,
    update,
)
from hftengine.analytics.velocity import VelocityConfig
from hftengine.codec.avro import AvroDeserializer, AvroSerializer, DecodeError, load_schema_text, subject_for
from hftengine.codec.packed import pack
from hftengine.config import Settings
from hftengine.storage.analytics_sink import AnalyticsSink
from hftengine.tables.chain_state import chain_state_table, event_context
from hftengine.tables.codec import StateCodecError, decode_state, encode_state

log = logging.getLogger(__name__)

KINDS = ("oi", "levels", "patterns")
SCHEMAS = {"oi": "analytics_oi", "levels": "analytics_levels", "patterns": "analytics_patterns"}


def state_config(settings: Settings) -> StateConfig:
    """The analytics configuration: velocity windows from settings; the build-up regime uses the
    window closest to 5 min and the IV detector the shortest one."""
    windows = tuple(sorted(set(settings.velocity_windows_s)))
    regime = min(windows, key=lambda w: (abs(w - 300), w))
    return StateConfig(
        velocity=VelocityConfig(windows_s=windows),
        levels=LevelsConfig(),
        patterns=PatternConfig(regime_window_s=regime, iv_window_s=windows[0]),
    )


def topic_for(settings: Settings, kind: str) -> str:
    return {"oi": settings.analytics_oi_topic, "levels": settings.analytics_levels_topic,
            "patterns": settings.analytics_patterns_topic}[kind]


# ---------------------------------------------------------------------------- records
def _opt(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _f8(a: Any) -> bytes:
    return pack(a, "<f8")


def oi_record(a: OIAnalytics) -> dict[str, Any]:
    """The ``analytics_oi`` Avro record of one snapshot."""
    c = a.cum

    def leg(row: int) -> dict[str, Any]:
        return {
            "present": pack(c.present[row], "|b1"), "oi": _f8(c.oi[row]), "oi_open": _f8(c.oi_open[row]),
            "change_open": _f8(c.change_open[row]), "change_open_pct": _f8(c.change_open_pct[row]),
            "change_prev": _f8(c.change_prev[row]), "price": _f8(c.price[row]),
            "price_change_open": _f8(c.price_change_open[row]), "buildup": pack(c.buildup[row], "|i1"),
            "velocity": [
                {"window_s": v.window_s, "oi_per_min": _f8(v.oi_per_min[row]),
                 "oi_pct_per_min": _f8(v.oi_pct_per_min[row]), "premium_per_min": _f8(v.premium_per_min[row]),
                 "oi_accel": _f8(v.oi_accel[row]), "premium_accel": _f8(v.premium_accel[row])}
                for v in a.velocity
            ],
        }

    t = c.totals
    return {
        "underlying": a.underlying, "expiry": a.expiry, "ts": from_micros(a.ts_us), "session": a.session,
        "session_open_ts": from_micros(c.open_ts_us), "spot": a.spot, "lot_size": a.lot_size,
        "oi_unit": a.oi_unit, "analytics_version": ANALYTICS_VERSION, "strikes": _f8(c.strikes),
        "windows": [{"window_s": v.window_s, "span_s": _opt(v.span_s), "atm_iv_change": _opt(v.atm_iv_change)}
                    for v in a.velocity],
        "ce": leg(0), "pe": leg(1),
        "totals": {
            "ce_oi": t.ce_oi, "pe_oi": t.pe_oi, "ce_oi_open": t.ce_oi_open, "pe_oi_open": t.pe_oi_open,
            "ce_change_open": t.ce_change_open, "pe_change_open": t.pe_change_open,
            "ce_change_prev": _opt(t.ce_change_prev), "pe_change_prev": _opt(t.pe_change_prev),
            "pcr_oi": _opt(t.pcr_oi), "pcr_change_open": _opt(t.pcr_change_open),
        },
    }


def levels_record(a: LevelsAnalytics) -> dict[str, Any]:
    """The ``analytics_levels`` Avro record of one snapshot."""
    return {
        "underlying": a.underlying, "expiry": a.expiry, "ts": from_micros(a.ts_us), "session": a.session,
        "spot": a.spot, "strike_step": _opt(a.strike_step), "analytics_version": ANALYTICS_VERSION,
        "levels": [
            {"level_type": lv.level_type, "price": lv.price, "strength": _opt(lv.strength), "value": _opt(lv.value),
             "source": lv.source, "previous": _opt(lv.previous), "since_ts": from_micros(lv.since_ts_us),
             "candidate": _opt(lv.candidate), "candidate_count": lv.candidate_count}
            for lv in a.output.levels
        ],
        "shifts": [
            {"level_type": s.level_type, "from_price": s.from_price, "to_price": s.to_price, "steps": _opt(s.steps),
             "value": _opt(s.value), "strength": _opt(s.strength), "reason": s.reason}
            for s in a.output.shifts
        ],
    }


def pattern_record(e: PatternEvent) -> dict[str, Any]:
    """The ``analytics_patterns`` Avro record of one event."""
    return {
        "ts": from_micros(e.ts_us), "underlying": e.underlying, "expiry": e.expiry, "event_type": e.event_type,
        "event_key": e.event_key, "severity": e.severity, "severity_label": e.severity_label,
        "value": _opt(e.value), "previous": _opt(e.previous), "threshold": _opt(e.threshold),
        "window_s": e.window_s or None, "strike": _opt(e.strike), "strike_high": _opt(e.strike_high),
        "option_type": e.option_type or None, "spot": e.spot, "description": e.description,
        "details": {k: float(v) for k, v in e.details}, "analytics_version": ANALYTICS_VERSION,
    }


def emit_records(emits: Emits) -> list[tuple[str, dict[str, Any]]]:
    """``(kind, record)`` of everything one applied snapshot publishes, in publishing order."""
    return [("oi", oi_record(emits.oi)), ("levels", levels_record(emits.levels)),
            *(("patterns", pattern_record(e)) for e in emits.events)]


@dataclass(frozen=True)
class Applied:
    state: ChainState
    state_bytes: bytes
    records: list[tuple[str, dict[str, Any]]]


def load_state(value: bytes | None, key: str) -> ChainState | None:
    """The table value as a state; an undecodable value (e.g. from an incompatible version) is
    dropped with a warning, so the chain starts afresh."""
    if value is None:
        return None
    try:
        st = decode_state(value)
    except StateCodecError as exc:
        log.warning("dropping the undecodable state of %s: %s", key, exc)
        return None
    if not isinstance(st, ChainState):
        log.warning("dropping the state of %s: a %s, not a ChainState", key, type(st).__name__)
        return None
    return st


def advance(state: ChainState | None, rec: Mapping[str, Any],
            config: StateConfig) -> tuple[ChainState, list[tuple[str, dict[str, Any]]]] | None:
    """The new state and the records one decoded enriched record publishes; ``None`` when the
    state already holds its time (a replay or duplicate)."""
    new, emits = update(state, ChainObservation.from_enriched(rec), config)
    if emits is None or new is None:
        return None
    return new, emit_records(emits)


def apply_enriched(value: bytes | None, rec: Mapping[str, Any], config: StateConfig) -> Applied | None:
    """The agent's step for one snapshot on its own: table value in, :class:`Applied` out
    (``None`` for a replay/duplicate)."""
    snap = rec["snapshot"]
    result = advance(load_state(value, chain_key(snap["underlying"], snap["expiry"])), rec, config)
    if result is None:
        return None
    return Applied(result[0], encode_state(result[0]), result[1])


# ------------------------------------------------------------------------------ codecs
class StatefulCodecs:
    """Serializers of the three analytics topics and the decoders the agents need (lazy)."""

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx

    @property
    def enriched(self) -> AvroDeserializer:
        return self.ctx.enriched_decoder  # one decoder (and schema cache) per worker

    @cached_property
    def analytics(self) -> AvroDeserializer:
        return AvroDeserializer(self.ctx.registry)

    @cached_property
    def encoders(self) -> dict[str, AvroSerializer]:
        s = self.ctx.settings
        return {
            kind: AvroSerializer(self.ctx.registry, subject_for(topic_for(s, kind)), load_schema_text(SCHEMAS[kind]))
            for kind in KINDS
        }


# ------------------------------------------------------------------------------ agents
def register(app: faust.App, ctx: WorkerContext, enriched: Any, dead: Any) -> Any:
    """Declare the table, the analytics topics and both agents; returns the table."""
    s = ctx.settings
    config = state_config(s)
    table = chain_state_table(app, s)
    topics = {kind: app.topic(topic_for(s, kind), partitions=s.topic_partitions) for kind in KINDS}
    kind_of = {topic_for(s, kind): kind for kind in KINDS}
    codecs = StatefulCodecs(ctx)
    decoded: dict[bytes, tuple[bytes, ChainState]] = {}  # saves decoding the state this worker just wrote
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="hft-analytics-db")
    sinks: list[AnalyticsSink] = []

    def sink() -> AnalyticsSink:
        if not sinks:
            sinks.append(AnalyticsSink(s.database_dsn()))
        return sinks[0]

    def stored_state(event: Any, key: bytes) -> ChainState | None:
        """The table's state of ``key`` (the cached object when it is what this worker wrote)."""
        with event_context(event):  # the store reads from the event's partition
            value = table.get(key)
        if value is None:
            return None
        hit = decoded.get(key)
        return hit[1] if hit is not None and hit[0] == value else load_state(value, key.decode())

    @app.agent(enriched, name="hftengine.stateful")
    async def stateful_agent(stream: Any) -> None:
        async for events in stream.take_events(s.stateful_batch_size, within=s.stateful_batch_seconds):
            advanced: dict[bytes, tuple[Any, ChainState]] = {}  # key → (its last event, new state)
            outgoing: list[tuple[str, bytes, dict[str, Any]]] = []
            for event in events:
                message = event.message
                try:
                    _, rec = codecs.enriched.decode(message.value)
                except DecodeError as exc:
                    await send_dead_letter(ctx, dead, message, stage="stateful", error_type=exc.error_type,
                                           reason=exc.reason, schema_id=exc.schema_id)
                    continue
                snap = rec["snapshot"]
                key = chain_key(snap["underlying"], snap["expiry"]).encode()
                try:
                    state = advanced[key][1] if key in advanced else stored_state(event, key)
                    result = advance(state, rec, config)
                except Exception as exc:  # a kernel bug must not stop the partition; the state is kept
                    log.exception("stateful analytics failed for %s", key.decode())
                    await send_dead_letter(ctx, dead, message, stage="stateful", error_type="stateful_failed",
                                           reason=repr(exc), underlying=snap["underlying"])
                    continue
                if result is None:
                    continue  # replay or duplicate: the state already holds it, its records were delivered
                advanced[key] = (event, result[0])
                out_key = str(snap["underlying"]).encode()
                outgoing.extend((kind, out_key, r) for kind, r in result[1])
            if not advanced:
                continue

            async def publish(outgoing: list[tuple[str, bytes, dict[str, Any]]] = outgoing) -> None:
                pending = [await topics[kind].send(key=out_key, value=codecs.encoders[kind].encode(r))
                           for kind, out_key, r in outgoing]
                await asyncio.gather(*pending)  # all delivered before any state advances

            await retry_forever(publish, what=f"publishing analytics of {len(advanced)} chains", cap=10.0)
            for key, (event, new) in advanced.items():
                data = encode_state(new)
                decoded[key] = (data, new)
                with event_context(event):  # RocksDB partition and changelog partition of that event
                    table[key] = data
            # the broker has the changelog writes before these events are acked (and committed)
            await table.changelog_delivered()

    channel = app.topic(*(topic_for(s, kind) for kind in KINDS), partitions=s.topic_partitions)

    @app.agent(channel, name="hftengine.analytics-sink")
    async def analytics_sink_agent(stream: Any) -> None:
        loop = asyncio.get_running_loop()
        async for events in stream.take_events(max(64, s.sink_batch_size), within=s.sink_batch_seconds):
            records: list[tuple[str, dict[str, Any]]] = []
            for event in events:
                try:
                    _, rec = codecs.analytics.decode(event.message.value)
                except DecodeError as exc:
                    await send_dead_letter(ctx, dead, event.message, stage="analytics-sink",
                                           error_type=exc.error_type, reason=exc.reason, schema_id=exc.schema_id)
                    continue
                records.append((kind_of[event.message.topic], rec))
            if not records:
                continue
            await retry_forever(
                partial(loop.run_in_executor, executor, _store_analytics, sink, records),
                what=f"storing {len(records)} analytics records",
            )

    async def _close(app: faust.App, **kwargs: Any) -> None:
        def close() -> None:
            for db in sinks:
                db.close()

        executor.submit(close).result(timeout=10)
        executor.shutdown(wait=True)

    app.on_before_shutdown.connect(_close)  # type: ignore[arg-type]

    return table


def _store_analytics(sink: Callable[[], AnalyticsSink], records: list[tuple[str, dict[str, Any]]]) -> Any:
    return sink().write(records)
