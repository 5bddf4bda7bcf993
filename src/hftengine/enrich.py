"""Snapshot → enriched record: the one function the enrich agent calls per chain.

Pure apart from reading the clock for ``enriched_ts``: the maths lives in
``hftengine.analytics``; this module only maps the raw snapshot onto the
kernel inputs and the kernel result onto ``schemas/optionchain_enriched.avsc``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hftengine.analytics.chain import ChainResult, LegQuotes, analyze_chain
from hftengine.analytics.expiry import time_to_expiry
from hftengine.codec.packed import pack, unpack
from hftengine.snapshot import LEG_FIELDS, ChainSnapshot, Legs

LEG_ANALYTICS = ("iv", "delta", "gamma", "theta", "vega", "rho", "vanna", "charm")


def leg_quotes(legs: Legs) -> LegQuotes:
    f = np.float64
    return LegQuotes(
        present=legs.present,
        last_price=legs.last_price,
        bid=legs.top_bid_price,
        ask=legs.top_ask_price,
        bid_qty=legs.top_bid_quantity.astype(f),
        ask_qty=legs.top_ask_quantity.astype(f),
        volume=legs.volume.astype(f),
        oi=legs.oi.astype(f),
        prev_oi=legs.previous_oi.astype(f),
        prev_close=legs.previous_close_price,
    )


def analyze_snapshot(snap: ChainSnapshot, *, r: float, q: float) -> ChainResult:
    t = time_to_expiry(snap.exchange_ts, snap.expiry)
    return analyze_chain(
        snap.strikes, leg_quotes(snap.ce), leg_quotes(snap.pe), snap.spot, t,
        r=r, q=q, lot_size=snap.lot_size, oi_unit=snap.oi_unit,
    )


def _opt(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _per_strike(values: NDArray[np.float64], n: int) -> NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape == (2 * n,):
        arr = np.fmax(arr[:n], arr[n:])
    elif arr.ndim == 2 and arr.shape[-1] == n:
        arr = np.fmax.reduce(arr, axis=0)
    if arr.shape != (n,):
        return np.full(n, math.nan)
    return arr


def enriched_record(
    snap: ChainSnapshot, res: ChainResult, *, r: float, q: float, enriched_ts: datetime | None = None,
    snapshot_record: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The Avro record for the enriched topic.

    ``snapshot_record`` is the decoded raw record ``snap`` was built from, when there is one: it is
    carried as the enriched record's ``snapshot`` unchanged instead of packing every vector again.
    """
    n = snap.strikes.shape[0]

    def legs(prefix: str) -> dict[str, bytes]:
        out = {name: pack(getattr(res, f"{prefix}_{name}"), np.float64) for name in LEG_ANALYTICS}
        out["gex"] = pack(res.gex_call if prefix == "call" else res.gex_put, np.float64)
        out["buildup"] = pack(getattr(res, f"{prefix}_buildup"), np.int8)
        return out

    return {
        "snapshot": snap.to_record() if snapshot_record is None else snapshot_record,
        "enriched_ts": enriched_ts or datetime.now(UTC),
        "conventions_version": res.conventions_version,
        "time_to_expiry": float(res.time_to_expiry),
        "rate": r,
        "dividend_yield": q,
        "forward": float(res.forward),
        "ce_analytics": legs("call"),
        "pe_analytics": legs("put"),
        "gex": pack(res.gex, np.float64),
        "pcr_oi": float(res.pcr_oi),
        "pcr_volume": float(res.pcr_volume),
        "pcr_doi": float(res.pcr_doi),
        "max_pain": float(res.max_pain),
        "total_gex": float(res.total_gex),
        "gamma_flip": _opt(res.gamma_flip),
        "call_wall": _opt(res.call_wall),
        "put_wall": _opt(res.put_wall),
        "atm_iv": float(res.atm_iv),
        "rr25": float(res.rr25),
        "bf25": float(res.bf25),
        "flow_score": pack(_per_strike(res.flow_score, n), np.float64),
        "quality_flags": list(res.quality_flags),
    }


_ANALYTICS_DTYPES: dict[str, Any] = {**dict.fromkeys(LEG_ANALYTICS, np.float64), "gex": np.float64, "buildup": np.int8}


def unpack_enriched(rec: dict[str, Any]) -> dict[str, Any]:
    """A decoded enriched record with every packed vector turned into a numpy array.

    Raises ``ValueError`` on a vector whose length does not fit its dtype.
    """
    snap = dict(rec["snapshot"])
    snap["strikes"] = unpack(snap["strikes"], np.float64)
    for side in ("ce", "pe"):
        snap[side] = {name: unpack(snap[side][name], dtype) for name, dtype in LEG_FIELDS}
    out = dict(rec)
    out["snapshot"] = snap
    for key in ("ce_analytics", "pe_analytics"):
        out[key] = {name: unpack(rec[key][name], dtype) for name, dtype in _ANALYTICS_DTYPES.items()}
    out["gex"] = unpack(rec["gex"], np.float64)
    out["flow_score"] = unpack(rec["flow_score"], np.float64)
    return out
