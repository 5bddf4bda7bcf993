"""Settings for every entry point.

Settings are read from the environment (and an optional ``.env`` file) and are
built only in entry points (CLI commands, ``hftengine.worker``), never at import
time.  Every field can be set with the environment variable shown in its
``validation_alias`` (e.g. ``KAFKA_BOOTSTRAP``) or with the ``HFT_`` prefix plus
the field name (e.g. ``HFT_RAW_TOPIC``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "password", "xxx", "todo"}


def _env(name: str, field: str) -> AliasChoices:
    return AliasChoices(name, f"HFT_{field.upper()}")


class Settings(BaseSettings):
    """All runtime configuration of the engine."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    # --- where things live -------------------------------------------------
    data_dir: Path = Field(
        default=Path(".data"),
        validation_alias=_env("HFT_DATA_DIR", "data_dir"),
        description="Directory for the embedded broker/database state, RocksDB tables and logs.",
    )

    # --- broker --------------------------------------------------------------
    kafka_bootstrap: str | None = Field(
        default=None,
        validation_alias=_env("KAFKA_BOOTSTRAP", "kafka_bootstrap"),
        description="host:port[,host:port] of a Kafka-protocol broker. Unset: the CLI starts Tansu.",
    )
    topic_partitions: int = Field(default=4, ge=1, validation_alias=_env("HFT_TOPIC_PARTITIONS", "topic_partitions"))
    topic_replication: int = Field(default=1, ge=1, validation_alias=_env("HFT_TOPIC_REPLICATION", "topic_replication"))
    raw_topic: str = Field(default="optionchain.raw", validation_alias=_env("HFT_RAW_TOPIC", "raw_topic"))
    enriched_topic: str = Field(
        default="optionchain.enriched", validation_alias=_env("HFT_ENRICHED_TOPIC", "enriched_topic")
    )
    deadletter_topic: str = Field(
        default="deadletter", validation_alias=_env("HFT_DEADLETTER_TOPIC", "deadletter_topic")
    )
    producer_max_batch_bytes: int = Field(
        default=1_048_576, ge=1,
        validation_alias=_env("HFT_PRODUCER_MAX_BATCH_BYTES", "producer_max_batch_bytes"),
        description="Worker producer batch size. An enriched chain (~90 kB) exceeds Kafka's usual 16 kB, "
        "so with that it would go out one record per batch. The embedded Tansu broker misreports a "
        "partition's end offset when the last batch holds several records (table recovery would stop "
        "early), so the CLI sets 1 (one record per batch) whenever it runs the embedded broker.",
    )
    producer_linger_ms: int = Field(
        default=20, ge=0, le=1000, validation_alias=_env("HFT_PRODUCER_LINGER_MS", "producer_linger_ms"),
        description="How long a worker's producer waits to fill a batch. Fewer, larger batches cost the "
        "broker less (Tansu's in-memory store scans a partition's batches on every fetch).",
    )
    feed_linger_ms: int = Field(
        default=20, ge=0, le=1000, validation_alias=_env("HFT_FEED_LINGER_MS", "feed_linger_ms"),
        description="How long a feed's producer waits to fill a batch of raw snapshots (see "
        "HFT_PRODUCER_LINGER_MS).",
    )
    feed_compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        default="lz4", validation_alias=_env("HFT_FEED_COMPRESSION", "feed_compression"),
        description="Compression of the raw snapshots the feeds produce (done in librdkafka's threads). "
        "lz4 halves to thirds a chain's bytes through the broker for ~0.05 ms per chain; workers "
        "decompress any codec.",
    )
    consumer_fetch_max_wait_ms: int = Field(
        default=100, ge=1, le=10_000,
        validation_alias=_env("HFT_CONSUMER_FETCH_MAX_WAIT_MS", "consumer_fetch_max_wait_ms"),
        description="How long a worker's fetch may wait for new data (faust-streaming hard-codes 1500 ms; "
        "Tansu holds fetches for the whole wait, which cost ~1 s of freshness per hop).",
    )
    consumer_session_timeout_s: float = Field(
        default=6.0, gt=0, validation_alias=_env("HFT_SESSION_TIMEOUT", "consumer_session_timeout_s")
    )

    # --- schema registry ----------------------------------------------------
    schema_registry_url: str | None = Field(
        default=None,
        validation_alias=_env("SCHEMA_REGISTRY_URL", "schema_registry_url"),
        description="Confluent-compatible registry. Unset: the engine serves its built-in registry.",
    )
    registry_port: int = Field(default=8081, validation_alias=_env("HFT_REGISTRY_PORT", "registry_port"))

    # --- database ------------------------------------------------------------
    database_url: SecretStr | None = Field(
        default=None,
        validation_alias=_env("DATABASE_URL", "database_url"),
        description="postgresql:// URL. Unset: the CLI starts an embedded PostgreSQL under data_dir.",
    )
    db_pool_size: int = Field(default=8, ge=1, validation_alias=_env("HFT_DB_POOL_SIZE", "db_pool_size"))

    # --- redis (optional) ------------------------------------------------------
    redis_url: SecretStr | None = Field(default=None, validation_alias=_env("REDIS_URL", "redis_url"))

    # --- worker ---------------------------------------------------------------
    app_id: str = Field(default="hftengine", validation_alias=_env("HFT_APP_ID", "app_id"))
    worker_web_port: int = Field(default=6066, validation_alias=_env("HFT_WORKER_WEB_PORT", "worker_web_port"))
    sink_batch_size: int = Field(default=64, ge=1, validation_alias=_env("HFT_SINK_BATCH", "sink_batch_size"))
    sink_batch_seconds: float = Field(
        default=0.2, gt=0, validation_alias=_env("HFT_SINK_WITHIN", "sink_batch_seconds")
    )
    stateful_batch_size: int = Field(
        default=64, ge=1, validation_alias=_env("HFT_STATEFUL_BATCH", "stateful_batch_size"),
        description="Enriched snapshots the stateful agent applies per batch: one broker round trip for the "
        "analytics records of the whole batch, one table write per chain.",
    )
    stateful_batch_seconds: float = Field(
        default=0.1, gt=0, validation_alias=_env("HFT_STATEFUL_WITHIN", "stateful_batch_seconds"),
        description="Longest wait for a stateful batch to fill.",
    )
    stateful_enabled: bool = Field(
        default=True, validation_alias=_env("HFT_STATEFUL_ENABLED", "stateful_enabled"),
        description="Run the stateful analytics agents (tables, analytics.* topics) in this app. Every worker "
        "of one HFT_APP_ID must use the same value.",
    )
    sink_rollup_mode: Literal["inline", "deferred"] = Field(
        default="deferred", validation_alias=_env("HFT_SINK_ROLLUP_MODE", "sink_rollup_mode"),
        description="Plain PostgreSQL: 'deferred' writes raw rows only and a worker timer materializes "
        "rollups every HFT_ROLLUP_REFRESH seconds (reads compute open buckets on the fly); 'inline' "
        "materializes closed buckets in every sink transaction.",
    )
    rollup_refresh_s: float = Field(
        default=60.0, gt=0, validation_alias=_env("HFT_ROLLUP_REFRESH", "rollup_refresh_s")
    )
    rollup_refresh_nice: int = Field(
        default=10, ge=0, le=19, validation_alias=_env("HFT_ROLLUP_REFRESH_NICE", "rollup_refresh_nice"),
        description="When the database runs on this machine, the scheduled rollup refresh's backend runs "
        "this much nicer (lower CPU priority) so its once-a-minute burst does not delay the pipeline; 0 "
        "leaves it alone. Remote databases are never touched.",
    )
    risk_free_rate: float = Field(default=0.065, validation_alias=_env("HFT_RISK_FREE_RATE", "risk_free_rate"))
    dividend_yield: float = Field(default=0.0, validation_alias=_env("HFT_DIVIDEND_YIELD", "dividend_yield"))

    # --- API -------------------------------------------------------------------
    api_host: str = Field(default="127.0.0.1", validation_alias=_env("HFT_API_HOST", "api_host"))
    api_port: int = Field(default=8000, validation_alias=_env("HFT_API_PORT", "api_port"))

    # --- simulator ---------------------------------------------------------------
    sim_seed: int = Field(default=7, validation_alias=_env("HFT_SIM_SEED", "sim_seed"))
    sim_interval_s: float = Field(default=1.0, gt=0, validation_alias=_env("HFT_SIM_INTERVAL", "sim_interval_s"))

    # --- DhanHQ (secrets) ------------------------------------------------------------
    dhan_client_id: SecretStr | None = Field(default=None, validation_alias=_env("DHAN_CLIENT_ID", "dhan_client_id"))
    dhan_access_token: SecretStr | None = Field(
        default=None, validation_alias=_env("DHAN_ACCESS_TOKEN", "dhan_access_token")
    )

    dhan_base_url: str = Field(
        default="https://api.dhan.co", validation_alias=_env("DHAN_BASE_URL", "dhan_base_url"),
        description="DhanHQ API base URL (point it at `hftengine feed fake-dhan` for an offline run).",
    )
    dhan_requests_per_second: float = Field(
        default=1 / 3, gt=0, validation_alias=_env("DHAN_REQUESTS_PER_SECOND", "dhan_requests_per_second"),
        description="Option-chain requests per second for one credential (Dhan allows one every 3 s).",
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", validation_alias=_env("HFT_LOG_LEVEL", "log_level")
    )

    # --- stateful analytics (docs/analytics.md) ------------------------------------------
    analytics_oi_topic: str = Field(
        default="analytics.oi", validation_alias=_env("HFT_ANALYTICS_OI_TOPIC", "analytics_oi_topic")
    )
    analytics_levels_topic: str = Field(
        default="analytics.levels", validation_alias=_env("HFT_ANALYTICS_LEVELS_TOPIC", "analytics_levels_topic")
    )
    analytics_patterns_topic: str = Field(
        default="analytics.patterns",
        validation_alias=_env("HFT_ANALYTICS_PATTERNS_TOPIC", "analytics_patterns_topic"),
    )
    velocity_windows_s: tuple[int, ...] = Field(
        default=(60, 300, 900), validation_alias=_env("HFT_VELOCITY_WINDOWS", "velocity_windows_s"),
        description="OI/premium velocity windows in seconds (JSON list, e.g. [60,300,900]).",
    )

    @field_validator("dhan_access_token", "dhan_client_id")
    @classmethod
    def _refuse_placeholders(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and v.get_secret_value().strip().lower() in _PLACEHOLDER_SECRETS:
            raise ValueError("refusing a placeholder secret; set the real value or leave it unset")
        return v

    # --- derived -------------------------------------------------------------------
    @property
    def kafka_broker_url(self) -> str:
        """Faust broker URL(s) built from ``kafka_bootstrap``."""
        if not self.kafka_bootstrap:
            raise RuntimeError("KAFKA_BOOTSTRAP is not set (the CLI starts an embedded broker when unset)")
        return ";".join(f"kafka://{h.strip()}" for h in self.kafka_bootstrap.split(",") if h.strip())

    def database_dsn(self) -> str:
        if self.database_url is None:
            raise RuntimeError("DATABASE_URL is not set (the CLI starts an embedded PostgreSQL when unset)")
        return self.database_url.get_secret_value()

    def registry_url(self) -> str:
        if not self.schema_registry_url:
            raise RuntimeError("SCHEMA_REGISTRY_URL is not set (the CLI serves the built-in registry when unset)")
        return self.schema_registry_url.rstrip("/")
