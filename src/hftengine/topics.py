"""Topic names, partition counts and creation on the broker."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from hftengine.config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication: int
    schema: str  # schemas/<schema>.avsc describes its values
    doc: str


def topic_specs(settings: Settings) -> list[TopicSpec]:
    p, r = settings.topic_partitions, settings.topic_replication
    return [
        TopicSpec(settings.raw_topic, p, r, "optionchain_raw", "raw chain snapshots from the feeds, key=underlying"),
        TopicSpec(settings.enriched_topic, p, r, "optionchain_enriched",
                  "snapshots + IV/Greeks/chain analytics, key=underlying"),
        TopicSpec(settings.deadletter_topic, 1, r, "deadletter", "anything undecodable or invalid, with the reason"),
        TopicSpec(settings.analytics_oi_topic, p, r, "analytics_oi",
                  "cumulative OI and velocity per chain snapshot, key=underlying"),
        TopicSpec(settings.analytics_levels_topic, p, r, "analytics_levels",
                  "support/resistance, GEX walls, max pain per chain snapshot, key=underlying"),
        TopicSpec(settings.analytics_patterns_topic, p, r, "analytics_patterns",
                  "pattern events (build-ups, level shifts, IV spikes, flow...), key=underlying"),
    ]


def create_topics(bootstrap: str, specs: list[TopicSpec], timeout: float = 30.0) -> dict[str, str]:
    """Create missing topics; returns ``{name: "created" | "exists"}``."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=timeout).topics)
    result: dict[str, str] = {}
    todo = []
    for spec in specs:
        if spec.name in existing:
            result[spec.name] = "exists"
        else:
            todo.append(NewTopic(spec.name, num_partitions=spec.partitions, replication_factor=spec.replication))
    if todo:
        futures = admin.create_topics(todo, operation_timeout=timeout, request_timeout=timeout)
        for name, fut in futures.items():
            try:
                fut.result(timeout)
                result[name] = "created"
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" in str(exc) or "already exists" in str(exc).lower():
                    result[name] = "exists"
                else:
                    raise
    return result
