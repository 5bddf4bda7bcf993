"""Parsers from source formats to ``ChainSnapshot`` (pure: no I/O, no clocks).

Three sources, documented in ``docs/feeds.md``:

* DhanHQ v2 ``/v2/optionchain`` response bodies (live or recorded as JSON
  lines), OI in **shares**;
* NSE option-chain JSON (``records.data[].CE/PE``; one document holds every
  expiry and becomes one snapshot per expiry), OI in **contracts**;
* the engine's CSV layout (one row per contract), OI unit given per row.

Broker defects are turned into data-quality handling (kept, repaired) or into
a ``FeedDefect`` (the caller dead-letters the response with its reason).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from types import MappingProxyType
from typing import Any, Final
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray

from hftengine.feeds.instruments import INSTRUMENTS
from hftengine.snapshot import LEG_FIELDS, ChainSnapshot, Legs, OiUnit

IST: Final = ZoneInfo("Asia/Kolkata")


# --------------------------------------------------------------------------- underlyings
@dataclass(frozen=True, slots=True)
class DhanUnderlying:
    """An underlying as DhanHQ addresses it, plus the lot size we need and Dhan does not send."""

    symbol: str
    security_id: int
    segment: str
    lot_size: int
    exchange: str = "NSE"

    def __post_init__(self) -> None:
        if not self.symbol:
            raise ValueError("symbol must not be empty")
        if self.lot_size <= 0:
            raise ValueError(f"lot_size of {self.symbol} must be > 0, got {self.lot_size}")


#: Every underlying of the engine's instrument catalog (``feeds/instruments.py``: Dhan ids and
#: lot sizes; NIFTY 13, BANKNIFTY 25 in IDX_I).  Lot sizes change when NSE revises them: pass
#: your own mapping then.
DEFAULT_UNDERLYINGS: Mapping[str, DhanUnderlying] = MappingProxyType(
    {
        sym: DhanUnderlying(sym, inst.security_id, inst.segment, inst.lot_size, inst.exchange)
        for sym, inst in INSTRUMENTS.items()
    }
)


def resolve_underlying(
    value: DhanUnderlying | str, table: Mapping[str, DhanUnderlying] = DEFAULT_UNDERLYINGS
) -> DhanUnderlying:
    """``DhanUnderlying`` as given, or looked up by symbol (case-insensitive)."""
    if isinstance(value, DhanUnderlying):
        return value
    found = table.get(value.upper())
    if found is None:
        raise KeyError(f"unknown underlying {value!r}; known: {', '.join(sorted(table))}")
    return found


def underlying_by_id(
    security_id: int, segment: str, table: Mapping[str, DhanUnderlying] = DEFAULT_UNDERLYINGS
) -> DhanUnderlying | None:
    for u in table.values():
        if u.security_id == security_id and u.segment == segment:
            return u
    return None


# --------------------------------------------------------------------------- defects
#: Defect kinds (Prometheus label values and ``ParsedChain.defects`` entries).
DEFECT_FAILURE_STATUS: Final = "failure_status"
DEFECT_MALFORMED: Final = "malformed_response"
DEFECT_EMPTY_CHAIN: Final = "empty_chain"
DEFECT_ZERO_SPOT: Final = "zero_spot"
DEFECT_ZERO_CHAIN: Final = "all_zero_chain"
DEFECT_NULL_LEG: Final = "null_leg"
DEFECT_EXPIRY_ITM_ZERO_GREEKS: Final = "expiry_day_itm_zero_greeks"
DEFECT_ZERO_GREEKS: Final = "zero_iv_greeks"


class FeedDefect(Exception):
    """A response that must be dead-lettered: ``error_type`` for the dead-letter record, ``reason`` text."""

    def __init__(self, kinds: Sequence[str], error_type: str, reason: str) -> None:
        super().__init__(reason)
        self.kinds = tuple(kinds)
        self.error_type = error_type
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ParsedChain:
    """A usable snapshot plus what was repaired on the way (soft defects)."""

    snapshot: ChainSnapshot
    defects: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def dhan_error_code(body: Any) -> str | None:
    """The error code of a Dhan failure body (``remarks.error_code`` or a numeric key of ``data``)."""
    if not isinstance(body, Mapping):
        return None
    remarks = body.get("remarks")
    if isinstance(remarks, Mapping):
        for key in ("error_code", "errorCode", "code"):
            if remarks.get(key) not in (None, ""):
                return str(remarks[key])
    data = body.get("data")
    if isinstance(data, Mapping):
        for key in data:
            if str(key).isdigit():
                return str(key)
    return None


def describe_dhan_failure(body: Any) -> str:
    """Short text of a Dhan failure body (code + message), never the request headers."""
    if not isinstance(body, Mapping):
        return f"unexpected body {str(body)[:200]!r}"
    code = dhan_error_code(body)
    remarks = body.get("remarks")
    message = ""
    if isinstance(remarks, Mapping):
        message = str(remarks.get("error_message") or remarks.get("error_type") or "")
    elif remarks:
        message = str(remarks)
    if not message and isinstance(body.get("data"), Mapping) and code is not None:
        message = str(body["data"].get(code, ""))
    text = f"error {code}" if code else "no error code"
    return f"{text}: {message}"[:300] if message else text


# --------------------------------------------------------------------------- numbers
_ANALYTIC_FIELDS = ("implied_volatility", "delta", "theta", "gamma", "vega")
_DTYPES: Final = dict(LEG_FIELDS)


def _float(value: Any, what: str) -> float:
    if value is None or value == "":
        return 0.0
    if isinstance(value, bool):
        raise ValueError(f"{what} is a boolean")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} is not a number: {value!r}") from None


def _int(value: Any, what: str) -> int:
    number = _float(value, what)
    if not math.isfinite(number):
        raise ValueError(f"{what} is not finite: {value!r}")
    return int(round(number))


def _new_leg_arrays(n: int) -> dict[str, NDArray[Any]]:
    out: dict[str, NDArray[Any]] = {}
    for name, dtype in LEG_FIELDS:
        out[name] = np.full(n, np.nan) if name in _ANALYTIC_FIELDS else np.zeros(n, dtype=dtype)
    return out


def _aware(ts: datetime, what: str) -> datetime:
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware")
    return ts.astimezone(UTC)


# --------------------------------------------------------------------------- Dhan
_DHAN_PRICE_KEYS = ("last_price", "top_bid_price", "top_ask_price", "previous_close_price", "average_price")
_DHAN_COUNT_KEYS = ("top_bid_quantity", "top_ask_quantity", "volume", "oi", "previous_oi", "previous_volume")
_GREEKS = ("delta", "theta", "gamma", "vega")


def _fill_dhan_leg(arrays: dict[str, NDArray[Any]], i: int, leg: Mapping[str, Any], where: str) -> None:
    arrays["present"][i] = True
    arrays["security_id"][i] = _int(leg.get("security_id"), f"{where}.security_id")
    for key in _DHAN_PRICE_KEYS:
        arrays[key][i] = _float(leg.get(key), f"{where}.{key}")
    for key in _DHAN_COUNT_KEYS:
        arrays[key][i] = _int(leg.get(key), f"{where}.{key}")
    iv = leg.get("implied_volatility")
    arrays["implied_volatility"][i] = math.nan if iv is None else _float(iv, f"{where}.implied_volatility")
    greeks = leg.get("greeks")
    if isinstance(greeks, Mapping):
        for key in _GREEKS:
            value = greeks.get(key)
            arrays[key][i] = math.nan if value is None else _float(value, f"{where}.greeks.{key}")
    elif greeks is not None:
        raise ValueError(f"{where}.greeks is not an object")


def _column(legs: Sequence[Mapping[str, Any]], key: str, missing: float) -> NDArray[np.float64]:
    return np.asarray([missing if (v := leg.get(key)) is None or v == "" else v for leg in legs], dtype=np.float64)


def _fill_dhan_side(
    arrays: dict[str, NDArray[Any]], idx: list[int], legs: list[Mapping[str, Any]], where: list[str]
) -> None:
    """Vectorised fill of one side; on any bad value re-parse leg by leg for a precise error message."""
    if not idx:
        return
    try:
        for key in _DHAN_PRICE_KEYS:
            arrays[key][idx] = _column(legs, key, 0.0)
        for key in ("security_id", *_DHAN_COUNT_KEYS):
            values = _column(legs, key, 0.0)
            if not np.isfinite(values).all():
                raise ValueError(key)
            arrays[key][idx] = np.rint(values).astype(np.int64)
        arrays["implied_volatility"][idx] = _column(legs, "implied_volatility", math.nan)
        greeks = [leg.get("greeks") for leg in legs]
        if any(g is not None and not isinstance(g, Mapping) for g in greeks):
            raise ValueError("greeks")
        for key in _GREEKS:
            arrays[key][idx] = np.asarray(
                [math.nan if g is None or g.get(key) is None else g[key] for g in greeks], dtype=np.float64
            )
    except (TypeError, ValueError, OverflowError):
        for i, leg, w in zip(idx, legs, where, strict=True):
            _fill_dhan_leg(arrays, i, leg, w)  # authoritative: raises with the leg and field at fault
        return
    arrays["present"][idx] = True


def parse_dhan_chain(
    body: Any, underlying: DhanUnderlying, expiry: date, received_ts: datetime, *, source: str = "dhan"
) -> ParsedChain:
    """Convert a DhanHQ ``/v2/optionchain`` response body to a snapshot.

    Dhan sends no timestamp, so ``exchange_ts`` is the receive time (UTC).
    Raises ``FeedDefect`` for failure statuses, malformed bodies, an empty
    chain, spot 0 (holiday) and an all-zero chain.  Keeps the snapshot but
    repairs: null legs (``present`` False) and legs with IV 0 and every Greek
    0 (broker IV/Greeks set to NaN so the engine re-solves them; the known
    case is expiry-day ITM legs).
    """
    received = _aware(received_ts, "received_ts")
    if not isinstance(body, Mapping):
        raise FeedDefect([DEFECT_MALFORMED], "malformed_response", "response body is not a JSON object")
    status = body.get("status")
    if status != "success":
        raise FeedDefect(
            [DEFECT_FAILURE_STATUS],
            "broker_failure",
            f"dhan status {status!r}: {describe_dhan_failure(body)}",
        )
    data = body.get("data")
    if not isinstance(data, Mapping):
        raise FeedDefect([DEFECT_MALFORMED], "malformed_response", "data is not an object")
    oc = data.get("oc")
    if not isinstance(oc, Mapping):
        raise FeedDefect([DEFECT_MALFORMED], "malformed_response", "data.oc is missing or not an object")
    try:
        spot = _float(data.get("last_price"), "data.last_price")
        keyed: list[tuple[float, str]] = []
        for key in oc:
            try:
                keyed.append((float(key), str(key)))
            except (TypeError, ValueError):
                raise ValueError(f"strike key {key!r} is not a number") from None
        keyed.sort()
        n = len(keyed)
        strikes = np.array([k for k, _ in keyed], dtype=np.float64)
        ce, pe = _new_leg_arrays(n), _new_leg_arrays(n)
        found: dict[str, tuple[list[int], list[Mapping[str, Any]], list[str]]] = {
            "ce": ([], [], []),
            "pe": ([], [], []),
        }
        for i, (_, key) in enumerate(keyed):
            pair = oc[key]
            if pair is None:
                continue
            if not isinstance(pair, Mapping):
                raise ValueError(f"oc[{key!r}] is not an object")
            for side in ("ce", "pe"):
                leg = pair.get(side)
                if isinstance(leg, Mapping) and leg:
                    idx, legs, where = found[side]
                    idx.append(i)
                    legs.append(leg)
                    where.append(f"oc[{key!r}].{side}")
                elif leg not in (None, {}):
                    raise ValueError(f"oc[{key!r}].{side} is not an object")
        for side, arrays in (("ce", ce), ("pe", pe)):
            _fill_dhan_side(arrays, *found[side])
    except ValueError as exc:
        raise FeedDefect([DEFECT_MALFORMED], "malformed_response", str(exc)) from None

    if n == 0:
        raise FeedDefect([DEFECT_EMPTY_CHAIN], "broker_defect", "empty chain: data.oc has no strikes")
    kinds: list[str] = []
    reasons: list[str] = []
    if spot == 0:
        kinds.append(DEFECT_ZERO_SPOT)
        reasons.append("spot 0 (holiday?)")
    if _all_zero(ce) and _all_zero(pe):
        kinds.append(DEFECT_ZERO_CHAIN)
        if not (ce["present"].any() or pe["present"].any()):
            reasons.append("all-zero chain: every leg is null")
        else:
            reasons.append("all-zero chain: every leg has zero price, quotes, OI and volume")
    if reasons:
        raise FeedDefect(kinds, "broker_defect", "; ".join(reasons))

    defects: list[str] = []
    notes: list[str] = []
    null_ce = int(n - ce["present"].sum())
    null_pe = int(n - pe["present"].sum())
    if null_ce or null_pe:
        defects.append(DEFECT_NULL_LEG)
        notes.append(f"null legs kept as absent: CE {null_ce}, PE {null_pe}")
    expiry_day = received.astimezone(IST).date() == expiry
    itm_fixed = other_fixed = 0
    for side, arrays in (("ce", ce), ("pe", pe)):
        zero = arrays["present"] & (arrays["implied_volatility"] == 0)
        for key in _GREEKS:
            zero &= arrays[key] == 0
        if not zero.any():
            continue
        itm = strikes < spot if side == "ce" else strikes > spot
        n_itm = int((zero & itm).sum()) if expiry_day else 0
        itm_fixed += n_itm
        other_fixed += int(zero.sum()) - n_itm
        for key in _ANALYTIC_FIELDS:
            arrays[key][zero] = np.nan
    if itm_fixed:
        defects.append(DEFECT_EXPIRY_ITM_ZERO_GREEKS)
        notes.append(f"expiry-day ITM legs with IV 0 and Greeks 0 set to NaN: {itm_fixed}")
    if other_fixed:
        defects.append(DEFECT_ZERO_GREEKS)
        notes.append(f"legs with IV 0 and Greeks 0 set to NaN: {other_fixed}")

    snapshot = ChainSnapshot(
        underlying=underlying.symbol,
        underlying_security_id=underlying.security_id,
        segment=underlying.segment,
        exchange=underlying.exchange,
        expiry=expiry,
        exchange_ts=received,
        received_ts=received,
        spot=spot,
        lot_size=underlying.lot_size,
        oi_unit="shares",
        source=source,
        strikes=strikes,
        ce=Legs(**ce),
        pe=Legs(**pe),
    )
    return ParsedChain(snapshot, tuple(defects), tuple(notes))


def _all_zero(arrays: Mapping[str, NDArray[Any]]) -> bool:
    present = arrays["present"]
    for key in (
        "last_price",
        "top_bid_price",
        "top_ask_price",
        "previous_close_price",
        "oi",
        "volume",
        "previous_oi",
    ):
        if np.any(arrays[key][present] != 0):
            return False
    return True


# --------------------------------------------------------------------------- Dhan recording lines
@dataclass(frozen=True, slots=True)
class DhanRecord:
    """One recorded Dhan response (one JSON line of a recording)."""

    received_ts: datetime
    security_id: int
    segment: str
    expiry: date
    body: Any
    symbol: str | None = None
    lot_size: int | None = None
    http_status: int | None = None

    def to_json(self) -> str:
        obj: dict[str, Any] = {
            "received_ts": self.received_ts.isoformat(),
            "security_id": self.security_id,
            "segment": self.segment,
            "expiry": self.expiry.isoformat(),
        }
        if self.symbol is not None:
            obj["symbol"] = self.symbol
        if self.lot_size is not None:
            obj["lot_size"] = self.lot_size
        if self.http_status is not None:
            obj["http_status"] = self.http_status
        obj["body"] = self.body
        return json.dumps(obj, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_obj(cls, obj: Any) -> DhanRecord:
        """Parse a decoded JSON line; raises ``ValueError`` with the reason when malformed."""
        if not isinstance(obj, Mapping):
            raise ValueError("line is not a JSON object")
        missing = [k for k in ("received_ts", "security_id", "segment", "expiry", "body") if k not in obj]
        if missing:
            raise ValueError(f"missing field(s): {', '.join(missing)}")
        try:
            received = datetime.fromisoformat(str(obj["received_ts"]))
        except ValueError:
            raise ValueError(f"received_ts is not ISO 8601: {obj['received_ts']!r}") from None
        received = _aware(received, "received_ts")
        try:
            expiry = date.fromisoformat(str(obj["expiry"]))
        except ValueError:
            raise ValueError(f"expiry is not YYYY-MM-DD: {obj['expiry']!r}") from None
        lot = obj.get("lot_size")
        status = obj.get("http_status")
        return cls(
            received_ts=received,
            security_id=_int(obj["security_id"], "security_id"),
            segment=str(obj["segment"]),
            expiry=expiry,
            body=obj["body"],
            symbol=str(obj["symbol"]) if obj.get("symbol") else None,
            lot_size=_int(lot, "lot_size") if lot is not None else None,
            http_status=_int(status, "http_status") if status is not None else None,
        )

    def underlying(self, table: Mapping[str, DhanUnderlying] = DEFAULT_UNDERLYINGS) -> DhanUnderlying:
        """The underlying of this record: its own symbol/lot size, completed from ``table``."""
        known = table.get(self.symbol.upper()) if self.symbol else None
        known = known or underlying_by_id(self.security_id, self.segment, table)
        symbol = self.symbol or (known.symbol if known else None)
        lot = self.lot_size or (known.lot_size if known else None)
        if symbol is None or lot is None:
            raise ValueError(
                f"unknown underlying {self.security_id}/{self.segment}: record has no symbol/lot_size "
                "and the underlyings mapping has no entry"
            )
        exchange = known.exchange if known else "NSE"
        return DhanUnderlying(symbol, self.security_id, self.segment, lot, exchange)


# --------------------------------------------------------------------------- NSE
_MONTHS: Final = {
    m: i
    for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)
}


def parse_nse_date(text: str) -> date:
    """``27-Nov-2026`` -> date (locale-independent)."""
    try:
        day, mon, year = str(text).strip().split("-")
        return date(int(year), _MONTHS[mon[:3].lower()], int(day))
    except (ValueError, KeyError):
        raise ValueError(f"not an NSE date like 27-Nov-2026: {text!r}") from None


def parse_nse_timestamp(text: str) -> datetime:
    """``21-Nov-2026 15:30:00`` (IST) -> aware UTC datetime."""
    try:
        day_part, time_part = str(text).strip().split()
        d = parse_nse_date(day_part)
        hh, mm, ss = (int(x) for x in time_part.split(":"))
        local = datetime(d.year, d.month, d.day, hh, mm, ss, tzinfo=IST)
    except ValueError:
        raise ValueError(f"not an NSE timestamp like 21-Nov-2026 15:30:00: {text!r}") from None
    return local.astimezone(UTC)


@dataclass(slots=True)
class NseParse:
    """Result of one NSE document: one snapshot per expiry plus per-record errors."""

    snapshots: list[ChainSnapshot] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _fill_nse_leg(arrays: dict[str, NDArray[Any]], i: int, leg: Mapping[str, Any], where: str) -> None:
    arrays["present"][i] = True
    last = _float(leg.get("lastPrice"), f"{where}.lastPrice")
    arrays["last_price"][i] = last
    arrays["top_bid_price"][i] = _float(leg.get("bidprice"), f"{where}.bidprice")
    arrays["top_bid_quantity"][i] = _int(leg.get("bidQty"), f"{where}.bidQty")
    arrays["top_ask_price"][i] = _float(leg.get("askPrice"), f"{where}.askPrice")
    arrays["top_ask_quantity"][i] = _int(leg.get("askQty"), f"{where}.askQty")
    arrays["volume"][i] = _int(leg.get("totalTradedVolume"), f"{where}.totalTradedVolume")
    oi = _int(leg.get("openInterest"), f"{where}.openInterest")
    arrays["oi"][i] = oi
    arrays["previous_oi"][i] = max(0, oi - _int(leg.get("changeinOpenInterest"), f"{where}.changeinOpenInterest"))
    change = leg.get("change")
    if change not in (None, "") and last > 0:
        arrays["previous_close_price"][i] = max(0.0, last - _float(change, f"{where}.change"))
    iv = _float(leg.get("impliedVolatility"), f"{where}.impliedVolatility")
    arrays["implied_volatility"][i] = iv if iv > 0 else math.nan


def parse_nse_chain(
    doc: Any,
    *,
    underlyings: Mapping[str, DhanUnderlying] = DEFAULT_UNDERLYINGS,
    symbol: str | None = None,
    source: str = "replay-nse",
) -> NseParse:
    """Split an NSE option-chain document into one snapshot per expiry.

    ``records.timestamp`` (IST) stamps every snapshot, ``records.underlyingValue``
    is spot, OI/volume stay in contracts, ``previous_oi = openInterest -
    changeinOpenInterest``, ``previous_close_price = lastPrice - change``,
    IV 0 (NSE's "not computed") becomes NaN.  NSE sends no lot size and no
    security ids: the lot size comes from ``underlyings`` (by symbol), contract
    security ids are 0.  A bad entry of ``records.data`` is skipped and
    reported in ``errors``; a document without usable ``records`` raises
    ``ValueError``.
    """
    out = NseParse()
    if not isinstance(doc, Mapping) or not isinstance(doc.get("records"), Mapping):
        raise ValueError("not an NSE option-chain document (no 'records' object)")
    records = doc["records"]
    if "timestamp" not in records:
        raise ValueError("records.timestamp is missing")
    ts = parse_nse_timestamp(records["timestamp"])
    spot = _float(records.get("underlyingValue"), "records.underlyingValue")
    data = records.get("data")
    if not isinstance(data, list):
        raise ValueError("records.data is missing or not a list")

    # (expiry -> strike -> (CE leg, PE leg))
    by_expiry: dict[date, dict[float, tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]]] = {}
    for idx, entry in enumerate(data):
        where = f"records.data[{idx}]"
        try:
            if not isinstance(entry, Mapping):
                raise ValueError(f"{where} is not an object")
            strike = _float(entry.get("strikePrice"), f"{where}.strikePrice")
            if not math.isfinite(strike) or strike <= 0:
                raise ValueError(f"{where}.strikePrice is not a positive number: {entry.get('strikePrice')!r}")
            if "expiryDate" not in entry:
                raise ValueError(f"{where}.expiryDate is missing")
            expiry = parse_nse_date(entry["expiryDate"])
            legs: list[Mapping[str, Any] | None] = []
            for side in ("CE", "PE"):
                leg = entry.get(side)
                if leg is not None and not isinstance(leg, Mapping):
                    raise ValueError(f"{where}.{side} is not an object")
                legs.append(leg or None)
                if leg and symbol is None and leg.get("underlying"):
                    symbol = str(leg["underlying"])
            strikes = by_expiry.setdefault(expiry, {})
            if strike in strikes:
                raise ValueError(f"{where}: duplicate strike {strike:g} for expiry {expiry}")
            strikes[strike] = (legs[0], legs[1])
        except ValueError as exc:
            out.errors.append(f"{where}: {exc}" if not str(exc).startswith(where) else str(exc))
    if symbol is None:
        raise ValueError("cannot tell the underlying symbol (no CE/PE 'underlying' field; pass symbol=)")
    meta = underlyings.get(symbol.upper())
    if meta is None:
        raise ValueError(f"no lot size for {symbol!r}: NSE data has none; add it to the underlyings mapping")

    for expiry in sorted(by_expiry):
        rows = by_expiry[expiry]
        strikes_sorted = sorted(rows)
        n = len(strikes_sorted)
        ce, pe = _new_leg_arrays(n), _new_leg_arrays(n)
        keep = np.ones(n, dtype=bool)
        for i, k in enumerate(strikes_sorted):
            leg_ce, leg_pe = rows[k]
            try:
                if leg_ce:
                    _fill_nse_leg(ce, i, leg_ce, f"{expiry} {k:g} CE")
                if leg_pe:
                    _fill_nse_leg(pe, i, leg_pe, f"{expiry} {k:g} PE")
            except ValueError as exc:
                out.errors.append(str(exc))
                keep[i] = False
        if not keep.all():
            ce = {name: arr[keep] for name, arr in ce.items()}
            pe = {name: arr[keep] for name, arr in pe.items()}
        out.snapshots.append(
            ChainSnapshot(
                underlying=meta.symbol,
                underlying_security_id=meta.security_id,
                segment=meta.segment,
                exchange=meta.exchange,
                expiry=expiry,
                exchange_ts=ts,
                received_ts=ts,
                spot=spot,
                lot_size=meta.lot_size,
                oi_unit="contracts",
                source=source,
                strikes=np.asarray(strikes_sorted, dtype=np.float64)[keep],
                ce=Legs(**ce),
                pe=Legs(**pe),
            )
        )
    return out


# --------------------------------------------------------------------------- CSV
#: Column -> meaning.  Required columns must be in the header; optional ones default as documented.
CSV_REQUIRED: Final = (
    "ts",
    "underlying",
    "expiry",
    "strike",
    "option_type",
    "last_price",
    "lot_size",
    "oi_unit",
    "spot",
)
CSV_OPTIONAL: Final = (
    "underlying_security_id",
    "segment",
    "exchange",
    "security_id",
    "bid",
    "bid_qty",
    "ask",
    "ask_qty",
    "volume",
    "oi",
    "prev_oi",
    "prev_close",
    "prev_volume",
    "avg_price",
    "iv",
    "delta",
    "theta",
    "gamma",
    "vega",
)
CSV_COLUMNS: Final = CSV_REQUIRED + CSV_OPTIONAL

_CSV_FLOAT = {
    "last_price": "last_price",
    "bid": "top_bid_price",
    "ask": "top_ask_price",
    "prev_close": "previous_close_price",
    "avg_price": "average_price",
}
_CSV_INT = {
    "security_id": "security_id",
    "bid_qty": "top_bid_quantity",
    "ask_qty": "top_ask_quantity",
    "volume": "volume",
    "oi": "oi",
    "prev_oi": "previous_oi",
    "prev_volume": "previous_volume",
}
_CSV_NAN = {"iv": "implied_volatility", "delta": "delta", "theta": "theta", "gamma": "gamma", "vega": "vega"}


@dataclass(frozen=True, slots=True)
class CsvContract:
    """One parsed CSV row."""

    ts: datetime
    underlying: str
    underlying_security_id: int
    segment: str
    exchange: str
    expiry: date
    strike: float
    option_type: str
    lot_size: int
    oi_unit: OiUnit
    spot: float
    values: Mapping[str, float | int]

    @property
    def group(self) -> tuple[datetime, str, date]:
        return (self.ts, self.underlying, self.expiry)


def check_csv_header(header: Sequence[str] | None) -> None:
    """Raise ``ValueError`` if required columns are missing."""
    if not header:
        raise ValueError("empty file (no CSV header)")
    missing = [c for c in CSV_REQUIRED if c not in header]
    if missing:
        raise ValueError(f"CSV header lacks required column(s): {', '.join(missing)}")


@functools.lru_cache(maxsize=1024)
def _csv_ts(text: str) -> datetime:
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"ts is not ISO 8601: {text!r}") from None
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"ts has no UTC offset: {text!r}")
    return ts.astimezone(UTC)


@functools.lru_cache(maxsize=1024)
def _csv_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"expiry is not YYYY-MM-DD: {text!r}") from None


def parse_csv_row(row: Mapping[str, str | None]) -> CsvContract:
    """Parse one CSV row (a ``csv.DictReader`` dict); raises ``ValueError`` with the reason."""
    if None in row:  # DictReader puts surplus fields under the key None
        raise ValueError("more fields than header columns")
    cells = {k: (v or "").strip() for k, v in row.items()}
    for col in CSV_REQUIRED:
        if not cells.get(col):
            raise ValueError(f"{col} is empty")
    ts = _csv_ts(cells["ts"])
    expiry = _csv_date(cells["expiry"])
    option_type = cells["option_type"].upper()
    if option_type not in ("CE", "PE"):
        raise ValueError(f"option_type must be CE or PE, got {cells['option_type']!r}")
    oi_unit = cells["oi_unit"].lower()
    if oi_unit not in ("shares", "contracts"):
        raise ValueError(f"oi_unit must be shares or contracts, got {cells['oi_unit']!r}")
    strike = _float(cells["strike"], "strike")
    if not math.isfinite(strike) or strike <= 0:
        raise ValueError(f"strike must be > 0, got {cells['strike']!r}")
    try:  # fast path; the checked conversions below name the bad column
        values: dict[str, float | int] = {
            name: float(x) if (x := cells.get(col)) else 0.0 for col, name in _CSV_FLOAT.items()
        }
        values.update({name: int(round(float(x))) if (x := cells.get(col)) else 0 for col, name in _CSV_INT.items()})
        values.update({name: float(x) if (x := cells.get(col)) else math.nan for col, name in _CSV_NAN.items()})
    except (TypeError, ValueError, OverflowError):
        values = {name: _float(cells.get(col), col) for col, name in _CSV_FLOAT.items()}
        values.update({name: _int(cells.get(col), col) for col, name in _CSV_INT.items()})
        values.update({name: _float(cells[col], col) if cells.get(col) else math.nan for col, name in _CSV_NAN.items()})
    return CsvContract(
        ts=ts,
        underlying=cells["underlying"],
        underlying_security_id=_int(cells.get("underlying_security_id"), "underlying_security_id"),
        segment=cells.get("segment") or "",
        exchange=cells.get("exchange") or "NSE",
        expiry=expiry,
        strike=strike,
        option_type=option_type,
        lot_size=_int(cells["lot_size"], "lot_size"),
        oi_unit="shares" if oi_unit == "shares" else "contracts",
        spot=_float(cells["spot"], "spot"),
        values=values,
    )


def assemble_csv_snapshot(rows: Sequence[CsvContract], *, source: str = "replay-csv") -> ChainSnapshot:
    """Build one snapshot from the rows of one (ts, underlying, expiry) group.

    Snapshot-level fields (spot, lot size, OI unit, ids) come from the first
    row.  Strikes are sorted; a strike with only one side has the other leg
    absent.
    """
    if not rows:
        raise ValueError("no rows")
    first = rows[0]
    strikes = sorted({r.strike for r in rows})
    index = {k: i for i, k in enumerate(strikes)}
    n = len(strikes)
    ce, pe = _new_leg_arrays(n), _new_leg_arrays(n)
    for r in rows:
        arrays = ce if r.option_type == "CE" else pe
        i = index[r.strike]
        arrays["present"][i] = True
        for name, value in r.values.items():
            arrays[name][i] = value
    return ChainSnapshot(
        underlying=first.underlying,
        underlying_security_id=first.underlying_security_id,
        segment=first.segment,
        exchange=first.exchange,
        expiry=first.expiry,
        exchange_ts=first.ts,
        received_ts=first.ts,
        spot=first.spot,
        lot_size=first.lot_size,
        oi_unit=first.oi_unit,
        source=source,
        strikes=np.asarray(strikes, dtype=np.float64),
        ce=Legs(**ce),
        pe=Legs(**pe),
    )


def _cell(value: float | int) -> str:
    if isinstance(value, float) and math.isnan(value):
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def snapshot_to_csv_rows(snapshot: ChainSnapshot) -> Iterable[dict[str, str]]:
    """The CSV rows of a snapshot (inverse of ``assemble_csv_snapshot``; absent legs have no row)."""
    common = {
        "ts": snapshot.exchange_ts.isoformat(),
        "underlying": snapshot.underlying,
        "underlying_security_id": str(snapshot.underlying_security_id),
        "segment": snapshot.segment,
        "exchange": snapshot.exchange,
        "expiry": snapshot.expiry.isoformat(),
        "lot_size": str(snapshot.lot_size),
        "oi_unit": snapshot.oi_unit,
        "spot": repr(float(snapshot.spot)),
    }
    columns = {**_CSV_FLOAT, **_CSV_INT, **_CSV_NAN}
    for i, strike in enumerate(snapshot.strikes.tolist()):
        for option_type, legs in (("CE", snapshot.ce), ("PE", snapshot.pe)):
            if not legs.present[i]:
                continue
            row = dict(common, strike=repr(float(strike)), option_type=option_type)
            for col, name in columns.items():
                row[col] = _cell(getattr(legs, name)[i].item())
            yield row
