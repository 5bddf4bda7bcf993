"""``enrich``: raw snapshot → IV, Greeks and chain analytics → enriched topic.

Bad input (undecodable, unknown schema id, invalid chain) goes to the
dead-letter topic with a reason; the agent carries on with the next record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust

from hftengine.agents.context import WorkerContext
from hftengine.agents.dlq import send_dead_letter
from hftengine.codec.avro import DecodeError
from hftengine.enrich import analyze_snapshot, enriched_record
from hftengine.metrics import CHAINS_ENRICHED, CONTRACTS_ENRICHED, ENRICH_SECONDS
from hftengine.snapshot import ChainSnapshot

log = logging.getLogger(__name__)


class Rejected(Exception):
    def __init__(self, stage: str, error_type: str, reason: str, schema_id: int | None = None,
                 underlying: str | None = None) -> None:
        super().__init__(reason)
        self.stage, self.error_type, self.reason = stage, error_type, reason
        self.schema_id, self.underlying = schema_id, underlying


def process_raw(ctx: WorkerContext, value: bytes | None) -> tuple[bytes, bytes, int]:
    """Decode, validate and enrich one raw message → (key, enriched bytes, contracts)."""
    try:
        schema_id, rec = ctx.raw_decoder.decode(value)
    except DecodeError as exc:
        raise Rejected("decode", exc.error_type, exc.reason, exc.schema_id) from exc
    try:
        snap = ChainSnapshot.from_record(rec)
    except (KeyError, TypeError, ValueError) as exc:
        raise Rejected("validate", "invalid_record", f"record does not map to a chain: {exc!r}", schema_id) from exc
    problems = snap.problems()
    if problems:
        raise Rejected("validate", "invalid_chain", "; ".join(problems), schema_id, snap.underlying)
    s = ctx.settings
    try:
        result = analyze_snapshot(snap, r=s.risk_free_rate, q=s.dividend_yield)
        out = enriched_record(snap, result, r=s.risk_free_rate, q=s.dividend_yield, snapshot_record=rec)
        encoded = ctx.enriched_encoder.encode(out)
    except Exception as exc:  # a kernel bug must not stop the partition
        log.exception("enrich failed for %s %s", snap.underlying, snap.expiry)
        raise Rejected("enrich", "enrich_failed", repr(exc), schema_id, snap.underlying) from exc
    return snap.key, encoded, snap.n_contracts


def register(app: faust.App, ctx: WorkerContext, raw: Any, enriched: Any, dead: Any) -> None:
    @app.agent(raw, name="hftengine.enrich")
    async def enrich_agent(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            started = time.perf_counter()
            backoff = 0.5
            while True:
                try:
                    key, encoded, contracts = process_raw(ctx, message.value)
                except Rejected as rej:
                    await send_dead_letter(ctx, dead, message, stage=rej.stage, error_type=rej.error_type,
                                           reason=rej.reason, schema_id=rej.schema_id, underlying=rej.underlying)
                    break
                except Exception:  # registry unreachable etc.: not the record's fault, retry
                    log.exception("transient failure enriching %s[%s]@%s; retrying in %.1fs",
                                  message.topic, message.partition, message.offset, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
                await enriched.send(key=key, value=encoded)
                CHAINS_ENRICHED.labels(key.decode(errors="replace")).inc()
                CONTRACTS_ENRICHED.inc(contracts)
                ENRICH_SECONDS.observe(time.perf_counter() - started)
                break
