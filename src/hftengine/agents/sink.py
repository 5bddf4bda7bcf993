"""``sink``: enriched chains → PostgreSQL in batches (binary COPY, idempotent).

Events are acknowledged only after their batch is committed, so a crash
replays the batch and the idempotent store absorbs the duplicates.  Database
outages are retried with backoff; nothing is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

import faust

from hftengine.agents.context import WorkerContext
from hftengine.agents.dlq import send_dead_letter
from hftengine.agents.retry import retry_forever
from hftengine.codec.avro import DecodeError
from hftengine.enrich import unpack_enriched
from hftengine.metrics import FRESHNESS, ROLLUP_SECONDS, SINK_CHAINS, SINK_RETRIES, SINK_ROWS, SINK_SECONDS
from hftengine.storage.rollups import refresh_rollups
from hftengine.storage.sink import SinkResult

log = logging.getLogger(__name__)


def register(app: faust.App, ctx: WorkerContext, enriched: Any, dead: Any) -> None:
    s = ctx.settings

    @app.agent(enriched, name="hftengine.sink")
    async def sink_agent(stream: Any) -> None:
        loop = asyncio.get_running_loop()
        async for events in stream.take_events(s.sink_batch_size, within=s.sink_batch_seconds):
            records: list[dict[str, Any]] = []
            for event in events:
                try:
                    _, rec = ctx.enriched_decoder.decode(event.message.value)
                    records.append(unpack_enriched(rec))
                except DecodeError as exc:
                    await send_dead_letter(ctx, dead, event.message, stage="sink", error_type=exc.error_type,
                                           reason=exc.reason, schema_id=exc.schema_id)
                except (KeyError, TypeError, ValueError) as exc:
                    await send_dead_letter(ctx, dead, event.message, stage="sink", error_type="invalid_record",
                                           reason=f"enriched record does not unpack: {exc!r}")
            if not records:
                continue

            def write(records: list[dict[str, Any]] = records) -> SinkResult:
                started = time.perf_counter()
                try:
                    result = ctx.store.write(records)
                except Exception:
                    SINK_RETRIES.inc()
                    raise
                SINK_SECONDS.observe(time.perf_counter() - started)
                return result

            result = await retry_forever(
                lambda: loop.run_in_executor(ctx.db_executor, write),
                what=f"sink batch of {len(records)} chains",
            )
            SINK_CHAINS.labels("written").inc(result.chains_written)
            SINK_CHAINS.labels("duplicate").inc(result.chains_duplicate)
            SINK_ROWS.inc(result.quote_rows)
            now = datetime.now(UTC)
            for rec in records:
                FRESHNESS.observe((now - rec["snapshot"]["received_ts"]).total_seconds())

    if s.sink_rollup_mode == "deferred":

        @app.timer(s.rollup_refresh_s, on_leader=True, name="hftengine.rollup_refresh")  # type: ignore[untyped-decorator]
        async def rollup_refresh() -> None:
            """Materialize closed rollup buckets (leader only; its own connection and thread)."""
            loop = asyncio.get_running_loop()
            started = time.perf_counter()
            try:
                report = await loop.run_in_executor(
                    ctx.maintenance_executor,
                    lambda: refresh_rollups(s.database_dsn(), nice=s.rollup_refresh_nice),
                )
            except Exception:
                log.exception("rollup refresh failed; next attempt in %.0fs", s.rollup_refresh_s)
                return
            ROLLUP_SECONDS.observe(time.perf_counter() - started)
            log.info("rollups refreshed in %.2fs: %s", time.perf_counter() - started, report)
