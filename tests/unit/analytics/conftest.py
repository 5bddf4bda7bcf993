"""Factory fixture for option chains priced from a known volatility smile."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from hftengine.analytics import bsm
from hftengine.analytics.chain import LegQuotes


@dataclass(frozen=True)
class Chain:
    strikes: np.ndarray
    calls: LegQuotes
    puts: LegQuotes
    spot: float
    t: float
    r: float
    q: float
    sigma: np.ndarray  # the volatility each strike was priced with


MakeChain = Callable[..., Chain]


def _legs(price: np.ndarray, oi: np.ndarray, prev_oi: np.ndarray, volume: np.ndarray, spread: float) -> LegQuotes:
    n = price.shape[0]
    half = np.maximum(spread * price, 0.025)
    bid = np.maximum(price - half, 0.0)
    ask = price + half
    return LegQuotes(
        present=np.ones(n, dtype=np.bool_),
        last_price=price.copy(),
        bid=bid,
        ask=ask,
        bid_qty=np.full(n, 75.0),
        ask_qty=np.full(n, 75.0),
        volume=volume,
        oi=oi,
        prev_oi=prev_oi,
        prev_close=price * 0.98,
    )


@pytest.fixture
def make_chain() -> MakeChain:
    """``make_chain(n=200, spot=22000, step=50, t=5/365, skew=-0.1, seed=0, spread=0.0)``.

    Strikes centred on the spot; the smile is ``0.14 + skew·ln(K/F) + 0.8·ln(K/F)²``;
    bid/ask straddle the model price by ``spread`` (relative, at least 0.025) so the mid is
    the model price; OI/volume random (seeded) in shares.
    """

    def factory(
        n: int = 200,
        spot: float = 22_000.0,
        step: float = 50.0,
        t: float = 5.0 / 365.0,
        r: float = 0.065,
        q: float = 0.0,
        skew: float = -0.1,
        seed: int = 0,
        spread: float = 0.0,
    ) -> Chain:
        rng = np.random.default_rng(seed)
        strikes = spot + step * (np.arange(n) - n // 2)
        forward = spot * np.exp((r - q) * t)
        lm = np.log(strikes / forward)
        sigma = 0.14 + skew * lm + 0.8 * lm * lm
        legs = []
        for is_call in (True, False):
            price = bsm.price(spot, strikes, t, r, q, sigma, is_call)
            oi = rng.integers(0, 2_000_000, n).astype(np.float64)
            prev = np.round(oi * rng.uniform(0.8, 1.2, n))
            volume = rng.integers(0, 500_000, n).astype(np.float64)
            legs.append(_legs(price, oi, prev, volume, spread))
        return Chain(strikes.astype(np.float64), legs[0], legs[1], spot, t, r, q, sigma)

    return factory
