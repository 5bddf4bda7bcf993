"""Retrying work that must not be dropped (database writes, deliveries) from inside an agent."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


async def retry_forever(attempt: Callable[[], Awaitable[T]], *, what: str, cap: float = 15.0) -> T:
    """Await ``attempt()`` until it succeeds: log each failure, back off 0.5 s doubling up to ``cap``."""
    backoff = 0.5
    while True:
        try:
            return await attempt()
        except Exception:
            log.exception("%s failed; retrying in %.1fs", what, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, cap)
