"""A local fake of the DhanHQ v2 option-chain API, for tests and the offline demo.

``create_fake_dhan_app(fake)`` serves ``POST /v2/optionchain/expirylist`` and
``POST /v2/optionchain`` in the documented format with deterministic chains
(Black-Scholes prices and Greeks, OI in shares), checks the ``access-token``
and ``client-id`` headers, and can inject the failures the real API shows:
805/429 rate limiting, 5xx, slow responses, null legs, failure statuses,
all-zero chains, spot 0, and the expiry-day ITM legs with IV 0 and Greeks 0.

Faults fire per option-chain request number (``every``/``requests``) or with a
seeded probability, and can be changed at runtime through the ``FakeDhan``
object (``fake.configure(...)``) or ``POST /admin/config``.  Every request is
logged with its arrival time (``fake.requests()`` or ``GET /admin/requests``).

``FakeDhanServer`` runs the app with uvicorn in a background thread on a
loopback port (tests); ``serve_fake_dhan`` runs it in the foreground (demo).
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, date, datetime
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from hftengine.feeds.formats import IST
from hftengine.feeds.instruments import INSTRUMENTS, Instrument, weekly_expiries
from hftengine.runtime.ports import free_port, wait_for_port

#: Test credentials of the fake (obviously not real secrets).
FAKE_CLIENT_ID = "fake-client"
FAKE_ACCESS_TOKEN = "fake-token"  # noqa: S105 - test value of the local fake

_BY_ID: dict[int, Instrument] = {i.security_id: i for i in INSTRUMENTS.values()}


@dataclass(frozen=True, slots=True)
class Fault:
    """When a fault fires: every Nth option-chain request, listed request numbers, or a probability."""

    every: int = 0
    requests: frozenset[int] = frozenset()
    probability: float = 0.0

    def fires(self, n: int, rng: random.Random) -> bool:
        if n in self.requests or (self.every > 0 and n % self.every == 0):
            return True
        return self.probability > 0 and rng.random() < self.probability

    @classmethod
    def coerce(cls, value: Fault | Mapping[str, Any] | int | float | Iterable[int] | None) -> Fault:
        """``Fault`` from a dict ``{"every", "requests", "probability"}``, a probability (float),
        ``every`` (int), or a collection of request numbers."""
        if value is None:
            return cls()
        if isinstance(value, Fault):
            return value
        if isinstance(value, Mapping):
            return cls(
                every=int(value.get("every", 0)),
                requests=frozenset(int(x) for x in value.get("requests", ())),
                probability=float(value.get("probability", 0.0)),
            )
        if isinstance(value, bool):
            raise TypeError("a fault is a dict, a probability, an 'every' count or request numbers")
        if isinstance(value, int):
            return cls(every=value)
        if isinstance(value, float):
            return cls(probability=value)
        return cls(requests=frozenset(int(x) for x in value))

    def to_json(self) -> dict[str, Any]:
        return {"every": self.every, "requests": sorted(self.requests), "probability": self.probability}


_FAULT_FIELDS = ("rate_limit", "server_error", "slow", "failure", "null_legs", "zero_chain", "zero_spot")


@dataclass(frozen=True, slots=True)
class FakeDhanConfig:
    """Behaviour of the fake.  Fault fields accept what ``Fault.coerce`` accepts."""

    client_id: str = FAKE_CLIENT_ID
    access_token: str = FAKE_ACCESS_TOKEN
    seed: int = 7
    n_strikes: int = 21
    expiries: tuple[date, ...] = ()  # empty: the next 4 Thursdays (IST)
    rate_limit: Fault = Fault()
    rate_limit_http_status: int = 429
    server_error: Fault = Fault()
    server_error_http_status: int = 503
    slow: Fault = Fault()
    slow_seconds: float = 1.0
    failure: Fault = Fault()
    failure_code: str = "811"
    failure_message: str = "Invalid Expiry Date"
    null_legs: Fault = Fault()
    null_leg_fraction: float = 0.25
    zero_chain: Fault = Fault()
    zero_spot: Fault = Fault()
    expiry_day_defect: bool = True
    outage: bool = False
    min_interval_s: float = 0.0  # > 0: server-side 805 when option-chain requests come faster

    def with_changes(self, **changes: Any) -> FakeDhanConfig:
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown fake Dhan setting(s): {', '.join(sorted(unknown))}")
        for name in _FAULT_FIELDS:
            if name in changes:
                changes[name] = Fault.coerce(changes[name])
        if "expiries" in changes:
            changes["expiries"] = tuple(
                d if isinstance(d, date) else date.fromisoformat(str(d)) for d in changes["expiries"]
            )
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for name in _FAULT_FIELDS:
            out[name] = getattr(self, name).to_json()
        out["expiries"] = [d.isoformat() for d in self.expiries]
        out.pop("access_token")
        return out


@dataclass(frozen=True, slots=True)
class FakeRequest:
    """One request as the fake saw it (``monotonic`` is ``time.monotonic()`` at arrival)."""

    seq: int
    path: str
    monotonic: float
    received_ts: datetime
    outcome: str
    http_status: int
    chain_n: int | None = None
    security_id: int | None = None
    segment: str | None = None
    expiry: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["received_ts"] = self.received_ts.isoformat()
        return out


@dataclass
class FakeDhan:
    """State of one fake server: configuration, request log, counters (thread-safe)."""

    config: FakeDhanConfig = field(default_factory=FakeDhanConfig)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(self.config.seed)
        self._log: list[FakeRequest] = []
        self._chain_n = 0
        self._ticks: dict[tuple[int, str], int] = {}
        self._last_chain_at: float | None = None

    def configure(self, **changes: Any) -> FakeDhanConfig:
        """Change behaviour at runtime (e.g. ``fake.configure(outage=True)``)."""
        with self._lock:
            self.config = self.config.with_changes(**changes)
            if "seed" in changes:
                self._rng = random.Random(self.config.seed)
            return self.config

    def reset(self, config: FakeDhanConfig | None = None) -> None:
        """Forget the request log and counters; optionally replace the configuration."""
        with self._lock:
            if config is not None:
                self.config = config
            self._log.clear()
            self._chain_n = 0
            self._ticks.clear()
            self._last_chain_at = None
            self._rng = random.Random(self.config.seed)

    def requests(self, path: str | None = None) -> list[FakeRequest]:
        """Copy of the request log, optionally only one path."""
        with self._lock:
            return [r for r in self._log if path is None or r.path == path]

    # ------------------------------------------------------------ handling
    def _log_request(self, **kw: Any) -> None:
        self._log.append(FakeRequest(seq=len(self._log) + 1, **kw))

    def handle(self, path: str, headers: Mapping[str, str], payload: Any, arrived: float) -> tuple[int, Any, float]:
        """Decide the answer to one request: (HTTP status, JSON body, delay seconds)."""
        now = datetime.now(UTC)
        with self._lock:
            cfg = self.config
            base: dict[str, Any] = {"path": path, "monotonic": arrived, "received_ts": now}
            if isinstance(payload, Mapping):
                sid = payload.get("UnderlyingScrip")
                base["security_id"] = sid if isinstance(sid, int) else None
                base["segment"] = str(payload.get("UnderlyingSeg")) if "UnderlyingSeg" in payload else None
                base["expiry"] = str(payload.get("Expiry")) if "Expiry" in payload else None
            if headers.get("access-token") != cfg.access_token or headers.get("client-id") != cfg.client_id:
                self._log_request(outcome="unauthorized", http_status=401, **base)
                return (
                    401,
                    _failure(
                        "808",
                        "Authentication_Failed",
                        "Authentication Failed - Client ID or user generated access token is invalid",
                    ),
                    0.0,
                )
            if cfg.outage:
                self._log_request(outcome="outage", http_status=cfg.server_error_http_status, **base)
                return (
                    cfg.server_error_http_status,
                    {"status": "failure", "remarks": "service unavailable", "data": ""},
                    0.0,
                )
            if (
                not isinstance(payload, Mapping)
                or not isinstance(payload.get("UnderlyingScrip"), int)
                or not isinstance(payload.get("UnderlyingSeg"), str)
            ):
                self._log_request(outcome="bad_request", http_status=400, **base)
                return 400, _failure("814", "Invalid_Request", "UnderlyingScrip/UnderlyingSeg missing"), 0.0
            if path.endswith("/expirylist"):
                self._log_request(outcome="ok", http_status=200, **base)
                return (
                    200,
                    {
                        "data": [d.isoformat() for d in self._expiries(payload["UnderlyingScrip"])],
                        "status": "success",
                    },
                    0.0,
                )
            return self._chain(cfg, payload, base, arrived)

    def _expiries(self, security_id: int) -> list[date]:
        if self.config.expiries:
            return list(self.config.expiries)
        now = datetime.now(IST)
        inst = _BY_ID.get(security_id)
        return inst.expiries(now, 4) if inst is not None else weekly_expiries(now, 4)

    def _chain(
        self, cfg: FakeDhanConfig, payload: Mapping[str, Any], base: dict[str, Any], arrived: float
    ) -> tuple[int, Any, float]:
        self._chain_n += 1
        n = self._chain_n
        base["chain_n"] = n
        rng = self._rng
        too_fast = (
            cfg.min_interval_s > 0
            and self._last_chain_at is not None
            and arrived - self._last_chain_at < cfg.min_interval_s
        )
        if too_fast or cfg.rate_limit.fires(n, rng):
            self._log_request(outcome="rate_limited", http_status=cfg.rate_limit_http_status, **base)
            return (
                cfg.rate_limit_http_status,
                _failure(
                    "805",
                    "Too_Many_Requests",
                    "Too many requests on server from a single user breaching rate limits",
                ),
                0.0,
            )
        self._last_chain_at = arrived
        if cfg.server_error.fires(n, rng):
            self._log_request(outcome="server_error", http_status=cfg.server_error_http_status, **base)
            return (
                cfg.server_error_http_status,
                {"status": "failure", "remarks": "internal error", "data": ""},
                0.0,
            )
        delay = cfg.slow_seconds if cfg.slow.fires(n, rng) else 0.0
        try:
            expiry = date.fromisoformat(str(payload.get("Expiry")))
        except ValueError:
            self._log_request(outcome="failure", http_status=400, **base)
            return 400, _failure("812", "Invalid_Date_Format", "Expiry must be YYYY-MM-DD"), delay
        if cfg.failure.fires(n, rng):
            self._log_request(outcome="failure", http_status=400, **base)
            return 400, _failure(cfg.failure_code, "Data_Error", cfg.failure_message), delay
        sid = int(payload["UnderlyingScrip"])
        key = (sid, expiry.isoformat())
        tick = self._ticks.get(key, 0)
        self._ticks[key] = tick + 1
        null_fraction = cfg.null_leg_fraction if cfg.null_legs.fires(n, rng) else 0.0
        zero_chain = cfg.zero_chain.fires(n, rng)
        zero_spot = cfg.zero_spot.fires(n, rng)
        outcome = (
            "zero_chain"
            if zero_chain
            else "zero_spot"
            if zero_spot
            else ("null_legs" if null_fraction else "slow" if delay else "ok")
        )
        self._log_request(outcome=outcome, http_status=200, **base)
        body = fake_chain_body(
            sid,
            expiry,
            tick,
            seed=cfg.seed,
            n_strikes=cfg.n_strikes,
            today=datetime.now(IST).date(),
            null_leg_fraction=null_fraction,
            zero_chain=zero_chain,
            zero_spot=zero_spot,
            expiry_day_defect=cfg.expiry_day_defect,
        )
        return 200, body, delay


def _failure(code: str, error_type: str, message: str) -> dict[str, Any]:
    return {
        "status": "failure",
        "remarks": {"error_code": code, "error_type": error_type, "error_message": message},
        "data": "",
    }


# --------------------------------------------------------------------------- deterministic chains
def _ncdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _npdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _leg(
    cp: str,
    spot: float,
    strike: float,
    t: float,
    sigma: float,
    r: float,
    rng: random.Random,
    sec_id: int,
    lot: int,
) -> dict[str, Any]:
    sqrt_t = math.sqrt(t)
    d1 = (math.log(spot / strike) + (r + 0.5 * sigma * sigma) * t) / (sigma * sqrt_t)
    d2 = d1 - sigma * sqrt_t
    disc = math.exp(-r * t)
    if cp == "ce":
        price = spot * _ncdf(d1) - strike * disc * _ncdf(d2)
        delta = _ncdf(d1)
        theta = (-spot * _npdf(d1) * sigma / (2 * sqrt_t) - r * strike * disc * _ncdf(d2)) / 365.0
    else:
        price = strike * disc * _ncdf(-d2) - spot * _ncdf(-d1)
        delta = _ncdf(d1) - 1.0
        theta = (-spot * _npdf(d1) * sigma / (2 * sqrt_t) + r * strike * disc * _ncdf(-d2)) / 365.0
    gamma = _npdf(d1) / (spot * sigma * sqrt_t)
    vega = spot * _npdf(d1) * sqrt_t / 100.0
    price = max(0.05, round(price * 20) / 20)
    spread = 0.05 * (1 + rng.randrange(4))
    oi = lot * rng.randrange(50, 5000)
    volume = lot * rng.randrange(0, 20000)
    return {
        "average_price": round(price * (1 + rng.uniform(-0.02, 0.02)), 2),
        "greeks": {
            "delta": round(delta, 5),
            "theta": round(theta, 4),
            "gamma": round(gamma, 6),
            "vega": round(vega, 5),
        },
        "implied_volatility": sigma * 100.0,
        "last_price": price,
        "oi": oi,
        "previous_close_price": round(price * (1 + rng.uniform(-0.1, 0.1)), 2),
        "previous_oi": max(0, oi + lot * rng.randrange(-200, 200)),
        "previous_volume": lot * rng.randrange(0, 20000),
        "security_id": sec_id,
        "top_ask_price": round(price + spread, 2),
        "top_ask_quantity": lot * rng.randrange(1, 40),
        "top_bid_price": round(max(0.0, price - spread), 2),
        "top_bid_quantity": lot * rng.randrange(1, 40),
        "volume": volume,
    }


def fake_chain_body(
    security_id: int,
    expiry: date,
    tick: int = 0,
    *,
    seed: int = 7,
    n_strikes: int = 21,
    today: date | None = None,
    null_leg_fraction: float = 0.0,
    zero_chain: bool = False,
    zero_spot: bool = False,
    expiry_day_defect: bool = True,
) -> dict[str, Any]:
    """A deterministic ``/v2/optionchain`` success body (same inputs, same bytes)."""
    today = today or datetime.now(IST).date()
    rng = random.Random(f"{seed}:{security_id}:{expiry.isoformat()}:{tick}")
    inst = _BY_ID.get(security_id)
    base = inst.spot if inst is not None else 1000.0
    spot = round(base * (1 + 0.004 * math.sin(tick / 7.0) + rng.uniform(-0.0005, 0.0005)), 2)
    lot = inst.lot_size if inst is not None else 1
    step = float(inst.strike_step) if inst is not None else 10.0
    atm = round(spot / step) * step
    days = (expiry - today).days
    t = max(days, 0) / 365.0 + 0.25 / 365.0
    r = 0.065
    oc: dict[str, Any] = {}
    half = n_strikes // 2
    for j in range(-half, n_strikes - half):
        strike = atm + j * step
        if strike <= 0:
            continue
        sigma = 0.13 + 0.8 * math.log(strike / spot) ** 2
        legs: dict[str, Any] = {}
        for side in ("ce", "pe"):
            sec = 40000 + security_id * 1000 + (j + half) * 2 + (0 if side == "ce" else 1)
            leg = _leg(side, spot, strike, t, sigma, r, rng, sec, lot)
            itm = strike < spot if side == "ce" else strike > spot
            if expiry_day_defect and days == 0 and itm:
                leg["implied_volatility"] = 0
                leg["greeks"] = {"delta": 0, "theta": 0, "gamma": 0, "vega": 0}
            if zero_chain:
                leg = {
                    k: (dict.fromkeys(v, 0) if isinstance(v, dict) else (v if k == "security_id" else 0))
                    for k, v in leg.items()
                }
            legs[side] = None if null_leg_fraction and rng.random() < null_leg_fraction else leg
        oc[f"{strike:.6f}"] = legs
    return {"data": {"last_price": 0 if zero_spot else spot, "oc": oc}, "status": "success"}


# --------------------------------------------------------------------------- the app
def create_fake_dhan_app(fake: FakeDhan | None = None, **config: Any) -> FastAPI:
    """FastAPI app of the fake; ``config`` (``FakeDhanConfig`` fields) is used when ``fake`` is None."""
    state = fake if fake is not None else FakeDhan(FakeDhanConfig().with_changes(**config))
    app = FastAPI(title="fake DhanHQ v2 option chain", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.fake = state

    async def answer(request: Request, path: str) -> Response:
        arrived = time.monotonic()
        try:
            payload: Any = await request.json()
        except ValueError:
            payload = None
        status, body, delay = state.handle(path, request.headers, payload, arrived)
        if delay > 0:
            await asyncio.sleep(delay)
        return JSONResponse(body, status_code=status)

    @app.post("/v2/optionchain/expirylist")
    async def expiry_list(request: Request) -> Response:
        return await answer(request, "/v2/optionchain/expirylist")

    @app.post("/v2/optionchain")
    async def option_chain(request: Request) -> Response:
        return await answer(request, "/v2/optionchain")

    @app.get("/admin/config")
    async def get_config() -> Response:
        return JSONResponse(state.config.to_json())

    @app.post("/admin/config")
    async def set_config(request: Request) -> Response:
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValueError("body must be a JSON object of settings")
            cfg = state.configure(**changes)
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(cfg.to_json())

    @app.get("/admin/requests")
    async def get_requests() -> Response:
        return JSONResponse([r.to_json() for r in state.requests()])

    @app.post("/admin/reset")
    async def reset() -> Response:
        state.reset()
        return JSONResponse({"ok": True})

    return app


def _uvicorn_config(app: FastAPI, host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        lifespan="off",
        ws="none",
        http="h11",
        loop="asyncio",
    )


class FakeDhanServer:
    """The fake served by uvicorn in a background thread (``with FakeDhanServer() as srv: srv.base_url``)."""

    def __init__(self, fake: FakeDhan | None = None, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.fake = fake if fake is not None else FakeDhan()
        self.host = host
        self.port = port or free_port(host)
        self._server = uvicorn.Server(_uvicorn_config(create_fake_dhan_app(self.fake), host, self.port, "warning"))
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> FakeDhanServer:
        self._thread = threading.Thread(target=self._server.run, name="fake-dhan", daemon=True)
        self._thread.start()
        wait_for_port(self.host, self.port, timeout=timeout, what="fake Dhan server")
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake Dhan server did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> FakeDhanServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_fake_dhan(
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    fake: FakeDhan | None = None,
    log_level: str = "info",
    **config: Any,
) -> None:
    """Run the fake in the foreground until interrupted (demo: point the Dhan feed's base_url at it).

    The fake accepts ``client-id: fake-client`` / ``access-token: fake-token``
    unless ``client_id``/``access_token`` are given.
    """
    state = fake if fake is not None else FakeDhan(FakeDhanConfig().with_changes(**config))
    uvicorn.Server(_uvicorn_config(create_fake_dhan_app(state), host, port, log_level)).run()
