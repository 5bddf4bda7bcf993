"""Resolve the services an entry point needs: configured ones, or embedded ones.

``KAFKA_BOOTSTRAP``, ``DATABASE_URL`` and ``SCHEMA_REGISTRY_URL`` win when set.
Otherwise an embedded Tansu broker, an embedded PostgreSQL (under
``data_dir/postgres``) and the built-in registry (served in-process) are
started and stopped with the ``Services`` context.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING

from pydantic import SecretStr

from hftengine.config import Settings

if TYPE_CHECKING:
    from hftengine.storage.migrations import MigrationReport

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    need_broker: bool = True
    need_database: bool = True
    need_registry: bool = True
    say: Callable[[str], None] = field(default=lambda msg: log.info("%s", msg))
    started: list[str] = field(default_factory=list)
    #: the migrations run before the built-in registry started (it serves from the migrated database)
    migrations: MigrationReport | None = None
    _stack: ExitStack = field(default_factory=ExitStack)

    def __enter__(self) -> Settings:
        s = self.settings
        updates: dict[str, object] = {}
        try:
            if self.need_database and s.database_url is None:
                from hftengine.runtime.postgres import EmbeddedPostgres

                pg = EmbeddedPostgres(s.data_dir / "postgres")
                self.say(f"starting embedded PostgreSQL (data in {pg.pgdata})")
                pg.start()
                self._stack.callback(pg.stop)
                updates["database_url"] = SecretStr(pg.dsn)
                self.started.append(f"PostgreSQL {pg.dsn}")
            if self.need_broker and not s.kafka_bootstrap:
                from hftengine.runtime.broker import EmbeddedBroker

                s.data_dir.mkdir(parents=True, exist_ok=True)
                broker = EmbeddedBroker(log_path=s.data_dir / "tansu.log")
                self.say("starting embedded Tansu broker (in-memory topics)")
                broker.start()
                self._stack.callback(broker.stop)
                updates["kafka_bootstrap"] = broker.bootstrap
                self.started.append(f"Tansu broker {broker.bootstrap}")
            if self.need_registry and not s.schema_registry_url:
                from hftengine.codec.registry_server import create_registry_app
                from hftengine.runtime.serve import UvicornThread
                from hftengine.storage.migrations import migrate

                dsn = (updates.get("database_url") or s.database_url)
                assert isinstance(dsn, SecretStr), "the built-in registry needs a database"
                self.migrations = migrate(dsn.get_secret_value())
                server = UvicornThread(create_registry_app(dsn.get_secret_value()), port=0)
                server.start()
                self._stack.callback(server.stop)
                updates["schema_registry_url"] = server.url
                self.started.append(f"built-in schema registry {server.url}")
        except BaseException:
            self._stack.close()
            raise
        self.settings = s.model_copy(update=updates)
        return self.settings

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self._stack.close()
