from __future__ import annotations

from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, HTTPException, Query

from hftengine.api.deps import QueriesDep, UnderlyingDep

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
    expiry: date | None = Query(default=None, description="Expiry date YYYY-MM-DD"),
) -> dict[str, Any]:
    if expiry is None:
        expiry = await queries.pick_expiry(underlying, datetime.now(IST).date())
        if expiry is None:
            raise HTTPException(404, f"no chains stored yet for {underlying}")
    chain = await queries.latest_chain(underlying, expiry)
    if chain is None:
        raise HTTPException(404, f"no chain stored for {underlying} expiry {expiry.isoformat()}")
    return {"underlying": underlying, "expiry": expiry, **chain}
