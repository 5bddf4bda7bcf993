"""Dependency aliases shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from hftengine.config import Settings
from hftengine.storage.queries import Queries


def get_queries(request: Request) -> Queries:
    queries: Queries = request.app.state.queries
    return queries


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


QueriesDep = Annotated[Queries, Depends(get_queries)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


async def resolve_underlying(underlying: str, queries: QueriesDep) -> str:
    symbol = await queries.resolve_underlying(underlying)
    if symbol is None:
        raise HTTPException(
            status_code=404,
            detail=f"unknown underlying {underlying!r}: use a symbol (NIFTY) or a Dhan security id (13); "
            "see /v1/underlyings",
        )
    return symbol


UnderlyingDep = Annotated[str, Depends(resolve_underlying)]
