from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from hftengine.api.deps import QueriesDep

router = APIRouter(prefix="/v1", tags=["underlyings"])


@router.get("/underlyings", summary="Underlyings with data, their expiries and latest snapshot time")
async def list_underlyings(queries: QueriesDep) -> dict[str, Any]:
    rows = await queries.underlyings()
    return {"underlyings": rows, "count": len(rows)}
