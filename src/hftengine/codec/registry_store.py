"""Storage of the built-in schema registry: a small Protocol and its PostgreSQL implementation.

Tables (``sql/0002_registry.sql``): ``registry_schemas`` (one row per distinct
schema, its ``id`` is the global schema id), ``registry_subject_versions``
(subject, version → schema id, soft-delete flag) and ``registry_config``
(compatibility level per subject, ``''`` = global).

Registration runs in one transaction holding a transaction-level advisory
lock on the subject, so concurrent registrations of a subject are serialised:
the "already registered?" lookup, the compatibility check against the live
versions and the insert of the next version see a consistent subject.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, LiteralString, Protocol

from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from hftengine.codec.compat import DEFAULT_LEVEL, CompatibilityLevel, parse_level

SCHEMAS_TABLE = "registry_schemas"
VERSIONS_TABLE = "registry_subject_versions"
CONFIG_TABLE = "registry_config"
GLOBAL_SUBJECT = ""
#: first key of the two-key advisory locks taken per subject (second key: hashtext(subject))
LOCK_NAMESPACE = 0x5352  # "SR"


# --------------------------------------------------------------------------- errors


class RegistryError(Exception):
    """An error of the registry API: HTTP status plus Confluent ``error_code``."""

    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


class IncompatibleSchemaError(RegistryError):
    def __init__(self, subject: str, level: CompatibilityLevel, messages: Sequence[str]) -> None:
        details = "; ".join(messages)
        super().__init__(
            409,
            409,
            f"Schema being registered is incompatible with an earlier schema for subject {subject!r} "
            f"(compatibility {level.value}), details: [{details}]",
        )
        self.level = level
        self.messages = list(messages)


def subject_not_found(subject: str) -> RegistryError:
    return RegistryError(404, 40401, f"Subject '{subject}' not found.")


def version_not_found(subject: str, version: object) -> RegistryError:
    return RegistryError(404, 40402, f"Version {version} not found for subject '{subject}'.")


def schema_not_found(detail: str = "Schema not found") -> RegistryError:
    return RegistryError(404, 40403, detail)


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class NewSchema:
    """A validated schema about to be stored: its text and canonical form."""

    schema_type: str
    schema_text: str
    canonical_text: str

    @property
    def canonical_hash(self) -> str:
        return hashlib.sha256(self.canonical_text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class StoredSchema:
    id: int
    schema_type: str
    schema_text: str


@dataclass(frozen=True)
class SubjectVersion:
    subject: str
    version: int
    schema_id: int
    schema_type: str
    schema_text: str
    deleted: bool = False


@dataclass(frozen=True)
class Registration:
    schema_id: int
    version: int
    created: bool


#: (effective level, live versions oldest first) -> incompatibility messages (empty = compatible)
CompatibilityCheck = Callable[[CompatibilityLevel, Sequence[SubjectVersion]], list[str]]


class RegistryStore(Protocol):
    """What the registry API needs from its storage."""

    async def list_subjects(self, *, deleted: bool = False, deleted_only: bool = False) -> list[str]: ...

    async def has_subject(self, subject: str, *, deleted: bool = False) -> bool: ...

    async def list_versions(
        self, subject: str, *, deleted: bool = False, deleted_only: bool = False
    ) -> list[int]: ...

    async def get_version(
        self, subject: str, version: int | None, *, deleted: bool = False
    ) -> SubjectVersion | None:
        """``version=None`` is the latest version."""
        ...

    async def live_versions(self, subject: str) -> list[SubjectVersion]: ...

    async def get_schema(self, schema_id: int) -> StoredSchema | None: ...

    async def schema_usages(self, schema_id: int, *, deleted: bool = False) -> list[tuple[str, int]]: ...

    async def lookup(
        self, subject: str, schema: NewSchema, *, deleted: bool = False
    ) -> SubjectVersion | None: ...

    async def register(self, subject: str, schema: NewSchema, check: CompatibilityCheck) -> Registration: ...

    async def get_config(self, subject: str | None) -> CompatibilityLevel | None: ...

    async def effective_level(self, subject: str) -> CompatibilityLevel: ...

    async def set_config(self, subject: str | None, level: CompatibilityLevel) -> None: ...

    async def delete_config(self, subject: str | None) -> CompatibilityLevel | None: ...

    async def delete_subject(self, subject: str, *, permanent: bool = False) -> list[int]: ...

    async def delete_version(self, subject: str, version: int | None, *, permanent: bool = False) -> int: ...


# --------------------------------------------------------------------------- PostgreSQL


def _q(template: LiteralString) -> sql.Composed:
    """A statement with ``{schemas}``, ``{versions}``, ``{config}`` bound to the table identifiers."""
    return sql.SQL(template).format(
        schemas=sql.Identifier(SCHEMAS_TABLE),
        versions=sql.Identifier(VERSIONS_TABLE),
        config=sql.Identifier(CONFIG_TABLE),
    )


_VERSION_COLUMNS: LiteralString = "v.subject, v.version, v.schema_id, s.schema_type, s.schema_text, v.deleted"
_FROM_VERSIONS: LiteralString = "FROM {versions} v JOIN {schemas} s ON s.id = v.schema_id"


def _subject_version(row: TupleRow) -> SubjectVersion:
    return SubjectVersion(
        subject=str(row[0]),
        version=int(row[1]),
        schema_id=int(row[2]),
        schema_type=str(row[3]),
        schema_text=str(row[4]),
        deleted=bool(row[5]),
    )


Conn = AsyncConnection[TupleRow]


class PostgresRegistryStore:
    """:class:`RegistryStore` on PostgreSQL through a psycopg async pool (owned by the caller)."""

    def __init__(self, pool: AsyncConnectionPool[Conn]) -> None:
        self._pool = pool

    # -- reads --------------------------------------------------------------

    async def list_subjects(self, *, deleted: bool = False, deleted_only: bool = False) -> list[str]:
        if deleted_only:
            having: LiteralString = "HAVING NOT bool_or(NOT deleted)"
        elif deleted:
            having = ""
        else:
            having = "HAVING bool_or(NOT deleted)"
        query = _q("SELECT subject FROM {versions} GROUP BY subject " + having + " ORDER BY subject")
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(query)).fetchall()
        return [str(r[0]) for r in rows]

    async def has_subject(self, subject: str, *, deleted: bool = False) -> bool:
        query = _q("SELECT EXISTS (SELECT 1 FROM {versions} WHERE subject = %s AND (%s OR NOT deleted))")
        async with self._pool.connection() as conn:
            row = await (await conn.execute(query, (subject, deleted))).fetchone()
        return bool(row and row[0])

    async def list_versions(
        self, subject: str, *, deleted: bool = False, deleted_only: bool = False
    ) -> list[int]:
        if deleted_only:
            cond: LiteralString = "deleted"
        elif deleted:
            cond = "true"
        else:
            cond = "NOT deleted"
        query = _q("SELECT version FROM {versions} WHERE subject = %s AND " + cond + " ORDER BY version")
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(query, (subject,))).fetchall()
        return [int(r[0]) for r in rows]

    async def get_version(
        self, subject: str, version: int | None, *, deleted: bool = False
    ) -> SubjectVersion | None:
        params: list[Any] = [subject, deleted]
        if version is None:
            query = _q(
                "SELECT "
                + _VERSION_COLUMNS
                + " "
                + _FROM_VERSIONS
                + " WHERE v.subject = %s AND (%s OR NOT v.deleted) ORDER BY v.version DESC LIMIT 1"
            )
        else:
            query = _q(
                "SELECT "
                + _VERSION_COLUMNS
                + " "
                + _FROM_VERSIONS
                + " WHERE v.subject = %s AND (%s OR NOT v.deleted) AND v.version = %s"
            )
            params.append(version)
        async with self._pool.connection() as conn:
            row = await (await conn.execute(query, params)).fetchone()
        return _subject_version(row) if row else None

    async def live_versions(self, subject: str) -> list[SubjectVersion]:
        async with self._pool.connection() as conn:
            return await self._live_versions(conn, subject)

    async def get_schema(self, schema_id: int) -> StoredSchema | None:
        # a schema is visible while some version row (live or soft-deleted) refers to it
        query = _q(
            "SELECT s.id, s.schema_type, s.schema_text FROM {schemas} s WHERE s.id = %s"
            " AND EXISTS (SELECT 1 FROM {versions} v WHERE v.schema_id = s.id)"
        )
        async with self._pool.connection() as conn:
            row = await (await conn.execute(query, (schema_id,))).fetchone()
        return StoredSchema(int(row[0]), str(row[1]), str(row[2])) if row else None

    async def schema_usages(self, schema_id: int, *, deleted: bool = False) -> list[tuple[str, int]]:
        query = _q(
            "SELECT subject, version FROM {versions} WHERE schema_id = %s AND (%s OR NOT deleted)"
            " ORDER BY subject, version"
        )
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(query, (schema_id, deleted))).fetchall()
        return [(str(r[0]), int(r[1])) for r in rows]

    async def lookup(
        self, subject: str, schema: NewSchema, *, deleted: bool = False
    ) -> SubjectVersion | None:
        async with self._pool.connection() as conn:
            return await self._lookup(conn, subject, schema, deleted=deleted)

    # -- registration ---------------------------------------------------------

    async def register(self, subject: str, schema: NewSchema, check: CompatibilityCheck) -> Registration:
        async with self._pool.connection() as conn, conn.transaction():
            await self._lock_subject(conn, subject)
            existing = await self._lookup(conn, subject, schema, deleted=False)
            if existing is not None:
                return Registration(existing.schema_id, existing.version, created=False)
            live = await self._live_versions(conn, subject)
            level = await self._effective_level(conn, subject)
            messages = check(level, live) if live else []
            if messages:
                raise IncompatibleSchemaError(subject, level, messages)
            schema_id = await self._schema_id(conn, schema)
            row = await (
                await conn.execute(
                    _q("SELECT COALESCE(MAX(version), 0) + 1 FROM {versions} WHERE subject = %s"), (subject,)
                )
            ).fetchone()
            version = int(row[0]) if row else 1
            await conn.execute(
                _q("INSERT INTO {versions} (subject, version, schema_id) VALUES (%s, %s, %s)"),
                (subject, version, schema_id),
            )
            return Registration(schema_id, version, created=True)

    async def _schema_id(self, conn: Conn, schema: NewSchema) -> int:
        row = await (
            await conn.execute(
                _q(
                    "INSERT INTO {schemas} (schema_type, schema_text, canonical_text, canonical_hash)"
                    " VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (schema_type, canonical_hash) DO NOTHING RETURNING id"
                ),
                (schema.schema_type, schema.schema_text, schema.canonical_text, schema.canonical_hash),
            )
        ).fetchone()
        if row is None:  # registered before (maybe by a concurrent transaction under another subject)
            row = await (
                await conn.execute(
                    _q("SELECT id FROM {schemas} WHERE schema_type = %s AND canonical_hash = %s"),
                    (schema.schema_type, schema.canonical_hash),
                )
            ).fetchone()
        if row is None:
            raise RuntimeError("schema row vanished during registration")
        return int(row[0])

    # -- config ---------------------------------------------------------------

    async def get_config(self, subject: str | None) -> CompatibilityLevel | None:
        async with self._pool.connection() as conn:
            row = await (
                await conn.execute(
                    _q("SELECT compatibility FROM {config} WHERE subject = %s"), (subject or GLOBAL_SUBJECT,)
                )
            ).fetchone()
        return parse_level(row[0]) if row else None

    async def effective_level(self, subject: str) -> CompatibilityLevel:
        async with self._pool.connection() as conn:
            return await self._effective_level(conn, subject)

    async def set_config(self, subject: str | None, level: CompatibilityLevel) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                _q(
                    "INSERT INTO {config} (subject, compatibility) VALUES (%s, %s)"
                    " ON CONFLICT (subject) DO UPDATE SET compatibility = EXCLUDED.compatibility,"
                    " updated_at = now()"
                ),
                (subject or GLOBAL_SUBJECT, level.value),
            )

    async def delete_config(self, subject: str | None) -> CompatibilityLevel | None:
        async with self._pool.connection() as conn:
            row = await (
                await conn.execute(
                    _q("DELETE FROM {config} WHERE subject = %s RETURNING compatibility"),
                    (subject or GLOBAL_SUBJECT,),
                )
            ).fetchone()
        return parse_level(row[0]) if row else None

    # -- deletion -------------------------------------------------------------

    async def delete_subject(self, subject: str, *, permanent: bool = False) -> list[int]:
        async with self._pool.connection() as conn, conn.transaction():
            await self._lock_subject(conn, subject)
            rows = await self._version_flags(conn, subject)
            if not rows:
                raise subject_not_found(subject)
            live = [v for v, deleted in rows if not deleted]
            if not permanent:
                if not live:
                    raise RegistryError(
                        404,
                        40404,
                        f"Subject '{subject}' was soft deleted. Set permanent=true to delete permanently",
                    )
                await conn.execute(
                    _q("UPDATE {versions} SET deleted = true WHERE subject = %s AND NOT deleted"), (subject,)
                )
                deleted_versions = live
            else:
                if live:
                    raise RegistryError(
                        404,
                        40405,
                        f"Subject '{subject}' was not deleted first before being permanently deleted",
                    )
                await conn.execute(_q("DELETE FROM {versions} WHERE subject = %s"), (subject,))
                deleted_versions = [v for v, _ in rows]
            await conn.execute(_q("DELETE FROM {config} WHERE subject = %s"), (subject,))
            return deleted_versions

    async def delete_version(self, subject: str, version: int | None, *, permanent: bool = False) -> int:
        async with self._pool.connection() as conn, conn.transaction():
            await self._lock_subject(conn, subject)
            rows = dict(await self._version_flags(conn, subject))
            if not rows:
                raise subject_not_found(subject)
            if version is None:
                candidates = [v for v, deleted in rows.items() if permanent or not deleted]
                if not candidates:
                    raise version_not_found(subject, "latest")
                version = max(candidates)
            if version not in rows:
                raise version_not_found(subject, version)
            if not permanent:
                if rows[version]:
                    raise RegistryError(
                        404,
                        40406,
                        f"Subject '{subject}' Version {version} was soft deleted. "
                        "Set permanent=true to delete permanently",
                    )
                await conn.execute(
                    _q("UPDATE {versions} SET deleted = true WHERE subject = %s AND version = %s"),
                    (subject, version),
                )
            else:
                if not rows[version]:
                    raise RegistryError(
                        404,
                        40407,
                        f"Subject '{subject}' Version {version} was not deleted first before being "
                        "permanently deleted",
                    )
                await conn.execute(
                    _q("DELETE FROM {versions} WHERE subject = %s AND version = %s"), (subject, version)
                )
            return version

    # -- helpers --------------------------------------------------------------

    @staticmethod
    async def _lock_subject(conn: Conn, subject: str) -> None:
        await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_NAMESPACE, subject))

    @staticmethod
    async def _version_flags(conn: Conn, subject: str) -> list[tuple[int, bool]]:
        rows = await (
            await conn.execute(
                _q("SELECT version, deleted FROM {versions} WHERE subject = %s ORDER BY version"), (subject,)
            )
        ).fetchall()
        return [(int(r[0]), bool(r[1])) for r in rows]

    @staticmethod
    async def _live_versions(conn: Conn, subject: str) -> list[SubjectVersion]:
        query = _q(
            "SELECT "
            + _VERSION_COLUMNS
            + " "
            + _FROM_VERSIONS
            + " WHERE v.subject = %s AND NOT v.deleted ORDER BY v.version"
        )
        rows = await (await conn.execute(query, (subject,))).fetchall()
        return [_subject_version(r) for r in rows]

    @staticmethod
    async def _lookup(conn: Conn, subject: str, schema: NewSchema, *, deleted: bool) -> SubjectVersion | None:
        query = _q(
            "SELECT "
            + _VERSION_COLUMNS
            + " "
            + _FROM_VERSIONS
            + " WHERE v.subject = %s AND s.schema_type = %s AND s.canonical_hash = %s"
            " AND (%s OR NOT v.deleted) ORDER BY v.deleted, v.version DESC LIMIT 1"
        )
        row = await (
            await conn.execute(query, (subject, schema.schema_type, schema.canonical_hash, deleted))
        ).fetchone()
        return _subject_version(row) if row else None

    @staticmethod
    async def _effective_level(conn: Conn, subject: str) -> CompatibilityLevel:
        # the subject's own level sorts before the global one ('' is the smallest text)
        row = await (
            await conn.execute(
                _q(
                    "SELECT compatibility FROM {config} WHERE subject IN (%s, %s)"
                    " ORDER BY subject DESC LIMIT 1"
                ),
                (subject, GLOBAL_SUBJECT),
            )
        ).fetchone()
        return parse_level(row[0]) if row else DEFAULT_LEVEL


@asynccontextmanager
async def open_postgres_store(dsn: str, *, pool_size: int = 4) -> AsyncIterator[PostgresRegistryStore]:
    """A :class:`PostgresRegistryStore` on its own connection pool, opened and closed with the block."""
    pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
        dsn, min_size=1, max_size=max(1, pool_size), open=False, name="schema-registry"
    )
    await pool.open(wait=True, timeout=30.0)
    try:
        yield PostgresRegistryStore(pool)
    finally:
        await pool.close()
