"""tasks.graph.critical_first: the order in which ready packages are offered to doit."""

from __future__ import annotations

from tasks.graph import critical_first, topo_order


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
