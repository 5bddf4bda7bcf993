"""Sending a failed record to the dead-letter topic from inside an agent."""

from __future__ import annotations

import logging
from typing import Any

from hftengine.agents.context import WorkerContext
from hftengine.feeds.publisher import dead_letter_record
from hftengine.metrics import DEAD_LETTERS

log = logging.getLogger(__name__)


async def send_dead_letter(
    ctx: WorkerContext, dead_topic: Any, message: Any, *, stage: str, error_type: str, reason: str,
    schema_id: int | None = None, underlying: str | None = None,
) -> None:
    rec = dead_letter_record(
        stage=stage, error_type=error_type, reason=reason, value=message.value, key=message.key,
        source_topic=message.topic, source_partition=message.partition, source_offset=message.offset,
        schema_id=schema_id, underlying=underlying,
    )
    await dead_topic.send(key=message.key, value=ctx.dead_encoder.encode(rec))
    DEAD_LETTERS.labels(stage, error_type).inc()
    log.warning("dead letter %s/%s at %s[%s]@%s: %s", stage, error_type, message.topic, message.partition,
                message.offset, reason)
