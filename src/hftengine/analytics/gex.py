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
_ZERO = np.array(0.0)
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


def _exponent_rows(c: FloatArray) -> FloatArray:
    """The ``(len(c), 3)`` left factor ``[−c²/2, −1/2, c]`` of the profile exponent (see
    :func:`_profile_terms`)."""
    left = np.empty((c.shape[0], 3))
    np.multiply(c, c, left[:, 0])
    np.multiply(left[:, 0], _MINUS_HALF, left[:, 0])
    left[:, 1] = -0.5
    left[:, 2] = c
    return left


@functools.cache
def _grid_exponent_rows(flip_range: float, points: int) -> tuple[FloatArray, FloatArray]:
    """:func:`_exponent_rows` of the gamma-flip grid ``spot·factor`` (``c = ln factor``:
    the profile is centred at the spot) and, shape ``(points − 1, R, 3)``, of the
    :data:`_REFINE_POINTS` re-sampled levels of each grid cell (cached)."""
    factors = _grid_factors(flip_range, points)
    grid = _exponent_rows(np.log(factors))
    sub = factors[:-1, None] + (factors[1:] - factors[:-1])[:, None] * _unit_grid(_REFINE_POINTS)
    cells = _exponent_rows(np.log(sub.reshape(-1))).reshape(points - 1, _REFINE_POINTS, 3)
    grid.setflags(write=False)
    cells.setflags(write=False)
    return grid, cells


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


#: ``((3, m) rows u², v², u·v + 1; (m,) coefficients; centre)`` of the legs that contribute
#: (see :func:`_profile_terms`).
_ProfileTerms = tuple[FloatArray, FloatArray, float]


def _profile_terms(
    strikes: FloatArray,
    iv: FloatArray,
    oi_shares: FloatArray,
    signs: FloatArray,
    t: float,
    *,
    center: float,
    forward_ratio: float,
    carry: float,
    move: float,
    trusted: bool = False,
) -> _ProfileTerms | None:
    """Per-leg constants of the re-priced profile; None when no leg contributes. Call
    under ``np.errstate(all="ignore")``. ``trusted``: every IV is NaN or positive and every
    OI finite (the solver's IVs, the chain's cleaned OI), so ``sign·OI/σ`` finite and
    non-zero selects the legs (else: finite ``σ·OI``, ``σ > 0``, OI ≠ 0, ``K > 0``).

    At a level ``S'`` with ``c = ln(S'/center)``, a leg's ``d1`` is ``u·c − v`` with
    ``u = 1/w`` (``w = σ√t``) and ``v = ln(K/F₀)/w − w/2`` (``−d1`` at the centre, whose
    forward is ``F₀ = center·forward_ratio``). Its GEX term
    ``move·S'·carry/√t · sign·OI/σ · φ(d1)`` is ``coef·exp(−d1²/2 + c)`` with
    ``coef = sign·OI/σ · move·center·carry/(√(2π)·√t)`` (``S' = center·e^c``), and the
    exponent is the quadratic ``−u²·c²/2 − v²/2 + (u·v + 1)·c``: for every (level, leg)
    one entry of the matrix product ``[−c²/2, −1/2, c] @ [u²; v²; u·v + 1]``, with no
    elementwise squaring or scaling. Centring at the spot keeps ``c`` small (|c| ≤ 0.1
    on the default grid), so the terms stay moderate: the exponent is accurate to
    ~1e-14, better than ``ln S'/w + (w²/2 − ln K)/w``, which cancels two terms of ~``10/w``.
    """
    coef = np.multiply(signs, oi_shares)
    np.divide(coef, iv, coef)
    if trusted:
        use = np.isfinite(coef)
        use &= coef != _ZERO
    else:
        use = np.isfinite(np.multiply(iv, oi_shares))
        use &= iv > _ZERO
        use &= oi_shares != _ZERO
        use &= strikes > _ZERO
    rows = use.nonzero()[0]
    m = rows.shape[0]
    if not m:
        return None
    sqrt_t = math.sqrt(t)
    terms = np.empty((4, iv.shape[0]))  # u, v, u·v + 1, coef; u and v squared once taken
    u, v, uv, scaled = terms[0], terms[1], terms[2], terms[3]  # not `= terms` (formatted IndexError)
    w = np.multiply(iv, np.array(sqrt_t))
    np.divide(_ONE, w, u)
    np.multiply(strikes, np.array(1.0 / (center * forward_ratio)), v)
    np.log(v, v)
    np.multiply(v, u, v)
    np.multiply(w, _HALF, w)
    np.subtract(v, w, v)  # v = ln(K/F₀)/w − w/2
    np.multiply(u, v, uv)
    np.add(uv, _ONE, uv)
    np.multiply(coef, np.array(move * center * carry * INV_SQRT_2PI / sqrt_t), scaled)
    if m < iv.shape[0]:
        terms = terms.take(rows, 1, None, "clip")  # C-ordered (terms[:, rows] is not)
    np.multiply(terms[:2], terms[:2], terms[:2])  # u², v²
    return terms[:3], terms[3], center


def _profile_at(levels: FloatArray, terms: _ProfileTerms, left: FloatArray | None = None) -> FloatArray:
    """``move·S'·carry/√t · Σ sign·OI/σ·φ(d1)`` at each level: two matrix products, one
    ``exp`` and its floor (see :func:`_profile_terms`). ``left``: the exponent rows of ``levels`` when the
    caller has them (cached for the gamma-flip grid). Call under ``np.errstate(all="ignore")``."""
    right, coef, center = terms
    if left is None:
        c = np.multiply(levels, np.array(1.0 / center))
        np.log(c, c)
        left = _exponent_rows(c)
    z = np.dot(left, right)  # −d1²/2 + c per (level, leg) (np.dot: less overhead than @)
    np.maximum(z, _EXP_FLOOR, out=z)  # avoid numpy's slow underflow path
    np.exp(z, z)
    total: FloatArray = np.dot(z, coef)
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
    levels = s_grid.reshape(-1)
    usable = levels[np.isfinite(levels) & (levels > 0.0)]
    center = math.sqrt(float(usable.min()) * float(usable.max())) if usable.size else 1.0
    with np.errstate(all="ignore"):
        terms = _profile_terms(
            np.asarray(strikes, dtype=np.float64),
            np.asarray(iv, dtype=np.float64),
            np.asarray(oi_shares, dtype=np.float64),
            np.asarray(signs, dtype=np.float64),
            t,
            center=center,
            forward_ratio=forward_ratio,
            carry=carry,
            move=move,
        )
        if terms is None:
            return np.zeros(s_grid.shape)
        return _profile_at(levels, terms).reshape(s_grid.shape)


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
    found = _nearest_root(lv, vals, near)
    if found is None:
        return None
    root, cell = found
    if refine is None:
        return root
    return _refined_root(root, lv[max(cell, 0)], lv[min(cell + 1, len(lv) - 1)], refine)


def _nearest_root(levels: list[float], values: list[float], near: float) -> tuple[float, int] | None:
    """The grid root nearest to ``near`` and the index of its cell (``bisect_right − 1``:
    −1 or the last index when it lies on the grid's edge); None without a sign change."""
    roots = _crossings(levels, values)
    if not roots:
        return None
    root = _nearest(roots, near)
    return root, bisect.bisect_right(levels, root) - 1


def _refined_root(root: float, lo: float, hi: float, refine: Callable[[FloatArray], FloatArray]) -> float:
    """The crossing nearest to ``root`` on the :data:`_REFINE_POINTS`-level re-sampling of
    ``[lo, hi]`` (``root`` itself when the cell is empty or the re-sampling has none)."""
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
    trusted: bool = False,
) -> tuple[float | None, FloatArray, FloatArray]:
    """:func:`gamma_flip` on float64 arrays, under the caller's ``errstate``; ``trusted``
    as in :func:`_profile_terms`."""
    if not (spot > 0.0 and math.isfinite(spot)):
        empty = np.empty(0)
        return None, empty, empty
    flip_range, points = float(flip_range), max(int(points), 2)
    grid = spot * _grid_factors(flip_range, points)
    if not (t > 0.0 and math.isfinite(t)):
        return None, grid, np.full(grid.shape, np.nan)
    terms = _profile_terms(
        strikes,
        iv,
        oi_shares,
        signs,
        t,
        center=spot,
        forward_ratio=forward_ratio,
        carry=carry,
        move=move,
        trusted=trusted,
    )
    if terms is None:
        return None, grid, np.zeros(grid.shape)
    left, cells = _grid_exponent_rows(flip_range, points)
    profile = _profile_at(grid, terms, left)
    vals: list[float] = profile.tolist()
    if not all(map(math.isfinite, vals)):
        return zero_crossing(grid, profile, spot, lambda levels: _profile_at(levels, terms)), grid, profile
    # zero_crossing without NaN samples: its cells are the grid's, whose re-sampled levels
    # have cached exponent rows.
    lv: list[float] = grid.tolist()
    found = _nearest_root(lv, vals, spot)
    if found is None:
        return None, grid, profile
    root, cell = found
    lo, hi = max(cell, 0), min(cell + 1, points - 1)
    cell_left = cells[lo] if hi == lo + 1 else None
    flip = _refined_root(root, lv[lo], lv[hi], lambda levels: _profile_at(levels, terms, cell_left))
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
