"""DhanHQ v2 option-chain feed: async client, rate-limited poller, recording mode.

* ``DhanClient`` calls ``/v2/optionchain/expirylist`` and ``/v2/optionchain``
  with the ``client-id``/``access-token`` headers (kept as ``SecretStr`` and
  never logged or shown in ``repr``).  Every request of one credential goes
  through one shared ``TokenBucket`` (default one request per 3 s, Dhan's
  option-chain limit), and errors are classified: rate limited (805/HTTP 429),
  server errors (5xx), timeouts and connection errors are retryable; auth
  errors and failure statuses (e.g. invalid expiry) are not.
* ``DhanPoller`` polls every (underlying, expiry) pair round-robin, one
  request at a time, retries retryable errors with jittered exponential
  backoff, and consults a per-credential ``CircuitBreaker`` before each
  request.  While the breaker is open the schedule pauses where it is and
  resumes at the same pair, so every pair keeps being polled after an outage.
* Each response becomes a ``ChainSnapshot`` (``formats.parse_dhan_chain``)
  handed to the ``Publisher``; broker defects become repairs or dead letters
  with a reason (see ``docs/feeds.md``).
* Recording mode appends every delivered response as one JSON line
  (``formats.DhanRecord``), which ``replay`` reads back.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
import time
from collections import Counter as TallyCounter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar, TypeVar

import httpx
from prometheus_client import REGISTRY, CollectorRegistry, Counter
from pydantic import SecretStr

from hftengine.feeds.formats import (
    DEFAULT_UNDERLYINGS,
    IST,
    DhanRecord,
    DhanUnderlying,
    FeedDefect,
    ParsedChain,
    describe_dhan_failure,
    dhan_error_code,
    parse_dhan_chain,
    resolve_underlying,
)
from hftengine.feeds.instruments import is_expired
from hftengine.feeds.publisher import Publisher
from hftengine.feeds.ratelimit import CircuitBreaker, TokenBucket
from hftengine.promutil import once_per_registry

if TYPE_CHECKING:
    from hftengine.config import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

DHAN_BASE_URL = "https://api.dhan.co"
EXPIRY_LIST_PATH = "/v2/optionchain/expirylist"
OPTION_CHAIN_PATH = "/v2/optionchain"

#: Dhan error codes by class (data-API codes 8xx and trading-API codes DH-9xx).
RATE_LIMIT_CODES = frozenset({"805", "DH-904"})
SERVER_ERROR_CODES = frozenset({"800", "DH-908", "DH-909"})
AUTH_ERROR_CODES = frozenset({"806", "807", "808", "809", "810", "DH-901", "DH-902", "DH-903"})

#: Dead letters carry at most this much of a raw response body.
MAX_DEAD_LETTER_BYTES = 1_000_000


# --------------------------------------------------------------------------- errors
class DhanError(Exception):
    """A Dhan request that did not produce a usable response."""

    retryable: ClassVar[bool] = False
    kind: ClassVar[str] = "error"

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        body: Any = None,
        received_ts: datetime | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.code = code
        self.retry_after = retry_after
        self.body = body
        self.received_ts = received_ts


class DhanRateLimited(DhanError):
    retryable = True
    kind = "rate_limited"


class DhanServerError(DhanError):
    retryable = True
    kind = "server_error"


class DhanTransportError(DhanError):
    """Timeout or connection failure."""

    retryable = True
    kind = "transport_error"


class DhanAuthError(DhanError):
    kind = "auth_error"


class DhanRequestFailed(DhanError):
    """The broker answered with a failure status (e.g. invalid expiry): not retried, dead-lettered."""

    kind = "failure_status"


@dataclass(frozen=True, slots=True)
class DhanResponse:
    body: Any
    http_status: int
    received_ts: datetime
    elapsed_s: float


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


# --------------------------------------------------------------------------- metrics
@dataclass(frozen=True, slots=True)
class DhanMetrics:
    requests: Counter
    defects: Counter
    snapshots: Counter
    dead_letters: Counter


@once_per_registry
def dhan_metrics(registry: CollectorRegistry) -> DhanMetrics:
    """The Dhan feed metrics registered in ``registry`` (created once per registry)."""
    return DhanMetrics(
        requests=Counter(
            "hft_dhan_requests",
            "Dhan API requests by endpoint and outcome",
            ["credential", "endpoint", "outcome"],
            registry=registry,
        ),
        defects=Counter(
            "hft_dhan_defects",
            "Broker data defects seen, by kind",
            ["underlying", "kind"],
            registry=registry,
        ),
        snapshots=Counter(
            "hft_dhan_snapshots",
            "Snapshots handed to the publisher",
            ["underlying", "result"],
            registry=registry,
        ),
        dead_letters=Counter(
            "hft_dhan_dead_letters",
            "Responses dead-lettered by the feed",
            ["underlying", "error_type"],
            registry=registry,
        ),
    )


# --------------------------------------------------------------------------- client
def _secret(value: SecretStr | str) -> SecretStr:
    return value if isinstance(value, SecretStr) else SecretStr(value)


class DhanClient:
    """Async DhanHQ v2 option-chain client for one credential.

    ``bucket`` is shared by every request this client makes (default: one
    request per 3 s, burst 1).  ``transport`` lets tests plug an in-process
    app (``httpx.ASGITransport``) in.
    """

    def __init__(
        self,
        client_id: SecretStr | str,
        access_token: SecretStr | str,
        *,
        base_url: str = DHAN_BASE_URL,
        timeout_s: float = 10.0,
        bucket: TokenBucket | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._client_id = _secret(client_id)
        self._access_token = _secret(access_token)
        self.base_url = base_url.rstrip("/")
        self.bucket = bucket or TokenBucket(rate=1 / 3, burst=1)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )

    def __repr__(self) -> str:
        return f"DhanClient(base_url={self.base_url!r}, bucket={self.bucket!r})"

    async def __aenter__(self) -> DhanClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def _auth_headers(self) -> dict[str, str]:
        return {
            "access-token": self._access_token.get_secret_value(),
            "client-id": self._client_id.get_secret_value(),
        }

    async def _post(self, path: str, payload: Mapping[str, Any]) -> DhanResponse:
        await self.bucket.acquire()
        started = time.monotonic()
        try:
            resp = await self._http.post(path, json=dict(payload), headers=self._auth_headers())
        except httpx.TimeoutException as exc:
            raise DhanTransportError(f"timeout ({type(exc).__name__}) on {path}") from None
        except httpx.TransportError as exc:
            raise DhanTransportError(f"connection error ({type(exc).__name__}) on {path}") from None
        received = datetime.now(UTC)
        elapsed = time.monotonic() - started
        try:
            body: Any = resp.json()
        except ValueError:
            body = None
        status = resp.status_code
        code = dhan_error_code(body)
        common: dict[str, Any] = {"http_status": status, "code": code, "body": body, "received_ts": received}
        detail = describe_dhan_failure(body) if body is not None else "non-JSON body"
        if status == 429 or code in RATE_LIMIT_CODES:
            raise DhanRateLimited(
                f"rate limited (HTTP {status}, {detail})",
                retry_after=_retry_after(resp.headers.get("retry-after")),
                **common,
            )
        if status in (401, 403) or code in AUTH_ERROR_CODES:
            raise DhanAuthError(f"authentication failed (HTTP {status}, {detail})", **common)
        if status >= 500 or code in SERVER_ERROR_CODES:
            raise DhanServerError(f"server error (HTTP {status}, {detail})", **common)
        if body is None:
            raise DhanServerError(f"HTTP {status} with a non-JSON body", **common)
        if status != 200 or not isinstance(body, Mapping) or body.get("status") != "success":
            raise DhanRequestFailed(f"request failed (HTTP {status}, {detail})", **common)
        return DhanResponse(body, status, received, elapsed)

    @staticmethod
    def _payload(u: DhanUnderlying) -> dict[str, Any]:
        return {"UnderlyingScrip": u.security_id, "UnderlyingSeg": u.segment}

    async def expiry_list(self, underlying: DhanUnderlying) -> list[date]:
        """Expiry dates Dhan lists for the underlying, sorted."""
        resp = await self._post(EXPIRY_LIST_PATH, self._payload(underlying))
        data = resp.body.get("data")
        try:
            if not isinstance(data, list):
                raise ValueError("data is not a list")
            return sorted(date.fromisoformat(str(d)) for d in data)
        except ValueError as exc:
            raise DhanRequestFailed(
                f"malformed expiry list: {exc}",
                http_status=resp.http_status,
                body=resp.body,
                received_ts=resp.received_ts,
            ) from None

    async def option_chain(self, underlying: DhanUnderlying, expiry: date) -> DhanResponse:
        """Raw option-chain response for one underlying and expiry (body not yet validated)."""
        return await self._post(OPTION_CHAIN_PATH, {**self._payload(underlying), "Expiry": expiry.isoformat()})


# --------------------------------------------------------------------------- delivery (shared with replay)
@dataclass(frozen=True, slots=True)
class Delivery:
    """What happened to one response: published, rejected by ``problems()``, or dead-lettered as a defect."""

    result: str  # "published" | "rejected" | "dead_lettered"
    defects: tuple[str, ...] = ()
    reason: str | None = None
    parsed: ParsedChain | None = None
    error_type: str | None = None


def _body_bytes(body: Any) -> bytes:
    try:
        raw = json.dumps(body, separators=(",", ":")).encode()
    except (TypeError, ValueError):
        raw = repr(body).encode()
    return raw[:MAX_DEAD_LETTER_BYTES]


def publish_dhan_body(
    publisher: Publisher,
    body: Any,
    underlying: DhanUnderlying,
    expiry: date,
    received_ts: datetime,
    *,
    source: str = "dhan",
) -> Delivery:
    """Parse a Dhan option-chain body and hand it to ``publisher`` (or dead-letter the defect)."""
    try:
        parsed = parse_dhan_chain(body, underlying, expiry, received_ts, source=source)
    except FeedDefect as defect:
        reason = f"{underlying.symbol} {expiry.isoformat()}: {defect.reason}"
        publisher.dead_letter(
            stage="feed",
            error_type=defect.error_type,
            reason=reason,
            value=_body_bytes(body),
            underlying=underlying.symbol,
            key=underlying.symbol.encode(),
        )
        log.warning("dead-lettered Dhan response (%s): %s", defect.error_type, reason)
        return Delivery("dead_lettered", defect.kinds, reason, None, defect.error_type)
    for note in parsed.notes:
        log.debug("%s %s: %s", underlying.symbol, expiry, note)
    ok = publisher.publish(parsed.snapshot)
    return Delivery("published" if ok else "rejected", parsed.defects, None, parsed)


# --------------------------------------------------------------------------- recording
class DhanRecorder:
    """Appends delivered Dhan responses as JSON lines (``formats.DhanRecord``) for later replay."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = self.path.open("a", encoding="utf-8")
        self.lines = 0

    def __repr__(self) -> str:
        return f"DhanRecorder({str(self.path)!r}, lines={self.lines})"

    def write(self, record: DhanRecord) -> None:
        if self._file is None:
            raise ValueError("recorder is closed")
        self._file.write(record.to_json() + "\n")
        self._file.flush()
        self.lines += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> DhanRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- poller
@dataclass(frozen=True, slots=True)
class DhanFeedConfig:
    """Knobs of the Dhan feed (defaults follow Dhan's published limits)."""

    base_url: str = DHAN_BASE_URL
    requests_per_second: float = 1 / 3
    burst: float = 1.0
    timeout_s: float = 10.0
    max_attempts: int = 4
    backoff_base_s: float = 1.0
    backoff_max_s: float = 30.0
    breaker_failure_threshold: int = 5
    breaker_reset_timeout_s: float = 30.0
    breaker_half_open_probes: int = 1
    n_expiries: int = 2
    expiry_refresh_s: float = 3600.0
    expiry_retry_s: float = 60.0
    credential_name: str = "dhan"
    seed: int | None = None


@dataclass(slots=True)
class PollStats:
    """Counters of one poller run."""

    requests: int = 0
    retries: int = 0
    published: int = 0
    rejected: int = 0
    dead_lettered: int = 0
    gave_up: int = 0
    breaker_waits: int = 0
    polls: TallyCounter[tuple[str, date]] = field(default_factory=TallyCounter)
    defects: TallyCounter[str] = field(default_factory=TallyCounter)
    errors: TallyCounter[str] = field(default_factory=TallyCounter)


def backoff_delay(attempt: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Equal-jitter exponential backoff (s): ``c/2 + U(0, c/2)``, ``c = min(max_s, base_s * 2**(n-1))``."""
    ceiling = float(min(max_s, base_s * 2.0 ** max(0, attempt - 1)))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


class _GaveUp(Exception):
    pass


ExpirySpec = Sequence[date] | Mapping[str, Sequence[date]] | None


class DhanPoller:
    """Round-robin poller of (underlying, expiry) pairs for one credential."""

    def __init__(
        self,
        client: DhanClient,
        publisher: Publisher,
        underlyings: Sequence[DhanUnderlying],
        expiries: ExpirySpec = None,
        *,
        config: DhanFeedConfig | None = None,
        breaker: CircuitBreaker | None = None,
        recorder: DhanRecorder | None = None,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        if not underlyings:
            raise ValueError("no underlyings to poll")
        self.client = client
        self.publisher = publisher
        self.underlyings = list(underlyings)
        self.config = config or DhanFeedConfig()
        self.breaker = breaker or CircuitBreaker(
            self.config.credential_name,
            failure_threshold=self.config.breaker_failure_threshold,
            reset_timeout_s=self.config.breaker_reset_timeout_s,
            half_open_max_calls=self.config.breaker_half_open_probes,
            registry=registry,
        )
        self.recorder = recorder
        self.metrics = dhan_metrics(registry)
        self.stats = PollStats()
        self._rng = random.Random(self.config.seed)  # noqa: S311 - jitter, not crypto
        self._fixed: dict[str, list[date]] = {}
        if isinstance(expiries, Mapping):
            self._fixed = {k.upper(): sorted(v) for k, v in expiries.items()}
        elif expiries is not None:
            self._fixed = {u.symbol.upper(): sorted(expiries) for u in self.underlyings}
        self._expiries: dict[str, list[date]] = dict(self._fixed)
        self._expiry_checked: dict[str, float] = {}
        self._expiry_day: date | None = None
        self.schedule: list[tuple[DhanUnderlying, date]] = []
        self._cursor = 0

    def __repr__(self) -> str:
        return f"DhanPoller({[u.symbol for u in self.underlyings]}, client={self.client!r})"

    # ------------------------------------------------------------ requests
    async def _breaker_ready(self) -> None:
        while not self.breaker.allow():
            self.stats.breaker_waits += 1
            await asyncio.sleep(max(self.breaker.retry_in(), 0.05))

    def _count(self, endpoint: str, outcome: str) -> None:
        self.metrics.requests.labels(self.config.credential_name, endpoint, outcome).inc()

    async def _fetch(self, endpoint: str, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Call with breaker + retries.  Raises ``DhanRequestFailed`` (not retried) or ``_GaveUp``."""
        attempt = 0
        while True:
            await self._breaker_ready()
            attempt += 1
            self.stats.requests += 1
            try:
                result = await call()
            except DhanRequestFailed:
                self.breaker.record_success()  # the broker is up and answered
                self._count(endpoint, DhanRequestFailed.kind)
                raise
            except DhanError as exc:
                self.breaker.record_failure()
                self._count(endpoint, exc.kind)
                self.stats.errors[exc.kind] += 1
                if not exc.retryable or attempt >= self.config.max_attempts:
                    self.stats.gave_up += 1
                    raise _GaveUp(f"{what}: gave up after {attempt} attempt(s): {exc}") from None
                delay = backoff_delay(attempt, self.config.backoff_base_s, self.config.backoff_max_s, self._rng)
                if exc.retry_after is not None:
                    delay = max(delay, min(exc.retry_after, self.config.backoff_max_s))
                self.stats.retries += 1
                log.info("%s: %s; retry %d in %.2fs", what, exc, attempt, delay)
                await asyncio.sleep(delay)
                continue
            except Exception as exc:  # a bug or an unexpected library error: count it, never wedge the breaker
                self.breaker.record_failure()
                self._count(endpoint, "unexpected_error")
                self.stats.errors["unexpected_error"] += 1
                self.stats.gave_up += 1
                log.exception("%s: unexpected error", what)
                raise _GaveUp(f"{what}: unexpected error {type(exc).__name__}: {exc}") from exc
            self.breaker.record_success()
            self._count(endpoint, "ok")
            return result

    # ------------------------------------------------------------ expiries
    async def refresh_expiries(self, force: bool = False) -> None:
        """Resolve the next ``n_expiries`` unexpired expiries (where not fixed); rebuild the schedule.

        Listed expiries are refreshed every ``expiry_refresh_s``, at each new IST
        day and as soon as one of them passes its expiry time (15:30 IST).
        """
        wall = datetime.now(UTC)
        today = wall.astimezone(IST).date()
        now = time.monotonic()
        for u in self.underlyings:
            sym = u.symbol.upper()
            if sym in self._fixed:
                continue
            last = self._expiry_checked.get(sym)
            current = self._expiries.get(sym, [])
            alive = [d for d in current if not is_expired(d, wall)]
            self._expiries[sym] = alive
            have = bool(alive)
            due = (
                force
                or last is None
                or len(alive) < len(current)
                or today != self._expiry_day
                or now - last >= (self.config.expiry_refresh_s if have else self.config.expiry_retry_s)
            )
            if not due:
                continue
            self._expiry_checked[sym] = now
            try:
                listed = await self._fetch(
                    "expirylist", f"{u.symbol} expiry list", functools.partial(self.client.expiry_list, u)
                )
            except (DhanRequestFailed, _GaveUp) as exc:
                log.error("could not refresh expiries of %s: %s", u.symbol, exc)
                continue
            self._expiries[sym] = [d for d in listed if not is_expired(d, wall)][: self.config.n_expiries]
            log.info("%s expiries: %s", u.symbol, ", ".join(d.isoformat() for d in self._expiries[sym]))
        self._expiry_day = today
        self._rebuild_schedule()

    def _rebuild_schedule(self) -> None:
        current = self.schedule[self._cursor % len(self.schedule)] if self.schedule else None
        schedule = [(u, e) for u in self.underlyings for e in self._expiries.get(u.symbol.upper(), [])]
        self.schedule = schedule
        self._cursor = schedule.index(current) if current in schedule else 0

    # ------------------------------------------------------------ polling
    def _record(
        self, u: DhanUnderlying, expiry: date, received: datetime | None, body: Any, status: int | None
    ) -> None:
        if self.recorder is None or received is None:
            return
        self.recorder.write(
            DhanRecord(
                received_ts=received,
                security_id=u.security_id,
                segment=u.segment,
                expiry=expiry,
                body=body,
                symbol=u.symbol,
                lot_size=u.lot_size,
                http_status=status,
            )
        )

    def _deliver(self, u: DhanUnderlying, expiry: date, body: Any, received: datetime) -> Delivery:
        delivery = publish_dhan_body(self.publisher, body, u, expiry, received, source="dhan")
        for kind in delivery.defects:
            self.stats.defects[kind] += 1
            self.metrics.defects.labels(u.symbol, kind).inc()
        if delivery.result == "published":
            self.stats.published += 1
        elif delivery.result == "rejected":
            self.stats.rejected += 1
        else:
            self.stats.dead_lettered += 1
            self.metrics.dead_letters.labels(u.symbol, delivery.error_type or "unknown").inc()
        self.metrics.snapshots.labels(u.symbol, delivery.result).inc()
        return delivery

    async def poll(self, u: DhanUnderlying, expiry: date) -> Delivery | None:
        """One scheduled poll of one pair (with retries); None when it gave up."""
        what = f"{u.symbol} {expiry.isoformat()}"
        try:
            resp = await self._fetch("optionchain", what, functools.partial(self.client.option_chain, u, expiry))
        except DhanRequestFailed as exc:
            self.stats.polls[(u.symbol, expiry)] += 1
            self._record(u, expiry, exc.received_ts, exc.body, exc.http_status)
            return self._deliver(u, expiry, exc.body, exc.received_ts or datetime.now(UTC))
        except _GaveUp as exc:
            reason = str(exc)
            log.error("%s", reason)
            self.publisher.dead_letter(
                stage="feed",
                error_type="fetch_failed",
                reason=reason,
                underlying=u.symbol,
                key=u.symbol.encode(),
            )
            self.stats.dead_lettered += 1
            self.metrics.dead_letters.labels(u.symbol, "fetch_failed").inc()
            return None
        self.stats.polls[(u.symbol, expiry)] += 1
        self._record(u, expiry, resp.received_ts, resp.body, resp.http_status)
        return self._deliver(u, expiry, resp.body, resp.received_ts)

    async def _loop(self, max_polls: int | None) -> None:
        done = 0
        while max_polls is None or done < max_polls:
            await self.refresh_expiries()
            if not self.schedule:
                log.warning("no expiries to poll yet; retrying in %.0fs", self.config.expiry_retry_s)
                await asyncio.sleep(min(self.config.expiry_retry_s, 5.0))
                continue
            u, expiry = self.schedule[self._cursor % len(self.schedule)]
            await self.poll(u, expiry)
            self._cursor = (self._cursor + 1) % len(self.schedule)
            done += 1

    async def run(self, stop: asyncio.Event | None = None, *, max_polls: int | None = None) -> PollStats:
        """Poll until ``stop`` is set (or ``max_polls`` scheduled polls are done); returns the stats."""
        loop_task = asyncio.create_task(self._loop(max_polls), name="dhan-poller")
        stop_task = asyncio.create_task(stop.wait() if stop is not None else asyncio.Event().wait())
        try:
            await asyncio.wait({loop_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (loop_task, stop_task):
                task.cancel()
            for task in (loop_task, stop_task):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return self.stats


# --------------------------------------------------------------------------- entry point
async def run_dhan_feed(
    settings: Settings,
    publisher: Publisher,
    underlyings: Sequence[DhanUnderlying | str] = ("NIFTY", "BANKNIFTY"),
    expiries: ExpirySpec = None,
    record_path: str | Path | None = None,
    stop: asyncio.Event | None = None,
    *,
    config: DhanFeedConfig | None = None,
    underlying_table: Mapping[str, DhanUnderlying] = DEFAULT_UNDERLYINGS,
    registry: CollectorRegistry = REGISTRY,
    max_polls: int | None = None,
) -> PollStats:
    """``hftengine feed dhan``: poll Dhan until ``stop`` and publish snapshots (optionally recording).

    Credentials come from ``settings.dhan_client_id``/``dhan_access_token``.
    ``expiries``: one list for every underlying, a mapping symbol -> list, or
    None for the next ``config.n_expiries`` expiries from Dhan's expiry list.
    """
    if settings.dhan_client_id is None or settings.dhan_access_token is None:
        raise ValueError("DHAN_CLIENT_ID and DHAN_ACCESS_TOKEN must be set for the Dhan feed")
    cfg = config or DhanFeedConfig()
    resolved = [resolve_underlying(u, underlying_table) for u in underlyings]
    bucket = TokenBucket(cfg.requests_per_second, cfg.burst)
    recorder = DhanRecorder(record_path) if record_path is not None else None
    try:
        async with DhanClient(
            settings.dhan_client_id,
            settings.dhan_access_token,
            base_url=cfg.base_url,
            timeout_s=cfg.timeout_s,
            bucket=bucket,
        ) as client:
            poller = DhanPoller(client, publisher, resolved, expiries, config=cfg, recorder=recorder, registry=registry)
            stats = await poller.run(stop, max_polls=max_polls)
    finally:
        if recorder is not None:
            recorder.close()
        publisher.flush()
    log.info(
        "Dhan feed stopped: %d published, %d dead-lettered, %d requests",
        stats.published,
        stats.dead_lettered,
        stats.requests,
    )
    return stats
