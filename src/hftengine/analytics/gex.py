"""Gamma exposure (GEX): per strike, total, re-priced profile, gamma flip, call/put walls.

Conventions (ARCHITECTURE.md §4, parameters of
:class:`~hftengine.analytics.conventions.Conventions`): per strike
``GEX = sign · Γ · OI_shares · S² · move`` in currency per ``move`` (0.01 = 1 %)
relative spot move; ``sign`` is +1 for calls and −1 for puts by default (dealers
long calls, short puts).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from hftengine.analytics.normalized_black import EXP_FLOOR, INV_SQRT_2PI, FloatArray

_REFINE_POINTS = 11


@functools.cache
def _unit_grid(points: int) -> FloatArray:
    """``linspace(0, 1, points)`` (cached)."""
    grid: FloatArray = np.linspace(0.0, 1.0, points)
    grid.setflags(write=False)
    return grid


@functools.cache
def _grid_factors(flip_range: float, points: int) -> FloatArray:
    """``1 + linspace(−range, range, points)`` (cached: linspace is slow for what it does)."""
    factors: FloatArray = 1.0 + np.linspace(-flip_range, flip_range, points)
    factors.setflags(write=False)
    return factors


def gex_per_strike(
    gamma: npt.ArrayLike, oi_shares: npt.ArrayLike, spot: float, *, sign: float, move: float = 0.01
) -> FloatArray:
    """``sign · Γ · OI_shares · S² · move`` (currency per ``move`` relative spot move).

    ``Γ`` is the spot gamma per share (``∂²V/∂S²``). NaN where ``Γ`` is NaN and the OI is
    positive; exactly 0 where the OI is 0 (no position, whatever the gamma).
    """
    g = np.asarray(gamma, dtype=np.float64)
    oi = np.asarray(oi_shares, dtype=np.float64)
    with np.errstate(all="ignore"):
        value = g * oi * (sign * spot * spot * move)
    result: FloatArray = np.where(oi == 0.0, 0.0, value)
    return result


_ProfileTerms = tuple[FloatArray, FloatArray, FloatArray, float]


def _profile_terms(
    strikes: FloatArray,
    iv: FloatArray,
    oi_shares: FloatArray,
    signs: FloatArray,
    t: float,
    *,
    forward_ratio: float,
    carry: float,
    move: float,
) -> _ProfileTerms | None:
    """Per-leg constants of the re-priced profile: ``d1 = ln(S'·ratio)/w + (w/2 − ln K)/w``,
    term ``sign·OI/σ·φ(d1)``; None when no leg contributes."""
    with np.errstate(all="ignore"):
        use = (iv > 0.0) & (oi_shares != 0.0) & np.isfinite(iv * oi_shares) & (strikes > 0.0)
        if not use.any():
            return None
        sqrt_t = math.sqrt(t)
        w = iv[use] * sqrt_t
        inv_w = 1.0 / w
        offset = (0.5 * w * w - np.log(strikes[use] * (1.0 / forward_ratio))) * inv_w
        coef = signs[use] * oi_shares[use] / iv[use] * INV_SQRT_2PI
    return inv_w, offset, coef, move * carry / sqrt_t


def _profile_at(levels: FloatArray, terms: _ProfileTerms) -> FloatArray:
    """``move·S'·carry/√t · Σ coef·φ(d1)`` at each level: one matrix, one matrix-vector product."""
    inv_w, offset, coef, scale = terms
    with np.errstate(all="ignore"):
        z = np.multiply.outer(np.log(levels), inv_w)
        z += offset  # d1
        z *= z
        z *= -0.5
        np.maximum(z, EXP_FLOOR, out=z)  # avoid numpy's slow underflow path
        np.exp(z, out=z)
        total: FloatArray = z @ coef
        total *= levels * scale
    return total


def gex_profile(
    spots: npt.ArrayLike,
    strikes: npt.ArrayLike,
    iv: npt.ArrayLike,
    oi_shares: npt.ArrayLike,
    signs: npt.ArrayLike,
    t: float,
    *,
    forward_ratio: float,
    carry: float,
    move: float = 0.01,
) -> FloatArray:
    """Total GEX re-priced at each level in ``spots`` (volatility sticky by strike).

    For spot ``S'`` the forward is ``F' = S'·forward_ratio`` and the spot gamma is
    ``Γ = carry·φ(d1)/(S'σ√t)`` with ``d1 = (ln(F'/K) + σ²t/2)/(σ√t)`` (``carry = e^{-qt}``
    for BSM, ``e^{-rt}·F/S`` for Black-76), so
    ``GEX(S') = move·S'·carry/√t · Σ_legs sign·OI/σ · φ(d1)``. Legs with a NaN/non-positive
    IV or no OI are left out; NaN for ``t <= 0``.
    """
    s_grid = np.asarray(spots, dtype=np.float64)
    if not (t > 0.0 and math.isfinite(t)):
        return np.full(s_grid.shape, np.nan)
    terms = _profile_terms(
        np.asarray(strikes, dtype=np.float64),
        np.asarray(iv, dtype=np.float64),
        np.asarray(oi_shares, dtype=np.float64),
        np.asarray(signs, dtype=np.float64),
        t,
        forward_ratio=forward_ratio,
        carry=carry,
        move=move,
    )
    if terms is None:
        return np.zeros(s_grid.shape)
    return _profile_at(s_grid, terms)


def _crossings(levels: FloatArray, values: FloatArray) -> FloatArray:
    """Linearly interpolated levels of every sign change (``> 0`` vs ``<= 0``) between
    consecutive samples; a sample exactly at zero is its own root."""
    positive = values > 0.0
    idx = np.flatnonzero(positive[1:] != positive[:-1])
    a, b = levels[idx], levels[idx + 1]
    fa, fb = values[idx], values[idx + 1]
    roots: FloatArray = a - fa * (b - a) / (fb - fa)
    return roots


def zero_crossing(
    levels: FloatArray,
    values: FloatArray,
    near: float,
    refine: Callable[[FloatArray], FloatArray] | None = None,
) -> float | None:
    """Level where ``values`` (sampled at increasing ``levels``) crosses zero, nearest to
    ``near`` when there are several; None if none (NaN samples are skipped).

    Linear interpolation inside the bracketing grid cell. With ``refine`` (the function
    itself, vectorised over levels) that cell is re-sampled at :data:`_REFINE_POINTS`
    levels in one call and the crossing interpolated in the sub-cell, which removes the
    grid's curvature error (1 % cells → 0.1 % sub-cells).
    """
    finite = np.isfinite(values)
    if not finite.all():
        levels, values = levels[finite], values[finite]
    if values.shape[0] < 2:
        return None
    roots = _crossings(levels, values)
    if roots.size == 0:
        return None
    best = int(np.argmin(np.abs(roots - near)))
    root = float(roots[best])
    if refine is None:
        return root
    cell = int(np.searchsorted(levels, root, side="right")) - 1
    lo = float(levels[max(cell, 0)])
    hi = float(levels[min(cell + 1, levels.shape[0] - 1)])
    if not hi > lo:
        return root
    sub = lo + (hi - lo) * _unit_grid(_REFINE_POINTS)
    fine = _crossings(sub, refine(sub))
    if fine.size == 0:
        return root
    return float(fine[int(np.argmin(np.abs(fine - root)))])


def gamma_flip(
    spot: float,
    strikes: npt.ArrayLike,
    iv: npt.ArrayLike,
    oi_shares: npt.ArrayLike,
    signs: npt.ArrayLike,
    t: float,
    *,
    forward_ratio: float,
    carry: float,
    move: float = 0.01,
    flip_range: float = 0.10,
    points: int = 21,
) -> tuple[float | None, FloatArray, FloatArray]:
    """Gamma flip: the spot level where the re-priced total GEX profile crosses zero.

    Grid ``spot·(1 ± flip_range)`` with ``points`` levels; the sign change nearest to
    ``spot`` is interpolated linearly inside a re-sampled sub-grid of its cell on the
    re-priced profile (see :func:`zero_crossing`). Returns ``(flip or None, grid, profile)``.
    """
    if not (spot > 0.0 and math.isfinite(spot)):
        empty = np.empty(0)
        return None, empty, empty
    grid = spot * _grid_factors(float(flip_range), max(int(points), 2))
    if not (t > 0.0 and math.isfinite(t)):
        return None, grid, np.full(grid.shape, np.nan)
    terms = _profile_terms(
        np.asarray(strikes, dtype=np.float64),
        np.asarray(iv, dtype=np.float64),
        np.asarray(oi_shares, dtype=np.float64),
        np.asarray(signs, dtype=np.float64),
        t,
        forward_ratio=forward_ratio,
        carry=carry,
        move=move,
    )
    if terms is None:
        return None, grid, np.zeros(grid.shape)
    profile = _profile_at(grid, terms)
    flip = zero_crossing(grid, profile, spot, lambda levels: _profile_at(levels, terms))
    return flip, grid, profile


def call_wall(strikes: npt.ArrayLike, gex_call: npt.ArrayLike, spot: float) -> float | None:
    """Strike ``>= spot`` with the largest call GEX (None if no such strike has positive
    exposure). Ties: the lowest strike."""
    k = np.asarray(strikes, dtype=np.float64)
    g = np.abs(np.asarray(gex_call, dtype=np.float64))
    score = np.where((k >= spot) & np.isfinite(g), g, 0.0)
    if not score.size or not (score.max() > 0.0):
        return None
    return float(k[int(np.argmax(score))])


def put_wall(strikes: npt.ArrayLike, gex_put: npt.ArrayLike, spot: float) -> float | None:
    """Strike ``<= spot`` with the largest ``|put GEX|`` (None if no such strike has
    exposure). Ties: the lowest strike."""
    k = np.asarray(strikes, dtype=np.float64)
    g = np.abs(np.asarray(gex_put, dtype=np.float64))
    score = np.where((k <= spot) & np.isfinite(g), g, 0.0)
    if not score.size or not (score.max() > 0.0):
        return None
    return float(k[int(np.argmax(score))])
