"""The ``hftengine`` command.

Every command reads settings from the environment (see README, Configuration).
Services that are not configured (broker, database, registry) are started
embedded, so each command also works alone on a fresh machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer

from hftengine.config import Settings

app = typer.Typer(
    help="HFT Data Engine: real-time option-chain analytics (Kafka + Faust + PostgreSQL/TimescaleDB + REST).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
feed_app = typer.Typer(help="Feeds that publish option-chain snapshots to the raw topic.", no_args_is_help=True)
topics_app = typer.Typer(help="Create and list the engine's Kafka topics.", no_args_is_help=True)
registry_app = typer.Typer(help="Schema registry: serve the built-in one, register and list schemas.",
                           no_args_is_help=True)
app.add_typer(feed_app, name="feed")
app.add_typer(topics_app, name="topics")
app.add_typer(registry_app, name="registry")


def _settings(data_dir: Path | None = None) -> Settings:
    from hftengine.logsetup import configure_logging

    try:
        settings = Settings()
    except Exception as exc:  # pydantic ValidationError: show it plainly
        typer.secho(f"configuration error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    if data_dir is not None:
        settings = settings.model_copy(update={"data_dir": data_dir})
    configure_logging(settings.log_level)
    return settings


def _say(msg: str) -> None:
    typer.secho(f"• {msg}", fg="cyan", err=True)


DataDir = Annotated[Path | None, typer.Option("--data-dir", help="State directory (default .data or HFT_DATA_DIR).")]


# --------------------------------------------------------------------------- migrate
@app.command()
def migrate(data_dir: DataDir = None) -> None:
    """Apply the numbered SQL migrations (TimescaleDB layer when the extension exists)."""
    from hftengine.services import Services
    from hftengine.storage.migrations import migrate as run_migrations

    settings = _settings(data_dir)
    with Services(settings, need_broker=False, need_registry=False, say=_say) as s:
        report = run_migrations(s.database_dsn())
    typer.echo(f"applied: {', '.join(report.applied) or 'none'}; already applied: {len(report.skipped)}; "
               f"timescaledb: {report.timescale_version or 'absent (plain PostgreSQL layout)'}")


# ---------------------------------------------------------------------------- topics
@topics_app.command("create")
def topics_create(data_dir: DataDir = None) -> None:
    """Create the raw, enriched and dead-letter topics (partitions from HFT_TOPIC_PARTITIONS)."""
    from hftengine.services import Services
    from hftengine.topics import create_topics, topic_specs

    settings = _settings(data_dir)
    with Services(settings, need_database=False, need_registry=False, say=_say) as s:
        assert s.kafka_bootstrap
        result = create_topics(s.kafka_bootstrap, topic_specs(s))
    for spec in topic_specs(settings):
        typer.echo(f"{spec.name:<28} {spec.partitions:>3} partitions  {result.get(spec.name, '?'):<8} {spec.doc}")


@topics_app.command("list")
def topics_list() -> None:
    """List topics on the configured broker (KAFKA_BOOTSTRAP)."""
    from confluent_kafka.admin import AdminClient

    settings = _settings()
    if not settings.kafka_bootstrap:
        typer.secho("KAFKA_BOOTSTRAP is not set", fg="red", err=True)
        raise typer.Exit(2)
    md = AdminClient({"bootstrap.servers": settings.kafka_bootstrap}).list_topics(timeout=10)
    for name, t in sorted(md.topics.items()):
        typer.echo(f"{name:<40} {len(t.partitions):>3} partitions")


# -------------------------------------------------------------------------- registry
@registry_app.command("serve")
def registry_serve(
    port: Annotated[int | None, typer.Option(help="Port (default HFT_REGISTRY_PORT, 8081).")] = None,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    data_dir: DataDir = None,
) -> None:
    """Serve the built-in Confluent-compatible schema registry (persisted in PostgreSQL)."""
    import uvicorn

    from hftengine.codec.registry_server import create_registry_app
    from hftengine.services import Services
    from hftengine.storage.migrations import migrate as run_migrations

    settings = _settings(data_dir)
    with Services(settings, need_broker=False, need_registry=False, say=_say) as s:
        run_migrations(s.database_dsn())
        port = port or s.registry_port
        _say(f"schema registry on http://{host}:{port}")
        uvicorn.run(create_registry_app(s.database_dsn()), host=host, port=port, log_level="warning")


@registry_app.command("register")
def registry_register() -> None:
    """Register every schema in schemas/ under its topic's subject (SCHEMA_REGISTRY_URL)."""
    from hftengine.codec.avro import AvroSerializer, load_schema_text, make_registry_client, subject_for
    from hftengine.topics import topic_specs

    settings = _settings()
    registry = make_registry_client(settings.registry_url())
    for spec in topic_specs(settings):
        ser = AvroSerializer(registry, subject_for(spec.name), load_schema_text(spec.schema))
        typer.echo(f"{ser.subject:<36} id {ser.schema_id}")


@registry_app.command("subjects")
def registry_subjects() -> None:
    """List subjects and their latest versions (SCHEMA_REGISTRY_URL)."""
    from hftengine.codec.avro import make_registry_client

    settings = _settings()
    registry = make_registry_client(settings.registry_url())
    for subject in registry.get_subjects():
        latest = registry.get_latest_version(subject)
        typer.echo(f"{subject:<36} version {latest.version} id {latest.schema_id}")


# ---------------------------------------------------------------------------- worker
@app.command()
def worker(
    loglevel: Annotated[str, typer.Option("--loglevel", "-l", help="crit|error|warn|info|debug")] = "warn",
    datadir: Annotated[Path | None, typer.Option(help="Local table state directory.")] = None,
    web_port: Annotated[int | None, typer.Option(help="Worker web/metrics port.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Run a stream worker (enrich → sink → dead letters). Same as `faust -A hftengine.worker worker`."""
    from hftengine.app import Worker, create_app
    from hftengine.services import Services
    from hftengine.storage.migrations import migrate as run_migrations
    from hftengine.topics import create_topics, topic_specs

    settings = _settings(data_dir)
    embedded_broker = not settings.kafka_bootstrap
    with Services(settings, say=_say) as s:
        run_migrations(s.database_dsn())
        assert s.kafka_bootstrap
        create_topics(s.kafka_bootstrap, topic_specs(s))
        if web_port is not None:
            s = s.model_copy(update={"worker_web_port": web_port})
        if embedded_broker:
            # Tansu misreports end offsets of multi-record batches: one record per batch
            s = s.model_copy(update={"producer_max_batch_bytes": 1})
        if datadir is None and embedded_broker:
            # memory-only broker: never reuse table state from an earlier broker run
            datadir = s.data_dir / "worker" / uuid.uuid4().hex[:8]
        fapp = create_app(s, datadir=datadir)
        Worker(fapp, loglevel=loglevel, quiet=True).execute_from_commandline()


# ------------------------------------------------------------------------------- api
@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Bind address (default HFT_API_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default HFT_API_PORT, 8000).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Serve the REST API (OpenAPI docs at /docs)."""
    import uvicorn

    from hftengine.api import create_api
    from hftengine.services import Services

    settings = _settings(data_dir)
    with Services(settings, need_broker=False, need_registry=False, say=_say) as s:
        host = host or s.api_host
        port = port or s.api_port
        _say(f"API on http://{host}:{port}  (docs: http://{host}:{port}/docs)")
        uvicorn.run(create_api(s), host=host, port=port, log_level="warning")


# ------------------------------------------------------------------------------ feeds
@feed_app.command("sim")
def feed_sim(
    rate: Annotated[float, typer.Option(help="Snapshot ticks per second (0 = as fast as possible).")] = 1.0,
    steps: Annotated[int | None, typer.Option(help="Stop after this many ticks.")] = None,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    underlyings: Annotated[str | None, typer.Option(help="Comma-separated symbols (default: all).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default HFT_SIM_SEED).")] = None,
    strikes_per_side: Annotated[int | None, typer.Option(help="Strikes each side of ATM.")] = None,
    expiries: Annotated[int, typer.Option(help="Expiries per underlying.")] = 2,
    scenarios: Annotated[bool, typer.Option(help="Play the scripted demo scenarios.")] = True,
    data_dir: DataDir = None,
) -> None:
    """Publish simulated option chains (seeded, deterministic) to the raw topic."""
    from hftengine.feeds.publisher import KafkaPublisher
    from hftengine.feeds.simulator import MarketSimulator, run_simulator
    from hftengine.services import Services

    settings = _settings(data_dir)
    names = [u.strip().upper() for u in underlyings.split(",")] if underlyings else None
    with Services(settings, need_database=not settings.schema_registry_url, say=_say) as s:
        publisher = KafkaPublisher.for_settings(s)
        kwargs: dict[str, Any] = {"strikes_per_side": strikes_per_side, "expiries_per_underlying": expiries}
        seed = s.sim_seed if seed is None else seed
        sim = (MarketSimulator.with_demo_scenarios(seed, names, **kwargs) if scenarios
               else MarketSimulator(seed, names, **kwargs))
        stop = threading.Event()
        _install_stop(stop)
        _say(f"simulating {', '.join(names or ['all underlyings'])} at "
             f"{'max' if not rate else rate} ticks/s → {s.raw_topic}")
        stats = run_simulator(sim, publisher, rate=rate or None, steps=steps, duration=duration, stop=stop)
        left = publisher.close(30)
    typer.echo(f"published {stats.snapshots} snapshots ({stats.contracts} contracts) in {stats.elapsed:.1f}s; "
               f"dead-lettered {stats.dead_lettered}; undelivered {left}")


@feed_app.command("dhan")
def feed_dhan(
    underlying: Annotated[list[str] | None, typer.Option(
        "--underlying", "-u", help="Symbol to poll (repeatable; default NIFTY and BANKNIFTY).")] = None,
    expiry: Annotated[list[str] | None, typer.Option("--expiry", "-e", help="Expiry YYYY-MM-DD (repeatable); "
                                                     "default: the next --n-expiries from Dhan's list.")] = None,
    n_expiries: Annotated[int, typer.Option(help="Expiries per underlying when --expiry is not given.")] = 2,
    rate: Annotated[float | None, typer.Option(help="Requests/s (default DHAN_REQUESTS_PER_SECOND = 1/3).")] = None,
    record: Annotated[Path | None, typer.Option(help="Also save raw responses as JSON lines (for replay).")] = None,
    base_url: Annotated[str | None, typer.Option(help="API base URL (default DHAN_BASE_URL).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Poll DhanHQ v2 option chains within the rate limit and publish them (DHAN_CLIENT_ID, DHAN_ACCESS_TOKEN)."""
    underlying = underlying or ["NIFTY", "BANKNIFTY"]
    import asyncio
    from datetime import date

    from hftengine.feeds.dhan import DhanFeedConfig, run_dhan_feed
    from hftengine.feeds.publisher import KafkaPublisher
    from hftengine.services import Services

    settings = _settings(data_dir)
    if settings.dhan_client_id is None or settings.dhan_access_token is None:
        typer.secho("DHAN_CLIENT_ID and DHAN_ACCESS_TOKEN must be set (see README, Configuration)", fg="red", err=True)
        raise typer.Exit(2)
    try:
        expiries = [date.fromisoformat(e) for e in expiry] if expiry else None
    except ValueError as exc:
        typer.secho(f"--expiry: {exc} (use YYYY-MM-DD)", fg="red", err=True)
        raise typer.Exit(2) from exc
    config = DhanFeedConfig(base_url=base_url or settings.dhan_base_url,
                            requests_per_second=rate or settings.dhan_requests_per_second, n_expiries=n_expiries)
    with Services(settings, need_database=not settings.schema_registry_url, say=_say) as s:
        publisher = KafkaPublisher.for_settings(s)

        async def run() -> Any:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            _say(f"polling {', '.join(underlying)} at {config.requests_per_second:.3g} req/s from {config.base_url}")
            return await run_dhan_feed(s, publisher, [u.upper() for u in underlying], expiries, record, stop,
                                       config=config)

        stats = asyncio.run(run())
        publisher.close(30)
    typer.echo(f"done: {stats}")


@feed_app.command("replay")
def feed_replay(
    path: Annotated[list[Path], typer.Argument(help="Files or directories (Dhan .jsonl, NSE .json, .csv; .gz ok).")],
    speed: Annotated[str, typer.Option(help="1 = original pace, N = N× faster, max = as fast as possible.")] = "1",
    fmt: Annotated[str | None, typer.Option("--format", help="dhan | nse | csv (default: from the suffix).")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    data_dir: DataDir = None,
) -> None:
    """Replay recorded option chains onto the raw topic (the running workers enrich and store them)."""
    from hftengine.feeds.publisher import KafkaPublisher
    from hftengine.feeds.replay import replay
    from hftengine.services import Services

    factor = _speed(speed)
    _check_paths(path)
    settings = _settings(data_dir)
    with Services(settings, need_database=not settings.schema_registry_url, say=_say) as s:
        publisher = KafkaPublisher.for_settings(s)
        stats = replay([str(p) for p in path], publisher, factor, fmt, progress)
        publisher.close(30)
    _report_replay(stats)


@app.command()
def backfill(
    path: Annotated[list[Path], typer.Argument(help="Files or directories (Dhan .jsonl, NSE .json, .csv; .gz ok).")],
    fmt: Annotated[str | None, typer.Option("--format", help="dhan | nse | csv (default: from the suffix).")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    data_dir: DataDir = None,
) -> None:
    """Load recorded chains straight into storage, as fast as possible (same validation, kernels and sink)."""
    from hftengine.feeds.replay import backfill as run_backfill
    from hftengine.services import Services
    from hftengine.storage.direct import DirectStorePublisher
    from hftengine.storage.migrations import migrate as run_migrations

    _check_paths(path)
    settings = _settings(data_dir)
    with Services(settings, need_broker=False, need_registry=False, say=_say) as s:
        run_migrations(s.database_dsn())
        publisher = DirectStorePublisher(s.database_dsn(), r=s.risk_free_rate, q=s.dividend_yield)
        try:
            stats = run_backfill([str(p) for p in path], publisher, fmt, progress)
        finally:
            publisher.close()
    _report_replay(stats)
    typer.echo(f"stored {publisher.chains_written} new chains ({publisher.quote_rows} contract rows), "
               f"{publisher.chains_duplicate} already stored, {publisher.dead_lettered} dead letters")


@feed_app.command("fake-dhan")
def feed_fake_dhan(
    port: Annotated[int, typer.Option(help="Port.")] = 8765,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
) -> None:
    """Serve a local fake of the DhanHQ option-chain API (offline demos; credentials fake-client/fake-token)."""
    from hftengine.feeds.fake_dhan import serve_fake_dhan

    _say(f"fake DhanHQ API on http://{host}:{port} — run the feed with DHAN_BASE_URL=http://{host}:{port} "
         "DHAN_CLIENT_ID=fake-client DHAN_ACCESS_TOKEN=fake-token")
    serve_fake_dhan(host=host, port=port, log_level="warning")


def _speed(text: str) -> float | None:
    if text.lower() in ("max", "0", "inf", "fast"):
        return None
    try:
        value = float(text.rstrip("xX"))
    except ValueError:
        typer.secho(f"--speed {text!r}: use 1, 10, 0.5 or max", fg="red", err=True)
        raise typer.Exit(2) from None
    if value <= 0:
        typer.secho("--speed must be > 0 (or max)", fg="red", err=True)
        raise typer.Exit(2)
    return value


def _check_paths(paths: list[Path]) -> None:
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        typer.secho(f"no such file or directory: {', '.join(missing)}", fg="red", err=True)
        raise typer.Exit(2)


def _report_replay(stats: Any) -> None:
    summary = getattr(stats, "summary", None)
    typer.echo(summary() if callable(summary) else str(stats))
    for err in list(getattr(stats, "errors", []))[:20]:
        typer.secho(f"  skipped {err}", fg="yellow", err=True)


def _install_stop(stop: threading.Event) -> None:
    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


# ------------------------------------------------------------------------------- demo
@app.command()
def demo(
    api_port: Annotated[int, typer.Option(help="API port.")] = 8000,
    rate: Annotated[float, typer.Option(help="Simulator ticks per second.")] = 1.0,
    underlyings: Annotated[str, typer.Option(help="Comma-separated symbols to simulate.")] = "NIFTY,BANKNIFTY,RELIANCE",
    data_dir: DataDir = None,
    fresh: Annotated[bool, typer.Option(help="Start from an empty database.")] = False,
) -> None:
    """Run the whole engine on this machine: broker, database, registry, worker, simulator and API.

    Ctrl-C stops everything it started.
    """
    from hftengine.services import Services
    from hftengine.storage.migrations import migrate as run_migrations
    from hftengine.topics import create_topics, topic_specs

    settings = _settings(data_dir)
    if fresh and settings.database_url is None:
        shutil.rmtree(settings.data_dir / "postgres", ignore_errors=True)
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    logs = settings.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    _install_stop(stop)
    t0 = time.monotonic()
    services = Services(settings, say=_say)
    with services as s:
        report = run_migrations(s.database_dsn())
        earlier = services.migrations.applied if services.migrations else []  # the built-in registry's
        _say(f"migrations: {len(earlier) + len(report.applied)} applied, {len(report.skipped) - len(earlier)} "
             "already there; "
             f"TimescaleDB {'on' if report.timescale else 'absent (plain PostgreSQL)'}")
        assert s.kafka_bootstrap
        create_topics(s.kafka_bootstrap, topic_specs(s))
        _say(f"topics ready: {', '.join(t.name for t in topic_specs(s))}")
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP": s.kafka_bootstrap,
            "DATABASE_URL": s.database_dsn(),
            "SCHEMA_REGISTRY_URL": s.registry_url(),
            "HFT_DATA_DIR": str(s.data_dir),
            "HFT_API_PORT": str(api_port),
        }
        if settings.kafka_bootstrap is None:  # embedded Tansu: one record per producer batch (see config)
            env["HFT_PRODUCER_MAX_BATCH_BYTES"] = "1"
        exe = [sys.executable, "-m", "hftengine.cli"]
        worker_dir = s.data_dir / "worker" / uuid.uuid4().hex[:8]
        plan = [
            ("worker", [*exe, "worker", "--datadir", str(worker_dir)]),
            ("simulator", [*exe, "feed", "sim", "--rate", str(rate), "--underlyings", underlyings]),
            ("api", [*exe, "api", "--port", str(api_port)]),
        ]
        try:
            for name, cmd in plan:
                log_file = open(logs / f"{name}.log", "ab")  # noqa: SIM115
                proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                        start_new_session=True)
                log_file.close()
                children.append((name, proc))
                _say(f"started {name} (pid {proc.pid}, log {logs / (name + '.log')})")
            base = f"http://127.0.0.1:{api_port}"
            _wait_http(base + "/health/live", 30, stop)
            typer.secho(
                f"\nHFT Data Engine is running ({time.monotonic() - t0:.1f}s to start)\n"
                f"  API docs      {base}/docs\n"
                f"  underlyings   {base}/v1/underlyings\n"
                f"  NIFTY chain   {base}/v1/option-chain/NIFTY/latest\n"
                f"  metrics       {base}/v1/analytics/NIFTY/metrics/latest\n"
                f"  OI build-up   {base}/v1/analytics/NIFTY/oi\n"
                f"  levels        {base}/v1/analytics/NIFTY/levels\n"
                f"  patterns      {base}/v1/analytics/NIFTY/patterns   (scripted scenarios start within minutes)\n"
                f"  health        {base}/health/ready\n"
                f"  registry      {s.registry_url()}/subjects\n"
                f"  broker        {s.kafka_bootstrap}    database {_redact(s.database_dsn())}\n"
                "Press Ctrl-C to stop everything.\n",
                fg="green", err=True,
            )
            last = 0.0
            while not stop.is_set():
                for name, proc in children:
                    if proc.poll() is not None:
                        typer.secho(f"{name} exited with code {proc.returncode}; see {logs / (name + '.log')}",
                                    fg="red", err=True)
                        stop.set()
                if time.monotonic() - last > 15:
                    last = time.monotonic()
                    _print_progress(s.database_dsn())
                stop.wait(0.5)
        finally:
            _say("stopping…")
            _stop_children(children)
    _say("stopped; nothing left running")


def _redact(dsn: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        return "<database>"
    return f"{params.get('host', '?')}:{params.get('port', '5432')}/{params.get('dbname', '?')}"


def _wait_http(url: str, timeout: float, stop: threading.Event) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop.is_set():
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        stop.wait(0.2)


def _print_progress(dsn: str) -> None:
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            chains, latest = conn.execute("SELECT count(*), max(ts) FROM chain_metrics").fetchone() or (0, None)
            dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()
        _say(f"stored {chains} chains (latest {latest}); dead letters {dead[0] if dead else 0}")
    except Exception as exc:
        _say(f"progress unavailable: {type(exc).__name__}")


def _stop_children(children: list[tuple[str, subprocess.Popen[bytes]]], timeout: float = 15.0) -> None:
    for _, proc in reversed(children):
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    for name, proc in reversed(children):
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _say(f"{name} did not stop in time; killing it")
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


@app.command("config")
def show_config() -> None:
    """Print the effective settings (secrets masked)."""
    settings = _settings()
    data = json.loads(settings.model_dump_json())
    for key in ("database_url", "redis_url", "dhan_client_id", "dhan_access_token"):
        if data.get(key):
            data[key] = "**********"
    typer.echo(json.dumps(data, indent=2, default=str))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
