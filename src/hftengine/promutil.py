"""Prometheus helpers without side effects (no metric is created on import)."""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable
from typing import TypeVar

from prometheus_client import REGISTRY, CollectorRegistry

M = TypeVar("M")


def once_per_registry(build: Callable[[CollectorRegistry], M]) -> Callable[..., M]:
    """Decorator: ``build(registry)`` runs once per ``CollectorRegistry`` and its result is reused
    (``registry`` defaults to the process-wide ``REGISTRY``), so several clients and repeated test
    setups never trip prometheus_client's duplicate-registration error."""
    built: weakref.WeakKeyDictionary[CollectorRegistry, M] = weakref.WeakKeyDictionary()
    lock = threading.Lock()

    @functools.wraps(build)
    def get(registry: CollectorRegistry = REGISTRY) -> M:
        with lock:
            if registry not in built:
                built[registry] = build(registry)
            return built[registry]

    return get
