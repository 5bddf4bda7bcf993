"""The worker keeps the root logger at the configured level (Faust's spinner would lower it to DEBUG)."""

from __future__ import annotations

import logging
from pathlib import Path

import faust

from hftengine.app import Worker, create_app
from hftengine.config import Settings


def test_worker_leaves_root_logger_level_alone(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, kafka_bootstrap="127.0.0.1:9"), web_enabled=False)
    assert app.conf.Worker is Worker
    root = logging.getLogger()
    saved_level, saved_handlers = root.level, list(root.handlers)
    try:
        root.setLevel(logging.WARNING)
        worker = app.conf.Worker(app, loglevel="warn", quiet=True)
        worker.on_setup_root_logger(root, logging.WARNING)
        assert root.level == logging.WARNING
        assert not logging.getLogger("faust.topics").isEnabledFor(logging.DEBUG)

        plain = faust.Worker(app, loglevel="warn", quiet=True)  # what the subclass avoids
        plain.on_setup_root_logger(root, logging.WARNING)
        assert root.level == logging.DEBUG
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
