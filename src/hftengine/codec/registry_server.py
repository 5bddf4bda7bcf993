"""The engine's built-in schema registry: a subset of the Confluent Schema Registry REST API.

Served when no external registry URL is configured; clients are the usual
ones (``confluent_kafka.schema_registry.SchemaRegistryClient``).  Only AVRO
schemas are supported.  State lives in PostgreSQL (:mod:`registry_store`),
so several engine processes on one database serve the same registry.

Endpoints::

    GET    /                                           {}
    GET    /schemas/types                               ["AVRO"]
    GET    /schemas/ids/{id}[/schema|/versions|/subjects]
    GET    /subjects                                    ?deleted ?deleted_only ?subjectPrefix ?offset ?limit
    POST   /subjects/{subject}                          look a schema up under a subject
    DELETE /subjects/{subject}                          ?permanent
    GET    /subjects/{subject}/versions                 ?deleted ?deleted_only
    POST   /subjects/{subject}/versions                 register -> {"id": n}
    GET    /subjects/{subject}/versions/{version}[/schema]   version: n | latest
    DELETE /subjects/{subject}/versions/{version}       ?permanent
    POST   /compatibility/subjects/{subject}/versions[/{version}]   ?verbose
    GET|PUT|DELETE /config                              global level (default BACKWARD)
    GET|PUT|DELETE /config/{subject}                    ?defaultToGlobal
    GET    /mode, /mode/{subject}                       always READWRITE

Errors are ``{"error_code": n, "message": "..."}`` with Confluent's codes
(40401 subject, 40402 version, 40403 schema not found, 409 incompatible,
42201 invalid schema, 42202 invalid version, 42203 invalid level, ...).
"""

import copy
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any

import fastavro
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from hftengine.codec.compat import (
    DEFAULT_LEVEL,
    AvroSchemaError,
    AvroType,
    CompatibilityLevel,
    canonical_form,
    check_compatibility,
    parse_avro,
    parse_avro_text,
    parse_level,
)
from hftengine.codec.registry_store import (
    NewSchema,
    RegistryError,
    RegistryStore,
    SubjectVersion,
    open_postgres_store,
    schema_not_found,
    subject_not_found,
    version_not_found,
)

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"
ACCEPTED_CONTENT_TYPES = frozenset(
    {
        "application/vnd.schemaregistry.v1+json",
        "application/vnd.schemaregistry+json",
        "application/json",
        "application/octet-stream",
    }
)
SUPPORTED_SCHEMA_TYPES = ("AVRO",)
#: attribute of ``app.state`` holding the :class:`RegistryStore` (see :func:`store_from_app_state`)
STORE_STATE_ATTR = "schema_registry_store"
MAX_VERSION = 2**31 - 1
_DIGITS = re.compile(r"^[0-9]{1,10}$")


class RegistryJSONResponse(JSONResponse):
    media_type = MEDIA_TYPE


def _json(content: Any, status: int = 200) -> Response:
    return RegistryJSONResponse(content, status_code=status)


def error_response(status: int, error_code: int, message: str) -> Response:
    return _json({"error_code": error_code, "message": message}, status)


class _RegistryRoute(APIRoute):
    """Turns registry errors (and anything unexpected) into Confluent-style error bodies.

    Done per route rather than with app exception handlers, so the router
    behaves the same when mounted into another application.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                _check_subject(request.path_params.get("subject"))
                return await handler(request)
            except RegistryError as exc:
                return error_response(exc.status, exc.error_code, exc.message)
            except RequestValidationError as exc:
                return error_response(422, 422, _validation_message(exc))
            except Exception:
                log.exception("schema registry: %s %s failed", request.method, request.url.path)
                return error_response(500, 50001, "Error in the backend data store")

        return handle


def _check_subject(subject: object) -> None:
    if isinstance(subject, str) and (not subject.strip() or any(ord(c) < 0x20 for c in subject)):
        raise RegistryError(
            422, 422, f"Invalid subject name {subject!r}: empty or containing control characters"
        )


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err.get("loc", ()))
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "Invalid request: " + "; ".join(parts)


# --------------------------------------------------------------------------- request parsing


async def _json_body(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type and content_type not in ACCEPTED_CONTENT_TYPES:
        raise RegistryError(415, 415, f"HTTP 415 Unsupported Media Type: {content_type}")
    raw = await request.body()
    if not raw.strip():
        raise RegistryError(400, 400, "Request body is empty; a JSON object is expected")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise RegistryError(400, 400, f"Request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RegistryError(422, 422, "Request body must be a JSON object")
    return body


def _flag(request: Request, name: str) -> bool:
    value = request.query_params.get(name)
    return value is not None and value.strip().lower() in ("true", "1", "yes", "on")


def _int_param(request: Request, name: str, default: int) -> int:
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise RegistryError(422, 422, f"query parameter {name!r} must be an integer, got {value!r}") from None


def parse_version(raw: str) -> int | None:
    """A version id from the URL: ``None`` for ``latest`` (or ``-1``), else 1 … 2³¹−1."""
    if raw in ("latest", "-1"):
        return None
    if _DIGITS.match(raw):
        value = int(raw)
        if 1 <= value <= MAX_VERSION:
            return value
    raise RegistryError(
        422,
        42202,
        f"The specified version '{raw}' is not a valid version id. "
        'Allowed values are between [1, 2^31-1] and the string "latest"',
    )


def _schema_id(raw: str) -> int:
    if not _DIGITS.match(raw) or int(raw) > MAX_VERSION:
        raise schema_not_found(f"Schema {raw} not found")
    return int(raw)


def _invalid_schema(detail: str) -> RegistryError:
    return RegistryError(422, 42201, f"Invalid schema: {detail}")


def parse_schema_request(body: dict[str, Any]) -> tuple[NewSchema, AvroType]:
    """Validate a ``{"schema": ..., "schemaType"?: ..., "references"?: [...]}`` body."""
    schema_type = body.get("schemaType") or "AVRO"
    if not isinstance(schema_type, str) or schema_type.upper() not in SUPPORTED_SCHEMA_TYPES:
        raise _invalid_schema(
            f"schema type {schema_type!r} is not supported by the built-in registry "
            f"(supported: {', '.join(SUPPORTED_SCHEMA_TYPES)}); use an external registry for it"
        )
    if body.get("references"):
        raise _invalid_schema("schema references are not supported by the built-in registry")
    text = body.get("schema")
    if not isinstance(text, str) or not text.strip():
        raise _invalid_schema("the request needs a non-empty 'schema' string")
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise _invalid_schema(f"not JSON: {exc}") from None
    try:
        fastavro.parse_schema(copy.deepcopy(obj))
    except Exception as exc:  # fastavro raises several exception types for bad schemas
        raise _invalid_schema(f"{type(exc).__name__}: {exc}") from None
    try:
        graph = parse_avro(obj)
    except AvroSchemaError as exc:
        raise _invalid_schema(str(exc)) from None
    compact = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return NewSchema("AVRO", compact, canonical_form(obj)), graph


def _compatibility_messages(
    graph: AvroType, previous: Sequence[SubjectVersion], level: CompatibilityLevel
) -> list[str]:
    return check_compatibility(
        graph,
        [parse_avro_text(v.schema_text) for v in previous],
        level,
        versions=[v.version for v in previous],
    )


def _level_from_body(body: dict[str, Any]) -> CompatibilityLevel:
    value = body.get("compatibility", body.get("compatibilityLevel"))
    try:
        return parse_level(value)
    except ValueError:
        raise RegistryError(
            422,
            42203,
            f"Invalid compatibility level {value!r}. Valid values are "
            + ", ".join(level.value for level in CompatibilityLevel),
        ) from None


def _version_body(sv: SubjectVersion) -> dict[str, Any]:
    out: dict[str, Any] = {
        "subject": sv.subject,
        "version": sv.version,
        "id": sv.schema_id,
        "schema": sv.schema_text,
    }
    if sv.schema_type != "AVRO":
        out["schemaType"] = sv.schema_type
    return out


# --------------------------------------------------------------------------- router


def store_from_app_state(request: Request) -> RegistryStore:
    """Default store dependency: ``request.app.state.schema_registry_store``."""
    store: RegistryStore | None = getattr(request.app.state, STORE_STATE_ATTR, None)
    if store is None:
        raise RuntimeError(
            f"app.state.{STORE_STATE_ATTR} is not set (open the registry store in the lifespan)"
        )
    return store


def create_registry_router(
    get_store: Callable[..., RegistryStore] = store_from_app_state, *, prefix: str = ""
) -> APIRouter:
    """The registry endpoints as a router; ``get_store`` is a FastAPI dependency returning the store."""
    router = APIRouter(prefix=prefix, route_class=_RegistryRoute, tags=["schema registry"])
    Store = Annotated[RegistryStore, Depends(get_store)]  # noqa: N806 - a type alias

    @router.get("/")
    async def root() -> Response:
        return _json({})

    # -- schemas ---------------------------------------------------------------

    @router.get("/schemas/types")
    async def schema_types() -> Response:
        return _json(list(SUPPORTED_SCHEMA_TYPES))

    @router.get("/schemas/ids/{schema_id}")
    async def schema_by_id(schema_id: str, store: Store) -> Response:
        stored = await store.get_schema(_schema_id(schema_id))
        if stored is None:
            raise schema_not_found(f"Schema {schema_id} not found")
        body: dict[str, Any] = {"schema": stored.schema_text}
        if stored.schema_type != "AVRO":
            body["schemaType"] = stored.schema_type
        return _json(body)

    @router.get("/schemas/ids/{schema_id}/schema")
    async def schema_text_by_id(schema_id: str, store: Store) -> Response:
        stored = await store.get_schema(_schema_id(schema_id))
        if stored is None:
            raise schema_not_found(f"Schema {schema_id} not found")
        return Response(stored.schema_text, media_type=MEDIA_TYPE)

    @router.get("/schemas/ids/{schema_id}/versions")
    async def schema_versions(schema_id: str, request: Request, store: Store) -> Response:
        sid = _schema_id(schema_id)
        if await store.get_schema(sid) is None:
            raise schema_not_found(f"Schema {schema_id} not found")
        usages = await store.schema_usages(sid, deleted=_flag(request, "deleted"))
        return _json([{"subject": s, "version": v} for s, v in usages])

    @router.get("/schemas/ids/{schema_id}/subjects")
    async def schema_subjects(schema_id: str, request: Request, store: Store) -> Response:
        sid = _schema_id(schema_id)
        if await store.get_schema(sid) is None:
            raise schema_not_found(f"Schema {schema_id} not found")
        usages = await store.schema_usages(sid, deleted=_flag(request, "deleted"))
        return _json(sorted({s for s, _ in usages}))

    # -- subjects --------------------------------------------------------------

    @router.get("/subjects")
    async def subjects(request: Request, store: Store) -> Response:
        names = await store.list_subjects(
            deleted=_flag(request, "deleted"), deleted_only=_flag(request, "deleted_only")
        )
        prefix_ = request.query_params.get("subjectPrefix")
        if prefix_:
            names = [n for n in names if n.startswith(prefix_)]
        offset = max(0, _int_param(request, "offset", 0))
        limit = _int_param(request, "limit", -1)
        names = names[offset:] if limit < 0 else names[offset : offset + limit]
        return _json(names)

    @router.post("/subjects/{subject}")
    async def lookup(subject: str, request: Request, store: Store) -> Response:
        new, _ = parse_schema_request(await _json_body(request))
        deleted = _flag(request, "deleted")
        if not await store.has_subject(subject, deleted=deleted):
            raise subject_not_found(subject)
        found = await store.lookup(subject, new, deleted=deleted)
        if found is None:
            raise schema_not_found(f"Schema not found under subject '{subject}'")
        return _json(_version_body(found))

    @router.delete("/subjects/{subject}")
    async def delete_subject(subject: str, request: Request, store: Store) -> Response:
        return _json(await store.delete_subject(subject, permanent=_flag(request, "permanent")))

    @router.get("/subjects/{subject}/versions")
    async def versions(subject: str, request: Request, store: Store) -> Response:
        found = await store.list_versions(
            subject, deleted=_flag(request, "deleted"), deleted_only=_flag(request, "deleted_only")
        )
        if not found:
            raise subject_not_found(subject)
        return _json(found)

    @router.post("/subjects/{subject}/versions")
    async def register(subject: str, request: Request, store: Store) -> Response:
        new, graph = parse_schema_request(await _json_body(request))

        def check(level: CompatibilityLevel, previous: Sequence[SubjectVersion]) -> list[str]:
            return _compatibility_messages(graph, previous, level)

        registration = await store.register(subject, new, check)
        if registration.created:
            log.info(
                "schema registry: %s version %d -> id %d",
                subject,
                registration.version,
                registration.schema_id,
            )
        return _json({"id": registration.schema_id})

    async def _subject_version(
        subject: str, raw_version: str, request: Request, store: RegistryStore
    ) -> SubjectVersion:
        version = parse_version(raw_version)
        deleted = _flag(request, "deleted")
        if not await store.has_subject(subject, deleted=deleted):
            raise subject_not_found(subject)
        found = await store.get_version(subject, version, deleted=deleted)
        if found is None:
            raise version_not_found(subject, raw_version)
        return found

    @router.get("/subjects/{subject}/versions/{version}")
    async def version_of_subject(subject: str, version: str, request: Request, store: Store) -> Response:
        return _json(_version_body(await _subject_version(subject, version, request, store)))

    @router.get("/subjects/{subject}/versions/{version}/schema")
    async def version_schema(subject: str, version: str, request: Request, store: Store) -> Response:
        found = await _subject_version(subject, version, request, store)
        return Response(found.schema_text, media_type=MEDIA_TYPE)

    @router.delete("/subjects/{subject}/versions/{version}")
    async def delete_version(subject: str, version: str, request: Request, store: Store) -> Response:
        deleted = await store.delete_version(
            subject, parse_version(version), permanent=_flag(request, "permanent")
        )
        return _json(deleted)

    # -- compatibility ---------------------------------------------------------

    def _compat_response(messages: list[str], verbose: bool) -> Response:
        body: dict[str, Any] = {"is_compatible": not messages}
        if verbose:
            body["messages"] = messages
        return _json(body)

    @router.post("/compatibility/subjects/{subject}/versions/{version}")
    async def test_compatibility(subject: str, version: str, request: Request, store: Store) -> Response:
        parsed_version = parse_version(version)
        _, graph = parse_schema_request(await _json_body(request))
        level = await store.effective_level(subject)
        if parsed_version is None:
            latest = await store.get_version(subject, None)
            previous = [latest] if latest is not None else []
        else:
            if not await store.has_subject(subject):
                raise subject_not_found(subject)
            found = await store.get_version(subject, parsed_version)
            if found is None:
                raise version_not_found(subject, version)
            previous = [found]
        messages = _compatibility_messages(graph, previous, level)
        return _compat_response(messages, _flag(request, "verbose"))

    @router.post("/compatibility/subjects/{subject}/versions")
    async def test_compatibility_all(subject: str, request: Request, store: Store) -> Response:
        _, graph = parse_schema_request(await _json_body(request))
        level = await store.effective_level(subject)
        messages = _compatibility_messages(graph, await store.live_versions(subject), level)
        return _compat_response(messages, _flag(request, "verbose"))

    # -- config ----------------------------------------------------------------

    @router.get("/config")
    async def global_config(store: Store) -> Response:
        level = await store.get_config(None)
        return _json({"compatibilityLevel": (level or DEFAULT_LEVEL).value})

    @router.put("/config")
    async def set_global_config(request: Request, store: Store) -> Response:
        level = _level_from_body(await _json_body(request))
        await store.set_config(None, level)
        return _json({"compatibility": level.value})

    @router.delete("/config")
    async def delete_global_config(store: Store) -> Response:
        old = await store.delete_config(None)
        return _json({"compatibilityLevel": (old or DEFAULT_LEVEL).value})

    @router.get("/config/{subject}")
    async def subject_config(subject: str, request: Request, store: Store) -> Response:
        level = await store.get_config(subject)
        if level is None and _flag(request, "defaultToGlobal"):
            level = await store.get_config(None) or DEFAULT_LEVEL
        if level is None:
            raise RegistryError(
                404, 40408, f"Subject '{subject}' does not have subject-level compatibility configured"
            )
        return _json({"compatibilityLevel": level.value})

    @router.put("/config/{subject}")
    async def set_subject_config(subject: str, request: Request, store: Store) -> Response:
        level = _level_from_body(await _json_body(request))
        await store.set_config(subject, level)
        return _json({"compatibility": level.value})

    @router.delete("/config/{subject}")
    async def delete_subject_config(subject: str, store: Store) -> Response:
        old = await store.delete_config(subject)
        if old is None:
            raise RegistryError(
                404, 40408, f"Subject '{subject}' does not have subject-level compatibility configured"
            )
        return _json({"compatibilityLevel": old.value})

    # -- mode (read-only: the built-in registry is always READWRITE) ------------

    @router.get("/mode")
    async def global_mode() -> Response:
        return _json({"mode": "READWRITE"})

    @router.get("/mode/{subject}")
    async def subject_mode(subject: str) -> Response:
        return _json({"mode": "READWRITE"})

    return router


# --------------------------------------------------------------------------- app


async def _http_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, StarletteHTTPException):
        return error_response(exc.status_code, exc.status_code, f"HTTP {exc.status_code} {exc.detail}")
    return error_response(500, 50001, "Error in the backend data store")


async def _validation_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, RequestValidationError):
        return error_response(422, 422, _validation_message(exc))
    return error_response(500, 50001, "Error in the backend data store")


def create_registry_app(dsn: str, *, pool_size: int = 4) -> FastAPI:
    """A FastAPI app serving the registry from the PostgreSQL database ``dsn`` (already migrated).

    The connection pool is opened in the lifespan and closed on shutdown.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_postgres_store(dsn, pool_size=pool_size) as store:
            setattr(app.state, STORE_STATE_ATTR, store)
            try:
                yield
            finally:
                setattr(app.state, STORE_STATE_ATTR, None)

    app = FastAPI(
        title="HFT Data Engine schema registry",
        description="Subset of the Confluent Schema Registry REST API (AVRO), persisted in PostgreSQL.",
        lifespan=lifespan,
    )
    app.include_router(create_registry_router())
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    return app
