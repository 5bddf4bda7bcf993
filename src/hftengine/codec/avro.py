"""Avro in the Confluent wire format: ``0x00`` + 4-byte big-endian schema id + datum.

Encoding and decoding use fastavro's schemaless reader/writer on parsed
schemas; schema ids come from a Confluent-compatible registry (the built-in
one or any other) through ``confluent_kafka``'s ``SchemaRegistryClient`` and
are cached, so the registry is asked once per schema id per process.
"""

from __future__ import annotations

import io
import json
import struct
import threading
import time
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import fastavro
from fastavro.types import Schema as FastavroSchema

MAGIC_BYTE = 0
_HEADER = struct.Struct(">bI")

#: schema file (without .avsc) -> the topic setting it describes
SCHEMA_FILES = ("optionchain_raw", "optionchain_enriched", "deadletter")


class DecodeError(Exception):
    """A message that cannot be decoded; ``error_type`` is a stable category."""

    def __init__(self, error_type: str, reason: str, schema_id: int | None = None) -> None:
        super().__init__(reason)
        self.error_type = error_type
        self.reason = reason
        self.schema_id = schema_id


class RegistryLike(Protocol):
    """The part of ``confluent_kafka.schema_registry.SchemaRegistryClient`` used here."""

    def register_schema(self, subject_name: str, schema: Any, normalize_schemas: bool = ...) -> int: ...

    def get_schema(self, schema_id: int, subject_name: str | None = ..., fmt: str | None = ...) -> Any: ...


def schemas_dir() -> Path:
    """The repository's ``schemas/`` directory (source of truth for every .avsc)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "schemas"
        if (candidate / "optionchain_raw.avsc").is_file():
            return candidate
    raise FileNotFoundError("schemas/ directory with optionchain_raw.avsc not found above " + str(here))


@cache
def load_schema_text(name: str) -> str:
    """Text of ``schemas/<name>.avsc``."""
    return (schemas_dir() / f"{name}.avsc").read_text(encoding="utf-8")


def parse(schema_text: str) -> FastavroSchema:
    return fastavro.parse_schema(json.loads(schema_text))


def subject_for(topic: str) -> str:
    """Confluent TopicNameStrategy subject of a topic's values."""
    return f"{topic}-value"


def make_registry_client(url: str) -> Any:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    return SchemaRegistryClient({"url": url})


class AvroSerializer:
    """Serializer for one subject: registers the schema once and prefixes the id."""

    def __init__(self, registry: RegistryLike, subject: str, schema_text: str) -> None:
        from confluent_kafka.schema_registry import Schema

        self.subject = subject
        self.schema_id = int(registry.register_schema(subject, Schema(schema_text, "AVRO")))
        self._parsed = parse(schema_text)
        self._header = _HEADER.pack(MAGIC_BYTE, self.schema_id)

    def encode(self, record: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        buf.write(self._header)
        fastavro.schemaless_writer(buf, self._parsed, record)
        return buf.getvalue()


class AvroDeserializer:
    """Decodes any wire-format message whose writer schema the registry knows.

    ``reader_schema`` (optional) resolves old writer schemas to the shape the
    code expects (Avro schema resolution).  Unknown ids are negatively cached
    for ``negative_ttl`` seconds so a burst of bad messages does not hammer
    the registry.
    """

    def __init__(
        self, registry: RegistryLike, reader_schema_text: str | None = None, negative_ttl: float = 30.0
    ) -> None:
        self._registry = registry
        self._reader = parse(reader_schema_text) if reader_schema_text else None
        self._writers: dict[int, FastavroSchema] = {}
        self._unknown: dict[int, float] = {}
        self._negative_ttl = negative_ttl
        self._lock = threading.Lock()

    def writer_schema(self, schema_id: int) -> FastavroSchema:
        parsed = self._writers.get(schema_id)
        if parsed is not None:
            return parsed
        with self._lock:
            until = self._unknown.get(schema_id)
            if until is not None and until > time.monotonic():
                raise DecodeError("unknown_schema_id", f"schema id {schema_id} is not in the registry", schema_id)
            try:
                schema = self._registry.get_schema(schema_id)
            except Exception as exc:  # SchemaRegistryError (404) or transport error
                status = getattr(exc, "http_status_code", None)
                if status == 404:
                    self._unknown[schema_id] = time.monotonic() + self._negative_ttl
                    raise DecodeError(
                        "unknown_schema_id", f"schema id {schema_id} is not in the registry", schema_id
                    ) from exc
                raise
            try:
                parsed = parse(schema.schema_str)
            except Exception as exc:
                raise DecodeError("bad_writer_schema", f"schema id {schema_id}: {exc}", schema_id) from exc
            self._writers[schema_id] = parsed
            return parsed

    def decode(self, data: bytes | None) -> tuple[int, dict[str, Any]]:
        if data is None or len(data) < _HEADER.size:
            raise DecodeError("truncated", f"message of {0 if data is None else len(data)} bytes has no Avro header")
        magic, schema_id = _HEADER.unpack_from(data)
        if magic != MAGIC_BYTE:
            raise DecodeError("bad_magic_byte", f"first byte is {magic}, expected 0 (Confluent wire format)")
        writer = self.writer_schema(schema_id)
        buf = io.BytesIO(data)
        buf.seek(_HEADER.size)
        try:
            record = fastavro.schemaless_reader(buf, writer, self._reader)
        except Exception as exc:
            raise DecodeError(
                "malformed_avro", f"datum does not decode with schema {schema_id}: {exc!r}", schema_id
            ) from exc
        if buf.tell() != len(data):
            raise DecodeError(
                "malformed_avro",
                f"{len(data) - buf.tell()} trailing bytes after the datum (schema {schema_id})",
                schema_id,
            )
        if not isinstance(record, dict):
            raise DecodeError("malformed_avro", "datum is not a record", schema_id)
        return schema_id, record
