from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from hftengine.api.deps import QueriesDep, UnderlyingDep

router = APIRouter(prefix="/v1/analytics", tags=["analytics"])
MAX_HISTORY_ROWS = 10_000


@router.get("/{underlying}/metrics/latest", summary="Latest chain metrics per expiry")
async def metrics_latest(
    underlying: UnderlyingDep, queries: QueriesDep,
    expiry: date | None = Query(default=None, description="Only this expiry"),
) -> dict[str, Any]:
    rows = await queries.latest_metrics(underlying, expiry)
    if not rows:
        raise HTTPException(404, f"no metrics stored for {underlying}" + (f" expiry {expiry}" if expiry else ""))
    return {"underlying": underlying, "metrics": rows}


@router.get("/{underlying}/metrics/history", summary="Chain metrics over a time range")
async def metrics_history(
    underlying: UnderlyingDep, queries: QueriesDep,
    start: Annotated[datetime | None, Query(alias="from", description="ISO-8601 with timezone; default to - 1h")] = None,
    end: Annotated[datetime | None, Query(alias="to", description="ISO-8601 with timezone; default now")] = None,
    expiry: date | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_HISTORY_ROWS)] = 1000,
) -> dict[str, Any]:
    for name, value in (("from", start), ("to", end)):
        if value is not None and value.tzinfo is None:
            raise HTTPException(422, f"'{name}' needs a timezone, e.g. 2026-11-20T09:15:00+05:30")
    end = end or datetime.now(UTC)
    start = start or end - timedelta(hours=1)
    if start >= end:
        raise HTTPException(422, "'from' must be before 'to'")
    rows = await queries.metrics_history(underlying, expiry, start, end, limit)
    return {"underlying": underlying, "from": start, "to": end, "count": len(rows), "metrics": rows,
            "truncated": len(rows) == limit}
