"""The built-in schema registry over HTTP, driven by confluent_kafka's client and Avro serdes.

The session registry (``registry_url``) is shared: every test uses its own
subjects (``unique``) and leaves the global config alone; tests that change
global state or need a second server start their own on a fresh database.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from hftengine.codec.registry_server import MEDIA_TYPE, create_registry_app
from hftengine.runtime.serve import UvicornThread

pytestmark = pytest.mark.integration


def quote_schema(*extra_fields: dict[str, Any], name: str = "Quote") -> str:
    return json.dumps(
        {
            "type": "record",
            "name": name,
            "namespace": "hft.test",
            "fields": [
                {"name": "symbol", "type": "string"},
                {"name": "ltp", "type": "double"},
                *extra_fields,
            ],
        }
    )


V1 = quote_schema()
V2_WITH_DEFAULT = quote_schema({"name": "oi", "type": "long", "default": 0})
V2_NO_DEFAULT = quote_schema({"name": "oi", "type": "long"})
V_LTP_STRING = json.dumps(
    {
        "type": "record",
        "name": "Quote",
        "namespace": "hft.test",
        "fields": [{"name": "symbol", "type": "string"}, {"name": "ltp", "type": "string"}],
    }
)


def avro(text: str) -> Schema:
    return Schema(text, "AVRO")


@pytest.fixture
def client(registry_url: str) -> Iterator[SchemaRegistryClient]:
    sr = SchemaRegistryClient({"url": registry_url})
    yield sr
    sr.close()


@pytest.fixture
def new_client(registry_url: str) -> Iterator[Callable[[], SchemaRegistryClient]]:
    """Factory of clients with empty caches (closed at teardown)."""
    made: list[SchemaRegistryClient] = []

    def factory() -> SchemaRegistryClient:
        made.append(SchemaRegistryClient({"url": registry_url}))
        return made[-1]

    yield factory
    for sr in made:
        sr.close()


@pytest.fixture
def http(registry_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=registry_url, timeout=10.0) as c:
        yield c


@pytest.fixture
def subject(unique: str) -> str:
    return f"test-{unique}-value"


def expect_error(call: Callable[[], Any], status: int, code: int) -> SchemaRegistryError:
    with pytest.raises(SchemaRegistryError) as info:
        call()
    assert info.value.http_status_code == status, info.value
    assert info.value.error_code == code, info.value
    return info.value


# ----------------------------------------------------------------- registration and reads


def test_root_and_schema_types(http: httpx.Client, client: SchemaRegistryClient) -> None:
    root = http.get("/")
    assert root.status_code == 200 and root.json() == {}
    assert root.headers["content-type"].startswith(MEDIA_TYPE)
    assert client.get_schema_types() == ["AVRO"]


def test_register_then_get_by_id_and_latest(
    client: SchemaRegistryClient, new_client: Callable[[], SchemaRegistryClient], subject: str
) -> None:
    schema_id = client.register_schema(subject, avro(V1))
    assert schema_id > 0

    fresh = new_client()  # no client-side cache
    try:
        fetched = fresh.get_schema(schema_id)
        assert json.loads(str(fetched.schema_str)) == json.loads(V1)
        assert fetched.schema_type == "AVRO"
        latest = fresh.get_latest_version(subject)
        assert (latest.subject, latest.version, latest.schema_id) == (subject, 1, schema_id)
        assert json.loads(str(latest.schema.schema_str)) == json.loads(V1)
        assert fresh.get_version(subject, 1).schema_id == schema_id
        assert fresh.get_versions(subject) == [1]
    finally:
        fresh.close()


def test_reregistering_the_same_schema_returns_the_same_id(
    client: SchemaRegistryClient, http: httpx.Client, subject: str, unique: str
) -> None:
    schema_id = client.register_schema(subject, avro(V1))
    # same schema, different whitespace and key order: raw HTTP so the client cache is not involved
    reordered = json.dumps(json.loads(V1), indent=4, sort_keys=True)
    again = http.post(f"/subjects/{subject}/versions", json={"schema": reordered})
    assert again.status_code == 200 and again.json() == {"id": schema_id}
    assert client.get_versions(subject) == [1]
    # the same schema under another subject: same global id, that subject's version 1
    other = f"other-{unique}-value"
    assert http.post(f"/subjects/{other}/versions", json={"schema": V1}).json() == {"id": schema_id}
    assert client.get_versions(other) == [1]
    usages = http.get(f"/schemas/ids/{schema_id}/versions").json()
    assert {"subject": subject, "version": 1} in usages and {"subject": other, "version": 1} in usages
    assert set(http.get(f"/schemas/ids/{schema_id}/subjects").json()) >= {subject, other}


def test_avro_serializer_deserializer_round_trip(
    client: SchemaRegistryClient, new_client: Callable[[], SchemaRegistryClient], unique: str
) -> None:
    topic = f"quotes-{unique}"
    ctx = SerializationContext(topic, MessageField.VALUE)
    serializer = AvroSerializer(client, V1)
    record = {"symbol": "NIFTY", "ltp": 22450.5}
    payload = serializer(record, ctx)
    assert payload is not None and payload[0] == 0
    schema_id = int.from_bytes(payload[1:5], "big")
    assert client.get_latest_version(f"{topic}-value").schema_id == schema_id

    reader_client = new_client()
    try:
        assert AvroDeserializer(reader_client)(payload, ctx) == record
        # a newer reader schema resolves old data (the added field takes its default)
        evolved = AvroDeserializer(reader_client, V2_WITH_DEFAULT)(payload, ctx)
        assert evolved == {**record, "oi": 0}
    finally:
        reader_client.close()


def test_backward_compatible_version_is_accepted(
    client: SchemaRegistryClient, new_client: Callable[[], SchemaRegistryClient], subject: str
) -> None:
    id1 = client.register_schema(subject, avro(V1))
    id2 = client.register_schema(subject, avro(V2_WITH_DEFAULT))
    assert id2 != id1
    assert client.get_versions(subject) == [1, 2]
    assert client.get_version(subject, 2).schema_id == id2
    latest = new_client()
    try:
        assert latest.get_latest_version(subject).version == 2
    finally:
        latest.close()


@pytest.mark.parametrize(
    "incompatible", [V2_NO_DEFAULT, V_LTP_STRING], ids=["field-without-default", "type-change"]
)
def test_incompatible_schema_is_refused_and_nothing_registered(
    client: SchemaRegistryClient, http: httpx.Client, subject: str, incompatible: str
) -> None:
    client.register_schema(subject, avro(V1))
    error = expect_error(lambda: client.register_schema(subject, avro(incompatible)), 409, 409)
    assert "incompatible" in error.error_message.lower()
    assert client.get_versions(subject) == [1]
    assert http.get(f"/subjects/{subject}/versions/latest").json()["version"] == 1
    lookup = http.post(f"/subjects/{subject}", json={"schema": incompatible})
    assert lookup.status_code == 404 and lookup.json()["error_code"] == 40403


def test_subject_config_none_accepts_the_previously_incompatible_schema(
    client: SchemaRegistryClient, http: httpx.Client, subject: str
) -> None:
    client.register_schema(subject, avro(V1))
    expect_error(lambda: client.register_schema(subject, avro(V2_NO_DEFAULT)), 409, 409)
    response: object = client.set_compatibility(subject, "NONE")  # annotated str, returns the JSON body
    assert response == {"compatibility": "NONE"}
    assert client.get_compatibility(subject) == "NONE"
    level = client.get_config(subject).compatibility_level
    assert level is not None and level.value == "NONE"
    client.register_schema(subject, avro(V2_NO_DEFAULT))
    assert client.get_versions(subject) == [1, 2]
    assert client.get_compatibility() == "BACKWARD"  # global level untouched
    # removing the subject level falls back to the global BACKWARD
    assert http.delete(f"/config/{subject}").json() == {"compatibilityLevel": "NONE"}
    missing = http.get(f"/config/{subject}")
    assert missing.status_code == 404 and missing.json()["error_code"] == 40408
    assert http.get(f"/config/{subject}", params={"defaultToGlobal": "true"}).json() == {
        "compatibilityLevel": "BACKWARD"
    }


def test_transitive_level_checks_all_versions(
    client: SchemaRegistryClient, subject: str, unique: str
) -> None:
    v2 = quote_schema({"name": "oi", "type": "long", "default": 0})
    v3 = quote_schema({"name": "oi", "type": "long"})  # reads v2 data, not v1 data
    plain = f"plain-{unique}-value"
    for s in (subject, plain):
        client.register_schema(s, avro(V1))
        client.register_schema(s, avro(v2))
    client.set_compatibility(subject, "BACKWARD_TRANSITIVE")
    expect_error(lambda: client.register_schema(subject, avro(v3)), 409, 409)
    client.register_schema(plain, avro(v3))  # BACKWARD: latest only
    assert client.get_versions(plain) == [1, 2, 3]


def test_test_compatibility_endpoint(client: SchemaRegistryClient, http: httpx.Client, subject: str) -> None:
    client.register_schema(subject, avro(V1))
    assert client.test_compatibility(subject, avro(V2_WITH_DEFAULT)) is True
    assert client.test_compatibility(subject, avro(V2_NO_DEFAULT)) is False
    assert client.test_compatibility(subject, avro(V2_NO_DEFAULT), version=1) is False
    assert client.test_compatibility_all_versions(subject, avro(V2_WITH_DEFAULT)) is True
    verbose = http.post(
        f"/compatibility/subjects/{subject}/versions/latest",
        params={"verbose": "true"},
        json={"schema": V2_NO_DEFAULT},
    ).json()
    assert verbose["is_compatible"] is False
    assert any("READER_FIELD_MISSING_DEFAULT_VALUE" in m and "'oi'" in m for m in verbose["messages"])
    assert client.get_versions(subject) == [1]  # testing registers nothing
    expect_error(lambda: client.test_compatibility(subject, avro(V1), version=7), 404, 40402)
    expect_error(lambda: client.test_compatibility(subject + "-x", avro(V1), version=1), 404, 40401)


def test_lookup_schema(
    client: SchemaRegistryClient, new_client: Callable[[], SchemaRegistryClient], subject: str
) -> None:
    schema_id = client.register_schema(subject, avro(V1))
    client.register_schema(subject, avro(V2_WITH_DEFAULT))
    fresh = new_client()
    try:
        found = fresh.lookup_schema(subject, avro(V1))
    finally:
        fresh.close()
    assert (found.subject, found.version, found.schema_id) == (subject, 1, schema_id)
    expect_error(lambda: client.lookup_schema(subject, avro(V_LTP_STRING)), 404, 40403)
    expect_error(lambda: client.lookup_schema(subject + "-none", avro(V1)), 404, 40401)


def test_get_subjects_and_delete_subject(
    client: SchemaRegistryClient, http: httpx.Client, subject: str
) -> None:
    id1 = client.register_schema(subject, avro(V1))
    client.register_schema(subject, avro(V2_WITH_DEFAULT))
    assert subject in client.get_subjects()
    assert client.get_subjects(subject_prefix=subject) == [subject]

    assert client.delete_subject(subject) == [1, 2]
    assert subject not in client.get_subjects()
    assert subject in client.get_subjects(deleted=True)
    expect_error(lambda: client.get_versions(subject), 404, 40401)
    assert client.get_versions(subject, deleted=True) == [1, 2]
    assert http.get(f"/schemas/ids/{id1}").status_code == 200  # soft-deleted: still readable by id
    expect_error(lambda: client.delete_subject(subject), 404, 40404)

    # soft-deleted versions do not count: an incompatible schema is now accepted, numbering continues
    assert http.post(f"/subjects/{subject}/versions", json={"schema": V_LTP_STRING}).status_code == 200
    assert client.get_versions(subject) == [3]
    expect_error(lambda: client.delete_subject(subject, permanent=True), 404, 40405)


def test_delete_versions_soft_then_permanent(
    client: SchemaRegistryClient, http: httpx.Client, subject: str, unique: str
) -> None:
    # schemas of this test only: a schema id stays visible while any subject uses it
    v1 = quote_schema(name=f"Q{unique}")
    v_string = json.dumps({**json.loads(V_LTP_STRING), "name": f"Q{unique}"})
    id1 = client.register_schema(subject, avro(v1))
    assert client.delete_version(subject, 1) == 1
    expect_error(lambda: client.delete_version(subject, 1), 404, 40406)
    gone = http.get(f"/subjects/{subject}/versions/1")
    assert gone.status_code == 404 and gone.json()["error_code"] == 40401  # no live version left
    assert http.get(f"/subjects/{subject}/versions/1", params={"deleted": "true"}).json()["id"] == id1

    id2 = client.register_schema(subject, avro(v_string))  # v1 is deleted: no compatibility check
    assert client.get_versions(subject) == [2]
    expect_error(lambda: client.delete_version(subject, 2, permanent=True), 404, 40407)
    assert client.delete_version(subject, 1, permanent=True) == 1
    assert client.get_versions(subject, deleted=True) == [2]
    assert http.get(f"/schemas/ids/{id2}/schema").json() == json.loads(v_string)

    assert client.delete_subject(subject) == [2]
    assert client.delete_subject(subject, permanent=True) == [2]
    assert subject not in client.get_subjects(deleted=True)
    gone_id = http.get(f"/schemas/ids/{id1}")
    assert gone_id.status_code == 404 and gone_id.json()["error_code"] == 40403
    # registering a permanently deleted schema again reuses its id
    assert http.post(f"/subjects/{subject}/versions", json={"schema": v1}).json() == {"id": id1}
    assert client.get_versions(subject) == [1]


def test_global_config_defaults_to_backward(client: SchemaRegistryClient, http: httpx.Client) -> None:
    assert client.get_compatibility() == "BACKWARD"
    body = http.get("/config")
    assert body.json() == {"compatibilityLevel": "BACKWARD"}
    assert body.headers["content-type"].startswith(MEDIA_TYPE)


def test_concurrent_registration_of_the_same_schema_makes_one_version(
    registry_url: str, subject: str
) -> None:
    ids: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def worker() -> None:
        sr = SchemaRegistryClient({"url": registry_url})
        try:
            barrier.wait(10)
            ids.append(sr.register_schema(subject, avro(V1)))
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            sr.close()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert len(ids) == 6 and len(set(ids)) == 1
    with httpx.Client(base_url=registry_url) as http:
        assert http.get(f"/subjects/{subject}/versions").json() == [1]


def test_concurrent_registration_of_different_schemas_numbers_versions_once(
    registry_url: str, subject: str
) -> None:
    schemas = [quote_schema({"name": f"extra{i}", "type": "int", "default": i}) for i in range(5)]
    with httpx.Client(base_url=registry_url, timeout=30) as http:
        http.put(f"/config/{subject}", json={"compatibility": "NONE"})
    results: list[int] = []

    def worker(text: str) -> None:
        with httpx.Client(base_url=registry_url, timeout=30) as h:
            results.append(h.post(f"/subjects/{subject}/versions", json={"schema": text}).json()["id"])

    threads = [threading.Thread(target=worker, args=(s,)) for s in schemas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(set(results)) == 5
    with httpx.Client(base_url=registry_url) as http:
        assert http.get(f"/subjects/{subject}/versions").json() == [1, 2, 3, 4, 5]


# ----------------------------------------------------------------- persistence (own database)


def test_schemas_and_config_persist_across_app_instances(
    make_database: Callable[..., str], unique: str
) -> None:
    dsn = make_database(migrated=True)
    subject = f"persist-{unique}-value"
    with UvicornThread(create_registry_app(dsn, pool_size=2)) as first:
        sr = SchemaRegistryClient({"url": first.url})
        schema_id = sr.register_schema(subject, avro(V1))
        sr.set_compatibility(level="FULL")
        sr.close()
        with UvicornThread(create_registry_app(dsn, pool_size=2)) as second:
            other = SchemaRegistryClient({"url": second.url})
            try:
                assert other.get_schema(schema_id).schema_str is not None
                assert other.get_latest_version(subject).schema_id == schema_id
                assert other.get_compatibility() == "FULL"
                # registered through the second instance, visible through the first
                id2 = other.register_schema(subject, avro(V2_WITH_DEFAULT))
            finally:
                other.close()
        with httpx.Client(base_url=first.url) as http:
            assert http.get(f"/subjects/{subject}/versions/2").json()["id"] == id2
            # global config: invalid level refused, reset returns to BACKWARD
            bad = http.put("/config", json={"compatibility": "SIDEWAYS"})
            assert bad.status_code == 422 and bad.json()["error_code"] == 42203
            assert http.delete("/config").json() == {"compatibilityLevel": "FULL"}
            assert http.get("/config").json() == {"compatibilityLevel": "BACKWARD"}
    # a restarted instance still serves everything
    with UvicornThread(create_registry_app(dsn)) as third, httpx.Client(base_url=third.url) as http:
        assert http.get(f"/subjects/{subject}/versions").json() == [1, 2]
        assert http.get(f"/schemas/ids/{schema_id}").json() == {
            "schema": json.dumps(json.loads(V1), separators=(",", ":"))
        }


# ----------------------------------------------------------------- error codes (raw HTTP)


def _error(response: httpx.Response, status: int, code: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error_code"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    return str(body["message"])


def test_not_found_error_codes(http: httpx.Client, client: SchemaRegistryClient, subject: str) -> None:
    _error(http.get(f"/subjects/{subject}/versions"), 404, 40401)
    _error(http.get(f"/subjects/{subject}/versions/latest"), 404, 40401)
    _error(http.get(f"/subjects/{subject}/versions/1/schema"), 404, 40401)
    _error(http.delete(f"/subjects/{subject}"), 404, 40401)
    client.register_schema(subject, avro(V1))
    _error(http.get(f"/subjects/{subject}/versions/2"), 404, 40402)
    _error(http.delete(f"/subjects/{subject}/versions/9"), 404, 40402)
    _error(http.get("/schemas/ids/987654321"), 404, 40403)
    _error(http.get("/schemas/ids/987654321/versions"), 404, 40403)
    _error(http.get("/schemas/ids/not-a-number"), 404, 40403)
    _error(http.post(f"/subjects/{subject}", json={"schema": V_LTP_STRING}), 404, 40403)
    _error(http.get("/no/such/endpoint"), 404, 404)


def test_invalid_schema_and_version_codes(http: httpx.Client, subject: str) -> None:
    message = _error(
        http.post(f"/subjects/{subject}/versions", json={"schema": '{"type": "recrd"}'}), 422, 42201
    )
    assert "Invalid schema" in message
    _error(http.post(f"/subjects/{subject}/versions", json={"schema": "{not json"}), 422, 42201)
    bad_default = quote_schema({"name": "oi", "type": "long", "default": "many"})
    _error(http.post(f"/subjects/{subject}/versions", json={"schema": bad_default}), 422, 42201)
    _error(http.post(f"/subjects/{subject}/versions", json={"schemaType": "AVRO"}), 422, 42201)
    proto = _error(
        http.post(
            f"/subjects/{subject}/versions", json={"schema": "syntax = 'proto3';", "schemaType": "PROTOBUF"}
        ),
        422,
        42201,
    )
    assert "PROTOBUF" in proto and "AVRO" in proto
    refs = {"schema": V1, "references": [{"name": "x", "subject": "y", "version": 1}]}
    _error(http.post(f"/subjects/{subject}/versions", json=refs), 422, 42201)
    assert http.get("/subjects").status_code == 200 and subject not in http.get("/subjects").json()

    for bad_version in ("abc", "0", "-2", "99999999999", "1.5"):
        _error(http.get(f"/subjects/{subject}/versions/{bad_version}"), 422, 42202)
    _error(http.post(f"/compatibility/subjects/{subject}/versions/zero", json={"schema": V1}), 422, 42202)


def test_invalid_config_and_malformed_bodies(http: httpx.Client, subject: str) -> None:
    _error(http.put(f"/config/{subject}", json={"compatibility": "SIDEWAYS"}), 422, 42203)
    _error(http.put(f"/config/{subject}", json={}), 422, 42203)
    _error(http.put("/config", json={"compatibility": 5}), 422, 42203)
    headers = {"Content-Type": MEDIA_TYPE}
    _error(http.post(f"/subjects/{subject}/versions", content=b"{oops", headers=headers), 400, 400)
    _error(http.post(f"/subjects/{subject}/versions", content=b"", headers=headers), 400, 400)
    _error(http.post(f"/subjects/{subject}/versions", content=b"[1, 2]", headers=headers), 422, 422)
    _error(http.put("/config", content=b"\xff\xfe", headers=headers), 400, 400)
    _error(
        http.post(f"/subjects/{subject}/versions", content=b"{}", headers={"Content-Type": "text/plain"}),
        415,
        415,
    )
    _error(http.post("/subjects/bad%00subject/versions", json={"schema": V1}), 422, 422)
    _error(http.get("/subjects/%20/versions"), 422, 422)
    assert http.get("/config").json() == {"compatibilityLevel": "BACKWARD"}
    # plain application/json is accepted too
    ok = http.post(
        f"/subjects/{subject}/versions",
        content=json.dumps({"schema": V1}),
        headers={"Content-Type": "application/json"},
    )
    assert ok.status_code == 200 and "id" in ok.json()
