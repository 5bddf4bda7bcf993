"""A seeded, deterministic options-market simulator producing ``ChainSnapshot`` s.

The simulator plays an NSE-like market for the underlyings of
:mod:`hftengine.feeds.instruments`, one snapshot per (underlying, expiry) per
clock tick, vectorised with numpy over each chain.

Model (all randomness from one ``numpy.random.Generator`` seeded by ``seed``):

* **Clock.**  An IST market clock: session 09:15-15:30 IST on weekdays
  (holidays not modelled).  It starts at ``start`` (default: today's 09:15
  IST if today is a weekday, else the next weekday's) and advances by
  ``interval`` per :meth:`MarketSimulator.step`.  A tick that would reach
  15:30 IST becomes the next weekday's 09:15 IST instead (session rollover):
  OI is carried and copied to ``previous_oi``, today's volume becomes
  ``previous_volume`` and is reset, the last price becomes
  ``previous_close_price``, expired series are dropped, new ones listed and
  the strike grid is re-centred.  ``exchange_ts`` is that tick in UTC;
  ``received_ts`` adds a few milliseconds of simulated feed latency.
* **Spot.**  Geometric Brownian motion in trading time (252 days of 6.25 h)
  with a stochastic volatility level (mean-reverting log factor, correlated
  -0.6 with returns), plus an overnight gap at each rollover.
* **Volatility surface.**  SSVI (Gatheral & Jacquier): total variance
  ``w(k) = θ/2 · (1 + ρφk + sqrt((φk + ρ)² + 1 - ρ²))`` with ``k = ln(K/F)``,
  ``θ = σ_atm(T)² T``, ``φ = η / sqrt(θ(1 + θ))``, ``η = 1``; ``ρ < 0`` gives
  the negative skew, ``σ_atm(T)`` a mild upward term structure.  A small
  fixed per-strike perturbation keeps the smile from being perfectly smooth.
  Calls and puts of one strike share one IV.
* **Prices.**  Black-Scholes-Merton on spot with ``r`` = 6.5 %, no dividend
  yield, time to expiry ACT/365 to 15:30 IST of the expiry date.  Bid and ask
  are the theoretical price ∓ half a spread, rounded outwards to the 0.05
  tick, so the theoretical price always lies inside [bid, ask]; spreads widen
  with |moneyness| and price.  A bid of 0 means no bid (deep wings).
* **Flow.**  Per tick, traded lots per leg are Poisson with a rate peaking
  near the money and at round strikes; a binomial share of them opens or
  closes positions (tilted by the day's market move), so OI builds slowly
  where trading happens.  Volume is cumulative through the session and
  ``average_price`` is the session VWAP.  OI, volume and quantities are in
  shares (``oi_unit="shares"``, Dhan's convention), always multiples of the
  lot size.  Occasionally (about three per chain per session) a random block
  trade jumps volume and OI at one near-the-money strike.
* **Broker analytics.**  ``implied_volatility`` in percent, ``delta``,
  ``gamma``, ``theta`` per calendar day and ``vega`` per 1 vol point, from
  the same BSM model, as Dhan reports them.
* **Security ids.**  Deterministic and unique per contract:
  ``((underlying_id · 100000 + days since 2020-01-01 of expiry) · 10⁷ +
  strike in paise) · 2 + (0 call | 1 put)``.  They are not Dhan's real ids.

Scripted :class:`Scenario` s inject OI build-ups, call/put-wall shifts, IV
spikes and block trades at chosen steps.  Injections draw no random numbers,
so a run with scenarios differs from the same-seed run without them exactly
by the injected changes (and their consequences on prices).

Snapshot arrays are read-only views of the simulator's state (which is
replaced, never mutated, at each tick): copy an array before changing it.
"""

from __future__ import annotations

import math
import threading
import time as wallclock
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np
from numpy.typing import NDArray
from scipy.special import ndtr

from hftengine.feeds.instruments import (
    INSTRUMENTS,
    IST,
    SESSION_CLOSE,
    SESSION_OPEN,
    Instrument,
    expiry_datetime,
    get_instrument,
)
from hftengine.snapshot import ChainSnapshot, Legs

if TYPE_CHECKING:
    from hftengine.feeds.publisher import Publisher

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

SOURCE = "simulator"
#: Risk-free rate (continuous, annual) and dividend yield used for pricing.
RATE = 0.065
DIVIDEND_YIELD = 0.0
#: Price tick 0.05 rupees, kept as an integer count per rupee for exact rounding.
TICKS_PER_RUPEE = 20
TICK = 1.0 / TICKS_PER_RUPEE
YEAR_SECONDS = 365.0 * 86_400.0
SESSION_SECONDS = 6.25 * 3_600.0
TRADING_YEAR_SECONDS = 252.0 * SESSION_SECONDS
#: Floor on time to expiry (one minute) so that expiry-day prices stay finite.
MIN_EXPIRY_SECONDS = 60.0
#: Random block trades per chain per full session (Poisson rate).
BLOCK_TRADES_PER_SESSION = 3.0
_SQRT_2PI = math.sqrt(2.0 * math.pi)
_ID_EPOCH = date(2020, 1, 1)

Side = Literal["ce", "pe"]
ScenarioKind = Literal["oi_buildup", "wall_shift", "iv_spike", "block_trade"]
_SIDE_ROW = {"ce": 0, "pe": 1}


# --------------------------------------------------------------------------- pricing
class _Bsm(NamedTuple):
    price: F64  # (2, n): calls, puts
    delta: F64  # (2, n)
    theta: F64  # (2, n) per calendar day
    gamma: F64  # (n,)
    vega: F64  # (n,) per 1 vol point


def _bsm(spot: float, strikes: F64, t: float, vol: F64, rate: float, dividend_yield: float) -> _Bsm:
    """Black-Scholes-Merton prices and Greeks of calls and puts on a strike vector.

    ``t`` in years (> 0), ``vol`` annualised decimal per strike.  Theta is per
    calendar day (annual / 365), vega per 1 vol point (per unit / 100).
    """
    sqrt_t = math.sqrt(t)
    sd = vol * sqrt_t
    d1 = (np.log(spot / strikes) + (rate - dividend_yield) * t) / sd + 0.5 * sd
    n = strikes.shape[0]
    d = np.empty((4, n))
    d[0] = d1
    np.subtract(d1, sd, out=d[1])
    np.negative(d[0], out=d[2])
    np.negative(d[1], out=d[3])
    cdf = ndtr(d)
    disc_q = math.exp(-dividend_yield * t)
    disc_r = math.exp(-rate * t)
    s_q = spot * disc_q
    k_r = strikes * disc_r
    price = np.empty((2, n))
    price[0] = s_q * cdf[0] - k_r * cdf[1]
    price[1] = k_r * cdf[3] - s_q * cdf[2]
    np.maximum(price, 0.0, out=price)
    pdf = np.exp(-0.5 * d1 * d1) / _SQRT_2PI
    delta = np.empty((2, n))
    delta[0] = disc_q * cdf[0]
    delta[1] = -disc_q * cdf[2]
    decay = -s_q * pdf * vol / (2.0 * sqrt_t)
    theta = np.empty((2, n))
    theta[0] = (decay - rate * k_r * cdf[1] + dividend_yield * s_q * cdf[0]) / 365.0
    theta[1] = (decay + rate * k_r * cdf[3] - dividend_yield * s_q * cdf[2]) / 365.0
    gamma = disc_q * pdf / (spot * sd)
    vega = s_q * pdf * sqrt_t / 100.0
    return _Bsm(price, delta, theta, gamma, vega)


def _atm_vol(inst: Instrument, t: float, level: float) -> float:
    """ATM volatility with a mild upward term structure, scaled by the stochastic level."""
    return inst.atm_vol * level * (1.0 + 0.08 * (1.0 - math.exp(-t / 0.1)))


def _ssvi_vol(inst: Instrument, atm: float, t: float, log_moneyness: F64) -> F64:
    """SSVI implied volatility at log-moneyness ``ln(K/F)`` (η = 1, square-root φ)."""
    theta = atm * atm * t
    phi = 1.0 / math.sqrt(theta * (1.0 + theta))
    rho = inst.skew_rho
    pk = phi * log_moneyness
    w = 0.5 * theta * (1.0 + rho * pk + np.sqrt((pk + rho) ** 2 + (1.0 - rho * rho)))
    out: F64 = np.sqrt(w / t)
    return out


def _moneyness_scale(inst: Instrument, t: float) -> float:
    """One standard deviation of log-moneyness used for liquidity profiles (T floored at 3 days)."""
    return inst.atm_vol * math.sqrt(max(t, 3.0 / 365.0))


def _round_tick(price: F64) -> F64:
    out: F64 = np.rint(price * TICKS_PER_RUPEE) / TICKS_PER_RUPEE
    return out


def _frozen(*arrays: NDArray[Any]) -> None:
    for a in arrays:
        a.flags.writeable = False


# --------------------------------------------------------------------------- scenarios
@dataclass(frozen=True, slots=True)
class Scenario:
    """One scripted market event; build them with :func:`oi_buildup`, :func:`wall_shift`,
    :func:`iv_spike` and :func:`block_trade`.

    ``at_step`` is the 0-based index of the :meth:`MarketSimulator.step` call
    at which the event starts.  Strikes are given as ``strike_offset``
    strike steps from the at-the-money strike (spot rounded to the strike
    step) at ``at_step``; ``expiry_index`` picks the chain among the
    underlying's current expiries (0 = nearest).  ``lots=None`` picks a size
    proportional to the underlying's typical OI.  ``oi_fraction`` is the share
    of a block trade that opens positions, or for a wall shift the share of
    the old wall's OI that is closed; ``vol_points``, ``half_life_steps`` and
    ``spot_move`` belong to IV spikes, ``target_offset`` to wall shifts.
    """

    kind: ScenarioKind
    underlying: str
    at_step: int
    side: Side = "ce"
    strike_offset: int = 0
    target_offset: int = 0
    lots: int | None = None
    steps: int = 1
    expiry_index: int = 0
    oi_fraction: float = 1.0
    vol_points: float = 0.0
    half_life_steps: float = 120.0
    spot_move: float = 0.0


def oi_buildup(underlying: str, at_step: int, strike_offset: int, *, side: Side = "pe",
               lots: int | None = None, steps: int = 60, expiry_index: int = 0) -> Scenario:
    """OI build-up: ``lots`` new contracts opened at one strike, spread evenly over ``steps`` ticks.

    Every opened lot is also traded, so volume rises by the same amount.
    Default size: half the underlying's peak OI (in lots).
    """
    return Scenario("oi_buildup", underlying.upper(), at_step, side=side, strike_offset=strike_offset,
                    lots=lots, steps=max(1, steps), expiry_index=expiry_index)


def wall_shift(underlying: str, at_step: int, target_offset: int, *, side: Side = "ce",
               fraction: float = 0.7, steps: int = 60, expiry_index: int = 0) -> Scenario:
    """Move the call (``side="ce"``) or put wall to the strike ``target_offset`` steps from ATM.

    At ``at_step`` the wall is the strike with the largest OI on ``side``.
    Over ``steps`` ticks it loses ``fraction`` of its OI (positions closed)
    while the target strike gains enough OI to hold 1.3x the old wall's OI
    (positions opened); both trades add to volume.  Afterwards the target is
    the side's largest-OI strike.
    """
    return Scenario("wall_shift", underlying.upper(), at_step, side=side, target_offset=target_offset,
                    steps=max(1, steps), expiry_index=expiry_index, oi_fraction=fraction)


def iv_spike(underlying: str, at_step: int, vol_points: float = 5.0, *, half_life_steps: float = 120.0,
             spot_move: float = 0.0) -> Scenario:
    """Implied-volatility shock on every expiry of ``underlying``.

    At ``at_step`` all IVs jump by ``vol_points`` percentage points on the
    nearest expiry (``sqrt(T_near/T)`` of that on later ones) and the shock
    decays exponentially with ``half_life_steps``.  ``spot_move`` (relative,
    e.g. -0.01) moves the spot at the same tick, as a news shock would.
    """
    return Scenario("iv_spike", underlying.upper(), at_step, vol_points=vol_points,
                    half_life_steps=max(half_life_steps, 1e-9), spot_move=spot_move)


def block_trade(underlying: str, at_step: int, strike_offset: int, *, side: Side = "ce",
                lots: int | None = None, oi_fraction: float = 1.0, expiry_index: int = 0) -> Scenario:
    """A single large print: at exactly ``at_step``, volume at one strike jumps by ``lots``
    lots and OI by ``round(oi_fraction * lots)`` lots.

    Default size: 5 % of the underlying's peak OI (in lots).
    """
    return Scenario("block_trade", underlying.upper(), at_step, side=side, strike_offset=strike_offset,
                    lots=lots, steps=1, expiry_index=expiry_index, oi_fraction=oi_fraction)


def demo_scenarios(underlyings: Sequence[str]) -> list[Scenario]:
    """A scripted set for demos: per underlying (staggered by 7 steps) a put OI build-up
    (steps 20-80), a call block trade (step 60), an IV spike with a small sell-off
    (step 120) and a call-wall shift (steps 180-240): all within about four
    minutes at the default 1-second interval."""
    out: list[Scenario] = []
    for i, name in enumerate(underlyings):
        lag = 7 * i
        out += [
            oi_buildup(name, 20 + lag, -4, side="pe", steps=60),
            block_trade(name, 60 + lag, 3, side="ce"),
            iv_spike(name, 120 + lag, 4.0, half_life_steps=90, spot_move=-0.004),
            wall_shift(name, 180 + lag, 6, side="ce", steps=60),
        ]
    return out


@dataclass(slots=True)
class _Injection:
    """A resolved scenario effect on one leg: totals spread over ``steps`` ticks from ``start``."""

    underlying: str
    expiry: date
    row: int
    strike: float
    volume_lots: int
    oi_lots: int
    start: int
    steps: int

    def part(self, step: int) -> tuple[int, int]:
        j = step - self.start

        def share(total: int) -> int:
            a = abs(total)
            p = a * (j + 1) // self.steps - a * j // self.steps
            return p if total >= 0 else -p

        return share(self.volume_lots), share(self.oi_lots)


# --------------------------------------------------------------------------- state
@dataclass(slots=True)
class _Chain:
    """Session state of one (underlying, expiry) chain; arrays are (2, n) = (calls, puts)."""

    expiry: date
    expiry_dt: datetime
    strikes: F64
    security_id: I64
    present: NDArray[np.bool_]
    iv_noise: F64
    vol_rate: F64  # expected traded lots per second
    qty_high: I64  # 1 + max lots at the top of book
    oi_lots: I64
    volume_lots: I64
    traded_value: F64  # Σ lots · price
    last_price: F64
    previous_oi: I64  # shares
    previous_volume: I64  # shares
    previous_close: F64


@dataclass(slots=True)
class _Underlying:
    inst: Instrument
    spot: float
    open_spot: float
    log_vol_level: float = 0.0
    spikes: list[tuple[int, float, float]] = field(default_factory=list)  # (start, points, half-life)
    chains: dict[date, _Chain] = field(default_factory=dict)


def _next_session_open(day: date) -> datetime:
    """09:15 IST of the first weekday after ``day``."""
    d = day + timedelta(days=1)
    while d.weekday() >= 5:
        d += timedelta(days=1)
    return datetime.combine(d, SESSION_OPEN, tzinfo=IST)


def session_start(at: datetime) -> datetime:
    """``at`` itself if inside a session, else the next session open (IST, tz-aware)."""
    if at.tzinfo is None:
        raise ValueError("the simulator clock needs a timezone-aware datetime")
    ist = at.astimezone(IST)
    if ist.weekday() < 5:
        if ist.time() < SESSION_OPEN:
            return datetime.combine(ist.date(), SESSION_OPEN, tzinfo=IST)
        if ist.time() < SESSION_CLOSE:
            return ist
    return _next_session_open(ist.date())


def default_start(now: datetime | None = None) -> datetime:
    """09:15 IST of today if today (IST) is a weekday, else of the next weekday."""
    today = (now or datetime.now(UTC)).astimezone(IST).date()
    if today.weekday() < 5:
        return datetime.combine(today, SESSION_OPEN, tzinfo=IST)
    return _next_session_open(today)


# --------------------------------------------------------------------------- simulator
class MarketSimulator:
    """Seeded market simulator: :meth:`step` returns one snapshot per (underlying, expiry).

    ``underlyings`` defaults to every instrument of the catalog;
    ``strikes_per_side`` to each instrument's own (NIFTY 90, stocks 30);
    ``expiries_per_underlying`` nearest unexpired series are listed.  The
    same seed and arguments give identical snapshots.
    """

    def __init__(self, seed: int = 7, underlyings: Sequence[str] | None = None, *,
                 start: datetime | None = None, interval: timedelta = timedelta(seconds=1),
                 strikes_per_side: int | None = None, expiries_per_underlying: int = 2,
                 scenarios: Sequence[Scenario] = ()) -> None:
        if interval <= timedelta(0):
            raise ValueError("interval must be positive")
        if expiries_per_underlying < 1:
            raise ValueError("expiries_per_underlying must be >= 1")
        if strikes_per_side is not None and strikes_per_side < 1:
            raise ValueError("strikes_per_side must be >= 1")
        names = list(underlyings) if underlyings is not None else None
        insts = [get_instrument(n) for n in names] if names is not None else list(INSTRUMENTS.values())
        if len({i.symbol for i in insts}) != len(insts):
            raise ValueError("duplicate underlying")
        for s in scenarios:
            if s.underlying not in {i.symbol for i in insts}:
                raise ValueError(f"scenario for {s.underlying!r}, which is not simulated")
            if not 0 <= s.expiry_index < expiries_per_underlying:
                raise ValueError(
                    f"scenario expiry_index {s.expiry_index} outside 0..{expiries_per_underlying - 1}")
            if s.at_step < 0:
                raise ValueError("scenario at_step must be >= 0")
        self.seed = seed
        self.interval = interval
        self.strikes_per_side = strikes_per_side
        self.expiries_per_underlying = expiries_per_underlying
        self.scenarios: tuple[Scenario, ...] = tuple(scenarios)
        self._rng = np.random.default_rng(seed)
        self._now = session_start(start if start is not None else default_start())
        self._interval_s = interval.total_seconds()
        self._dt_trading = self._interval_s / TRADING_YEAR_SECONDS
        block_rate = BLOCK_TRADES_PER_SESSION / SESSION_SECONDS
        self._block_probability = 1.0 - math.exp(-block_rate * self._interval_s)
        self._step_index = 0
        self._started = False
        self._injections: list[_Injection] = []
        self._underlyings: list[_Underlying] = []
        session_open = datetime.combine(self._now.date(), SESSION_OPEN, tzinfo=IST)
        elapsed = min(max((self._now - session_open).total_seconds() / SESSION_SECONDS, 0.0), 1.0)
        for inst in insts:
            # the reference level is the previous close; today opens with a small gap
            gap = inst.atm_vol * math.sqrt(0.3 / 252.0) * float(self._rng.standard_normal())
            u = _Underlying(inst=inst, spot=inst.spot * math.exp(gap), open_spot=inst.spot * math.exp(gap))
            for pos, expiry in enumerate(inst.expiries(self._now, expiries_per_underlying)):
                u.chains[expiry] = self._build_chain(u, expiry, pos, None, inst.spot, elapsed)
            self._underlyings.append(u)

    @classmethod
    def with_demo_scenarios(cls, seed: int = 7, underlyings: Sequence[str] | None = None,
                            **kwargs: Any) -> MarketSimulator:
        """A simulator playing :func:`demo_scenarios` for every simulated underlying."""
        if "scenarios" in kwargs:
            raise TypeError("with_demo_scenarios chooses the scenarios itself")
        names = list(INSTRUMENTS) if underlyings is None else [get_instrument(n).symbol for n in underlyings]
        return cls(seed, names, scenarios=demo_scenarios(names), **kwargs)

    # ------------------------------------------------------------------ public
    @property
    def now(self) -> datetime:
        """The market clock (IST, tz-aware): the exchange time of the latest tick
        (before the first :meth:`step`, the time the first tick will carry)."""
        return self._now

    @property
    def steps_done(self) -> int:
        return self._step_index

    @property
    def underlyings(self) -> list[str]:
        return [u.inst.symbol for u in self._underlyings]

    def expiries(self, underlying: str) -> list[date]:
        """Currently listed expiries of ``underlying``, ascending."""
        for u in self._underlyings:
            if u.inst.symbol == underlying.upper():
                return sorted(u.chains)
        raise KeyError(underlying)

    def step(self) -> list[ChainSnapshot]:
        """Advance the clock one tick and return one snapshot per (underlying, expiry)."""
        if self._started:
            self._advance()
        self._started = True
        k = self._step_index
        now = self._now
        self._start_scenarios(k, now)
        injections = self._injections_at(k)
        exchange_ts = now.astimezone(UTC)
        n_chains = sum(len(u.chains) for u in self._underlyings)
        latency_us = (500.0 + self._rng.exponential(4_000.0, size=n_chains)).astype(np.int64).tolist()
        out: list[ChainSnapshot] = []
        for u in self._underlyings:
            level = math.exp(u.log_vol_level)
            spike = sum(p * 0.5 ** ((k - s) / hl) for s, p, hl in u.spikes) / 100.0
            t_near = 0.0
            for expiry in sorted(u.chains):
                chain = u.chains[expiry]
                t = max((chain.expiry_dt - now).total_seconds(), MIN_EXPIRY_SECONDS) / YEAR_SECONDS
                if t_near == 0.0:
                    t_near = t
                snap = self._step_chain(u, chain, t, level, spike * math.sqrt(t_near / t),
                                        injections.get((u.inst.symbol, expiry), ()), exchange_ts,
                                        latency_us[len(out)])
                out.append(snap)
            u.spikes = [(s, p, hl) for s, p, hl in u.spikes if abs(p) * 0.5 ** ((k - s) / hl) > 1e-3]
        self._step_index += 1
        return out

    def __iter__(self) -> Iterator[list[ChainSnapshot]]:
        while True:
            yield self.step()

    # ------------------------------------------------------------------ clock
    def _advance(self) -> None:
        nxt = self._now + self.interval
        close = datetime.combine(self._now.date(), SESSION_CLOSE, tzinfo=IST)
        if nxt >= close:
            self._rollover(_next_session_open(self._now.date()))
            return
        self._now = nxt
        z = self._rng.standard_normal((len(self._underlyings), 2))
        dt = self._dt_trading
        for u, (z1, z2) in zip(self._underlyings, z.tolist(), strict=True):
            sigma = u.inst.atm_vol * math.exp(u.log_vol_level)
            u.spot *= math.exp(-0.5 * sigma * sigma * dt + sigma * math.sqrt(dt) * z1)
            shock = -0.6 * z1 + 0.8 * z2
            u.log_vol_level += -20.0 * u.log_vol_level * dt + 1.0 * math.sqrt(dt) * shock

    def _rollover(self, new_open: datetime) -> None:
        """Close the session and open the next one at ``new_open``."""
        self._now = new_open
        for u in self._underlyings:
            close_spot = u.spot
            gap = u.inst.atm_vol * math.exp(u.log_vol_level) * math.sqrt(0.3 / 252.0)
            u.spot = close_spot * math.exp(-0.5 * gap * gap + gap * float(self._rng.standard_normal()))
            u.open_spot = u.spot
            old = u.chains
            u.chains = {}
            for pos, expiry in enumerate(u.inst.expiries(new_open, self.expiries_per_underlying)):
                u.chains[expiry] = self._build_chain(u, expiry, pos, old.get(expiry), close_spot, 0.0)

    # ------------------------------------------------------------------ chains
    def _build_chain(self, u: _Underlying, expiry: date, pos: int, carry: _Chain | None,
                     previous_spot: float, elapsed: float) -> _Chain:
        """A chain for a new session around the current spot, carrying OI/prices by strike."""
        inst = u.inst
        rng = self._rng
        step = inst.strike_step
        per_side = self.strikes_per_side or inst.strikes_per_side
        atm = round(u.spot / step) * step
        strikes_int = atm + np.arange(-per_side, per_side + 1, dtype=np.int64) * step
        strikes_int = strikes_int[strikes_int > 0]
        strikes = strikes_int.astype(np.float64)
        n = strikes.shape[0]
        expiry_dt = expiry_datetime(expiry)
        t = max((expiry_dt - self._now).total_seconds(), MIN_EXPIRY_SECONDS) / YEAR_SECONDS

        # liquidity profiles in standardised moneyness; round strikes attract OI and volume
        x = np.log(strikes / u.spot) / _moneyness_scale(inst, t)
        roundness = np.where(strikes_int % (10 * step) == 0, 2.5,
                             np.where(strikes_int % (2 * step) == 0, 1.4, 1.0))
        oi_w = np.stack([np.exp(-0.5 * ((x - 1.0) / 1.6) ** 2), np.exp(-0.5 * ((x + 1.0) / 1.6) ** 2)])
        oi_w = (oi_w + 0.01) * roundness
        vol_w = np.stack([np.exp(-0.5 * ((x - 0.3) / 1.1) ** 2), np.exp(-0.5 * ((x + 0.3) / 1.1) ** 2)])
        vol_w = (vol_w + 0.003) * roundness
        expiry_factor = 0.5**pos
        oi_lots = np.floor(inst.peak_oi_lots * expiry_factor / 2.5 * oi_w
                           * rng.lognormal(0.0, 0.35, size=(2, n))).astype(np.int64)
        daily_lots = inst.atm_daily_lots * expiry_factor / 2.5 * vol_w
        previous_volume_lots = rng.poisson(daily_lots).astype(np.int64)
        qty_atm = 40 if inst.segment == "IDX_I" else 8
        qty_high = 2 + np.rint(qty_atm * np.sqrt(vol_w / vol_w.max())).astype(np.int64)
        iv_noise = 1.0 + 0.003 * rng.standard_normal(n)

        # previous close: the model price at the previous close (one day longer to expiry)
        t_prev = t + 1.0 / 365.0
        atm_prev = _atm_vol(inst, t_prev, math.exp(u.log_vol_level))
        f_prev = previous_spot * math.exp((RATE - DIVIDEND_YIELD) * t_prev)
        iv_prev = _ssvi_vol(inst, atm_prev, t_prev, np.log(strikes / f_prev)) * iv_noise
        theo = _bsm(previous_spot, strikes, t_prev, iv_prev, RATE, DIVIDEND_YIELD).price
        previous_close = np.maximum(_round_tick(theo), TICK)

        if carry is not None:
            idx = np.clip(np.searchsorted(carry.strikes, strikes), 0, carry.strikes.shape[0] - 1)
            match = carry.strikes[idx] == strikes
            src = idx[match]
            oi_lots[:, match] = carry.oi_lots[:, src]
            previous_volume_lots[:, match] = carry.volume_lots[:, src]
            previous_close[:, match] = carry.last_price[:, src]
            iv_noise[match] = carry.iv_noise[src]

        if elapsed > 0.0:  # started mid-session: the day's volume so far
            volume_lots = rng.poisson(daily_lots * elapsed).astype(np.int64)
        else:
            volume_lots = np.zeros((2, n), dtype=np.int64)
        strike_paise = np.rint(strikes * 100.0).astype(np.int64)
        base = (inst.security_id * 100_000 + (expiry - _ID_EPOCH).days) * 10_000_000 + strike_paise
        security_id = np.stack([base * 2, base * 2 + 1])
        chain = _Chain(
            expiry=expiry, expiry_dt=expiry_dt, strikes=strikes, security_id=security_id,
            present=np.ones((2, n), dtype=np.bool_), iv_noise=iv_noise,
            vol_rate=daily_lots / SESSION_SECONDS, qty_high=qty_high, oi_lots=oi_lots,
            volume_lots=volume_lots, traded_value=volume_lots.astype(np.float64) * previous_close,
            last_price=previous_close.copy(), previous_oi=oi_lots * inst.lot_size,
            previous_volume=previous_volume_lots * inst.lot_size, previous_close=previous_close,
        )
        _frozen(chain.strikes, chain.security_id, chain.present, chain.iv_noise, chain.oi_lots,
                chain.volume_lots, chain.traded_value, chain.last_price, chain.previous_oi,
                chain.previous_volume, chain.previous_close)
        return chain

    def _step_chain(self, u: _Underlying, c: _Chain, t: float, level: float, spike: float,
                    injections: Sequence[tuple[int, float, int, int]], exchange_ts: datetime,
                    latency_us: int) -> ChainSnapshot:
        inst = u.inst
        rng = self._rng
        lot = inst.lot_size
        strikes = c.strikes
        n = strikes.shape[0]
        spot = round(u.spot, 2)  # quoted to the paisa; prices use the quoted spot

        # surface and model
        atm = _atm_vol(inst, t, level)
        k = np.log(strikes / spot) - (RATE - DIVIDEND_YIELD) * t
        iv = _ssvi_vol(inst, atm, t, k) * c.iv_noise
        if spike:
            iv = np.maximum(iv + spike, 0.01)
        model = _bsm(spot, strikes, t, iv, RATE, DIVIDEND_YIELD)
        price = model.price

        # quotes: theoretical ∓ half-spread, rounded outwards to the tick
        x = np.minimum(np.abs(k) / _moneyness_scale(inst, t), 8.0)
        spread = inst.spread_ticks * TICK * (1.0 + 0.35 * x) + 0.002 * price
        bid_t = np.maximum(np.floor((price - 0.5 * spread) * TICKS_PER_RUPEE + 1e-9), 0.0)
        ask_t = np.maximum(np.ceil((price + 0.5 * spread) * TICKS_PER_RUPEE - 1e-9), 1.0)
        bid = bid_t / TICKS_PER_RUPEE
        ask = ask_t / TICKS_PER_RUPEE
        qty = rng.integers(1, c.qty_high, size=(2, 2, n)) * lot
        bid_qty = np.where(bid_t > 0, qty[0], 0)
        ask_qty = qty[1]

        # flow: traded lots, opened/closed positions tilted by the day's move
        traded = rng.poisson(c.vol_rate * self._interval_s)
        tilt = math.tanh(math.log(spot / u.open_spot) / (inst.atm_vol * math.sqrt(1.0 / 252.0)) * 2.0)
        p_open = np.array([[0.34 - 0.06 * tilt], [0.34 + 0.06 * tilt]])
        p_close = np.array([[0.30 + 0.06 * tilt], [0.30 - 0.06 * tilt]])
        d_oi = rng.binomial(traded, p_open) - rng.binomial(traded, p_close)
        trade_price = np.maximum(_round_tick(bid + (ask - bid) * rng.random((2, n))), TICK)
        if rng.random() < self._block_probability:  # a random block trade near the money
            row = int(rng.integers(2))
            i = int(np.clip(np.searchsorted(strikes, spot) + rng.integers(-5, 6), 0, n - 1))
            size = int(rng.integers(max(1, inst.peak_oi_lots // 100), max(2, inst.peak_oi_lots // 25)))
            traded[row, i] += size
            d_oi[row, i] += size
        for row, strike, dvol, doi in injections:
            i = int(np.searchsorted(strikes, strike))
            if i < n and strikes[i] == strike:
                traded[row, i] += dvol
                d_oi[row, i] += doi

        oi_lots = np.maximum(c.oi_lots + d_oi, 0)
        volume_lots = c.volume_lots + traded
        last_price = np.where(traded > 0, trade_price, c.last_price)
        traded_value = c.traded_value + traded * trade_price
        average_price = np.zeros((2, n))
        np.divide(traded_value, volume_lots, out=average_price, where=volume_lots > 0)
        oi = oi_lots * lot
        volume = volume_lots * lot
        _frozen(oi_lots, volume_lots, last_price, traded_value, average_price, oi, volume, bid, ask,
                bid_qty, ask_qty, iv, model.delta, model.theta, model.gamma, model.vega)
        c.oi_lots, c.volume_lots = oi_lots, volume_lots
        c.last_price, c.traded_value = last_price, traded_value

        iv_pct = iv * 100.0
        _frozen(iv_pct)
        legs = [
            Legs(present=c.present[r], security_id=c.security_id[r], last_price=last_price[r],
                 top_bid_price=bid[r], top_bid_quantity=bid_qty[r], top_ask_price=ask[r],
                 top_ask_quantity=ask_qty[r], volume=volume[r], oi=oi[r], previous_oi=c.previous_oi[r],
                 previous_close_price=c.previous_close[r], previous_volume=c.previous_volume[r],
                 average_price=average_price[r], implied_volatility=iv_pct, delta=model.delta[r],
                 theta=model.theta[r], gamma=model.gamma, vega=model.vega)
            for r in (0, 1)
        ]
        return ChainSnapshot(
            underlying=inst.symbol, underlying_security_id=inst.security_id, segment=inst.segment,
            exchange=inst.exchange, expiry=c.expiry, exchange_ts=exchange_ts,
            received_ts=exchange_ts + timedelta(microseconds=latency_us), spot=spot,
            lot_size=lot, oi_unit="shares", source=SOURCE, strikes=strikes, ce=legs[0], pe=legs[1],
        )

    # ------------------------------------------------------------------ scenarios
    def _start_scenarios(self, k: int, now: datetime) -> None:
        for s in self.scenarios:
            if s.at_step != k:
                continue
            u = next(u for u in self._underlyings if u.inst.symbol == s.underlying)
            inst = u.inst
            if s.kind == "iv_spike":
                u.spikes.append((k, s.vol_points, s.half_life_steps))
                if s.spot_move:
                    u.spot *= 1.0 + s.spot_move
                continue
            expiries = sorted(u.chains)
            expiry = expiries[min(s.expiry_index, len(expiries) - 1)]
            chain = u.chains[expiry]
            row = _SIDE_ROW[s.side]
            atm = round(u.spot / inst.strike_step) * inst.strike_step

            def add(strike: float, vol: int, oi: int, steps: int, *, u: _Underlying = u,
                    expiry: date = expiry, row: int = row) -> None:
                inj = _Injection(u.inst.symbol, expiry, row, float(strike), vol, oi, k, steps)
                self._injections.append(inj)

            if s.kind == "oi_buildup":
                lots = s.lots if s.lots is not None else inst.peak_oi_lots // 2
                add(atm + s.strike_offset * inst.strike_step, lots, lots, s.steps)
            elif s.kind == "block_trade":
                lots = s.lots if s.lots is not None else max(1, inst.peak_oi_lots // 20)
                add(atm + s.strike_offset * inst.strike_step, lots, round(s.oi_fraction * lots), 1)
            elif s.kind == "wall_shift":
                oi_side = chain.oi_lots[row]
                src = int(np.argmax(oi_side))
                wall = int(oi_side[src])
                target = atm + s.target_offset * inst.strike_step
                i = int(np.searchsorted(chain.strikes, target))
                current = int(oi_side[i]) if i < oi_side.shape[0] and chain.strikes[i] == target else 0
                removed = round(s.oi_fraction * wall)
                added = max(0, math.ceil(1.3 * wall) - current)
                if chain.strikes[src] != target:
                    add(float(chain.strikes[src]), removed, -removed, s.steps)
                add(target, added, added, s.steps)

    def _injections_at(self, k: int) -> dict[tuple[str, date], list[tuple[int, float, int, int]]]:
        out: dict[tuple[str, date], list[tuple[int, float, int, int]]] = {}
        for inj in self._injections:
            if inj.start <= k < inj.start + inj.steps:
                dvol, doi = inj.part(k)
                out.setdefault((inj.underlying, inj.expiry), []).append((inj.row, inj.strike, dvol, doi))
        self._injections = [inj for inj in self._injections if k + 1 < inj.start + inj.steps]
        return out


# --------------------------------------------------------------------------- driver
@dataclass(frozen=True, slots=True)
class SimulatorStats:
    """What :func:`run_simulator` did: ``snapshots`` handed to the publisher (of which
    ``dead_lettered`` were refused), ``contracts`` in them, wall ``elapsed`` seconds."""

    ticks: int
    snapshots: int
    contracts: int
    dead_lettered: int
    elapsed: float

    @property
    def contracts_per_second(self) -> float:
        return self.contracts / self.elapsed if self.elapsed > 0 else 0.0


def run_simulator(sim: MarketSimulator, publisher: Publisher, *, rate: float | None, steps: int | None = None,
                  duration: float | None = None, stop: threading.Event | None = None,
                  progress: Callable[[int, int], None] | None = None) -> SimulatorStats:
    """Drive ``sim`` into ``publisher`` until ``steps`` ticks, ``duration`` wall seconds or ``stop``.

    ``rate`` is ticks per wall-clock second (``None``: as fast as possible);
    ticks are scheduled on a fixed grid from the start, so a slow tick is
    caught up rather than drifting.  ``progress(ticks, snapshots)`` is called
    after every tick.  The publisher is flushed at the end.  With no limit at
    all it runs until interrupted.
    """
    if rate is not None and rate <= 0:
        raise ValueError("rate must be positive (or None for as fast as possible)")
    started = wallclock.monotonic()
    ticks = snapshots = contracts = dead = 0
    while True:
        if stop is not None and stop.is_set():
            break
        if steps is not None and ticks >= steps:
            break
        now = wallclock.monotonic()
        if duration is not None and now - started >= duration:
            break
        if rate is not None:
            delay = started + ticks / rate - now
            if delay > 0:
                if duration is not None:
                    delay = min(delay, started + duration - now)
                if stop is not None:
                    stop.wait(delay)
                else:
                    wallclock.sleep(delay)
                continue
        for snap in sim.step():
            if not publisher.publish(snap):
                dead += 1
            snapshots += 1
            contracts += snap.n_contracts
        ticks += 1
        if progress is not None:
            progress(ticks, snapshots)
    publisher.flush()
    return SimulatorStats(ticks=ticks, snapshots=snapshots, contracts=contracts, dead_lettered=dead,
                          elapsed=wallclock.monotonic() - started)
