"""REST API: ``create_api(settings)``."""

from hftengine.api.main import create_api

__all__ = ["create_api"]
