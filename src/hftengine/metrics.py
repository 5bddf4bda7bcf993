"""Prometheus metrics of the worker and feeds (one registry per process)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

CHAINS_ENRICHED = Counter("hft_chains_enriched_total", "Chain snapshots enriched", ["underlying"])
CONTRACTS_ENRICHED = Counter("hft_contracts_enriched_total", "Option contracts enriched")
DEAD_LETTERS = Counter("hft_dead_letters_total", "Records sent to the dead-letter topic", ["stage", "error_type"])
ENRICH_SECONDS = Histogram(
    "hft_enrich_seconds", "Decode + analytics + encode time per chain",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1),
)
SINK_CHAINS = Counter("hft_sink_chains_total", "Chains handled by the sink", ["result"])
SINK_ROWS = Counter("hft_sink_quote_rows_total", "Option quote rows stored")
SINK_SECONDS = Histogram(
    "hft_sink_batch_seconds", "Sink transaction time per batch",
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
)
SINK_RETRIES = Counter("hft_sink_retries_total", "Sink batches retried after a database error")
FRESHNESS = Histogram(
    "hft_freshness_seconds", "received_ts -> row committed",
    buckets=(0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30),
)
ROLLUP_SECONDS = Histogram(
    "hft_rollup_refresh_seconds", "Time of one scheduled rollup refresh",
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120),
)
