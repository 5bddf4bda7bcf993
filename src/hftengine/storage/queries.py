"""Read-side queries for the API (async psycopg, parameterised SQL).

Latest-per-key reads go through ``chain_latest`` so they never scan history.
History reads (raw or bucketed) are built by ``history.HistoryQuery`` for the
storage layout the database uses (TimescaleDB or plain PostgreSQL).
"""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from hftengine.storage.history import HistoryQuery, parse_fields

METRIC_FIELDS = (
    "ts", "underlying", "expiry", "spot", "forward", "time_to_expiry", "pcr_oi", "pcr_volume", "pcr_doi",
    "max_pain", "total_gex", "gamma_flip", "call_wall", "put_wall", "atm_iv", "rr25", "bf25",
    "quality_flags", "conventions_version", "source", "lot_size", "oi_unit", "n_contracts",
)
QUOTE_FIELDS = (
    "security_id", "last_price", "bid", "ask", "bid_qty", "ask_qty", "volume", "oi", "prev_oi", "prev_close",
    "avg_price", "broker_iv", "iv", "delta", "gamma", "theta", "vega", "rho", "vanna", "charm", "gex", "buildup",
)


def clean(value: Any) -> Any:
    """NaN/inf → None so every response is valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Queries:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self._layout: str | None = None

    async def layout(self) -> str:
        """``timescaledb`` or ``partitioned``, as recorded by the migrations (cached)."""
        if self._layout is None:
            async with self.pool.connection() as conn:
                cur = await conn.execute("SELECT hft_storage_layout()")
                row = await cur.fetchone()
            self._layout = str(row[0]) if row else "partitioned"
        return self._layout

    async def history(self, query: HistoryQuery) -> list[dict[str, Any]]:
        """Rows of a resolved history query, oldest first (at most ``query.limit``)."""
        statement, params = query.build(await self.layout())
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(statement, params)
            return [{k: clean(v) for k, v in row.items()} for row in await cur.fetchall()]

    async def ping(self) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("SELECT 1")

    async def resolve_underlying(self, ident: str) -> str | None:
        """Symbol (case-insensitive) or Dhan security id → symbol."""
        async with self.pool.connection() as conn:
            if ident.isdigit():
                cur = await conn.execute(
                    "SELECT symbol FROM underlyings WHERE security_id = %s ORDER BY symbol LIMIT 1", (int(ident),)
                )
            else:
                cur = await conn.execute("SELECT symbol FROM underlyings WHERE upper(symbol) = upper(%s)", (ident,))
            row = await cur.fetchone()
            return str(row[0]) if row else None

    async def underlyings(self) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                """SELECT u.symbol, u.security_id, u.segment, u.exchange, u.lot_size, u.last_seen,
                          coalesce(array_agg(l.expiry ORDER BY l.expiry) FILTER (WHERE l.expiry IS NOT NULL),
                                   '{}') AS expiries,
                          max(l.ts) AS latest_ts
                   FROM underlyings u LEFT JOIN chain_latest l ON l.underlying = u.symbol
                   GROUP BY u.symbol ORDER BY u.symbol"""
            )
            return list(await cur.fetchall())

    async def pick_expiry(self, underlying: str, today: date) -> date | None:
        """Nearest expiry on or after ``today`` that has data (else the latest one)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                """SELECT expiry FROM chain_latest WHERE underlying = %s
                   ORDER BY (expiry < %s), CASE WHEN expiry >= %s THEN expiry END, expiry DESC LIMIT 1""",
                (underlying, today, today),
            )
            row = await cur.fetchone()
            return row[0] if row else None

    async def latest_metrics(self, underlying: str, expiry: date | None) -> list[dict[str, Any]]:
        cols = ", ".join(f"m.{c}" for c in METRIC_FIELDS)
        sql = (f"SELECT {cols} FROM chain_latest l JOIN chain_metrics m "
               "ON m.underlying = l.underlying AND m.expiry = l.expiry AND m.ts = l.ts WHERE l.underlying = %s")
        params: list[Any] = [underlying]
        if expiry is not None:
            sql += " AND l.expiry = %s"
            params.append(expiry)
        sql += " ORDER BY l.expiry"
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(sql, params)
            return [{k: clean(v) for k, v in row.items()} for row in await cur.fetchall()]

    async def metrics_history(
        self, underlying: str, expiry: date | None, start: datetime, end: datetime, limit: int,
        *, bucket: str = "raw", fields: str | None = None,
    ) -> list[dict[str, Any]]:
        """Chain metrics in [start, end): raw snapshots or ``bucket`` rollups (``fields``: comma list)."""
        return await self.history(HistoryQuery(
            "metrics", underlying, expiry, start, end, bucket, parse_fields("metrics", bucket, fields), limit))

    async def contract_history(
        self, underlying: str, expiry: date, strike: float, option_type: str | None, start: datetime,
        end: datetime, limit: int, *, bucket: str = "raw", fields: str | None = None,
    ) -> list[dict[str, Any]]:
        """One contract (or both legs of a strike) in [start, end), raw or bucketed."""
        return await self.history(HistoryQuery(
            "contract", underlying, expiry, start, end, bucket, parse_fields("contract", bucket, fields), limit,
            strike=strike, option_type=option_type))

    async def latest_chain(self, underlying: str, expiry: date) -> dict[str, Any] | None:
        metrics = await self.latest_metrics(underlying, expiry)
        if not metrics:
            return None
        m = metrics[0]
        cols = ", ".join(("strike", "option_type", *QUOTE_FIELDS))
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"SELECT {cols} FROM option_quotes WHERE underlying = %s AND expiry = %s AND ts = %s "  # noqa: S608
                "ORDER BY strike, option_type",
                (underlying, expiry, m["ts"]),
            )
            rows = await cur.fetchall()
        strikes: dict[float, dict[str, Any]] = {}
        for row in rows:
            entry = strikes.setdefault(row["strike"], {"strike": row["strike"], "ce": None, "pe": None})
            entry[row["option_type"].lower()] = {k: clean(row[k]) for k in QUOTE_FIELDS}
        return {"metrics": m, "strikes": list(strikes.values())}
