"""Publishing snapshots onto the raw topic (Avro, Confluent wire format).

Every feed (simulator, DhanHQ, replay) hands ``ChainSnapshot`` objects to a
``Publisher``.  Invalid snapshots never reach the raw topic: they go to the
dead-letter topic with the reason, and the feed carries on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from hftengine.codec.avro import AvroSerializer, load_schema_text, make_registry_client, subject_for
from hftengine.snapshot import ChainSnapshot

if TYPE_CHECKING:
    from hftengine.config import Settings

log = logging.getLogger(__name__)


class Publisher(Protocol):
    """Where feeds put snapshots."""

    def publish(self, snapshot: ChainSnapshot) -> bool:
        """Validate and send; returns False (and dead-letters it) if invalid."""
        ...

    def dead_letter(
        self, *, stage: str, error_type: str, reason: str, value: bytes | None = None,
        underlying: str | None = None, key: bytes | None = None,
    ) -> None: ...

    def flush(self, timeout: float = 30.0) -> int: ...


def dead_letter_record(
    *, stage: str, error_type: str, reason: str, value: bytes | None = None, underlying: str | None = None,
    key: bytes | None = None, source_topic: str | None = None, source_partition: int | None = None,
    source_offset: int | None = None, schema_id: int | None = None,
) -> dict[str, Any]:
    """A record for ``schemas/deadletter.avsc``."""
    return {
        "stage": stage, "reason": reason, "error_type": error_type, "source_topic": source_topic,
        "source_partition": source_partition, "source_offset": source_offset, "schema_id": schema_id,
        "underlying": underlying, "key": key, "value": value, "failed_ts": datetime.now(UTC),
    }


def reject_invalid(publisher: Publisher, snapshot: ChainSnapshot) -> bool:
    """Dead-letter ``snapshot`` through ``publisher`` if it has problems; True when it was rejected."""
    problems = snapshot.problems()
    if problems:
        publisher.dead_letter(stage="feed", error_type="invalid_chain", reason="; ".join(problems),
                              underlying=snapshot.underlying, key=snapshot.key)
    return bool(problems)


class KafkaPublisher:
    """Idempotent confluent-kafka producer writing raw snapshots and dead letters."""

    def __init__(
        self, bootstrap: str, registry_url: str, raw_topic: str, deadletter_topic: str,
        *, linger_ms: int = 5, compression: str = "lz4", on_delivery_error: Callable[[str], None] | None = None,
    ) -> None:
        from confluent_kafka import Producer

        registry = make_registry_client(registry_url)
        self.raw_topic = raw_topic
        self.deadletter_topic = deadletter_topic
        self._raw = AvroSerializer(registry, subject_for(raw_topic), load_schema_text("optionchain_raw"))
        self._dlq = AvroSerializer(registry, subject_for(deadletter_topic), load_schema_text("deadletter"))
        self._producer = Producer({
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": linger_ms,
            "compression.type": compression,
            "message.max.bytes": 8_000_000,
            "log.connection.close": False,
        })
        self.sent = 0
        self.dead_lettered = 0
        self.delivery_errors = 0
        self._on_delivery_error = on_delivery_error

    @classmethod
    def for_settings(cls, settings: Settings) -> KafkaPublisher:
        """The publisher ``settings`` describe: broker, registry, raw and dead-letter topics, feed
        compression and linger."""
        if not settings.kafka_bootstrap:
            raise ValueError("a Kafka publisher needs KAFKA_BOOTSTRAP (or the embedded broker's address)")
        return cls(settings.kafka_bootstrap, settings.registry_url(), settings.raw_topic, settings.deadletter_topic,
                   linger_ms=settings.feed_linger_ms, compression=settings.feed_compression)

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.delivery_errors += 1
            text = f"delivery to {msg.topic()} failed: {err}"
            log.error(text)
            if self._on_delivery_error:
                self._on_delivery_error(text)

    def _produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=self._delivered)
                break
            except BufferError:  # local queue full: let librdkafka drain, then retry
                self._producer.poll(0.05)
        self._producer.poll(0)

    def encode(self, snapshot: ChainSnapshot) -> bytes:
        return self._raw.encode(snapshot.to_record())

    def publish(self, snapshot: ChainSnapshot) -> bool:
        if reject_invalid(self, snapshot):
            return False
        self._produce(self.raw_topic, snapshot.key, self.encode(snapshot))
        self.sent += 1
        return True

    def publish_encoded(self, key: bytes, value: bytes) -> None:
        """Send an already-encoded raw value (benchmarks, bad-input tests)."""
        self._produce(self.raw_topic, key, value)
        self.sent += 1

    def dead_letter(
        self, *, stage: str, error_type: str, reason: str, value: bytes | None = None,
        underlying: str | None = None, key: bytes | None = None,
    ) -> None:
        rec = dead_letter_record(stage=stage, error_type=error_type, reason=reason, value=value,
                                 underlying=underlying, key=key)
        self._produce(self.deadletter_topic, key, self._dlq.encode(rec))
        self.dead_lettered += 1
        log.warning("dead-lettered (%s/%s): %s", stage, error_type, reason)

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for outstanding deliveries; returns how many are still queued."""
        return int(self._producer.flush(timeout))

    def close(self, timeout: float = 30.0) -> int:
        """Flush and release the producer (before the broker goes away)."""
        left = self.flush(timeout)
        del self._producer
        return left
