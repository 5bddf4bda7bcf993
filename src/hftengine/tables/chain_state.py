"""The ``analytics-chain-state`` table: one :class:`~hftengine.analytics.state.ChainState` per chain.

Key ``UNDERLYING|YYYY-MM-DD`` (utf-8), value :func:`~hftengine.tables.codec.encode_state` bytes.
The store is RocksDB (``rocksdb://``; faust-streaming uses the rocksdict driver when
python-rocksdb is not installed) and every assignment is also written to the changelog topic
``<app_id>-analytics-chain-state-changelog``, from which a worker without local state recovers.

Co-partitioning: the table has the enriched topic's partition count, and Faust writes each
change to the changelog partition of the event being processed.  The enriched topic is keyed by
underlying, so every expiry of an underlying lives in the partition of that underlying, in the
source topic, the table and its changelog alike.

Durability: Faust hands a table's changelog writes to a buffer that a background task drains,
and the consumer's commit "flushes" that buffer for at most 0.1 s without a message going out
before committing the source offsets anyway.  Under load the offsets of the events that made a
change could then be committed while the change itself was still in the buffer; a crash at that
moment loses the change from the changelog, and a worker that recovers from it (no local state)
resumes from a state older than the committed offsets.  :class:`ChainStateTable` keeps the
futures of its changelog writes, and the agent awaits :meth:`ChainStateTable.changelog_delivered`
before it acknowledges the events (see :mod:`hftengine.agents.stateful`).
"""

from __future__ import annotations

import asyncio
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


class ChainStateTable(faust.Table[bytes, bytes]):
    """A Faust table whose changelog writes can be awaited until the broker has them."""

    def __init__(self, app: faust.App, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._undelivered: list[asyncio.Future[Any]] = []

    def send_changelog(self, *args: Any, **kwargs: Any) -> Any:
        fut = super().send_changelog(*args, **kwargs)
        self._undelivered.append(fut)
        return fut

    async def changelog_delivered(self) -> int:
        """Wait until every changelog write made so far is acknowledged by the broker; how many
        were waited for.  A failed delivery raises (the events that made it are then not acked)."""
        pending, self._undelivered = self._undelivered, []
        if pending:
            await asyncio.gather(*pending)
        return len(pending)


def chain_state_table(app: faust.App, settings: Settings) -> ChainStateTable:
    """Declare the table on ``app`` (raw bytes keys and values, no default)."""
    table = ChainStateTable(
        app,
        name=CHAIN_STATE_TABLE,
        beacon=app.tables.beacon,
        partitions=settings.topic_partitions,
        key_type=bytes,  # bytes → the "raw" codec (anything else would default to json)
        value_type=bytes,
        help="Stateful intraday analytics per (underlying, expiry): cumulative OI baselines, velocity "
             "windows, levels and pattern detectors (hftengine.analytics.state.ChainState).",
    )
    app.tables.add(table)
    return table


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
