"""Faust's aiokafka transport with a configurable consumer fetch wait.

faust-streaming builds its worker consumer with ``fetch_max_wait_ms=1500``
hard-coded.  A broker that holds a fetch until that wait expires when no new
data arrives (Tansu does) then adds up to 1.5 s per hop to the pipeline's
freshness.  This transport sets the wait from ``HFT_CONSUMER_FETCH_MAX_WAIT_MS``.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka


def transport_class(fetch_max_wait_ms: int) -> type[faust_aiokafka.Transport]:
    class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = fetch_max_wait_ms  # read when the consumer starts its fetcher
            return consumer

    class Consumer(faust_aiokafka.Consumer):
        def _new_consumer_thread(self) -> Any:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class Transport(faust_aiokafka.Transport):
        pass

    Transport.Consumer = Consumer
    return Transport
