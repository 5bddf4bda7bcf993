"""Implied volatility (and Greeks at it) for Black-Scholes-Merton and Black-76 prices.

``σ`` solves ``price = V(σ)``; it is NaN where no volatility reproduces the
price: at or below intrinsic, at or above the no-arbitrage upper bound
(``S·e^{-qt}`` for calls, ``K·e^{-rt}`` for puts), ``t <= 0``, or non-finite /
non-positive inputs. The reason is reported per row as an :class:`IVStatus`.

The solver works on the out-of-the-money equivalent price (put-call parity),
normalised to ``p = otm / min(Fd, Kd)`` in ``(0, 1)``, and is described in
:mod:`hftengine.analytics.normalized_black`: table guess, one quartic
Householder step, an exact evaluation that doubles as convergence test and
Greeks input, and a bracketed fallback for the rare rows that need it.
Everything runs in vectorised blocks of :data:`BLOCK_SIZE` rows so that the
working set stays in cache; there is no Python loop over options.

:func:`solve_single_expiry` is the same computation for the legs of one chain (one
underlying, one expiry, a few hundred rows), where numpy's per-call overhead, not the
arithmetic, sets the cost: scalar discount factors, only solvable rows solved, status
codes and Greeks in as few calls as possible, bit for bit the same results.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

import numpy as np
import numpy.typing as npt
from numpy.typing import NDArray

from hftengine.analytics.greeks import Greeks, assemble_greeks
from hftengine.analytics.normalized_black import (
    FloatArray,
    Scratch,
    _count_nonzero,
    _solve_total_vol_small,
    cached_scratch,
    solve_total_vol,
)

#: Rows per vectorised block: ~20 scratch buffers of 80 KiB stay in the 2 MiB L2 (tuned on the bench).
BLOCK_SIZE: Final = 10240


class IVStatus(IntEnum):
    """Per-row outcome of the implied-volatility solver (``int8`` codes)."""

    OK = 0
    BELOW_INTRINSIC = 1  #: price <= intrinsic value (incl. negative prices)
    ABOVE_UPPER_BOUND = 2  #: price >= S·e^{-qt} (call) or K·e^{-rt} (put)
    EXPIRED = 3  #: t <= 0
    INVALID_INPUT = 4  #: non-finite input, S <= 0 or K <= 0
    NOT_CONVERGED = 5  #: solvable in principle but the solver gave up (never seen in tests)


@dataclass(frozen=True, slots=True)
class IVResult:
    """Implied volatility, Greeks at it and a status code per row (arrays of the broadcast shape)."""

    iv: FloatArray
    greeks: Greeks
    status: NDArray[np.int8]


Scalar = float | bool
_Input = FloatArray | NDArray[np.bool_] | float | bool | np.bool_


def _broadcast(arrays: tuple[npt.ArrayLike, ...]) -> tuple[tuple[int, ...], list[_Input]]:
    """Broadcast shape and flat inputs: 1-d arrays for array inputs, numpy scalars for 0-d ones.

    The first input (the price) is always returned as an array. Kernels write into
    full-length buffers, so scalars broadcast for free and are never materialised.
    """
    converted = [a if type(a) is np.ndarray else np.asarray(a) for a in arrays]
    shape = converted[0].shape
    for c in converted:
        if c.shape != shape and c.ndim:
            shape = np.broadcast_shapes(*(c.shape for c in converted))
            break
    out: list[_Input] = []
    for pos, conv in enumerate(converted):
        if conv.ndim == 0 and pos > 0:
            out.append(np.bool_(conv) if conv.dtype == np.bool_ else np.float64(conv))
            continue
        arr = conv if conv.dtype == np.float64 or conv.dtype == np.bool_ else conv.astype(np.float64)
        if arr.shape != shape:
            arr = np.broadcast_to(arr, shape)
        out.append(arr if arr.ndim == 1 else arr.reshape(-1))
    return shape, out


def _take(values: _Input, index: slice | NDArray[np.intp]) -> _Input:
    return values[index] if isinstance(values, np.ndarray) else values


def _status_codes(
    price: FloatArray,
    u: _Input,
    k: _Input,
    t: _Input,
    r: _Input,
    q: _Input,
    p: FloatArray,
) -> NDArray[np.int8]:
    """Reason codes for rows that failed (inputs restricted to those rows; scalars broadcast).

    Precedence: invalid input, expired, below intrinsic, above the upper bound, not converged.
    """
    code = np.full(p.shape, IVStatus.NOT_CONVERGED, dtype=np.int8)
    code[p >= 1.0] = IVStatus.ABOVE_UPPER_BOUND
    code[p <= 0.0] = IVStatus.BELOW_INTRINSIC
    with np.errstate(invalid="ignore"):
        expired = np.broadcast_to(~(np.asarray(t) > 0.0), p.shape)
        invalid = ~(np.isfinite(price) & np.isfinite(u) & np.isfinite(k) & np.isfinite(t) & np.isfinite(r))
        invalid = invalid | ~(np.isfinite(q) & (np.asarray(u) > 0.0) & (np.asarray(k) > 0.0))
    code[expired] = IVStatus.EXPIRED
    code[np.broadcast_to(invalid, p.shape)] = IVStatus.INVALID_INPUT
    return code


def _iv_block(
    price: FloatArray,
    u: FloatArray | float,
    k: FloatArray | float,
    t: FloatArray | float,
    r: FloatArray | float,
    q: FloatArray | float,
    sign: FloatArray | float,
    *,
    black76: bool,
    scratch: Scratch,
    out: FloatArray,
    out_status: NDArray[np.int8],
    final: bool,
) -> NDArray[np.intp] | None:
    """IV (and Greeks) for one block of 1-d rows; writes into ``out`` (row 0 the IV, rows
    1-7 the Greeks when present) and ``out_status``.

    With ``final=False`` the rows the fast path could not finish (invalid or not
    converged) are returned as block-local indices for one batched second pass;
    with ``final=True`` they are refined here and given their status codes.
    """
    ws = scratch
    ws.reset(price.shape[0])
    sqrt_t, dr, fd, kd, x, a, m, p = ws.take_many(8)
    np.sqrt(t, out=sqrt_t)
    np.multiply(r, t, out=dr)
    np.negative(dr, out=dr)
    np.exp(dr, out=dr)
    dq: FloatArray | float
    if black76:
        dq = dr
    elif isinstance(q, float) and q == 0.0:
        dq = 1.0  # no dividend yield (index options): Fd = S
    else:
        dq = ws.take()
        np.multiply(q, t, out=dq)
        np.negative(dq, out=dq)
        np.exp(dq, out=dq)
    np.multiply(u, dq, out=fd)
    np.multiply(k, dr, out=kd)
    np.divide(fd, kd, out=x)
    np.log(x, out=x)
    np.abs(x, out=a)
    np.minimum(fd, kd, out=m)
    # OTM-equivalent normalised price: p = (price − max(θ(Fd − Kd), 0)) / min(Fd, Kd)
    intrinsic = p
    np.subtract(fd, kd, out=intrinsic)
    intrinsic *= sign
    np.maximum(intrinsic, 0.0, out=intrinsic)
    np.subtract(price, intrinsic, out=p)
    p /= m
    valid = p > 0.0
    valid &= p < 1.0
    valid &= a < np.inf
    valid &= t > 0.0
    s, n1, n2, phi, ok = solve_total_vol(a, p, ws, refine_unconverged=final)
    ok &= valid
    np.divide(s, sqrt_t, out=out[0])
    out_status.fill(IVStatus.OK)
    out_greeks = tuple(out[1:]) if out.shape[0] == 8 else None
    if out_greeks is not None:
        assemble_greeks(
            s=s,
            sqrt_t=sqrt_t,
            t=t,
            x=x,
            n1=n1,
            n2=n2,
            phi=phi,
            m=m,
            fd=fd,
            kd=kd,
            underlying=u,
            carry_discount=dq,
            sign=sign,
            r=r,
            q=r if black76 else q,
            out=out_greeks,
            scratch=ws,
        )
        if black76:  # ∂V/∂r holding the forward fixed
            np.multiply(t, price, out=out_greeks[4])
            np.negative(out_greeks[4], out=out_greeks[4])
    if ok.all():
        return None
    if not final:
        return np.flatnonzero(~ok)
    bad = np.flatnonzero(~ok)
    out[:, bad] = np.nan
    out_status[bad] = _status_codes(
        price[bad], _take(u, bad), _take(k, bad), _take(t, bad), _take(r, bad), _take(q, bad), p[bad]
    )
    return None


def solve_implied_volatility(
    price: npt.ArrayLike,
    underlying: npt.ArrayLike,
    K: npt.ArrayLike,
    t: npt.ArrayLike,
    r: npt.ArrayLike,
    q: npt.ArrayLike,
    is_call: npt.ArrayLike,
    *,
    black76: bool = False,
    with_greeks: bool = True,
) -> IVResult:
    """Shared driver of :func:`implied_volatility_and_greeks` and the Black-76 variant.

    ``underlying`` is the spot ``S`` (BSM, dividend yield ``q``) or the forward ``F``
    (Black-76, ``q`` ignored). Broadcasts all inputs; returns arrays of the broadcast shape.
    """
    shape, (price_f, u_f, k_f, t_f, r_f, q_f, call_f) = _broadcast((price, underlying, K, t, r, q, is_call))
    assert isinstance(price_f, np.ndarray)  # noqa: S101 (type narrowing: the price is always an array)
    sign: FloatArray | float  # θ = +1 call, −1 put
    if isinstance(call_f, np.ndarray):
        sign = np.where(call_f, 1.0, -1.0)
    else:
        sign = np.float64(1.0 if call_f else -1.0)
    inputs = (price_f, u_f, k_f, t_f, r_f, q_f, sign)
    n = price_f.shape[0]
    rows = 8 if with_greeks else 1  # IV, then delta, gamma, theta, vega, rho, vanna, charm
    out = np.empty((rows, n))
    out_status = np.empty(n, dtype=np.int8)
    scratch = cached_scratch(min(n, BLOCK_SIZE))
    with np.errstate(all="ignore"):
        if n <= BLOCK_SIZE:
            _iv_block(
                *inputs,  # type: ignore[arg-type]
                black76=black76,
                scratch=scratch,
                out=out,
                out_status=out_status,
                final=True,
            )
        else:
            leftovers: list[NDArray[np.intp]] = []
            for start in range(0, n, BLOCK_SIZE):
                sl = slice(start, start + BLOCK_SIZE)
                left = _iv_block(
                    *(_take(v, sl) for v in inputs),  # type: ignore[arg-type]
                    black76=black76,
                    scratch=scratch,
                    out=out[:, sl],
                    out_status=out_status[sl],
                    final=False,
                )
                if left is not None:
                    leftovers.append(left + start)
            if leftovers:
                # One batched pass over every row the fast path left (deep wings, invalid
                # input): refinement and status codes, then scatter back.
                idx = np.concatenate(leftovers)
                sub = np.empty((rows, idx.shape[0]))
                sub_status = np.empty(idx.shape[0], dtype=np.int8)
                _iv_block(
                    *(_take(v, idx) for v in inputs),  # type: ignore[arg-type]
                    black76=black76,
                    scratch=Scratch(idx.shape[0]),
                    out=sub,
                    out_status=sub_status,
                    final=True,
                )
                out[:, idx] = sub
                out_status[idx] = sub_status
    if with_greeks:
        greeks = Greeks(*(row.reshape(shape) for row in out[1:]))
    else:
        nan = np.full(shape, np.nan)
        greeks = Greeks(nan, nan, nan, nan, nan, nan, nan)
    return IVResult(iv=out[0].reshape(shape), greeks=greeks, status=out_status.reshape(shape))


_NAN: Final = math.nan


def solve_single_expiry(
    price: FloatArray,
    underlying: float,
    strikes: FloatArray,
    t: float,
    r: float,
    q: float,
    sign: FloatArray,
    *,
    black76: bool = False,
) -> tuple[FloatArray, NDArray[np.int8]]:
    """IV, the seven Greeks and status codes for the legs of one chain (one underlying, one
    expiry): the small-batch form of :func:`solve_implied_volatility`.

    ``price``, ``strikes`` and ``sign`` (+1 call, −1 put) are 1-d float64 arrays of one
    length; ``underlying`` (``S``, or ``F`` with ``black76``), ``t``, ``r``, ``q`` are
    scalars, so the discount factors are computed once and rows that cannot have a
    volatility (outside the no-arbitrage bounds, missing price) never reach the solver.
    Returns ``(out, status)``: ``out`` of shape ``(8, n)`` with rows IV, delta, gamma,
    theta, vega, rho, vanna, charm (units as in :func:`solve_implied_volatility`, NaN
    where there is no IV) and the :class:`IVStatus` codes. Same arithmetic as the
    block path, so the results are bit for bit those of :func:`solve_implied_volatility`.
    """
    with np.errstate(all="ignore"):
        return _solve_single_expiry(price, underlying, strikes, t, r, q, sign, black76)


def _solve_single_expiry(
    price: FloatArray,
    underlying: float,
    strikes: FloatArray,
    t: float,
    r: float,
    q: float,
    sign: FloatArray,
    black76: bool,
    put_call: FloatArray | None = None,
) -> tuple[FloatArray, NDArray[np.int8]]:
    """:func:`solve_single_expiry` without the ``errstate`` (the caller holds one).
    ``put_call``: the ``(2, n)`` rows ``(1 − sign)/2`` and ``(1 + sign)/2`` when the caller
    has them (a chain's are constant)."""
    n = price.shape[0]
    u, t, r, q = float(underlying), float(t), float(r), float(q)
    if not (math.isfinite(u) and u > 0.0 and math.isfinite(t) and math.isfinite(r) and math.isfinite(q)):
        return np.full((8, n), _NAN), np.full(n, IVStatus.INVALID_INPUT, dtype=np.int8)
    if not t > 0.0:
        invalid = ~(np.isfinite(price) & np.isfinite(strikes) & (strikes > 0.0))
        status = np.where(invalid, np.int8(IVStatus.INVALID_INPUT), np.int8(IVStatus.EXPIRED))
        return np.full((8, n), _NAN), status
    # numpy's exp, not math.exp: the block path's discount factors to the last bit.
    dr, dq = np.exp(np.array((-(r * t), -(q * t)))).tolist()
    if black76:
        dq, q = dr, r
    elif q == 0.0:
        dq = 1.0
    fd = u * dq
    kd = np.multiply(strikes, dr)
    x = np.divide(fd, kd)
    np.log(x, x)
    a = np.abs(x)
    m = np.minimum(fd, kd)
    # OTM-equivalent normalised price p = (price − max(θ(Fd − Kd), 0)) / min(Fd, Kd).
    p = np.subtract(fd, kd)
    np.multiply(p, sign, p)
    np.maximum(p, _ZERO, out=p)
    np.subtract(price, p, p)
    np.divide(p, m, p)
    valid = p > _ZERO
    valid &= p < _ONE
    if n and not np.maximum.reduce(a) < _INF:  # a strike of 0, inf or NaN
        valid &= a < _INF
    rows = valid.nonzero()[0]
    count = rows.shape[0]
    if count == n:
        status = np.zeros(n, dtype=np.int8)
        s, n12, phi, ok = _solve_total_vol_small(a, p)
    else:
        status = _unsolvable_status(price, strikes, p, valid)
        if not count:
            return np.full((8, n), _NAN), status
        # Solve the solvable rows only; NaN elsewhere carries through the Greeks. The solved
        # rows come back after a NaN column: row i takes column (its rank among the valid
        # rows) or 0, one take instead of a NaN fill and a (slow) 2-d scatter.
        s_v, _, _, ok = _solve_total_vol_small(a.take(rows), p.take(rows), True)
        column = np.add.accumulate(valid, dtype=np.intp)
        column *= valid
        padded = s_v.base
        assert isinstance(padded, np.ndarray)  # noqa: S101 (type narrowing: s is a row of it)
        solved = padded.take(column, 1)  # s, Φ(d1), Φ(d2), φ(d1)
        s, n12, phi = solved[0], solved[1:3], solved[3]
    if _count_nonzero(ok) != count:
        failed = rows[~ok] if count < n else (~ok).nonzero()[0]
        s[failed] = _NAN
        n12[:, failed] = _NAN
        phi[failed] = _NAN
        status[failed] = IVStatus.NOT_CONVERGED
    out = np.empty((8, n))
    if put_call is None:
        put_call = np.empty((2, n))
        np.subtract(_ONE, sign, put_call[0])
        np.multiply(put_call[0], _HALF, put_call[0])  # 1 for puts, 0 for calls
        np.subtract(_ONE, put_call[0], put_call[1])
    _greeks_single_expiry(out, s, n12, phi, x, m, kd, put_call, price, u, fd, dq, t, r, q, black76=black76)
    if black76 and count < n:  # −t·price is no Greek where there is no volatility
        out[5, ~np.isfinite(s)] = _NAN
    return out, status


_ZERO: Final = np.array(0.0)
_ONE: Final = np.array(1.0)
_INF: Final = np.array(math.inf)


def _unsolvable_status(
    price: FloatArray, strikes: FloatArray, p: FloatArray, valid: NDArray[np.bool_]
) -> NDArray[np.int8]:
    """:func:`_status_codes` for a valid market (finite ``S``, ``t > 0``, ``r``, ``q``):
    OK where ``valid``, else invalid input, below intrinsic, above the upper bound or
    not converged, in that precedence (boolean assignments: no scalar ``np.where``)."""
    code = np.empty(p.shape[0], dtype=np.int8)
    code.fill(_NOT_CONVERGED)
    code[p >= _ONE] = _ABOVE_UPPER_BOUND
    code[p <= _ZERO] = _BELOW_INTRINSIC
    usable = np.isfinite(price)
    usable &= strikes > _ZERO
    usable &= strikes < _INF
    np.logical_not(usable, usable)
    code[usable] = _INVALID_INPUT
    code[valid] = 0  # IVStatus.OK
    return code


# Plain ints: assigning an IntEnum member to an array converts it every time.
_NOT_CONVERGED: Final = int(IVStatus.NOT_CONVERGED)
_ABOVE_UPPER_BOUND: Final = int(IVStatus.ABOVE_UPPER_BOUND)
_BELOW_INTRINSIC: Final = int(IVStatus.BELOW_INTRINSIC)
_INVALID_INPUT: Final = int(IVStatus.INVALID_INPUT)


_HALF: Final = np.array(0.5)
_MINUS_HALF: Final = np.array(-0.5)


def _greeks_single_expiry(
    out: FloatArray,
    s: FloatArray,
    n12: FloatArray,
    phi: FloatArray,
    x: FloatArray,
    m: FloatArray,
    kd: FloatArray,
    put_call: FloatArray,
    price: FloatArray,
    u: float,
    fd: float,
    dq: float,
    t: float,
    r: float,
    q: float,
    *,
    black76: bool,
) -> None:
    """:func:`~hftengine.analytics.greeks.assemble_greeks` with a scalar market, into the
    rows of ``out`` (IV first); the same roundings of the same values, fewer operations.

    The reduced pair ``(P, Q) = (Φ(d1r), Φ(d2r))`` (the rows of ``n12``) maps to the
    actual leg's ``θ·(A, B)``: ``(P, Q)`` for an OTM call, ``(1 − Q, 1 − P)`` for an ITM
    call (``x > 0``), ``(−Q, −P)`` for an OTM put (``x > 0``), ``(P − 1, Q − 1)`` for an ITM
    put: the same single rounding as the block path's ``flip·(P, Q) + c`` with
    ``flip = ±1``, both rows in one ``np.where``. One exact rearrangement: ``−(a − b)·c``
    as ``(b − a)·c``.
    """
    mul, div, sub = np.multiply, np.divide, np.subtract
    # Rows by index: unpacking an ndarray ends its iteration with a formatted IndexError (~1 µs).
    iv, delta, gamma, theta, vega, rho, vanna, charm = out[0], out[1], out[2], out[3], out[4], out[5], out[6], out[7]
    sqrt_t = math.sqrt(t)
    inv_t = 1.0 / t
    div(s, np.array(sqrt_t), iv)
    swap = x > _ZERO
    # θ·(A, B): (call − (Q, P)) where x > 0, else (P, Q) − put.
    big_ab = np.where(swap, sub(put_call[1], n12[::-1]), sub(n12, put_call[0]))
    big_a, big_b = big_ab[0], big_ab[1]
    v0 = mul(m, phi)  # V0 = U e^{-qt} φ(d1)
    inv_u = np.array(1.0 / u)
    v0_u = mul(v0, inv_u)
    if dq == 1.0:
        delta[...] = big_a  # θ·A·1.0, exactly
    else:
        mul(big_a, np.array(dq), delta)
    mul(v0_u, inv_u, gamma)
    div(gamma, s, gamma)
    mul(v0, np.array(sqrt_t), vega)
    mul(v0, s, theta)
    mul(theta, _MINUS_HALF, theta)
    mul(theta, np.array(inv_t), theta)  # −V0 s/(2t) (not folded: not exact for subnormals)
    tmp = mul(big_b, kd)
    mul(tmp, np.array(t), rho)  # θ Kd t B
    mul(tmp, np.array(r), tmp)
    sub(theta, tmp, theta)  # − θ r Kd B
    if q != 0.0:
        mul(big_a, np.array(fd), tmp)
        mul(tmp, np.array(q), tmp)
        np.add(theta, tmp, theta)  # + θ q Fd A
    d2 = div(x, s)
    mul(s, _HALF, tmp)
    sub(d2, tmp, d2)  # d2 = x/s − s/2
    mul(v0_u, d2, vanna)
    mul(vanna, np.array(-sqrt_t), vanna)
    div(vanna, s, vanna)  # −V0/U · d2 √t / s
    mul(d2, np.array(0.5 * inv_t), d2)  # d2/(2t)
    div(np.array(r - q), s, tmp)
    if q != 0.0:
        sub(tmp, d2, tmp)
        mul(tmp, v0_u, tmp)
        mul(delta, np.array(q), charm)
        sub(charm, tmp, charm)  # q·delta − V0/U·((r − q)/s − d2/(2t))
    else:
        sub(d2, tmp, charm)
        mul(charm, v0_u, charm)  # −V0/U·((r − q)/s − d2/(2t))
    if black76:  # ∂V/∂r holding the forward fixed
        mul(price, np.array(-t), rho)


def implied_volatility(
    price: npt.ArrayLike,
    S: npt.ArrayLike,  # noqa: N803 (finance notation)
    K: npt.ArrayLike,  # noqa: N803
    t: npt.ArrayLike,
    r: npt.ArrayLike,
    q: npt.ArrayLike,
    is_call: npt.ArrayLike,
) -> FloatArray:
    """Black-Scholes-Merton implied volatility (per 1.00, annualised), NaN where none exists.

    Solves ``price = S e^{-qt} Φ(θd1)θ − K e^{-rt} Φ(θd2)θ`` for ``σ`` with
    ``d1,2 = (ln(S/K) + (r − q ± σ²/2)t) / (σ√t)``; ``t`` in years (ACT/365),
    ``r`` and ``q`` continuously compounded per year. Broadcasts; never raises on bad rows.
    Accuracy: |σ − σ_true| < 1e-10 wherever φ(d1) > 1e-3 (see the test-suite).
    """
    return solve_implied_volatility(price, S, K, t, r, q, is_call, with_greeks=False).iv


def implied_volatility_and_greeks(
    price: npt.ArrayLike,
    S: npt.ArrayLike,  # noqa: N803
    K: npt.ArrayLike,  # noqa: N803
    t: npt.ArrayLike,
    r: npt.ArrayLike,
    q: npt.ArrayLike,
    is_call: npt.ArrayLike,
) -> IVResult:
    """BSM implied volatility plus all :class:`~hftengine.analytics.greeks.Greeks` at it and
    an :class:`IVStatus` per row, in one pass (the streaming hot path)."""
    return solve_implied_volatility(price, S, K, t, r, q, is_call)
