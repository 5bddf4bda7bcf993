"""Gamma exposure (GEX): per strike, total, re-priced profile, gamma flip, call/put walls.

Conventions (ARCHITECTURE.md §4, parameters of
:class:`~hftengine.analytics.conventions.Conventions`): per strike
``GEX = sign · Γ · OI_shares · S² · move`` in currency per ``move`` (0.01 = 1 %)
relative spot move; ``sign`` is +1 for calls and −1 for puts by default (dealers
long calls, short puts).
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from hftengine.analytics.normalized_black import EXP_FLOOR, INV_SQRT_2PI, FloatArray

_REFINE_POINTS = 11
_MINUS_HALF = np.array(-0.5)
_HALF = np.array(0.5)
_ONE = np.array(1.0)
_INV_SQRT_2PI = np.array(INV_SQRT_2PI)
_EXP_FLOOR = np.array(float(EXP_FLOOR))


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


#: ``((2, m) rows 1/w and offset, coefficients, scale)`` of the legs that contribute.
_ProfileTerms = tuple[FloatArray, FloatArray, float]


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
    check_strikes: bool = True,
) -> _ProfileTerms | None:
    """Per-leg constants of the re-priced profile: ``d1 = ln(S'·ratio)/w + (w/2 − ln K)/w``,
    term ``sign·OI/σ·φ(d1)``; None when no leg contributes. ``check_strikes=False`` when
    a finite IV implies a positive strike (IVs from the solver). Call under
    ``np.errstate(all="ignore")``."""
    use = np.isfinite(np.multiply(iv, oi_shares))
    use &= iv > 0.0
    use &= oi_shares != 0.0
    if check_strikes:
        use &= strikes > 0.0
    rows = use.nonzero()[0]
    m = rows.shape[0]
    if not m:
        return None
    if m < iv.shape[0]:
        strikes, iv, oi_shares, signs = strikes[rows], iv[rows], oi_shares[rows], signs[rows]
    sqrt_t = math.sqrt(t)
    terms = np.empty((2, m))
    inv_w, offset = terms
    w = np.multiply(iv, np.array(sqrt_t))
    np.divide(_ONE, w, inv_w)
    np.multiply(w, _HALF, offset)
    np.multiply(offset, w, offset)
    log_k = np.multiply(strikes, np.array(1.0 / forward_ratio))
    np.log(log_k, log_k)
    np.subtract(offset, log_k, offset)
    np.multiply(offset, inv_w, offset)
    coef = np.multiply(signs, oi_shares)
    np.divide(coef, iv, coef)
    np.multiply(coef, _INV_SQRT_2PI, coef)
    return terms, coef, move * carry / sqrt_t


def _profile_at(levels: FloatArray, terms: _ProfileTerms) -> FloatArray:
    """``move·S'·carry/√t · Σ coef·φ(d1)`` at each level: two matrix products. Call under
    ``np.errstate(all="ignore")``.

    ``d1 = ln S'·(1/w) + offset`` for every (level, leg) is ``[ln S', 1] @ [1/w; offset]``:
    each entry one rounded product plus an exact one, so the same value as the product
    and sum done separately, at a third of the cost of a broadcast outer product.
    """
    rows, coef, scale = terms
    left = np.empty((levels.shape[0], 2))
    np.log(levels, left[:, 0])
    left[:, 1] = 1.0
    z = left @ rows  # d1
    np.multiply(z, z, z)
    np.multiply(z, _MINUS_HALF, z)
    np.maximum(z, _EXP_FLOOR, out=z)  # avoid numpy's slow underflow path
    np.exp(z, z)
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
    with np.errstate(all="ignore"):
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
        return _profile_at(s_grid.reshape(-1), terms).reshape(s_grid.shape)


def _crossings(levels: list[float], values: list[float]) -> list[float]:
    """Linearly interpolated levels of every sign change (``> 0`` vs ``<= 0``) between
    consecutive samples; a sample exactly at zero is its own root. Plain float arithmetic
    on lists: a grid has a few dozen samples, fewer than one numpy call is worth."""
    roots: list[float] = []
    prev = values[0] > 0.0
    for i in range(1, len(values)):
        positive = values[i] > 0.0
        if positive != prev:
            a, b, fa, fb = levels[i - 1], levels[i], values[i - 1], values[i]
            roots.append(a - fa * (b - a) / (fb - fa))
        prev = positive
    return roots


def _nearest(roots: list[float], target: float) -> float:
    """The root nearest to ``target``: the first on ties, the first NaN distance if any
    (as ``np.argmin``)."""
    best = roots[0]
    best_dist = abs(best - target)
    if best_dist != best_dist:
        return best
    for root in roots[1:]:
        dist = abs(root - target)
        if dist != dist:
            return root
        if dist < best_dist:
            best, best_dist = root, dist
    return best


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
    lv: list[float] = np.asarray(levels, dtype=np.float64).tolist()
    vals: list[float] = np.asarray(values, dtype=np.float64).tolist()
    if not all(map(math.isfinite, vals)):
        keep = [i for i, v in enumerate(vals) if math.isfinite(v)]
        lv, vals = [lv[i] for i in keep], [vals[i] for i in keep]
    if len(vals) < 2:
        return None
    roots = _crossings(lv, vals)
    if not roots:
        return None
    root = _nearest(roots, near)
    if refine is None:
        return root
    cell = bisect.bisect_right(lv, root) - 1
    lo = lv[max(cell, 0)]
    hi = lv[min(cell + 1, len(lv) - 1)]
    if not hi > lo:
        return root
    sub = lo + (hi - lo) * _unit_grid(_REFINE_POINTS)
    fine = _crossings(sub.tolist(), refine(sub).tolist())
    if not fine:
        return root
    return _nearest(fine, root)


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
    with np.errstate(all="ignore"):
        return _gamma_flip(
            spot,
            np.asarray(strikes, dtype=np.float64),
            np.asarray(iv, dtype=np.float64),
            np.asarray(oi_shares, dtype=np.float64),
            np.asarray(signs, dtype=np.float64),
            t,
            forward_ratio=forward_ratio,
            carry=carry,
            move=move,
            flip_range=flip_range,
            points=points,
        )


def _gamma_flip(
    spot: float,
    strikes: FloatArray,
    iv: FloatArray,
    oi_shares: FloatArray,
    signs: FloatArray,
    t: float,
    *,
    forward_ratio: float,
    carry: float,
    move: float,
    flip_range: float,
    points: int,
    check_strikes: bool = True,
) -> tuple[float | None, FloatArray, FloatArray]:
    """:func:`gamma_flip` on float64 arrays, under the caller's ``errstate``."""
    if not (spot > 0.0 and math.isfinite(spot)):
        empty = np.empty(0)
        return None, empty, empty
    grid = spot * _grid_factors(float(flip_range), max(int(points), 2))
    if not (t > 0.0 and math.isfinite(t)):
        return None, grid, np.full(grid.shape, np.nan)
    terms = _profile_terms(
        strikes,
        iv,
        oi_shares,
        signs,
        t,
        forward_ratio=forward_ratio,
        carry=carry,
        move=move,
        check_strikes=check_strikes,
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


def wall_in(strikes: FloatArray, gex: FloatArray, start: int, stop: int, *, finite: bool = True) -> float | None:
    """:func:`call_wall` / :func:`put_wall` for ascending strikes, the candidates being
    ``strikes[start:stop]`` (those ``>= spot`` / ``<= spot``); ``finite=False`` when
    ``gex`` may hold NaN or ±inf (they count as no exposure)."""
    if stop <= start:
        return None
    g = np.abs(gex[start:stop])
    if not finite:
        np.copyto(g, 0.0, where=~np.isfinite(g))
    best = int(g.argmax())
    if not g[best] > 0.0:
        return None
    return float(strikes[start + best])
