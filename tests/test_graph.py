"""tasks.engine.graph: the order in which ready packages are offered to doit (critical_first), and
``doit graph``."""

from __future__ import annotations

import shutil

import pytest

from tasks.engine.graph import critical_first, topo_order
from tests.conftest import Project


def test_the_longest_remaining_chain_goes_first() -> None:
    # libc -> gcc (long) -> kernel (long); libc -> zlib (short); docs stands alone (medium)
    edges = {"libc": [], "gcc": ["libc"], "kernel": ["gcc"], "zlib": ["libc"], "docs": []}
    seconds = {"libc": 10, "gcc": 300, "kernel": 200, "zlib": 5, "docs": 60}
    order = topo_order(edges)
    ranked = critical_first(edges, seconds.__getitem__, order)
    assert ranked == ["libc", "gcc", "kernel", "docs", "zlib"]
    # every package still after what it needs
    assert all(ranked.index(d) < ranked.index(n) for n, ds in edges.items() for d in ds)


def test_unknown_costs_keep_the_given_order() -> None:
    edges = {"a": [], "b": [], "c": []}
    assert critical_first(edges, lambda n: 1.0, ["b", "c", "a"]) == ["b", "c", "a"]


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_doit_graph_draws_the_plan_and_redraws_only_when_it_changes(project: Project) -> None:
    project.recipe("a")
    project.recipe("b", deps=("a",))
    r = project.doit("graph")
    assert r.code == 0 and r.ran == ["graph"], r.err
    dot = (project.root / "cache" / "graph.dot").read_text()
    assert '"b" -> "a";' in dot and '"a" [label="a\n1.0"];' in dot
    assert (project.root / "cache" / "graph.png").read_bytes()[:4] == b"\x89PNG"
    r = project.doit("graph")
    assert r.code == 0 and r.uptodate == ["graph"], r.out
    project.recipe("c", deps=("b",))
    r = project.doit("graph")
    assert r.code == 0 and r.ran == ["graph"], r.err
    assert '"c" -> "b";' in (project.root / "cache" / "graph.dot").read_text()
