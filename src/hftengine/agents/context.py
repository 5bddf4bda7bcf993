"""Per-worker shared objects: codecs (lazy, cached), the store, the DB thread."""

from __future__ import annotations

import concurrent.futures
from functools import cached_property
from typing import Any

from hftengine.codec.avro import (
    AvroDeserializer,
    AvroSerializer,
    load_schema_text,
    make_registry_client,
    subject_for,
)
from hftengine.config import Settings
from hftengine.storage.sink import PostgresChainStore


class WorkerContext:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db_executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="hft-db")
        self.maintenance_executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="hft-maint")

    @cached_property
    def registry(self) -> Any:
        return make_registry_client(self.settings.registry_url())

    @cached_property
    def raw_decoder(self) -> AvroDeserializer:
        return AvroDeserializer(self.registry, load_schema_text("optionchain_raw"))

    @cached_property
    def enriched_encoder(self) -> AvroSerializer:
        return AvroSerializer(
            self.registry, subject_for(self.settings.enriched_topic), load_schema_text("optionchain_enriched")
        )

    @cached_property
    def enriched_decoder(self) -> AvroDeserializer:
        return AvroDeserializer(self.registry, load_schema_text("optionchain_enriched"))

    @cached_property
    def dead_encoder(self) -> AvroSerializer:
        return AvroSerializer(
            self.registry, subject_for(self.settings.deadletter_topic), load_schema_text("deadletter")
        )

    @cached_property
    def dead_decoder(self) -> AvroDeserializer:
        return AvroDeserializer(self.registry, load_schema_text("deadletter"))

    @cached_property
    def store(self) -> PostgresChainStore:
        return PostgresChainStore(self.settings.database_dsn(), rollup_mode=self.settings.sink_rollup_mode)

    def close(self) -> None:
        if "store" in self.__dict__:
            self.db_executor.submit(self.store.close).result(timeout=10)
        self.db_executor.shutdown(wait=True)
        self.maintenance_executor.shutdown(wait=True, cancel_futures=True)
