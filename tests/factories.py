"""Test factories: small hand-built option chains."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
from scipy.special import ndtr

from hftengine.snapshot import ChainSnapshot, Legs


def bsm(spot: float, strikes: np.ndarray, t: float, r: float, vol: np.ndarray, call: bool) -> np.ndarray:
    sd = vol * math.sqrt(t)
    d1 = (np.log(spot / strikes) + (r + 0.5 * vol**2) * t) / sd
    d2 = d1 - sd
    if call:
        return spot * ndtr(d1) - strikes * math.exp(-r * t) * ndtr(d2)
    return strikes * math.exp(-r * t) * ndtr(-d2) - spot * ndtr(-d1)


def make_chain(
    *, underlying: str = "NIFTY", security_id: int = 13, spot: float = 25000.0, n_strikes: int = 21,
    step: float = 50.0, expiry: date = date(2026, 11, 24), ts: datetime | None = None,
    lot_size: int = 75, oi_unit: str = "shares", seed: int = 1, **overrides: Any,
) -> ChainSnapshot:
    """A consistent chain priced with BSM (r 6.5 %, smile 12-20 %)."""
    rng = np.random.default_rng(seed)
    ts = ts or datetime(2026, 11, 20, 5, 0, tzinfo=UTC)  # 10:30 IST
    atm = round(spot / step) * step
    strikes = atm + step * (np.arange(n_strikes) - n_strikes // 2)
    t = max((datetime.combine(expiry, datetime.min.time(), UTC) + timedelta(hours=10) - ts).total_seconds(),
            60.0) / (365 * 86400)
    vol = 0.12 + 0.8 * np.log(strikes / spot) ** 2 - 0.05 * np.log(strikes / spot)

    def legs(call: bool, base_id: int) -> Legs:
        price = np.maximum(np.round(bsm(spot, strikes, t, 0.065, vol, call) / 0.05) * 0.05, 0.05)
        oi = (rng.integers(10, 2000, n_strikes) * lot_size).astype(np.int64)
        return Legs(
            present=np.ones(n_strikes, dtype=bool),
            security_id=np.arange(base_id, base_id + n_strikes, dtype=np.int64),
            last_price=price,
            top_bid_price=np.maximum(price - 0.05, 0.0),
            top_bid_quantity=np.full(n_strikes, lot_size * 10, dtype=np.int64),
            top_ask_price=price + 0.05,
            top_ask_quantity=np.full(n_strikes, lot_size * 8, dtype=np.int64),
            volume=(rng.integers(0, 5000, n_strikes) * lot_size).astype(np.int64),
            oi=oi,
            previous_oi=(oi * 0.9).astype(np.int64),
            previous_close_price=price * 1.01,
            previous_volume=np.zeros(n_strikes, dtype=np.int64),
            average_price=price,
            implied_volatility=vol * 100,
            delta=np.full(n_strikes, np.nan),
            theta=np.full(n_strikes, np.nan),
            gamma=np.full(n_strikes, np.nan),
            vega=np.full(n_strikes, np.nan),
        )

    fields: dict[str, Any] = {
        "underlying": underlying, "underlying_security_id": security_id, "segment": "IDX_I", "expiry": expiry,
        "exchange_ts": ts, "received_ts": ts + timedelta(milliseconds=20), "spot": spot, "lot_size": lot_size,
        "oi_unit": oi_unit, "source": "test", "strikes": strikes.astype(np.float64),
        "ce": legs(True, 40000), "pe": legs(False, 50000),
    }
    fields.update(overrides)
    return ChainSnapshot(**fields)


class MemoryRegistry:
    """In-memory stand-in for a registry client, for pure codec unit tests only."""

    def __init__(self) -> None:
        self.by_id: dict[int, str] = {}
        self.ids: dict[str, int] = {}

    def register_schema(self, subject_name: str, schema: Any, normalize_schemas: bool = False) -> int:
        text = schema.schema_str
        if text not in self.ids:
            self.ids[text] = len(self.ids) + 1
            self.by_id[self.ids[text]] = text
        return self.ids[text]

    def get_schema(self, schema_id: int, subject_name: str | None = None, fmt: str | None = None) -> Any:
        from confluent_kafka.schema_registry import Schema
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        if schema_id not in self.by_id:
            raise SchemaRegistryError(404, 40403, "Schema not found")
        return Schema(self.by_id[schema_id], "AVRO")


def enriched_for(snap: ChainSnapshot, *, enriched_ts: datetime | None = None) -> dict[str, Any]:
    """An enriched record with simple, known analytics values (for sink/API tests).

    Per-leg IV is the broker IV / 100, Greeks are NaN except gamma = 1e-4, so
    NULL handling and per-leg GEX are exercised.
    """
    n = len(snap.strikes)

    def legs(side: Legs) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {k: [math.nan] * n for k in
                                     ("delta", "theta", "vega", "rho", "vanna", "charm")}
        out["iv"] = (side.implied_volatility / 100).tolist()
        out["gamma"] = [1e-4] * n
        shares = side.oi * (snap.lot_size if snap.oi_unit == "contracts" else 1)
        sign = 1.0 if side is snap.ce else -1.0
        out["gex"] = (sign * 1e-4 * shares * snap.spot**2 * 0.01).tolist()
        out["buildup"] = [1] * n
        return out

    from hftengine.enrich import unpack_enriched

    return unpack_enriched({
        "snapshot": snap.to_record(),
        "enriched_ts": enriched_ts or snap.received_ts + timedelta(milliseconds=5),
        "conventions_version": "test",
        "time_to_expiry": 0.01,
        "rate": 0.065,
        "dividend_yield": 0.0,
        "forward": snap.spot,
        "ce_analytics": legs(snap.ce),
        "pe_analytics": legs(snap.pe),
        "gex": [0.0] * n,
        "pcr_oi": float(snap.pe.oi.sum() / snap.ce.oi.sum()),
        "pcr_volume": math.nan,
        "pcr_doi": 1.0,
        "max_pain": float(snap.strikes[n // 2]),
        "total_gex": 123.0,
        "gamma_flip": None,
        "call_wall": float(snap.strikes[-1]),
        "put_wall": None,
        "atm_iv": 0.12,
        "rr25": math.nan,
        "bf25": 0.01,
        "flow_score": [0.0] * n,
        "quality_flags": ["one_sided_legs"],
    })


@dataclass
class DeadLetter:
    stage: str
    error_type: str
    reason: str
    value: bytes | None
    underlying: str | None
    key: bytes | None


class RecordingPublisher:
    """In-memory Publisher: validates like the Kafka one and keeps what it got."""

    def __init__(self) -> None:
        self.published: list[ChainSnapshot] = []
        self.dead: list[DeadLetter] = []
        self.flushes = 0

    def publish(self, snapshot: ChainSnapshot) -> bool:
        from hftengine.feeds.publisher import reject_invalid

        if reject_invalid(self, snapshot):
            return False
        self.published.append(snapshot)
        return True

    def dead_letter(
        self,
        *,
        stage: str,
        error_type: str,
        reason: str,
        value: bytes | None = None,
        underlying: str | None = None,
        key: bytes | None = None,
    ) -> None:
        self.dead.append(DeadLetter(stage, error_type, reason, value, underlying, key))

    def flush(self, timeout: float = 30.0) -> int:
        self.flushes += 1
        return 0
