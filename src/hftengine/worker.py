"""Entry point for ``faust -A hftengine.worker worker``.

Settings come from the environment (``KAFKA_BOOTSTRAP``, ``DATABASE_URL``,
``SCHEMA_REGISTRY_URL``...).  The app is built on first access of ``app``,
not at import time.
"""

from __future__ import annotations

from typing import Any

_app: Any = None


def get_app() -> Any:
    global _app
    if _app is None:
        from hftengine.app import create_app
        from hftengine.config import Settings
        from hftengine.logsetup import configure_logging

        settings = Settings()
        configure_logging(settings.log_level)
        _app = create_app(settings)
    return _app


def __getattr__(name: str) -> Any:
    if name == "app":
        return get_app()
    raise AttributeError(name)


def main() -> None:
    get_app().main()
