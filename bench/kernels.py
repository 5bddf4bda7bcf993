"""Benchmark of the analytics kernels, pinned to one core.

    PYTHONPATH=src python bench/kernels.py                # full run (~1 min)
    PYTHONPATH=src python bench/kernels.py --quick        # short run (~15 s)
    PYTHONPATH=src python bench/kernels.py --chain-only   # analyze_chain latency only (~5 s)

Prints IV + all Greeks throughput (options/s) for batches of 400, 40 000 and
1 000 000 options next to vollib (Let's Be Rational) and QuantLib on the same
inputs, then the p50/p99 latency of ``analyze_chain`` for a 200-strike chain,
and a table of targets vs measurements. The references are per-option Python
calls: they are timed on a subsample and their per-option rate extrapolated.
"""

from __future__ import annotations

import os

# Threads and affinity before numpy is imported: one core, single-threaded BLAS/OpenMP.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {0})

import argparse  # noqa: E402
import gc  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

try:
    import hftengine.analytics  # noqa: F401
except ImportError:  # running from a checkout without PYTHONPATH=src
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from hftengine.analytics import bsm  # noqa: E402
from hftengine.analytics.chain import LegQuotes, analyze_chain  # noqa: E402
from hftengine.analytics.iv import implied_volatility_and_greeks  # noqa: E402
from hftengine.analytics.normalized_black import guess_table  # noqa: E402

SPOT = 22_000.0
RATE = 0.065
TARGET_THROUGHPUT = 5_000_000.0
TARGET_CHAIN_P50_US = 200.0


def make_book(n: int, seed: int = 1) -> dict[str, np.ndarray]:
    """Spot 22000, strikes 18000-26000, 1-60 days, r 6.5 %, vol 8-60 %, half calls."""
    rng = np.random.default_rng(seed)
    book = {
        "K": rng.uniform(18_000.0, 26_000.0, n),
        "t": rng.uniform(1.0, 60.0, n) / 365.0,
        "sigma": rng.uniform(0.08, 0.60, n),
        "is_call": rng.random(n) < 0.5,
    }
    book["price"] = bsm.price(SPOT, book["K"], book["t"], RATE, 0.0, book["sigma"], book["is_call"])
    return book


def timed(fn: Callable[[], object], repeats: int, clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """Times (s) of ``repeats`` calls after one warm-up call; GC off while timing.

    ``clock``: wall time by default; ``time.thread_time`` gives the CPU time of this thread,
    which leaves out the time other processes on a shared core take from it.
    """
    fn()
    gc.collect()
    gc.disable()
    try:
        out = []
        for _ in range(repeats):
            start = clock()
            fn()
            out.append(clock() - start)
    finally:
        gc.enable()
    return out


def ours_rate(book: dict[str, np.ndarray], repeats: int) -> tuple[float, float]:
    """(median, best) options/s of IV + all seven Greeks on the whole book."""
    n = book["K"].shape[0]

    def run() -> object:
        return implied_volatility_and_greeks(book["price"], SPOT, book["K"], book["t"], RATE, 0.0, book["is_call"])

    times = timed(run, repeats)
    return n / float(np.median(times)), n / min(times)


def vollib_rate(book: dict[str, np.ndarray], sample: int) -> float | None:
    """Per-option rate of vollib: LBR implied vol + analytical delta, gamma, theta, vega, rho."""
    try:
        from vollib.black_scholes_merton.greeks import analytical
        from vollib.black_scholes_merton.implied_volatility import implied_volatility as lbr_iv
    except ImportError:
        return None
    idx = np.flatnonzero(book["price"] > 1e-8)[:sample]
    rows = [
        (float(book["price"][i]), float(book["K"][i]), float(book["t"][i]), "c" if book["is_call"][i] else "p")
        for i in idx
    ]

    def run() -> None:
        for price, k, t, flag in rows:
            try:
                sigma = lbr_iv(price, SPOT, k, t, RATE, 0.0, flag)
            except Exception:  # noqa: BLE001 (vollib raises on unsolvable prices)
                continue
            analytical.delta(flag, SPOT, k, t, RATE, sigma, 0.0)
            analytical.gamma(flag, SPOT, k, t, RATE, sigma, 0.0)
            analytical.theta(flag, SPOT, k, t, RATE, sigma, 0.0)
            analytical.vega(flag, SPOT, k, t, RATE, sigma, 0.0)
            analytical.rho(flag, SPOT, k, t, RATE, sigma, 0.0)

    return len(rows) / min(timed(run, 2))


def quantlib_rate(book: dict[str, np.ndarray], sample: int) -> float | None:
    """Per-option rate of QuantLib: impliedVolatility + NPV, delta, gamma, theta, vega, rho."""
    try:
        import QuantLib as ql  # noqa: N813
    except ImportError:
        return None
    today = ql.Date(2, 1, 2026)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    vol = ql.SimpleQuote(0.2)
    process = ql.BlackScholesMertonProcess(
        ql.QuoteHandle(ql.SimpleQuote(SPOT)),
        ql.YieldTermStructureHandle(ql.FlatForward(today, 0.0, dc, ql.Continuous)),
        ql.YieldTermStructureHandle(ql.FlatForward(today, RATE, dc, ql.Continuous)),
        ql.BlackVolTermStructureHandle(ql.BlackConstantVol(today, ql.NullCalendar(), ql.QuoteHandle(vol), dc)),
    )
    engine = ql.AnalyticEuropeanEngine(process)
    idx = np.flatnonzero(book["price"] > 1e-8)[:sample]
    options = []
    for i in idx:
        days = max(1, round(float(book["t"][i]) * 365.0))
        kind = ql.Option.Call if book["is_call"][i] else ql.Option.Put
        opt = ql.VanillaOption(ql.PlainVanillaPayoff(kind, float(book["K"][i])), ql.EuropeanExercise(today + days))
        opt.setPricingEngine(engine)
        price = float(bsm.price(SPOT, book["K"][i], days / 365.0, RATE, 0.0, book["sigma"][i], book["is_call"][i]))
        options.append((opt, price))

    def run() -> None:
        for opt, price in options:
            try:
                sigma = opt.impliedVolatility(price, process, 1e-10, 200, 1e-4, 5.0)
            except RuntimeError:
                continue
            vol.setValue(sigma)
            opt.NPV()
            opt.delta()
            opt.gamma()
            opt.theta()
            opt.vega()
            opt.rho()

    return len(options) / min(timed(run, 2))


def make_chain(n_strikes: int = 200, seed: int = 0) -> tuple[np.ndarray, LegQuotes, LegQuotes, float]:
    """A 200-strike NIFTY-like chain, 5 days to expiry, skewed smile, realistic quotes."""
    rng = np.random.default_rng(seed)
    t = 5.0 / 365.0
    strikes = SPOT + 50.0 * (np.arange(n_strikes) - n_strikes // 2)
    lm = np.log(strikes / (SPOT * math.exp(RATE * t)))
    sigma = 0.14 - 0.1 * lm + 0.8 * lm * lm
    legs = []
    for is_call in (True, False):
        price = np.round(bsm.price(SPOT, strikes, t, RATE, 0.0, sigma, is_call) / 0.05) * 0.05
        half = np.maximum(0.005 * price, 0.05)
        oi = rng.integers(0, 5_000_000, n_strikes).astype(np.float64)
        legs.append(
            LegQuotes(
                present=np.ones(n_strikes, dtype=np.bool_),
                last_price=price,
                bid=np.maximum(price - half, 0.0),
                ask=price + half,
                bid_qty=np.full(n_strikes, 75.0),
                ask_qty=np.full(n_strikes, 75.0),
                volume=rng.integers(0, 1_000_000, n_strikes).astype(np.float64),
                oi=oi,
                prev_oi=np.round(oi * rng.uniform(0.9, 1.1, n_strikes)),
                prev_close=price * rng.uniform(0.9, 1.1, n_strikes),
            )
        )
    return strikes, legs[0], legs[1], t


def chain_latency(runs: int) -> tuple[float, float, float]:
    """Prints and returns p50, p99 (wall) and p50 CPU time (us) of ``analyze_chain`` on the
    200-strike chain."""
    strikes, calls, puts, t = make_chain()

    def chain() -> object:
        return analyze_chain(strikes, calls, puts, SPOT, t, r=RATE, q=0.0, lot_size=75)

    lat = np.array(timed(chain, runs)) * 1e6
    p50, p99 = float(np.percentile(lat, 50)), float(np.percentile(lat, 99))
    cpu_p50 = float(np.percentile(np.array(timed(chain, runs, time.thread_time)) * 1e6, 50))
    print()
    print(
        f"analyze_chain, 200 strikes (400 contracts), {runs} runs: p50 {p50:,.0f} us, p99 {p99:,.0f} us "
        f"(CPU time of this thread: p50 {cpu_p50:,.0f} us)"
    )
    return p50, p99, cpu_p50


def fmt_rate(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short run (fewer repeats, smaller reference samples)")
    parser.add_argument("--chain-only", action="store_true", help="only the analyze_chain latency (no throughput)")
    args = parser.parse_args()
    quick = args.quick
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "n/a"
    kind = "chain-only" if args.chain_only else "quick" if quick else "full"
    print(f"hftengine analytics kernels — {kind} run")
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}, "
        f"pinned to CPU {affinity}, OMP/OPENBLAS threads = 1"
    )
    guess_table()  # built once per process (~50 ms), not part of any timing
    if args.chain_only:
        chain_latency(3_000)
        return

    # ------------------------------------------------------------------ throughput
    sizes = (400, 40_000, 1_000_000)
    repeats = {400: 200 if quick else 1000, 40_000: 10 if quick else 40, 1_000_000: 3 if quick else 7}
    ref_samples = (300, 100) if quick else (2_000, 500)
    print()
    print("IV + all Greeks (delta, gamma, theta, vega, rho, vanna, charm), spot 22000, strikes 18000-26000,")
    print("1-60 days, r 6.5 %, vol 8-60 %, half calls. Ours: median (best) of repeated runs on the whole batch.")
    print(
        f"References: per-option Python calls timed on the first {ref_samples[0]} (vollib) / "
        f"{ref_samples[1]} (QuantLib) options of each batch,"
    )
    print("rate extrapolated per option (vollib: IV + 5 Greeks, no vanna/charm; QuantLib: IV + NPV + 5 Greeks).")
    header = (
        f"{'batch':>10} | {'ours options/s':>22} | {'vollib opt/s':>13} | {'x vollib':>8} | "
        f"{'QuantLib opt/s':>14} | {'x QL':>7}"
    )
    print(header)
    print("-" * len(header))
    results: dict[int, float] = {}
    for n in sizes:
        book = make_book(n)
        median, best = ours_rate(book, repeats[n])
        results[n] = median
        v = vollib_rate(book, ref_samples[0])
        q = quantlib_rate(book, ref_samples[1])
        print(
            f"{n:>10,} | {median:>12,.0f} ({best:>8,.0f}) | {fmt_rate(v):>13} | "
            f"{(median / v if v else math.nan):>8,.0f} | {fmt_rate(q):>14} | {(median / q if q else math.nan):>7,.0f}"
        )

    # accuracy on the 1M batch (the figure the tests assert)
    book = make_book(1_000_000)
    res = implied_volatility_and_greeks(book["price"], SPOT, book["K"], book["t"], RATE, 0.0, book["is_call"])
    s = book["sigma"] * np.sqrt(book["t"])
    d1 = (np.log(SPOT / book["K"]) + RATE * book["t"]) / s + 0.5 * s
    density = np.exp(-0.5 * d1 * d1) / math.sqrt(2.0 * math.pi)
    err = np.abs(res.iv - book["sigma"])
    core_err = float(np.nanmax(err[density > 1e-3]))
    wing_err = float(np.nanmax(err[density > 1e-6]))
    print(f"accuracy (1M batch): max |iv - sigma| = {core_err:.1e} where phi(d1) > 1e-3, {wing_err:.1e} where > 1e-6")

    # ------------------------------------------------------------------ analyze_chain latency
    p50, p99, cpu_p50 = chain_latency(300 if quick else 3_000)

    # ------------------------------------------------------------------ summary
    print()
    rows = [
        (
            "IV+Greeks throughput, 1M batch",
            f">= {TARGET_THROUGHPUT:,.0f}/s",
            f"{results[1_000_000]:,.0f}/s",
            results[1_000_000] >= TARGET_THROUGHPUT,
        ),
        ("IV+Greeks throughput, 40k batch", "-", f"{results[40_000]:,.0f}/s", None),
        ("IV+Greeks throughput, 400 batch", "-", f"{results[400]:,.0f}/s", None),
        ("IV accuracy where phi(d1) > 1e-3", "<= 1e-10", f"{core_err:.1e}", core_err <= 1e-10),
        ("IV accuracy where phi(d1) > 1e-6", "<= 1e-8", f"{wing_err:.1e}", wing_err <= 1e-8),
        (
            "analyze_chain p50, 400 contracts",
            f"<= {TARGET_CHAIN_P50_US:.0f} us",
            f"{p50:,.0f} us",
            p50 <= TARGET_CHAIN_P50_US,
        ),
        ("analyze_chain p99, 400 contracts", "-", f"{p99:,.0f} us", None),
        ("analyze_chain p50 CPU time", "-", f"{cpu_p50:,.0f} us", None),
    ]
    print(f"{'metric':<36} | {'target':>14} | {'measured':>16} | status")
    print("-" * 80)
    for name, target, measured, ok in rows:
        status = "" if ok is None else ("MET" if ok else "NOT MET")
        print(f"{name:<36} | {target:>14} | {measured:>16} | {status}")


if __name__ == "__main__":
    main()
