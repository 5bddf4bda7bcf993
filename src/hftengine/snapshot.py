"""The streaming unit: one option-chain snapshot (underlying + expiry + timestamp).

``ChainSnapshot`` holds a chain as struct-of-arrays (one numpy array per leg
field, one element per strike).  It converts to and from the Avro record of
``schemas/optionchain_raw.avsc`` and validates itself: ``problems()`` returns
the reasons a snapshot must go to the dead-letter topic instead of the
pipeline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from hftengine.codec.packed import pack, unpack

OiUnit = Literal["shares", "contracts"]

#: Leg fields in schema order with their numpy dtype.
LEG_FIELDS: tuple[tuple[str, type[np.generic]], ...] = (
    ("present", np.bool_),
    ("security_id", np.int64),
    ("last_price", np.float64),
    ("top_bid_price", np.float64),
    ("top_bid_quantity", np.int64),
    ("top_ask_price", np.float64),
    ("top_ask_quantity", np.int64),
    ("volume", np.int64),
    ("oi", np.int64),
    ("previous_oi", np.int64),
    ("previous_close_price", np.float64),
    ("previous_volume", np.int64),
    ("average_price", np.float64),
    ("implied_volatility", np.float64),
    ("delta", np.float64),
    ("theta", np.float64),
    ("gamma", np.float64),
    ("vega", np.float64),
)
PRICE_FIELDS = ("last_price", "top_bid_price", "top_ask_price", "previous_close_price", "average_price")
COUNT_FIELDS = ("top_bid_quantity", "top_ask_quantity", "volume", "oi", "previous_oi", "previous_volume")


@dataclass(frozen=True, slots=True)
class Legs:
    """One side of a chain (calls or puts); every array has one element per strike."""

    present: NDArray[np.bool_]
    security_id: NDArray[np.int64]
    last_price: NDArray[np.float64]
    top_bid_price: NDArray[np.float64]
    top_bid_quantity: NDArray[np.int64]
    top_ask_price: NDArray[np.float64]
    top_ask_quantity: NDArray[np.int64]
    volume: NDArray[np.int64]
    oi: NDArray[np.int64]
    previous_oi: NDArray[np.int64]
    previous_close_price: NDArray[np.float64]
    previous_volume: NDArray[np.int64]
    average_price: NDArray[np.float64]
    implied_volatility: NDArray[np.float64]
    delta: NDArray[np.float64]
    theta: NDArray[np.float64]
    gamma: NDArray[np.float64]
    vega: NDArray[np.float64]

    @classmethod
    def empty(cls, n: int) -> Legs:
        """All legs missing: present False, counts 0, prices 0, broker analytics NaN."""
        values: dict[str, Any] = {}
        for name, dtype in LEG_FIELDS:
            if name in ("implied_volatility", "delta", "theta", "gamma", "vega"):
                values[name] = np.full(n, np.nan)
            else:
                values[name] = np.zeros(n, dtype=dtype)
        return cls(**values)

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Legs:
        """From a decoded Avro record (packed vectors) or plain lists."""
        return cls(**{name: unpack(rec[name], dtype) for name, dtype in LEG_FIELDS})

    def to_record(self) -> dict[str, bytes]:
        return {name: pack(getattr(self, name), dtype) for name, dtype in LEG_FIELDS}

    def __len__(self) -> int:
        return int(self.present.shape[0])

    def replace(self, **changes: Any) -> Legs:
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class ChainSnapshot:
    """One chain snapshot as the raw topic carries it."""

    underlying: str
    underlying_security_id: int
    segment: str
    expiry: date
    exchange_ts: datetime
    received_ts: datetime
    spot: float
    lot_size: int
    oi_unit: OiUnit
    source: str
    strikes: NDArray[np.float64]
    ce: Legs
    pe: Legs
    exchange: str = field(default="NSE")

    # ------------------------------------------------------------------ avro
    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> ChainSnapshot:
        """Build from a decoded Avro record (fastavro gives aware datetimes and dates)."""
        return cls(
            underlying=rec["underlying"],
            underlying_security_id=int(rec["underlying_security_id"]),
            segment=rec["segment"],
            exchange=rec.get("exchange", "NSE"),
            expiry=rec["expiry"],
            exchange_ts=rec["exchange_ts"],
            received_ts=rec["received_ts"],
            spot=float(rec["spot"]),
            lot_size=int(rec["lot_size"]),
            oi_unit=rec["oi_unit"],
            source=rec["source"],
            strikes=unpack(rec["strikes"], np.float64),
            ce=Legs.from_record(rec["ce"]),
            pe=Legs.from_record(rec["pe"]),
        )

    def to_record(self) -> dict[str, Any]:
        return {
            "underlying": self.underlying,
            "underlying_security_id": self.underlying_security_id,
            "segment": self.segment,
            "exchange": self.exchange,
            "expiry": self.expiry,
            "exchange_ts": self.exchange_ts,
            "received_ts": self.received_ts,
            "spot": self.spot,
            "lot_size": self.lot_size,
            "oi_unit": self.oi_unit,
            "source": self.source,
            "strikes": pack(self.strikes, np.float64),
            "ce": self.ce.to_record(),
            "pe": self.pe.to_record(),
        }

    @property
    def key(self) -> bytes:
        """Kafka key: the underlying, so every expiry of it shares a partition."""
        return self.underlying.encode()

    @property
    def n_contracts(self) -> int:
        return int(self.ce.present.sum() + self.pe.present.sum())

    # ------------------------------------------------------------ validation
    def problems(self) -> list[str]:
        """Reasons this snapshot is unusable (empty list = valid).

        A snapshot with any of these goes to the dead-letter topic whole: a
        partially corrupt chain would give wrong chain-level analytics (max
        pain, PCR, GEX), so it is never passed on as if it were good.
        Soft defects (zero spot, one-sided quotes, IV 0 on expiry day) are not
        problems; the analytics turn them into quality flags.
        """
        out: list[str] = []
        n = self.strikes.shape[0]
        if not self.underlying:
            out.append("empty underlying")
        if self.exchange_ts.tzinfo is None or self.received_ts.tzinfo is None:
            out.append("timestamps must be timezone-aware")
        if n == 0:
            out.append("chain has no strikes")
        if not math.isfinite(self.spot) or self.spot < 0:
            out.append(f"spot is {self.spot!r} (must be finite and >= 0)")
        if self.lot_size <= 0:
            out.append(f"lot_size is {self.lot_size} (must be > 0)")
        if self.oi_unit not in ("shares", "contracts"):
            out.append(f"oi_unit is {self.oi_unit!r} (must be 'shares' or 'contracts')")
        if n:
            if not np.all(np.isfinite(self.strikes)) or np.any(self.strikes <= 0):
                out.append("strikes must be finite and > 0")
            elif n > 1 and np.any(np.diff(self.strikes) <= 0):
                out.append("strikes must be strictly increasing (duplicate or unsorted strike)")
        for side, legs in (("ce", self.ce), ("pe", self.pe)):
            for name, _ in LEG_FIELDS:
                arr = getattr(legs, name)
                if arr.shape != (n,):
                    out.append(f"{side}.{name} has {arr.shape[0] if arr.ndim else 0} values for {n} strikes")
            if out and any(s.startswith(side + ".") for s in out):
                continue
            present = legs.present
            with np.errstate(invalid="ignore"):  # one pass over all price fields: NaN compares False
                prices = np.array([getattr(legs, name) for name in PRICE_FIELDS], dtype=np.float64)
                bad = ~((prices >= 0.0) & (prices < math.inf))
            bad &= present
            if bad.any():
                for name, row in zip(PRICE_FIELDS, bad, strict=True):
                    if row.any():
                        strikes = ", ".join(f"{self.strikes[i]:g}" for i in np.flatnonzero(row)[:3])
                        out.append(f"{side}.{name} is NaN/inf or negative at strike(s) {strikes}")
            counts = np.array([getattr(legs, name) for name in COUNT_FIELDS])
            negative = counts < 0
            negative &= present
            if negative.any():
                out.extend(f"{side}.{name} is negative"
                           for name, row in zip(COUNT_FIELDS, negative, strict=True) if row.any())
        return out
