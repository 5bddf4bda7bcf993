from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from hftengine.api.deps import QueriesDep, UnderlyingDep
from hftengine.storage.history import (
    BUCKET_CHOICES,
    DEFAULT_MIN_POINTS,
    METRIC_RAW_FIELDS,
    METRIC_ROLLUP_FIELDS,
    FieldError,
    Kind,
    choose_bucket,
    parse_fields,
)

router = APIRouter(prefix="/v1/analytics", tags=["analytics"])
MAX_HISTORY_ROWS = 10_000


def time_window(start: datetime | None, end: datetime | None, default_span: timedelta) -> tuple[datetime, datetime]:
    """Validated ``[from, to)``: timezone-aware, ``from`` before ``to``; defaults end at now."""
    for name, value in (("from", start), ("to", end)):
        if value is not None and value.tzinfo is None:
            raise HTTPException(422, f"'{name}' needs a timezone, e.g. 2026-11-20T09:15:00+05:30")
    end = end or datetime.now(UTC)
    start = start or end - default_span
    if start >= end:
        raise HTTPException(422, "'from' must be before 'to'")
    return start, end


def history_bucket(
    kind: Kind, bucket: str, start: datetime, end: datetime, fields: str | None, min_points: int
) -> tuple[str, tuple[str, ...]]:
    """The resolved bucket (``auto`` picks one) and the column names of a history request; 422
    when the bucket or a field is unknown."""
    try:
        resolved = choose_bucket(bucket, start, end, kind=kind, fields=fields, min_points=min_points)
        return resolved, parse_fields(kind, resolved, fields)
    except FieldError as exc:
        raise HTTPException(422, str(exc)) from exc


@router.get("/{underlying}/metrics/latest", summary="Latest chain metrics per expiry")
async def metrics_latest(
    underlying: UnderlyingDep, queries: QueriesDep,
    expiry: Annotated[date | None, Query(description="Only this expiry")] = None,
) -> dict[str, Any]:
    rows = await queries.latest_metrics(underlying, expiry)
    if not rows:
        raise HTTPException(404, f"no metrics stored for {underlying}" + (f" expiry {expiry}" if expiry else ""))
    return {"underlying": underlying, "metrics": rows}


@router.get(
    "/{underlying}/metrics/history",
    summary="Chain metrics over a time range, raw or bucketed",
    description="`bucket=raw` (default) returns every snapshot; `1m`, `5m`, `1h`, `1d` return rollup rows "
    "(`ts` = bucket start; each column's aggregate is documented in docs/storage.md); `auto` picks the coarsest "
    f"bucket that still gives at least `min_points` buckets over the range. Raw fields: "
    f"{', '.join(METRIC_RAW_FIELDS)}. Bucketed fields: {', '.join(METRIC_ROLLUP_FIELDS)}.",
)
async def metrics_history(
    underlying: UnderlyingDep, queries: QueriesDep,
    start: Annotated[datetime | None, Query(alias="from", description="ISO-8601 with timezone; default to - 1h")]
    = None,
    end: Annotated[datetime | None, Query(alias="to", description="ISO-8601 with timezone; default now")] = None,
    expiry: date | None = None,
    bucket: Annotated[str, Query(description=f"One of {', '.join(BUCKET_CHOICES)}")] = "raw",
    fields: Annotated[str | None, Query(description="Comma-separated columns; default all (raw) or the "
                                                     "main rollup columns")] = None,
    min_points: Annotated[int, Query(ge=1, le=MAX_HISTORY_ROWS, description="For bucket=auto")] = DEFAULT_MIN_POINTS,
    limit: Annotated[int, Query(ge=1, le=MAX_HISTORY_ROWS)] = 1000,
) -> dict[str, Any]:
    start, end = time_window(start, end, timedelta(hours=1))
    resolved, names = history_bucket("metrics", bucket, start, end, fields, min_points)
    rows = await queries.metrics_history(underlying, expiry, start, end, limit, bucket=resolved, fields=fields)
    return {"underlying": underlying, "from": start, "to": end, "bucket": resolved, "fields": list(names),
            "count": len(rows), "metrics": rows, "truncated": len(rows) == limit}
