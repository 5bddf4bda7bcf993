"""The Faust application factory (no import-time side effects)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import faust

from hftengine.config import Settings

log = logging.getLogger(__name__)


class Worker(faust.Worker):
    """Faust's worker without its startup spinner.

    For the spinner Faust lowers the root logger to DEBUG (a handler redraws it on every record), and
    it stays there: every ``logger.debug`` in faust, mode and aiokafka then builds a LogRecord that no
    handler prints, one per message sent among them, about 1.3 % of a busy worker's CPU.
    """

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None
        super().on_setup_root_logger(logger, level)


def create_app(settings: Settings, *, datadir: Path | None = None, web_enabled: bool = True) -> faust.App:
    """Build the worker app: topics, the enrich and sink agents, metrics.

    ``datadir`` holds the worker's local table state.  With the embedded
    (memory-only) broker the CLI passes a directory specific to that broker
    run, so no stale local state or offsets from an earlier broker are reused.
    """
    from hftengine.agents import deadletter, enrich, sink, stateful
    from hftengine.agents.context import WorkerContext

    datadir = datadir or settings.data_dir / "worker"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=settings.kafka_broker_url,
        key_serializer="raw",
        value_serializer="raw",
        store="rocksdb://",
        datadir=str(datadir),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        broker_session_timeout=settings.consumer_session_timeout_s,
        broker_heartbeat_interval=min(1.0, settings.consumer_session_timeout_s / 3),
        broker_request_timeout=max(30.0, settings.consumer_session_timeout_s * 2),
        broker_rebalance_timeout=max(30.0, settings.consumer_session_timeout_s * 2),
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        producer_max_request_size=8_000_000,
        producer_linger=settings.producer_linger_ms / 1000,
        producer_max_batch_size=settings.producer_max_batch_bytes,
        web_enabled=web_enabled,
        web_port=settings.worker_web_port,
        web_host="127.0.0.1",
        stream_wait_empty=False,
        Worker=Worker,
    )
    if app.conf.broker_consumer[0].scheme == "kafka":
        from hftengine.transport import transport_class

        app.transport = transport_class(settings.consumer_fetch_max_wait_ms)(app.conf.broker_consumer, app)
    ctx = WorkerContext(settings)
    app_any: Any = app
    app_any.hft_context = ctx
    raw = app.topic(settings.raw_topic, partitions=settings.topic_partitions)
    enriched = app.topic(settings.enriched_topic, partitions=settings.topic_partitions)
    dead = app.topic(settings.deadletter_topic, partitions=1)
    enrich.register(app, ctx, raw, enriched, dead)
    sink.register(app, ctx, enriched, dead)
    if settings.stateful_enabled:
        stateful.register(app, ctx, enriched, dead)
    deadletter.register(app, ctx, dead)
    if web_enabled:
        _serve_metrics(app)

    async def _close(app: faust.App, **kwargs: Any) -> None:
        ctx.close()

    app.on_before_shutdown.connect(_close)  # type: ignore[arg-type]

    return app


def _serve_metrics(app: faust.App) -> None:
    """``GET /metrics`` on the worker's web port: this process's Prometheus metrics (enrich and
    sink timings, freshness, dead letters, rollup refreshes)."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        # aiohttp takes the charset separately: CONTENT_TYPE_LATEST without "; charset=utf-8"
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split("; charset")[0])
