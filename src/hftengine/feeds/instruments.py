"""Catalog of the simulated underlyings and the NSE calendar rules they follow.

Each :class:`Instrument` carries what a chain needs (Dhan security id and
segment of the underlying, lot size, strike step, expiry rule) and the
parameters the market simulator draws from (reference spot, ATM volatility,
skew, liquidity).  Spot levels are rough late-2026 levels; nothing here is
market data.

Calendar rules (NSE, since September 2025):

* NIFTY has weekly expiries every **Tuesday**; its monthly expiry is the
  last Tuesday of the month, i.e. one of the weeklies.
* Every other underlying here (BANKNIFTY, FINNIFTY, MIDCPNIFTY and the stock
  options) has monthly expiries only, on the **last Tuesday** of the month.
* Options expire at 15:30 IST; a series whose 15:30 IST has passed is gone.
* Exchange holidays are not modelled: every weekday is a trading day and an
  expiry never moves to the previous trading day.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from types import MappingProxyType
from typing import Literal

#: India Standard Time (UTC+05:30, no daylight saving).
IST = timezone(timedelta(hours=5, minutes=30), name="IST")
#: NSE equity-derivatives session (continuous trading), IST.
SESSION_OPEN = time(9, 15)
SESSION_CLOSE = time(15, 30)
#: Expiry time of NSE options, IST.
EXPIRY_TIME = SESSION_CLOSE
TUESDAY = 1

ExpiryRule = Literal["weekly", "monthly"]


@dataclass(frozen=True, slots=True)
class Instrument:
    """One optionable underlying.

    ``security_id``/``segment`` are the Dhan ids of the underlying (the ones
    Dhan's option-chain endpoint takes).  ``strike_step`` is the strike
    interval near the money in rupees, ``lot_size`` the contract size in
    shares.  ``atm_vol`` (annualised, decimal), ``skew_rho`` (SSVI
    correlation, negative = put skew), ``peak_oi_lots``, ``atm_daily_lots``
    and ``spread_ticks`` (ATM bid-ask spread in ticks) drive the simulator.
    """

    symbol: str
    security_id: int
    segment: str
    lot_size: int
    strike_step: int
    spot: float
    atm_vol: float
    skew_rho: float
    expiry_rule: ExpiryRule
    strikes_per_side: int
    peak_oi_lots: int
    atm_daily_lots: int
    spread_ticks: float
    exchange: str = "NSE"
    expiry_weekday: int = TUESDAY

    def expiries(self, now: datetime, count: int) -> list[date]:
        """The ``count`` nearest unexpired expiry dates at ``now`` (tz-aware), ascending."""
        if self.expiry_rule == "weekly":
            return weekly_expiries(now, count, self.expiry_weekday)
        return monthly_expiries(now, count, self.expiry_weekday)


def expiry_datetime(expiry: date) -> datetime:
    """The moment a series expires: ``expiry`` at 15:30 IST (tz-aware)."""
    return datetime.combine(expiry, EXPIRY_TIME, tzinfo=IST)


def is_expired(expiry: date, now: datetime) -> bool:
    """True once ``now`` (tz-aware) has reached the expiry time of ``expiry``."""
    return now >= expiry_datetime(expiry)


def last_weekday_of_month(year: int, month: int, weekday: int) -> date:
    """Last ``weekday`` (Monday = 0) of a month."""
    last = date(year, month, calendar.monthrange(year, month)[1])
    return last - timedelta(days=(last.weekday() - weekday) % 7)


def weekly_expiries(now: datetime, count: int, weekday: int = TUESDAY) -> list[date]:
    """The ``count`` nearest unexpired weekly expiries (every ``weekday``) at ``now``."""
    today = now.astimezone(IST).date()
    first = today + timedelta(days=(weekday - today.weekday()) % 7)
    if is_expired(first, now):
        first += timedelta(days=7)
    return [first + timedelta(days=7 * i) for i in range(count)]


def monthly_expiries(now: datetime, count: int, weekday: int = TUESDAY) -> list[date]:
    """The ``count`` nearest unexpired monthly expiries (last ``weekday`` of the month) at ``now``."""
    today = now.astimezone(IST).date()
    year, month = today.year, today.month
    out: list[date] = []
    while len(out) < count:
        candidate = last_weekday_of_month(year, month, weekday)
        if not is_expired(candidate, now):
            out.append(candidate)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def _index(symbol: str, security_id: int, lot: int, step: int, spot: float, vol: float,
           rule: ExpiryRule, per_side: int, peak_oi_lots: int, daily_lots: int) -> Instrument:
    return Instrument(symbol=symbol, security_id=security_id, segment="IDX_I", lot_size=lot,
                      strike_step=step, spot=spot, atm_vol=vol, skew_rho=-0.45, expiry_rule=rule,
                      strikes_per_side=per_side, peak_oi_lots=peak_oi_lots, atm_daily_lots=daily_lots,
                      spread_ticks=2.0)


def _stock(symbol: str, security_id: int, lot: int, step: int, spot: float, vol: float) -> Instrument:
    return Instrument(symbol=symbol, security_id=security_id, segment="NSE_EQ", lot_size=lot,
                      strike_step=step, spot=spot, atm_vol=vol, skew_rho=-0.25, expiry_rule="monthly",
                      strikes_per_side=30, peak_oi_lots=6_000, atm_daily_lots=12_000, spread_ticks=4.0)


#: Every simulated underlying by symbol, in display order.
INSTRUMENTS: Mapping[str, Instrument] = MappingProxyType({
    i.symbol: i
    for i in (
        _index("NIFTY", 13, 75, 50, 25_000.0, 0.12, "weekly", 90, 150_000, 400_000),
        _index("BANKNIFTY", 25, 35, 100, 56_000.0, 0.14, "monthly", 60, 60_000, 120_000),
        _index("FINNIFTY", 27, 65, 50, 26_500.0, 0.13, "monthly", 50, 20_000, 30_000),
        _index("MIDCPNIFTY", 442, 140, 25, 13_000.0, 0.17, "monthly", 50, 25_000, 40_000),
        _stock("RELIANCE", 2885, 500, 10, 1_500.0, 0.22),
        _stock("HDFCBANK", 1333, 550, 10, 1_000.0, 0.18),
        _stock("INFY", 1594, 400, 20, 1_550.0, 0.24),
        _stock("TCS", 11536, 175, 50, 3_100.0, 0.21),
        _stock("SBIN", 3045, 750, 5, 850.0, 0.25),
    )
})


def get_instrument(symbol: str) -> Instrument:
    """The catalog entry for ``symbol`` (case-insensitive); ``KeyError`` names the known ones."""
    try:
        return INSTRUMENTS[symbol.upper()]
    except KeyError:
        raise KeyError(f"unknown underlying {symbol!r}; known: {', '.join(INSTRUMENTS)}") from None
