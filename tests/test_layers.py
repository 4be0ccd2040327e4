"""The package's layers: imports only point down, and no module imports itself back.

Every import counts, lazy ones inside functions too (:mod:`tests.static_imports`): a lower layer
never reaches a higher one, even at run time; where it seems to need to, the thing it needs
belongs lower.
"""

from __future__ import annotations

import networkx as nx
import pytest

from tests.static_imports import REPO, graph, imports_of, modules

# Lowest first. A module's component is its first name under segbench (segbench.config.models
# is config); stages/ and flows/ sit above all of them.
LAYERS = [
    {
        "segbench",
        "errors",
        "io",
        "decode",
        "workspace",
        "zygote",
        "timing",
        "codedeps",
        "classes",
        "downloads",
        "yamledit",
        "datahash",
    },
    {"config", "modelcard", "evalmetrics"},
    {
        "data",
        "models",
        "sam",
        "metrics",
        "losses",
        "stats",
        "inference",
        "checkpoint",
        "cost",
        "devices",
        "optim",
        "tracking",
        "postprocess",
        "threshold",
        "figures",
        "objectfigures",
        "cardloss",
        "skipped",
        "objects",
        "tta",
    },
    {
        "check",
        "fetch",
        "prepare",
        "training",
        "evaluate",
        "evalruns",
        "evalextra",
        "predict",
        "predict_folder",
        "pyfunc",
        "evalobjects",
        "export",
    },
    {
        "sweep",
        "ensemble",
        "report",
        "reportcsv",
        "reportextra",
        "reporttext",
        "reportobjects",
        "reportsweep",
        "comparison",
        "registry",
    },
    {"dag", "commands", "cli"},
]
TOP = len(LAYERS)  # stages/ and flows/


def component(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def layer(module: str) -> int:
    name = component(module)
    for i, members in enumerate(LAYERS):
        if name in members:
            return i
    raise AssertionError(f"{module}: its component {name!r} has no layer in tests/test_layers.py")


def test_every_module_has_a_layer():
    for name in modules():
        layer(name)


def test_imports_only_point_down():
    upward = [
        f"{src} (layer {layer(src)}) imports {dst} (layer {layer(dst)})"
        for src, targets in graph().items()
        for dst in targets
        if layer(dst) > layer(src)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_circles():
    """No circle between components (config -> models -> sam -> data -> config was one), and
    none between the modules of one component. (A package's ``__init__`` runs before each of
    its modules: that is how packages work, and is not counted as a circle.)"""
    named = graph(named=True)
    parts = nx.DiGraph(
        (component(src), component(dst))
        for src, targets in named.items()
        for dst in targets
        if component(src) != component(dst)
    )
    modules_graph = nx.DiGraph((src, dst) for src, targets in named.items() for dst in targets)
    circles = list(nx.simple_cycles(parts)) + list(nx.simple_cycles(modules_graph))
    assert not circles, "\n".join(" -> ".join([*c, c[0]]) for c in circles[:10])


@pytest.mark.parametrize("folder", ["stages", "flows"])
def test_entry_points_are_the_top_layer(folder):
    for path in sorted((REPO / folder).glob("*.py")):
        for name in imports_of(path):
            assert layer(name) < TOP, f"{path.name} imports {name}"
