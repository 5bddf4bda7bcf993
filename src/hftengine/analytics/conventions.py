"""Sign and unit conventions of the analytics (ARCHITECTURE.md §4), versioned.

Every result carries ``conventions_version``; change :data:`CONVENTIONS_VERSION`
whenever a default below changes meaning, so stored rows stay interpretable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time
from typing import Final, Literal

CONVENTIONS_VERSION: Final = "2026.11.1"

IVModel = Literal["bsm", "black76"]
PriceSource = Literal["mid", "ltp"]
ThetaUnit = Literal["year", "day"]
OiUnit = Literal["shares", "contracts"]


@dataclass(frozen=True, slots=True)
class Conventions:
    """Parameters of every sign/unit choice the chain analytics make.

    Defaults are those of ARCHITECTURE.md §4.

    - ``iv_model``: ``"bsm"`` (spot, rate ``r``, dividend yield ``q``) or ``"black76"``
      (forward implied by put-call parity near the money, see
      :func:`hftengine.analytics.black76.parity_forward`).
    - ``price_source``: ``"mid"`` = (bid + ask)/2 when both sides are quoted and not
      crossed, falling back to the last traded price; ``"ltp"`` = last traded price only.
    - ``day_count``: days per year for time to expiry (ACT/365).
    - ``expiry_time`` / ``timezone``: the exchange's expiry instant (15:30 IST for NSE).
    - ``gex_call_sign`` / ``gex_put_sign``: dealer positioning; +1 / −1 means dealers are
      long calls and short puts. ``gex_move``: GEX is quoted per this relative move
      of the spot (0.01 = per 1 %), in currency: ``Γ · OI_shares · S² · gex_move``.
    - ``flip_range`` / ``flip_points``: the re-priced GEX profile grid for the gamma flip
      (spot ± 10 %, 21 levels = 1 % steps; the crossing is interpolated on a 0.1 %
      re-sampling of its grid cell).
    - ``wing_delta``: the delta of the risk reversal / butterfly wings (0.25).
    - ``buildup_price_band`` / ``buildup_price_tick``: price changes within
      ``max(band·previous price, tick)`` count as unchanged; likewise
      ``buildup_oi_band`` (relative) / ``buildup_oi_min`` (absolute, in the OI unit of
      the chain) for open interest.
    - ``theta_unit``: ``"year"`` (``−∂V/∂t`` per year) or ``"day"`` (per calendar day,
      ``/ day_count``); applies to theta and charm in chain results.
    - ``vega_per``: vega is reported per this change of volatility (1.0 = per 1.00,
      0.01 = per vol point).
    - ``flow_*``: the smart-money flow measure (see :mod:`hftengine.analytics.flow`).
    - ``parity_strikes``: how many strikes closest to the money feed the parity forward.
    """

    version: str = CONVENTIONS_VERSION
    iv_model: IVModel = "bsm"
    price_source: PriceSource = "mid"
    day_count: float = 365.0
    expiry_time: time = time(15, 30)
    timezone: str = "Asia/Kolkata"
    gex_call_sign: float = 1.0
    gex_put_sign: float = -1.0
    gex_move: float = 0.01
    flip_range: float = 0.10
    flip_points: int = 21
    wing_delta: float = 0.25
    buildup_price_band: float = 0.001
    buildup_price_tick: float = 0.05
    buildup_oi_band: float = 0.001
    buildup_oi_min: float = 0.0
    theta_unit: ThetaUnit = "year"
    vega_per: float = 1.0
    flow_zscore: float = 3.0
    flow_min_premium: float = 1.0e6
    flow_volume_oi_ratio: float = 1.0
    parity_strikes: int = 5

    @property
    def theta_scale(self) -> float:
        """Multiplier from per-year theta/charm to :attr:`theta_unit`."""
        return 1.0 if self.theta_unit == "year" else 1.0 / self.day_count


DEFAULT_CONVENTIONS: Final = Conventions()
