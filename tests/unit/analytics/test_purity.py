"""The analytics kernels are pure: numpy, scipy.special and the standard library only."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ANALYTICS = Path(__file__).resolve().parents[3] / "src" / "hftengine" / "analytics"
STDLIB = set(sys.stdlib_module_names)
# I/O, processes, event loops and FFI are off limits even from the standard library.
FORBIDDEN_STDLIB = {"asyncio", "socket", "subprocess", "multiprocessing", "ctypes", "io", "os", "shutil", "pathlib"}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import inside the package
                names.append("hftengine.analytics." + (node.module or ""))
            elif node.module is not None:
                names.append(node.module)
    return names


def _allowed(name: str) -> bool:
    top = name.split(".")[0]
    if name == "numpy" or name.startswith("numpy."):
        return True
    if name == "scipy.special" or name.startswith("scipy.special."):
        return True
    if name.startswith("hftengine.analytics"):
        return True
    if top == "__future__":
        return True
    return top in STDLIB and top not in FORBIDDEN_STDLIB


SOURCES = sorted(ANALYTICS.glob("*.py"))


def test_sources_found() -> None:
    assert {p.name for p in SOURCES} >= {"__init__.py", "bsm.py", "iv.py", "black76.py", "chain.py"}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_only_numpy_scipy_special_and_stdlib(path: Path) -> None:
    bad = [name for name in _imports(path) if not _allowed(name)]
    assert not bad, f"{path.name} imports {bad}; analytics may use numpy, scipy.special and the stdlib only"


def test_checker_rejects_io_and_frameworks() -> None:
    for name in ("faust", "psycopg", "redis", "asyncio", "scipy.optimize", "numba", "hftengine.storage"):
        assert not _allowed(name), name
