"""OI and premium velocity per strike and leg over trailing windows, with acceleration.

Each window ``W`` (seconds, e.g. 60, 300, 900) keeps its own ring of samples of the chain
(OI and last price per leg, ATM IV), taken every ``p = W / samples_per_window`` seconds of
exchange time: a snapshot is sampled when it is at least ``p`` after the ring's newest
sample.  At a snapshot at time ``t`` (all times are exchange times):

- reference ``r1``: the newest sample with ``t - W - 2p <= r1.ts <= t - W``; none → the
  window is not full (start of session, or a feed gap expired it) and every value is NaN;
- ``oi_per_min = (OI_t - OI_r1) / ((t - r1.ts) / 60 s)`` (OI units per minute);
  ``premium_per_min`` likewise on the last price (rupees per minute);
- ``oi_pct_per_min = oi_per_min / OI_r1`` (fraction of the strike's OI per minute; NaN
  where ``OI_r1`` is 0): the velocity normalised by the strike's OI;
- acceleration: ``r2`` is the reference of ``r1`` (newest sample with
  ``r1.ts - W - 2p <= r2.ts <= r1.ts - W``); the velocity one window ago is
  ``v1 = (x_r1 - x_r2) / ((r1.ts - r2.ts) / 60 s)`` and
  ``accel = (v - v1) / ((t - r1.ts) / 60 s)`` (units per minute²);
- ``span_s = t - r1.ts``: the effective window, between ``W`` and ``W + 2p``;
- ``atm_iv_change = ATM IV_t - ATM IV_r1`` (decimal) for the IV-spike detector.

Expiry: samples older than the current ``r2`` (or, without one, older than ``t - 2W - 4p``)
can never be a reference again and are dropped.  The rings are per session: the composite
state starts them empty at each session open, so no window spans two sessions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hftengine.analytics.cumoi import F64, align

US_PER_S = 1_000_000
US_PER_MIN = 60_000_000


@dataclass(frozen=True, slots=True)
class VelocityConfig:
    windows_s: tuple[int, ...] = (60, 300, 900)
    samples_per_window: int = 4

    def __post_init__(self) -> None:
        if not self.windows_s or any(w <= 0 for w in self.windows_s):
            raise ValueError("velocity windows must be positive seconds")
        if len(set(self.windows_s)) != len(self.windows_s):
            raise ValueError("duplicate velocity window")
        if self.samples_per_window < 1:
            raise ValueError("samples_per_window must be >= 1")

    def period_us(self, window_s: int) -> int:
        return window_s * US_PER_S // self.samples_per_window


@dataclass(frozen=True, slots=True)
class VelocityInput:
    ts_us: int
    strikes: F64  # (n,)
    oi: F64  # (2, n) NaN where absent
    price: F64  # (2, n)
    atm_iv: float


@dataclass(frozen=True, slots=True)
class Sample:
    ts_us: int
    oi: F64  # (2, n) aligned to VelocityState.strikes
    price: F64
    atm_iv: float


@dataclass(frozen=True, slots=True)
class Ring:
    window_s: int
    samples: tuple[Sample, ...]


@dataclass(frozen=True, slots=True)
class VelocityState:
    strikes: F64
    rings: tuple[Ring, ...]


@dataclass(frozen=True, slots=True)
class WindowVelocity:
    """Velocities over one window; arrays ``(2, n)``; all NaN while the window is not full."""

    window_s: int
    span_s: float
    oi_per_min: F64
    oi_pct_per_min: F64
    premium_per_min: F64
    oi_accel: F64
    premium_accel: F64
    atm_iv_change: float
    reference: Sample | None  # r1, for detectors that compare against the window start


def _reference(samples: tuple[Sample, ...], t: int, window_us: int, period_us: int) -> Sample | None:
    """Newest sample with ``t - W - 2p <= ts <= t - W``."""
    hi = t - window_us
    lo = hi - 2 * period_us
    for s in reversed(samples):
        if s.ts_us <= hi:
            return s if s.ts_us >= lo else None
    return None


def _empty(window_s: int, shape: tuple[int, ...]) -> WindowVelocity:
    nan = np.full(shape, np.nan)
    return WindowVelocity(window_s, math.nan, nan, nan, nan, nan, nan, math.nan, None)


def _window(ring: Ring, event: VelocityInput, cfg: VelocityConfig) -> tuple[Ring, WindowVelocity]:
    t = event.ts_us
    w_us = ring.window_s * US_PER_S
    p_us = cfg.period_us(ring.window_s)
    samples = ring.samples
    r1 = _reference(samples, t, w_us, p_us)
    if r1 is None:
        out = _empty(ring.window_s, event.oi.shape)
        r2 = None
    else:
        dt1 = (t - r1.ts_us) / US_PER_MIN
        with np.errstate(invalid="ignore", divide="ignore"):
            v_oi = (event.oi - r1.oi) / dt1
            v_px = (event.price - r1.price) / dt1
            pct = np.where(r1.oi > 0.0, v_oi / r1.oi, np.nan)
        r2 = _reference(samples, r1.ts_us, w_us, p_us)
        if r2 is None:
            acc_oi = acc_px = np.full(event.oi.shape, np.nan)
        else:
            dt2 = (r1.ts_us - r2.ts_us) / US_PER_MIN
            acc_oi = (v_oi - (r1.oi - r2.oi) / dt2) / dt1
            acc_px = (v_px - (r1.price - r2.price) / dt2) / dt1
        out = WindowVelocity(ring.window_s, (t - r1.ts_us) / US_PER_S, v_oi, pct, v_px, acc_oi, acc_px,
                             event.atm_iv - r1.atm_iv, r1)
    if not samples or t - samples[-1].ts_us >= p_us:
        samples = (*samples, Sample(t, event.oi, event.price, event.atm_iv))
    oldest = r2.ts_us if r2 is not None else t - 2 * w_us - 4 * p_us
    samples = tuple(s for s in samples if s.ts_us >= oldest)
    return Ring(ring.window_s, samples), out


def update_velocity(state: VelocityState | None, event: VelocityInput,
                    cfg: VelocityConfig) -> tuple[VelocityState, tuple[WindowVelocity, ...]]:
    """Velocities of every configured window at this snapshot, and the rings advanced by it."""
    rings: dict[int, Ring] = {}
    if state is not None:
        for ring in state.rings:
            samples = ring.samples
            if not np.array_equal(state.strikes, event.strikes):
                samples = tuple(Sample(s.ts_us, align(state.strikes, event.strikes, s.oi),
                                       align(state.strikes, event.strikes, s.price), s.atm_iv) for s in samples)
            rings[ring.window_s] = Ring(ring.window_s, samples)
    new_rings: list[Ring] = []
    outs: list[WindowVelocity] = []
    for w in cfg.windows_s:
        ring, out = _window(rings.get(w, Ring(w, ())), event, cfg)
        new_rings.append(ring)
        outs.append(out)
    return VelocityState(event.strikes, tuple(new_rings)), tuple(outs)
