"""segbench's own import graph (read from the source, see segbench.codedeps), for the tests."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from segbench.codedeps import ImportGraph

REPO = Path(__file__).resolve().parents[1]


@cache
def package_graph() -> ImportGraph:
    return ImportGraph(REPO / "src")


def modules() -> dict[str, Path]:
    return package_graph().modules


def graph(*, named: bool = False) -> dict[str, frozenset[str]]:
    return package_graph().graph(named=named)


def imports_of(path: Path, name: str | None = None) -> frozenset[str]:
    return package_graph().imports_of(path, name)
