"""``deadletters``: store every dead letter in the ``dead_letters`` table for inspection."""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any

import faust

from hftengine.agents.context import WorkerContext
from hftengine.agents.retry import retry_forever
from hftengine.codec.avro import DecodeError

log = logging.getLogger(__name__)


def register(app: faust.App, ctx: WorkerContext, dead: Any) -> None:
    @app.agent(dead, name="hftengine.deadletters")
    async def deadletter_agent(stream: Any) -> None:
        loop = asyncio.get_running_loop()
        async for events in stream.take_events(100, within=0.5):
            letters: list[dict[str, Any]] = []
            for event in events:
                try:
                    _, rec = ctx.dead_decoder.decode(event.message.value)
                except DecodeError as exc:
                    # a dead letter we cannot read is kept as one about itself
                    from hftengine.feeds.publisher import dead_letter_record

                    rec = dead_letter_record(
                        stage="deadletter", error_type=exc.error_type, reason=exc.reason,
                        value=event.message.value, key=event.message.key,
                        source_topic=event.message.topic, source_partition=event.message.partition,
                        source_offset=event.message.offset,
                    )
                rec["dlq_partition"] = event.message.partition
                rec["dlq_offset"] = event.message.offset
                letters.append(rec)
            await retry_forever(
                partial(loop.run_in_executor, ctx.db_executor, ctx.store.write_dead_letters, letters),
                what=f"storing {len(letters)} dead letters",
            )
