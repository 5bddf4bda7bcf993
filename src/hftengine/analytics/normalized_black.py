"""The normalised Black function, its inverse and the Greeks it shares with BSM and Black-76.

Every European option price in this package reduces to one dimensionless
problem. With the discounted forward ``Fd = D·F`` (``S·e^{-qt}`` for BSM,
``F·e^{-rt}`` for Black-76), the discounted strike ``Kd = D·K``, the
log-moneyness ``x = ln(Fd/Kd) = ln(F/K)``, ``a = |x|`` and the total
volatility ``s = σ·√t``, the out-of-the-money leg (the call when ``F <= K``,
the put when ``F > K``) costs::

    otm = min(Fd, Kd) · p(a, s),    p(a, s) = Φ(-a/s + s/2) − e^a · Φ(-a/s − s/2)

and the other leg follows from put-call parity, ``price = otm + max(θ·(Fd − Kd), 0)``
with ``θ = +1`` for calls and ``−1`` for puts. ``p`` is dimensionless and lies
in ``(0, 1)``: ``0`` is the intrinsic value, ``1`` the no-arbitrage upper
bound (``Fd`` for a call, ``Kd`` for a put). Working on the OTM leg avoids the
cancellation of subtracting a large intrinsic value.

Implied volatility inverts ``p`` in ``s``:

1. initial guess from a 128 × 128 table of ``s / (a + √(2π)·p)`` on the
   coordinates ``u = √((a + √(2π)·p) / 3)`` and
   ``v = (1 + 2·ln(1 + a / (√(2π)·p)))^{-1/2}``, bilinear interpolation
   (relative error below 5e-4 inside the table for any ``p > 1e-300``; the coordinates
   make ``s`` a smooth function because for small ``a`` and ``s`` the problem
   only depends on the ratio ``a/s``);
2. one Householder step of order 3 (quartic convergence) on ``ln p(s) − ln p*``
   (the logarithm keeps the step quartic deep in the wings);
3. an exact evaluation at the result, which is both the convergence test (the
   remaining Newton correction below ``1e-12·s``, or the residual at round-off)
   and the source of the ``Φ`` values the Greeks need. Rows that fail it (about
   1 in 10 000 on the benchmark: prices below ~1e-130, huge volatilities,
   outside the table) go through a bracketed Householder iteration on ``ln p``
   evaluated with ``erfcx`` (no underflow), in one batched pass.

Cost per option: 4 ``scipy.special.ndtr`` calls (≈ 60 ns together) and ~150
vectorised elementwise operations on cache-sized blocks. For one chain (a few hundred
rows) each numpy call costs more than its arithmetic: :func:`solve_total_vol_small`
runs the same operations with as little per-call overhead as possible.

Only numpy, ``scipy.special`` and the standard library are used.
"""

from __future__ import annotations

import functools
import math
import threading
from typing import Final

import numpy as np
from numpy.typing import NDArray
from scipy.special import erfcx, ndtr, ndtri

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

try:  # the C function: np.count_nonzero wraps it in Python (array-function dispatch), 4x its cost
    from numpy._core.multiarray import count_nonzero as _c_count_nonzero
except ImportError:  # pragma: no cover (other numpy layouts)
    _c_count_nonzero = np.count_nonzero
_count_nonzero = _c_count_nonzero

SQRT_2PI: Final = math.sqrt(2.0 * math.pi)
INV_SQRT_2PI: Final = 1.0 / SQRT_2PI
_INV_SQRT2: Final = 1.0 / math.sqrt(2.0)
_EPS: Final = float(np.finfo(np.float64).eps)

#: Table geometry for the initial guess.
TABLE_NU: Final = 128
TABLE_NV: Final = 128
TABLE_RHO_MAX: Final = 3.0

#: Convergence: the remaining Newton correction must be below this fraction of ``s``
#: (or the residual must be at the round-off level of the two ``Φ`` terms).
S_REL_TOL: Final = 1e-12
_RESIDUAL_ULPS: Final = 8.0 * _EPS
_MAX_REFINE_ITERATIONS: Final = 100


# --------------------------------------------------------------------------- forward
def otm_price(a: FloatArray, s: FloatArray) -> FloatArray:
    """Normalised OTM price ``p(a, s) = Φ(-a/s + s/2) − e^a·Φ(-a/s − s/2)`` (dimensionless).

    ``a >= 0`` is the absolute log-moneyness, ``s = σ√t`` the total volatility.
    ``s == 0`` gives ``0`` (intrinsic). NaN for NaN input or negative ``s``.
    """
    with np.errstate(all="ignore"):
        d1 = s * 0.5 - a / s
        p = ndtr(d1) - np.exp(a) * ndtr(d1 - s)
        # Past the point where both terms underflow the difference is exactly 0; the
        # erfcx form keeps full relative accuracy there (and for any d1 < 0).
        tiny = (d1 < -5.0) & (s > 0.0)
        if np.any(tiny):
            p = np.where(tiny, _otm_price_erfcx(a, s), p)
        p = np.where(s == 0.0, 0.0, p)
        p = np.where(s < 0.0, np.nan, p)
        p = np.maximum(p, 0.0)  # round-off may leave -1e-17 where the price is 0
    result: FloatArray = np.asarray(p, dtype=np.float64)
    return result


def _otm_price_erfcx(a: FloatArray, s: FloatArray) -> FloatArray:
    """``p(a, s) = ½·exp(-d1²/2)·(erfcx(-d1/√2) − erfcx(-d2/√2))`` (uses ``e^a·φ(d2) = φ(d1)``)."""
    d1 = s * 0.5 - a / s
    d2 = d1 - s
    diff = erfcx(-d1 * _INV_SQRT2) - erfcx(-d2 * _INV_SQRT2)
    result: FloatArray = 0.5 * np.exp(-0.5 * d1 * d1) * diff
    return result


def _log_otm_price(a: FloatArray, s: FloatArray) -> tuple[FloatArray, FloatArray]:
    """``ln p(a, s)`` and ``w = p'/p`` (per unit ``s``) without underflow, via ``erfcx``.

    ``p' = ∂p/∂s = φ(d1)``. For ``d1 >= 0`` the plain form is accurate (``p`` is not small).
    """
    d1 = s * 0.5 - a / s
    d2 = d1 - s
    low = d1 < 0.0
    e1 = erfcx(-d1 * _INV_SQRT2)
    e2 = erfcx(-d2 * _INV_SQRT2)
    diff = e1 - e2
    log_p_low = np.log(0.5 * diff) - 0.5 * d1 * d1
    w_low = 2.0 * INV_SQRT_2PI / diff
    p_high = ndtr(d1) - np.exp(a) * ndtr(d2)
    phi1 = INV_SQRT_2PI * np.exp(-0.5 * d1 * d1)
    log_p = np.where(low, log_p_low, np.log(p_high))
    w = np.where(low, w_low, phi1 / p_high)
    return log_p, w


# --------------------------------------------------------------------------- guess table
def _bisect_total_vol(a: FloatArray, log_p: FloatArray, iterations: int = 64) -> FloatArray:
    """Slow, safe inverse of ``ln p`` by bisection on ``ln s`` in ``[1e-14, 40]`` (table
    building). Works in logs, so prices far below the double range are fine."""
    lo = np.full(a.shape, math.log(1e-14))
    hi = np.full(a.shape, math.log(40.0))
    with np.errstate(all="ignore"):
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            above = _log_otm_price(a, np.exp(mid))[0] > log_p
            hi = np.where(above, mid, hi)
            lo = np.where(above, lo, mid)
    result: FloatArray = np.exp(0.5 * (lo + hi))
    return result


@functools.cache
def guess_table() -> FloatArray:
    """Bilinear coefficients of ``τ = s / rho``, shape ``(4, TABLE_NU * TABLE_NV)``, built once (~0.1 s, on first use).

    Row ``k`` at flat cell ``i·NV + j`` holds ``c_k`` of
    ``(t00, t10 − t00, t01 − t00, t11 − t10 − t01 + t00)`` so that
    ``τ = c0 + wu·(c1 + wv·c3) + wv·c2`` with in-cell weights ``wu, wv`` in ``[0, 1)``.
    Grid nodes are solved by bisection on ``ln p`` (``erfcx`` form), so the table does not
    depend on the fast solver and covers prices far below the double range.
    """
    u = np.linspace(0.0, 1.0, TABLE_NU)
    v = np.linspace(0.0, 1.0, TABLE_NV)
    uu, vv = np.meshgrid(u, v, indexing="ij")
    rho = TABLE_RHO_MAX * uu * uu
    rho[0, :] = 1e-9 * TABLE_RHO_MAX  # the rho -> 0 limit (normal-model regime)
    with np.errstate(all="ignore"):
        # Invert the coordinates in logs: ln(1 + a/(√(2π)p)) = (1/v² − 1)/2 =: L, so
        # √(2π)p = rho·e^{-L}, a = −rho·expm1(−L), ln p = ln rho − L − ln √(2π).
        big_l = 0.5 * (1.0 / (vv * vv) - 1.0)
        a = -rho * np.expm1(-big_l)
        log_p = np.log(rho) - big_l - math.log(SQRT_2PI)
        ok = (vv > 0.0) & (log_p < 0.0) & np.isfinite(a)
        tau = np.full(rho.shape, np.nan)
        tau[ok] = _bisect_total_vol(a[ok], log_p[ok]) / rho[ok]
    tau[:, 0] = 0.0  # v -> 0: p/a -> 0, s/a -> 0 (logarithmically)
    # Cells beyond the upper bound p >= 1 hold no option: continue the last valid
    # value along u so that neighbouring cells stay finite (those rows refine anyway).
    for j in range(TABLE_NV):
        col = tau[:, j]
        bad = ~np.isfinite(col)
        if bad.any():
            idx = np.where(~bad, np.arange(TABLE_NU), 0)
            np.maximum.accumulate(idx, out=idx)
            tau[:, j] = col[idx]
    # Bilinear coefficients per cell; the last row/column hold the edge values so
    # that a coordinate exactly on the upper edge (a == 0, rho == TABLE_RHO_MAX)
    # needs no clipping.
    t_next_u = np.vstack([tau[1:], tau[-1:]])
    t_next_v = np.hstack([tau[:, 1:], tau[:, -1:]])
    t_next_uv = np.hstack([t_next_u[:, 1:], t_next_u[:, -1:]])
    coeff = np.stack([tau, t_next_u - tau, t_next_v - tau, t_next_uv - t_next_u - t_next_v + tau]).reshape(
        4, TABLE_NU * TABLE_NV
    )
    table: FloatArray = np.ascontiguousarray(coeff)
    table.setflags(write=False)
    return table


_U_SCALE: Final = (TABLE_NU - 1) ** 2 / TABLE_RHO_MAX


class Scratch:
    """Reusable float64 work buffers for the vectorised hot path.

    numpy allocates a fresh array for every temporary; at cache-sized blocks the
    allocation (and, past glibc's mmap threshold, its page faults) costs more than
    the arithmetic. Kernels ``take()`` buffers and ``give()`` them back; ``reset(n)``
    at the start of a block makes every buffer free again and sets the row count.
    """

    __slots__ = ("_all", "_free", "_ints", "_n", "_size")

    def __init__(self, size: int) -> None:
        self._size = max(int(size), 1)
        self._n = self._size
        self._all: list[FloatArray] = []
        self._free: list[FloatArray] = []
        self._ints = np.empty(self._size, dtype=np.intp)

    def reset(self, n: int) -> None:
        """Start a block of ``n <= size`` rows; all buffers become free."""
        self._n = n
        self._free = list(self._all)

    def take(self) -> FloatArray:
        """A free buffer of the current block length (contents undefined)."""
        buf = self._free.pop() if self._free else self._new()
        return buf[: self._n]

    def take_many(self, count: int) -> list[FloatArray]:
        """``count`` free buffers (one call instead of ``count`` in the hot path)."""
        free, n = self._free, self._n
        while len(free) < count:
            self._new()
            free.append(self._all[-1])
        bufs = [free.pop()[:n] for _ in range(count)]
        return bufs

    def give(self, *bufs: FloatArray) -> None:
        """Return buffers obtained from :meth:`take` (views of the block length)."""
        for buf in bufs:
            base = buf.base
            if isinstance(base, np.ndarray) and base.shape == (self._size,):
                self._free.append(base)

    def index_buffer(self) -> NDArray[np.intp]:
        """The integer buffer for table indices."""
        return self._ints[: self._n]

    def _new(self) -> FloatArray:
        buf = np.empty(self._size, dtype=np.float64)
        self._all.append(buf)
        return buf


_SCRATCH_CACHE: Final = threading.local()


def cached_scratch(size: int) -> Scratch:
    """A :class:`Scratch` of ``size`` rows reused across calls of this thread (a streaming
    worker analyses chain after chain of the same size; re-allocating ~20 buffers per call
    would cost more than some of the kernels)."""
    pool: dict[int, Scratch] | None = getattr(_SCRATCH_CACHE, "pool", None)
    if pool is None:
        pool = {}
        _SCRATCH_CACHE.pool = pool
    scratch = pool.get(size)
    if scratch is None:
        if len(pool) >= 8:
            pool.clear()
        scratch = pool[size] = Scratch(size)
    return scratch


def _scratch_for(n: int, scratch: Scratch | None) -> Scratch:
    if scratch is None:
        scratch = Scratch(n)
        scratch.reset(n)
    return scratch


# The hot kernels below are written as explicit ufunc calls with positional output
# arrays and numpy-scalar constants: on cache-sized blocks the Python-level cost of
# an operator (``x *= 0.5`` converts the float and dispatches twice) is a visible
# share of the run time. Each line keeps the formula in its comment.
_ONE: Final = np.float64(1.0)
_TWO: Final = np.float64(2.0)
_HALF: Final = np.float64(0.5)
_MINUS_HALF: Final = np.float64(-0.5)
_QUARTER: Final = np.float64(0.25)
_MINUS_QUARTER: Final = np.float64(-0.25)
_THREE: Final = np.float64(3.0)
_SIXTH: Final = np.float64(1.0 / 6.0)
#: exp() argument floor: numpy's SIMD exp falls back to a ~20x slower path for results
#: that underflow, and e^-700 ≈ 1e-304 is already far below anything that matters here.
EXP_FLOOR: Final = np.float64(-700.0)
_C_SQRT_2PI: Final = np.float64(SQRT_2PI)
_C_INV_SQRT_2PI: Final = np.float64(INV_SQRT_2PI)
_C_NV_M1: Final = np.float64(TABLE_NV - 1)
_C_U_SCALE: Final = np.float64(_U_SCALE)
_C_NV: Final = np.float64(TABLE_NV)
_C_RES_ULPS: Final = np.float64(_RESIDUAL_ULPS)
_C_S_TOL: Final = np.float64(S_REL_TOL)

_add, _sub, _mul, _div = np.add, np.subtract, np.multiply, np.divide


def initial_total_vol(a: FloatArray, p: FloatArray, scratch: Scratch | None = None) -> FloatArray:
    """Table guess for ``s`` given ``a = |x| >= 0`` and ``p`` in ``(0, 1)``; NaN outside the table.

    ``rho = a + √(2π)·p``, ``fu = (NU−1)·√(rho/rho_max)``, ``fv = (NV−1)/√(1 + 2·ln(rho/(√(2π)p)))``,
    ``s = rho · bilinear(τ; fu, fv)``.
    """
    ws = _scratch_for(a.shape[0], scratch)
    c0, c1, c2, c3 = guess_table()
    rho, fv, fu, cell, tau = ws.take_many(5)
    _mul(p, _C_SQRT_2PI, rho)  # √(2π)·p
    _div(a, rho, fv)  # a/(√(2π)p)
    _add(rho, a, rho)  # rho
    _add(fv, _ONE, fv)
    np.log(fv, fv)
    _mul(fv, _TWO, fv)
    _add(fv, _ONE, fv)
    np.sqrt(fv, fv)
    _div(_C_NV_M1, fv, fv)  # fv = (NV−1)/√(1 + 2 ln(1 + a/(√(2π)p)))
    _mul(rho, _C_U_SCALE, fu)
    np.sqrt(fu, fu)  # fu = (NU−1)·√(rho/rho_max)
    np.floor(fu, cell)
    outside = cell > TABLE_NU - 1
    _sub(fu, cell, fu)  # wu
    _mul(cell, _C_NV, cell)
    np.floor(fv, tau)
    _sub(fv, tau, fv)  # wv
    _add(cell, tau, cell)  # flat cell index
    idx = ws.index_buffer()
    np.copyto(idx, cell, casting="unsafe")
    c3.take(idx, None, tau, "clip")
    _mul(tau, fv, tau)
    c1.take(idx, None, cell, "clip")
    _add(tau, cell, tau)
    _mul(tau, fu, tau)  # wu·(c1 + wv·c3)
    c2.take(idx, None, cell, "clip")
    _mul(cell, fv, cell)
    _add(tau, cell, tau)
    c0.take(idx, None, cell, "clip")
    _add(tau, cell, tau)  # τ
    _mul(tau, rho, tau)  # s = τ·rho
    if outside.any():
        tau[outside] = np.nan
    ws.give(rho, fv, fu, cell)
    return tau


def householder_step(
    a: FloatArray, s: FloatArray, p_target: FloatArray, ea: FloatArray, scratch: Scratch | None = None
) -> FloatArray:
    """One order-3 Householder step on ``g(s) = ln p(a, s) − ln p*``; returns the new ``s``.

    With ``w = p'/p`` (``p' = φ(d1)``), ``h2 = p''/p' = a²/s³ − s/4`` and
    ``h3 = p'''/p' = h2² − 3a²/s⁴ − 1/4``: ``g' = w``, ``H2 = g''/g' = h2 − w``,
    ``H3 = g'''/g' = h3 − 3·h2·w + 2w²``, ``ν = −g/g'`` and
    ``Δs = ν·(1 + H2·ν/2) / (1 + ν·(H2 + H3·ν/6))``. The logarithm keeps the step
    quartically convergent deep in the wings, where ``p`` is exponentially small.
    """
    ws = _scratch_for(a.shape[0], scratch)
    inv_s, xs, d1, p, w, tmp = ws.take_many(6)
    _div(_ONE, s, inv_s)
    _mul(a, inv_s, xs)  # a/s
    _mul(s, _HALF, d1)
    _sub(d1, xs, d1)  # d1 = s/2 − a/s
    ndtr(d1, p)
    _sub(d1, s, tmp)
    ndtr(tmp, tmp)
    _mul(tmp, ea, tmp)
    _sub(p, tmp, p)  # p = Φ(d1) − e^a Φ(d2)
    _mul(d1, d1, d1)
    _mul(d1, _MINUS_HALF, d1)
    np.maximum(d1, EXP_FLOOR, out=d1)
    np.exp(d1, w)
    _mul(w, _C_INV_SQRT_2PI, w)
    _div(w, p, w)  # w = φ(d1)/p
    nu = d1
    _div(p_target, p, nu)
    np.log(nu, nu)
    _div(nu, w, nu)  # ν = ln(p*/p)/w
    _mul(xs, xs, xs)
    _mul(xs, inv_s, xs)  # a²/s³
    h2 = p
    _mul(s, _MINUS_QUARTER, h2)
    _add(h2, xs, h2)  # h2 = a²/s³ − s/4
    _mul(xs, inv_s, xs)  # a²/s⁴
    h3 = inv_s
    _mul(h2, h2, h3)
    _mul(xs, _THREE, xs)
    _sub(h3, xs, h3)
    _sub(h3, _QUARTER, h3)  # h3 = h2² − 3a²/s⁴ − 1/4
    _mul(w, _TWO, tmp)
    _mul(tmp, w, tmp)  # 2w²
    _add(h3, tmp, h3)
    _mul(h2, w, tmp)
    _mul(tmp, _THREE, tmp)
    _sub(h3, tmp, h3)  # H3 = h3 − 3 h2 w + 2 w²
    _sub(h2, w, h2)  # H2 = h2 − w
    num = xs
    _mul(h2, _HALF, num)
    _mul(num, nu, num)
    _add(num, _ONE, num)  # 1 + H2 ν/2
    _mul(h3, nu, h3)
    _mul(h3, _SIXTH, h3)
    _add(h3, h2, h3)
    _mul(h3, nu, h3)
    _add(h3, _ONE, h3)  # 1 + ν(H2 + H3 ν/6)
    _mul(num, nu, num)
    _div(num, h3, num)
    _add(num, s, num)  # s + Δs
    ws.give(inv_s, d1, p, w, tmp)
    return num


def evaluate(
    a: FloatArray, s: FloatArray, p_target: FloatArray, ea: FloatArray, scratch: Scratch | None = None
) -> tuple[FloatArray, FloatArray, FloatArray, BoolArray]:
    """``Φ(d1)``, ``Φ(d2)``, ``φ(d1)`` (reduced ``d1 = -a/s + s/2``) and the convergence mask at ``s``.

    Converged: the remaining Newton correction ``|p(s) − p*|/φ(d1)`` is below
    ``S_REL_TOL·s``, or the residual is at the round-off level of the two ``Φ`` terms.
    """
    ws = _scratch_for(a.shape[0], scratch)
    d1, n1, n2, phi, tmp = ws.take_many(5)
    _div(a, s, tmp)
    _mul(s, _HALF, d1)
    _sub(d1, tmp, d1)  # d1 = s/2 − a/s
    ndtr(d1, n1)
    _sub(d1, s, tmp)
    ndtr(tmp, n2)
    _mul(d1, d1, phi)
    _mul(phi, _MINUS_HALF, phi)
    np.maximum(phi, EXP_FLOOR, out=phi)
    np.exp(phi, phi)
    _mul(phi, _C_INV_SQRT_2PI, phi)  # φ(d1)
    ean2 = d1
    _mul(ea, n2, ean2)
    _sub(n1, ean2, tmp)
    _sub(tmp, p_target, tmp)
    np.abs(tmp, tmp)  # |p(s) − p*|
    _add(ean2, n1, ean2)
    _mul(ean2, _C_RES_ULPS, ean2)
    converged = tmp <= ean2  # residual at round-off level
    _mul(s, phi, ean2)
    _mul(ean2, _C_S_TOL, ean2)
    converged |= tmp <= ean2  # Newton correction below S_REL_TOL·s
    ws.give(d1, tmp)
    return n1, n2, phi, converged


def _fallback_guess(a: FloatArray, p: FloatArray) -> FloatArray:
    """Crude start for rows outside the table: the ATM inversion ``s = 2Φ⁻¹((1+p)/2)`` or the
    leading wing asymptotic ``s ≈ a / √(2 ln(a/p))``, whichever applies."""
    s_atm = -2.0 * ndtri(0.5 * (1.0 - p))
    with np.errstate(all="ignore"):
        s_wing = a / np.sqrt(2.0 * np.log(np.maximum(a / p, 1.0 + 1e-9)))
    s = np.where(p < 0.1 * a, s_wing, np.maximum(s_atm, math.sqrt(2.0) * np.sqrt(a)))
    result: FloatArray = np.where(np.isfinite(s) & (s > 0.0), s, 1.0)
    return result


def refine(a: FloatArray, p: FloatArray, s0: FloatArray) -> tuple[FloatArray, BoolArray]:
    """Robust solver for the few rows the fast path leaves unconverged.

    Bracketed order-3 Householder iteration on ``ln p(s) − ln p*`` (``erfcx`` form, no
    underflow); a step that leaves the bracket is replaced by bisection (geometric
    when the bracket is finite). Returns ``s`` and a converged mask.

    The rows are few (a chain's far wings), so every iteration works on all of them and
    freezes the converged ones with masks instead of gathering and scattering the active
    ones: a third of the numpy calls per iteration, the same arithmetic in the same order.
    """
    n = a.shape[0]
    s = np.where(np.isfinite(s0) & (s0 > 0.0), s0, _fallback_guess(a, p))
    lo = np.zeros(n)
    hi = np.full(n, np.inf)
    log_target = np.log(p)
    done = np.zeros(n, dtype=np.bool_)
    mul, add, sub, div, where = np.multiply, np.add, np.subtract, np.divide, np.where
    with np.errstate(all="ignore"):
        for _ in range(_MAX_REFINE_ITERATIONS):
            if _count_nonzero(done) == n:
                break
            log_p, w = _log_otm_price(a, s)
            g = sub(log_p, log_target)
            live = ~done
            up = g > _K_ZERO
            hi = where(up & live, np.minimum(hi, s), hi)
            lo = where(live & ~up, np.maximum(lo, s), lo)  # ~up: also a NaN g
            inv_s = div(_K_ONE, s)
            xs2 = mul(a, inv_s)
            mul(xs2, xs2, xs2)
            h2 = mul(xs2, inv_s)
            sub(h2, mul(s, _K_QUARTER), h2)
            h3 = mul(h2, h2)
            t = mul(xs2, _K_THREE)
            mul(t, inv_s, t)
            mul(t, inv_s, t)
            sub(h3, t, h3)
            sub(h3, _K_QUARTER, h3)
            big_h2 = sub(h2, w)
            big_h3 = mul(h2, _K_THREE)
            mul(big_h3, w, big_h3)
            sub(h3, big_h3, big_h3)
            mul(w, _K_TWO, t)
            mul(t, w, t)
            add(big_h3, t, big_h3)
            nu = np.negative(g)
            div(nu, w, nu)
            num = mul(big_h2, _K_HALF)
            mul(num, nu, num)
            add(_K_ONE, num, num)
            mul(nu, num, num)
            den = mul(big_h3, nu)
            div(den, _K_SIX, den)
            add(big_h2, den, den)
            mul(nu, den, den)
            add(_K_ONE, den, den)
            new = add(s, div(num, den, num))
            newton = add(s, nu)
            bisect = where(
                np.isfinite(hi),
                where(lo > _K_ZERO, np.sqrt(mul(lo, hi)), mul(_K_HALF, hi)),
                mul(_K_TWO, np.maximum(s, lo)),
            )
            new = where(_in_bracket(new, lo, hi), new, where(_in_bracket(newton, lo, hi), newton, bisect))
            exact = np.abs(g) <= _K_EXACT
            new = where(exact, s, new)
            conv = np.abs(sub(new, s)) <= mul(_K_STEP_TOL, new)
            conv |= exact
            conv |= np.isfinite(hi) & (sub(hi, lo) <= mul(_K_BRACKET_TOL, hi))
            s = where(done, s, new)
            done |= conv
    ok = done & np.isfinite(s) & (s > 0.0)
    return s, ok


def _in_bracket(x: FloatArray, lo: FloatArray, hi: FloatArray) -> BoolArray:
    """``x`` finite, positive and inside ``[lo, hi]``."""
    inside = np.isfinite(x)
    inside &= x > _K_ZERO
    inside &= x >= lo
    inside &= x <= hi
    return inside


def _const(value: float) -> FloatArray:
    """A read-only 0-d float64 array: as a ufunc operand it is dispatched ~0.15 µs faster
    than a numpy scalar (and ~0.25 µs faster than a Python float), which is most of the
    cost of an elementwise operation on a few hundred rows."""
    arr: FloatArray = np.array(value, dtype=np.float64)
    arr.setflags(write=False)
    return arr


_K_ZERO: Final = _const(0.0)
_K_ONE: Final = _const(1.0)
_K_SIX: Final = _const(6.0)
_K_EXACT: Final = _const(16.0 * _EPS)
_K_STEP_TOL: Final = _const(4.0 * S_REL_TOL)
_K_BRACKET_TOL: Final = _const(4.0 * _EPS)
_K_TWO: Final = _const(2.0)
_K_THREE: Final = _const(3.0)
_K_HALF: Final = _const(0.5)
_K_MINUS_HALF: Final = _const(-0.5)
_K_QUARTER: Final = _const(0.25)
_K_MINUS_QUARTER: Final = _const(-0.25)
_K_SIXTH: Final = _const(1.0 / 6.0)
_K_EXP_FLOOR: Final = _const(float(EXP_FLOOR))
_K_SQRT_2PI: Final = _const(SQRT_2PI)
_K_INV_SQRT_2PI: Final = _const(INV_SQRT_2PI)
_K_NV_M1: Final = _const(TABLE_NV - 1)
_K_U_SCALE: Final = _const(_U_SCALE)
_K_NV: Final = _const(TABLE_NV)
_K_RES_ULPS: Final = _const(_RESIDUAL_ULPS)
_K_S_TOL: Final = _const(S_REL_TOL)


@functools.cache
def _guess_table_nan_edge() -> FloatArray:
    """:func:`guess_table` with one more column of NaN: a flat index past the table (a
    row outside it) clipped onto that column gives the NaN guess that
    :func:`initial_total_vol` sets with a mask."""
    table = guess_table()
    edged: FloatArray = np.concatenate((table, np.full((4, 1), np.nan)), axis=1)
    edged.setflags(write=False)
    return edged


def solve_total_vol_small(a: FloatArray, p: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray, BoolArray]:
    """:func:`solve_total_vol` for one small batch (a chain: a few hundred rows).

    The same three stages with the same floating-point operations in the same order, so
    the results are bit for bit those of :func:`solve_total_vol`; only the Python-level
    cost differs (a fresh array per temporary instead of scratch bookkeeping, 0-d
    constants, one table gather, both ``Φ`` of a stage in one ``ndtr`` call). Every
    row must be solvable in principle: 1-d, ``0 < p < 1``, finite ``a >= 0``.

    Returns ``s``, ``Φ`` as a ``(2, m)`` array (rows ``Φ(d1)``, ``Φ(d2)``, reduced),
    ``φ(d1)`` and the ok mask; unconverged rows go through :func:`refine`. ``s``, the
    ``Φ`` pair and ``φ`` are the rows of one ``(4, m)`` array (``s.base``), so a caller
    can scatter them in one assignment.
    """
    with np.errstate(all="ignore"):
        return _solve_total_vol_small(a, p)


def _solve_total_vol_small(
    a: FloatArray, p: FloatArray, pad: bool = False
) -> tuple[FloatArray, FloatArray, FloatArray, BoolArray]:
    """:func:`solve_total_vol_small` under the caller's ``errstate``. ``pad``: the ``(4, m)``
    rows sit in columns ``1 … m`` of a ``(4, m + 1)`` array whose column 0 is NaN, so a
    caller can spread them over a longer chain with one ``take`` (index 0 for no IV)."""
    # Independent rows that take the same operation share one call on a (2, m) array:
    # the two table coordinates (square root, floor, fraction), the two wv products of
    # the bilinear form, the Householder numerator and denominator.
    mul, div, add, sub = np.multiply, np.divide, np.add, np.subtract
    m = a.shape[0]
    ea = np.exp(a)
    # Table guess (see initial_total_vol): rho, fu, fv, cell, tau.
    rho = mul(p, _K_SQRT_2PI)
    fuv = np.empty((2, m))  # fu, fv; then their fractions wu, wv
    fu, fv = fuv[0], fuv[1]
    div(a, rho, fv)
    add(rho, a, rho)
    add(fv, _K_ONE, fv)
    np.log(fv, fv)
    mul(fv, _K_TWO, fv)
    add(fv, _K_ONE, fv)
    mul(rho, _K_U_SCALE, fu)
    np.sqrt(fuv, fuv)  # fu
    div(_K_NV_M1, fv, fv)  # fv
    cells = np.floor(fuv)
    sub(fuv, cells, fuv)  # wu, wv
    cell = cells[0]
    mul(cell, _K_NV, cell)
    add(cell, cells[1], cell)
    # Rows outside the table (cell_u > NU − 1) land at or past the extra NaN column.
    coef = _guess_table_nan_edge().take(cell.astype(np.intp), 1, None, "clip")
    if pad:
        padded = np.empty((4, m + 1))
        padded[:, 0] = np.nan
        out = padded[:, 1:]
    else:
        out = np.empty((4, m))  # s, Φ(d1), Φ(d2), φ(d1)
    s, n1, n2, phi = out[0], out[1], out[2], out[3]  # not `= out`: ends with a formatted IndexError
    n12 = out[1:3]
    c23 = mul(coef[2:4], fv)  # c2·wv, c3·wv
    add(c23[1], coef[1], s)
    mul(s, fu, s)
    add(s, c23[0], s)
    add(s, coef[0], s)
    mul(s, rho, s)  # s0, NaN outside the table
    # One Householder step (see householder_step); both Φ in one call.
    d12 = np.empty((2, m))
    d1, d2 = d12[0], d12[1]
    inv_s = div(_K_ONE, s)
    xs = mul(a, inv_s)
    mul(s, _K_HALF, d1)
    sub(d1, xs, d1)
    sub(d1, s, d2)
    ndtr(d12, n12)
    w = mul(n2, ea)
    sub(n1, w, n1)  # p(s)
    pp = n1
    mul(d1, d1, d1)
    mul(d1, _K_MINUS_HALF, d1)
    np.maximum(d1, _K_EXP_FLOOR, out=d1)
    np.exp(d1, w)
    mul(w, _K_INV_SQRT_2PI, w)
    div(w, pp, w)
    nu = d1
    div(p, pp, nu)
    np.log(nu, nu)
    div(nu, w, nu)
    mul(xs, xs, xs)
    mul(xs, inv_s, xs)
    hh = np.empty((4, m))  # 1, H2, H2/2, H3
    hh[0] = 1.0
    h2, h3 = hh[1], hh[3]
    mul(s, _K_MINUS_QUARTER, h2)
    add(h2, xs, h2)
    mul(xs, inv_s, xs)
    mul(h2, h2, h3)
    mul(xs, _K_THREE, xs)
    sub(h3, xs, h3)
    sub(h3, _K_QUARTER, h3)
    tmp = d2
    mul(w, _K_TWO, tmp)
    mul(tmp, w, tmp)
    add(h3, tmp, h3)
    mul(h2, w, tmp)
    mul(tmp, _K_THREE, tmp)
    sub(h3, tmp, h3)
    sub(h2, w, h2)
    # Numerator 1 + H2ν/2 and denominator 1 + ν(H2 + H3ν/6) side by side, with the block
    # path's roundings: (H2·½·ν + 1)·ν and (H3·ν·⅙ + H2)·ν (+ 1).
    mul(h2, _K_HALF, hh[2])
    nd = mul(hh[2:], nu)
    mul(nd[1], _K_SIXTH, nd[1])
    add(nd, hh[:2], nd)
    mul(nd, nu, nd)
    add(nd[1], _K_ONE, nd[1])
    div(nd[0], nd[1], nd[0])
    add(nd[0], s, s)  # s + Δs
    # Exact evaluation and convergence test (see evaluate).
    div(a, s, tmp)
    mul(s, _K_HALF, d1)
    sub(d1, tmp, d1)
    sub(d1, s, d2)
    ndtr(d12, n12)
    mul(d1, d1, phi)
    mul(phi, _K_MINUS_HALF, phi)
    np.maximum(phi, _K_EXP_FLOOR, out=phi)
    np.exp(phi, phi)
    mul(phi, _K_INV_SQRT_2PI, phi)
    ean2 = mul(ea, n2)
    sub(n1, ean2, tmp)
    sub(tmp, p, tmp)
    np.abs(tmp, tmp)
    add(ean2, n1, ean2)
    mul(ean2, _K_RES_ULPS, ean2)
    ok = tmp <= ean2
    mul(s, phi, ean2)
    mul(ean2, _K_S_TOL, ean2)
    ok |= tmp <= ean2
    if _count_nonzero(ok) != m:
        bad = (~ok).nonzero()[0]
        ab, pb = a[bad], p[bad]
        s_b, ok_b = refine(ab, pb, s[bad])
        s[bad] = s_b
        d1b = s_b * 0.5 - ab / s_b
        n1[bad] = ndtr(d1b)
        n2[bad] = ndtr(d1b - s_b)
        phi[bad] = INV_SQRT_2PI * np.exp(-0.5 * d1b * d1b)
        ok[bad] = ok_b
    return s, n12, phi, ok


def solve_total_vol(
    a: FloatArray, p: FloatArray, scratch: Scratch | None = None, *, refine_unconverged: bool = True
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, BoolArray]:
    """Invert ``p(a, s)``: returns ``s, Φ(d1), Φ(d2), φ(d1)`` (reduced, at the returned ``s``), ok.

    Inputs must be 1-d with ``0 < p < 1`` and finite ``a >= 0`` wherever a result is wanted;
    other rows give garbage that the caller masks. Never raises, never warns. The returned
    arrays are ``scratch`` buffers when a :class:`Scratch` is passed. With
    ``refine_unconverged=False`` the rows that fail the convergence test are only
    reported in ``ok`` (callers that work in blocks collect and refine them once).
    """
    ws = _scratch_for(a.shape[0], scratch)
    with np.errstate(all="ignore"):
        ea = ws.take()
        np.exp(a, out=ea)
        s0 = initial_total_vol(a, p, ws)
        s = householder_step(a, s0, p, ea, ws)
        ws.give(s0)
        n1, n2, phi, converged = evaluate(a, s, p, ea, ws)
        ws.give(ea)
        ok = converged
        if refine_unconverged and not converged.all():
            bad = np.flatnonzero(~converged & (p > 0.0) & (p < 1.0) & np.isfinite(a))
            if bad.size:
                ab, pb = a[bad], p[bad]
                s_b, ok_b = refine(ab, pb, s[bad])
                s[bad] = s_b
                d1 = s_b * 0.5 - ab / s_b
                n1[bad] = ndtr(d1)
                n2[bad] = ndtr(d1 - s_b)
                phi[bad] = INV_SQRT_2PI * np.exp(-0.5 * d1 * d1)
                ok = converged.copy()
                ok[bad] = ok_b
    return s, n1, n2, phi, ok
