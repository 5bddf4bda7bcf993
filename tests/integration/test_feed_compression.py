"""A feed's compressed snapshots, through the broker, read by the worker's Kafka client.

Feeds produce with librdkafka (``HFT_FEED_COMPRESSION``, lz4 by default); workers consume
with aiokafka, which needs ``cramjam`` for snappy, lz4 and zstd. Every codec a feed may be
configured with must come back byte for byte, or a worker would fail on the whole feed.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer

from hftengine.codec.avro import AvroDeserializer, make_registry_client
from hftengine.feeds.publisher import KafkaPublisher
from hftengine.snapshot import ChainSnapshot
from hftengine.topics import TopicSpec, create_topics
from tests.factories import make_chain

pytestmark = pytest.mark.timeout(120)


async def _consume(bootstrap: str, topic: str, n: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        values: list[bytes] = []
        while len(values) < n:
            batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 30)
            values.extend(m.value for msgs in batch.values() for m in msgs if m.value is not None)
        return values
    finally:
        await consumer.stop()


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_worker_client_reads_every_feed_codec(kafka_bootstrap: str, registry_url: str, unique: str,
                                              codec: str) -> None:
    raw, dlq = f"raw-{codec}-{unique}", f"dlq-{codec}-{unique}"
    specs = [TopicSpec(raw, 1, 1, "optionchain_raw", "test"), TopicSpec(dlq, 1, 1, "deadletter", "test")]
    create_topics(kafka_bootstrap, specs)
    pub = KafkaPublisher(kafka_bootstrap, registry_url, raw, dlq, compression=codec)
    chains = [make_chain(n_strikes=101, seed=seed) for seed in range(3)]
    for chain in chains:
        assert pub.publish(chain)
    assert pub.flush(30) == 0 and pub.delivery_errors == 0

    values = asyncio.run(_consume(kafka_bootstrap, raw, len(chains)))
    decoder = AvroDeserializer(make_registry_client(registry_url))
    decoded = [ChainSnapshot.from_record(decoder.decode(v)[1]) for v in values]
    assert [pub.encode(c) for c in chains] == values
    assert [d.key for d in decoded] == [c.key for c in chains]
