from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, HTTPException, Query

from hftengine.api.deps import QueriesDep, UnderlyingDep
from hftengine.api.routers.analytics import MAX_HISTORY_ROWS, history_bucket, time_window
from hftengine.storage.history import (
    BUCKET_CHOICES,
    CONTRACT_RAW_FIELDS,
    CONTRACT_ROLLUP_FIELDS,
    DEFAULT_MIN_POINTS,
)

router = APIRouter(prefix="/v1/option-chain", tags=["option chain"])
IST = ZoneInfo("Asia/Kolkata")


@router.get(
    "/{underlying}/latest",
    summary="Latest enriched chain of one expiry (default: nearest expiry with data)",
    description="`underlying` is a symbol (NIFTY) or a Dhan security id (13). Each strike carries the call "
    "(`ce`) and put (`pe`) legs with quotes, OI (in the chain's `oi_unit`), engine-solved IV (decimal) and "
    "Greeks (theta per year, vega per 1.00 vol); `metrics` has PCR, max pain, GEX, walls and skew.",
)
async def latest_chain(
    underlying: UnderlyingDep, queries: QueriesDep,
    expiry: Annotated[date | None, Query(description="Expiry date YYYY-MM-DD")] = None,
) -> dict[str, Any]:
    if expiry is None:
        expiry = await queries.pick_expiry(underlying, datetime.now(IST).date())
        if expiry is None:
            raise HTTPException(404, f"no chains stored yet for {underlying}")
    chain = await queries.latest_chain(underlying, expiry)
    if chain is None:
        raise HTTPException(404, f"no chain stored for {underlying} expiry {expiry.isoformat()}")
    return {"underlying": underlying, "expiry": expiry, **chain}


@router.get(
    "/{underlying}/history",
    summary="History of one strike (one or both legs), raw or bucketed",
    description="`bucket=auto` (default) picks the coarsest of 1d, 1h, 5m, 1m that still gives at least "
    "`min_points` buckets over the range, else raw snapshots. Bucketed rows have `ts` = bucket start and "
    "the rollup columns documented in docs/storage.md (e.g. `iv` = IV at the bucket's last snapshot, "
    f"`iv_min`, `iv_max`). Raw fields: {', '.join(CONTRACT_RAW_FIELDS)}. "
    f"Bucketed fields: {', '.join(CONTRACT_ROLLUP_FIELDS)}.",
)
async def contract_history(
    underlying: UnderlyingDep, queries: QueriesDep,
    strike: Annotated[float, Query(description="Strike price, e.g. 25000")],
    expiry: Annotated[date | None, Query(description="Expiry YYYY-MM-DD; default the nearest with data")] = None,
    option_type: Annotated[Literal["CE", "PE"] | None, Query(description="CE or PE; default both")] = None,
    start: Annotated[datetime | None, Query(alias="from", description="ISO-8601 with timezone; default to - 1 day")]
    = None,
    end: Annotated[datetime | None, Query(alias="to", description="ISO-8601 with timezone; default now")] = None,
    bucket: Annotated[str, Query(description=f"One of {', '.join(BUCKET_CHOICES)}")] = "auto",
    fields: Annotated[str | None, Query(description="Comma-separated columns, e.g. iv,oi")] = None,
    min_points: Annotated[int, Query(ge=1, le=MAX_HISTORY_ROWS, description="For bucket=auto")] = DEFAULT_MIN_POINTS,
    limit: Annotated[int, Query(ge=1, le=MAX_HISTORY_ROWS)] = 1000,
) -> dict[str, Any]:
    start, end = time_window(start, end, timedelta(days=1))
    resolved, names = history_bucket("contract", bucket, start, end, fields, min_points)
    if expiry is None:
        expiry = await queries.pick_expiry(underlying, datetime.now(IST).date())
        if expiry is None:
            raise HTTPException(404, f"no chains stored yet for {underlying}")
    rows = await queries.contract_history(underlying, expiry, strike, option_type, start, end, limit,
                                          bucket=resolved, fields=fields)
    return {"underlying": underlying, "expiry": expiry, "strike": strike, "option_type": option_type,
            "from": start, "to": end, "bucket": resolved, "fields": list(names), "count": len(rows), "rows": rows,
            "truncated": len(rows) == limit}
