"""The ``analytics-chain-state`` table: one :class:`~hftengine.analytics.state.ChainState` per chain.

Key ``UNDERLYING|YYYY-MM-DD`` (utf-8), value :func:`~hftengine.tables.codec.encode_state` bytes.
The store is RocksDB (``rocksdb://``; faust-streaming uses the rocksdict driver when
python-rocksdb is not installed) and every assignment is also written to the changelog topic
``<app_id>-analytics-chain-state-changelog``, from which a worker without local state recovers.

Co-partitioning: the table has the enriched topic's partition count, and Faust writes each
change to the changelog partition of the event being processed.  The enriched topic is keyed by
underlying, so every expiry of an underlying lives in the partition of that underlying, in the
source topic, the table and its changelog alike.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import faust
from faust.streams import _current_event

from hftengine.config import Settings

CHAIN_STATE_TABLE = "analytics-chain-state"


def changelog_topic_name(settings: Settings, table: str = CHAIN_STATE_TABLE) -> str:
    """The changelog topic Faust derives for ``table``: ``<app_id>-<table>-changelog``."""
    return f"{settings.app_id}-{table}-changelog"


def chain_state_table(app: faust.App, settings: Settings) -> Any:
    """Declare the table on ``app`` (raw bytes keys and values, no default)."""
    return app.Table(
        CHAIN_STATE_TABLE,
        partitions=settings.topic_partitions,
        key_type=bytes,  # bytes → the "raw" codec (anything else would default to json)
        value_type=bytes,
        help="Stateful intraday analytics per (underlying, expiry): cumulative OI baselines, velocity "
             "windows, levels and pattern detectors (hftengine.analytics.state.ChainState).",
    )


@contextmanager
def event_context(event: Any) -> Iterator[None]:
    """Make ``event`` the current event of this task while the block runs.

    Faust's RocksDB store and changelog pick the partition of a table read or write from the
    current event (a task-local context variable that stream iteration sets).  An agent that
    takes events in batches (``take_events``) reads and writes the table after the iteration
    has moved on, so it names the event each key belongs to; only this task's context changes
    (the stream's own buffering task keeps its own).
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)
