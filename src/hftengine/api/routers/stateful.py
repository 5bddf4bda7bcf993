"""Stateful intraday analytics: cumulative OI and velocity, support/resistance levels, pattern events.

Each resource answers *latest* without ``from``/``to`` and *history* with them (timezone-aware
ISO-8601; ``[from, to)``).  Definitions of every field: ``docs/analytics.md``.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from psycopg.rows import dict_row

from hftengine.api.deps import QueriesDep, UnderlyingDep

router = APIRouter(prefix="/v1/analytics", tags=["stateful analytics"])
MAX_ROWS = 10_000
FromQ = Annotated[datetime | None, Query(alias="from", description="ISO-8601 with timezone; history from here")]
ToQ = Annotated[datetime | None, Query(alias="to", description="ISO-8601 with timezone; history until here")]
ExpiryQ = Annotated[date | None, Query(description="Only this expiry")]
LimitQ = Annotated[int, Query(ge=1, le=MAX_ROWS)]

TOTAL_FIELDS = (
    "ts", "expiry", "session", "session_open_ts", "spot", "ce_oi", "pe_oi", "ce_oi_open", "pe_oi_open",
    "ce_change_open", "pe_change_open", "ce_change_prev", "pe_change_prev", "pcr_oi", "pcr_change_open",
    "oi_unit", "lot_size", "analytics_version",
)
OI_FIELDS = ("oi", "oi_session_open", "oi_change", "oi_change_pct", "oi_change_prev", "price_change", "buildup")
VELOCITY_FIELDS = ("oi_velocity", "oi_velocity_pct", "oi_acceleration", "price_velocity", "price_acceleration",
                   "span_seconds")
LEVEL_FIELDS = ("ts", "expiry", "level_type", "price", "strength", "source", "payload")
PATTERN_FIELDS = ("ts", "expiry", "strike", "option_type", "event_type", "event_key", "severity", "payload")


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: _clean(v) for k, v in row.items()}


def _history_window(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime] | None:
    """``None`` for *latest*; else the validated ``[from, to)`` (a missing bound is 1 day from the other)."""
    if start is None and end is None:
        return None
    for name, value in (("from", start), ("to", end)):
        if value is not None and value.tzinfo is None:
            raise HTTPException(422, f"'{name}' needs a timezone, e.g. 2026-11-20T09:15:00+05:30")
    if start is None:
        assert end is not None
        start = end - timedelta(days=1)
    if end is None:
        end = start + timedelta(days=1)
    if start >= end:
        raise HTTPException(422, "'from' must be before 'to'")
    return start, end


async def _fetch(queries: Any, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    async with queries.pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(sql, params)
        return [_row(r) for r in await cur.fetchall()]


async def _latest_ts(queries: Any, table: str, underlying: str, expiry: date | None) -> list[tuple[date, datetime]]:
    """(expiry, latest ts) per expiry with rows in ``table`` (one index probe per expiry)."""
    expiries = await _fetch(queries, "SELECT expiry FROM chain_latest WHERE underlying = %s ORDER BY expiry",
                            [underlying])
    wanted = [r["expiry"] for r in expiries if expiry is None or r["expiry"] == expiry]
    if expiry is not None and expiry not in wanted:
        wanted.append(expiry)
    out: list[tuple[date, datetime]] = []
    for exp in wanted:
        rows = await _fetch(
            queries, f"SELECT max(ts) AS ts FROM {table} WHERE underlying = %s AND expiry = %s",  # noqa: S608
            [underlying, exp])
        if rows and rows[0]["ts"] is not None:
            out.append((exp, rows[0]["ts"]))
    return out


# ----------------------------------------------------------------------------------- OI
@router.get("/{underlying}/oi", summary="Cumulative OI and velocity: latest per expiry, or history with from/to")
async def oi(
    underlying: UnderlyingDep, queries: QueriesDep, expiry: ExpiryQ = None, start: FromQ = None, end: ToQ = None,
    strike: Annotated[float | None, Query(description="History: also the per-leg rows of this strike")] = None,
    limit: LimitQ = 1000,
) -> dict[str, Any]:
    window = _history_window(start, end)
    if window is not None:
        sql = (f"SELECT {', '.join(TOTAL_FIELDS)} FROM oi_totals "  # noqa: S608
               "WHERE underlying = %s AND ts >= %s AND ts < %s")
        params: list[Any] = [underlying, *window]
        if expiry is not None:
            sql += " AND expiry = %s"
            params.append(expiry)
        totals = await _fetch(queries, sql + " ORDER BY ts, expiry LIMIT %s", [*params, limit])
        out: dict[str, Any] = {"underlying": underlying, "from": window[0], "to": window[1], "count": len(totals),
                               "truncated": len(totals) == limit, "totals": totals}
        if strike is not None:
            sql = ("SELECT ts, expiry, option_type, " + ", ".join(OI_FIELDS)  # noqa: S608
                   + " FROM cumulative_oi WHERE underlying = %s AND strike = %s AND ts >= %s AND ts < %s")
            params = [underlying, strike, *window]
            if expiry is not None:
                sql += " AND expiry = %s"
                params.append(expiry)
            out["strike"] = strike
            out["strike_rows"] = await _fetch(queries, sql + " ORDER BY ts, expiry, option_type LIMIT %s",
                                              [*params, limit])
        return out
    latest = await _latest_ts(queries, "oi_totals", underlying, expiry)
    if not latest:
        raise HTTPException(404, f"no OI analytics stored for {underlying}" + (f" expiry {expiry}" if expiry else ""))
    expiries = []
    for exp, ts in latest:
        totals = await _fetch(queries, f"SELECT {', '.join(TOTAL_FIELDS)} FROM oi_totals "  # noqa: S608
                              "WHERE underlying = %s AND expiry = %s AND ts = %s", [underlying, exp, ts])
        legs = await _fetch(queries, "SELECT strike, option_type, " + ", ".join(OI_FIELDS)  # noqa: S608
                            + " FROM cumulative_oi WHERE underlying = %s AND expiry = %s AND ts = %s "
                            "ORDER BY strike, option_type", [underlying, exp, ts])
        vel = await _fetch(queries, "SELECT strike, option_type, window_seconds, "  # noqa: S608
                           + ", ".join(VELOCITY_FIELDS) + " FROM velocity WHERE underlying = %s AND expiry = %s "
                           "AND ts = %s ORDER BY strike, option_type, window_seconds", [underlying, exp, ts])
        strikes: dict[float, dict[str, Any]] = {}
        for r in legs:
            entry = strikes.setdefault(r["strike"], {"strike": r["strike"], "ce": None, "pe": None})
            entry[r["option_type"].lower()] = {**{k: r[k] for k in OI_FIELDS}, "velocity": {}}
        for r in vel:
            leg = strikes.get(r["strike"], {}).get(r["option_type"].lower())
            if leg is not None:
                leg["velocity"][str(r["window_seconds"])] = {k: r[k] for k in VELOCITY_FIELDS}
        expiries.append({"expiry": exp, "ts": ts, "totals": totals[0] if totals else None,
                         "strikes": list(strikes.values())})
    return {"underlying": underlying, "expiries": expiries}


# ------------------------------------------------------------------------------- levels
@router.get("/{underlying}/levels",
            summary="Support/resistance, GEX walls, max pain, gamma flip: latest per expiry, or history")
async def levels(
    underlying: UnderlyingDep, queries: QueriesDep, expiry: ExpiryQ = None, start: FromQ = None, end: ToQ = None,
    level_type: Annotated[str | None, Query(description="support, resistance, call_wall, put_wall, max_pain, "
                                                        "gamma_flip")] = None,
    limit: LimitQ = 1000,
) -> dict[str, Any]:
    window = _history_window(start, end)
    if window is not None:
        sql = (f"SELECT {', '.join(LEVEL_FIELDS)} FROM levels "  # noqa: S608
               "WHERE underlying = %s AND ts >= %s AND ts < %s")
        params: list[Any] = [underlying, *window]
        for col, value in (("expiry", expiry), ("level_type", level_type)):
            if value is not None:
                sql += f" AND {col} = %s"
                params.append(value)
        rows = await _fetch(queries, sql + " ORDER BY ts, expiry, level_type LIMIT %s", [*params, limit])
        return {"underlying": underlying, "from": window[0], "to": window[1], "count": len(rows),
                "truncated": len(rows) == limit, "levels": rows}
    latest = await _latest_ts(queries, "levels", underlying, expiry)
    if not latest:
        raise HTTPException(404, f"no levels stored for {underlying}" + (f" expiry {expiry}" if expiry else ""))
    out = []
    for exp, ts in latest:
        rows = await _fetch(queries, f"SELECT {', '.join(LEVEL_FIELDS)} FROM levels "  # noqa: S608
                            "WHERE underlying = %s AND expiry = %s AND ts = %s ORDER BY level_type",
                            [underlying, exp, ts])
        if level_type is not None:
            rows = [r for r in rows if r["level_type"] == level_type]
        out.append({"expiry": exp, "ts": ts, "levels": rows})
    return {"underlying": underlying, "expiries": out}


# ------------------------------------------------------------------------------ patterns
@router.get("/{underlying}/patterns",
            summary="Pattern events: the latest ones (newest first), or history with from/to (oldest first)")
async def patterns(
    underlying: UnderlyingDep, queries: QueriesDep, expiry: ExpiryQ = None, start: FromQ = None, end: ToQ = None,
    min_severity: Annotated[int, Query(ge=0, le=3, description="0 info, 1 low, 2 medium, 3 high")] = 0,
    event_type: Annotated[str | None, Query(description="e.g. short_buildup, iv_spike, unusual_flow")] = None,
    limit: LimitQ = 100,
) -> dict[str, Any]:
    window = _history_window(start, end)
    sql = f"SELECT {', '.join(PATTERN_FIELDS)} FROM pattern_events WHERE underlying = %s AND severity >= %s"  # noqa: S608
    params: list[Any] = [underlying, min_severity]
    for col, value in (("expiry", expiry), ("event_type", event_type)):
        if value is not None:
            sql += f" AND {col} = %s"
            params.append(value)
    if window is not None:
        sql += " AND ts >= %s AND ts < %s ORDER BY ts, event_type, event_key LIMIT %s"
        rows = await _fetch(queries, sql, [*params, *window, limit])
        return {"underlying": underlying, "from": window[0], "to": window[1], "count": len(rows),
                "truncated": len(rows) == limit, "events": rows}
    rows = await _fetch(queries, sql + " ORDER BY ts DESC, event_type, event_key LIMIT %s", [*params, limit])
    return {"underlying": underlying, "count": len(rows), "events": rows}
