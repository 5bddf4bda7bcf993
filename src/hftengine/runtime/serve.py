"""Serve an ASGI app from a background thread (tests, embedded registry)."""

from __future__ import annotations

import threading
from typing import Any

import uvicorn

from hftengine.runtime.ports import free_port, wait_for_port


class UvicornThread:
    """Run ``app`` with uvicorn on a loopback port in a daemon thread."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> None:
        self.host = host
        self.port = port or free_port(host)
        config = uvicorn.Config(app, host=host, port=self.port, log_level=log_level, lifespan="on",
                                access_log=False)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name=f"uvicorn:{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> UvicornThread:
        self._thread.start()
        wait_for_port(self.host, self.port, timeout, "HTTP server")
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("HTTP server thread died during startup")
            self._thread.join(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> UvicornThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
