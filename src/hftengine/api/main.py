"""FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from psycopg_pool import AsyncConnectionPool

from hftengine import __version__
from hftengine.api.routers import analytics, health, option_chain, stateful, underlyings
from hftengine.config import Settings
from hftengine.storage.queries import Queries


def create_api(settings: Settings) -> FastAPI:
    """The REST API; opens its database pool in the lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = AsyncConnectionPool(
            settings.database_dsn(), min_size=1, max_size=settings.db_pool_size, open=False,
            kwargs={"autocommit": True},
        )
        await pool.open()
        app.state.queries = Queries(pool)
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(
        title="HFT Data Engine API",
        version=__version__,
        description="Real-time option chains with IV, Greeks, PCR, max pain, GEX and skew.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    for module in (underlyings, option_chain, analytics, stateful, health):
        app.include_router(module.router)
    return app
