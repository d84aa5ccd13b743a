"""The package dependency graph: cycles, a stable topological order, and ``doit graph``'s
picture of the plan."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from doit.task import Task

from tasks.store import uptodate
from tasks.store.fsutil import atomic_write


def find_cycle(edges: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A dependency cycle as ``[a, b, ..., a]``, or None. Deterministic: nodes in sorted order."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def topo_order(edges: Mapping[str, Iterable[str]], key: Callable[[str], Any] = str) -> list[str]:
    """Every node after its dependencies; among nodes free to go, the smallest ``key`` first
    (e.g. the procedure's step number, then the name), so the order never varies. ``key``
    is called once per node."""
    order: list[str] = []
    done: set[str] = set()
    keys: dict[str, Any] = {}

    def rank(node: str) -> Any:
        if node not in keys:
            keys[node] = key(node)
        return keys[node]

    def visit(node: str) -> None:
        if node in done:
            return
        done.add(node)
        for dep in sorted(edges.get(node, ()), key=rank):
            visit(dep)
        order.append(node)

    for node in sorted(edges, key=rank):
        visit(node)
    return order


def to_dot(
    edges: Mapping[str, Iterable[str]],
    labels: Mapping[str, str],
    title: str,
    order: Mapping[str, Iterable[str]] | None = None,
    clusters: Mapping[str, Iterable[str]] | None = None,
) -> str:
    """The dependency graph in Graphviz's dot language, arrows from a step to what it needs:
    solid for a file it reads (``edges``), dashed for one it only runs after (``order``);
    ``clusters`` boxes nodes by platform (host, sandbox, guest). Stable output (sorted) so
    the picture only changes when the graph does."""

    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [f"digraph {q(title)} {{", "  rankdir=LR;", "  node [shape=box, fontsize=10];"]
    boxed: set[str] = set()
    for name, members in sorted((clusters or {}).items()):
        inside = sorted(m for m in members if m in edges)
        if not inside:
            continue
        lines += [f"  subgraph {q('cluster_' + name)} {{", f"    label={q(name)};"]
        lines += [f"    {q(n)} [label={q(labels.get(n, n))}];" for n in inside]
        lines.append("  }")
        boxed.update(inside)
    for node in sorted(set(edges) - boxed):
        lines.append(f"  {q(node)} [label={q(labels.get(node, node))}];")
    for node in sorted(edges):
        lines += [f"  {q(node)} -> {q(dep)};" for dep in sorted(edges[node])]
        after = sorted(set((order or {}).get(node, ())) - set(edges[node]))
        lines += [f"  {q(node)} -> {q(dep)} [style=dashed];" for dep in after]
    return "\n".join(lines) + "\n}\n"


def step_edges(
    steps: Iterable[Task], prefix: str = ""
) -> tuple[dict[str, list[str]], dict[str, list[str]], dict[str, str], dict[str, list[str]]]:
    """From a plan's step tasks: file edges (a file_dep to the step that makes it), ordering
    edges (task_dep), labels and the platform of each, node names prefixed by ``prefix``."""
    steps = [t for t in steps if getattr(t, "place", None) is not None]
    names = {t.name for t in steps}
    made_by = {str(f): t.name for t in steps for f in t.targets}
    edges: dict[str, list[str]] = {}
    order: dict[str, list[str]] = {}
    labels: dict[str, str] = {}
    clusters: dict[str, list[str]] = {}
    for t in steps:
        node = prefix + t.name
        files = {made_by[str(f)] for f in t.file_dep if str(f) in made_by} - {t.name}
        edges[node] = sorted(prefix + d for d in files)
        order[node] = sorted(prefix + d for d in t.task_dep if d in names)
        labels[node] = f"{t.name}\n{t.place.version} {t.place.step}".rstrip()
        clusters.setdefault(t.place.platform, []).append(node)
    return edges, order, labels, clusters


def critical_first(
    edges: Mapping[str, Iterable[str]], cost: Callable[[str], float], order: list[str]
) -> list[str]:
    """``order`` re-ranked so that a package with the longest remaining path (its own cost
    plus the costliest chain of packages that wait for it) comes first: among the packages
    ready at a moment, starting those on the critical path first shortens a parallel run.
    Ties keep ``order``; dependencies still run first (the scheduler sees to that)."""
    dependents: dict[str, list[str]] = {n: [] for n in edges}
    for node, deps in edges.items():
        for dep in deps:
            dependents.setdefault(dep, []).append(node)
    level: dict[str, float] = {}
    for node in reversed(order):  # dependents come later in ``order``: already levelled
        level[node] = cost(node) + max(
            (level.get(m, 0.0) for m in dependents.get(node, ())), default=0.0
        )
    rank = {n: i for i, n in enumerate(order)}
    return sorted(order, key=lambda n: (-level[n], rank[n]))


class DotGraph:
    """The plan in dot, made only when ``doit graph`` runs (not on every load); uptodate:
    the dot text is the one drawn last time."""

    __signature__ = uptodate.SIGNATURE  # doit's inspect.signature, once

    def __init__(self, project: Any, steps: list[Task]):
        self.project, self.steps = project, steps
        self._dot: str | None = None

    def dot(self) -> str:
        if self._dot is None:
            edges, order, labels, clusters = step_edges(self.steps)
            if self.project.platform.name != "guest":
                # the guest's steps as the guest plans them (the host's tasks of the same
                # names only start them in the VM): a second plan, made only to draw it
                for name in clusters.pop("guest", []):
                    for table in (edges, order, labels):
                        table.pop(name, None)
                guest = list(self.project.for_platform("guest").tasks())
                more = step_edges(guest, prefix="guest/")
                for table, extra in zip((edges, order, labels, clusters), more, strict=True):
                    table.update(extra)
            for deps in (*edges.values(), *order.values()):
                deps[:] = [d for d in deps if d in edges]  # a dropped proxy is no node
            title = f"azl-bootstrap ({self.project.platform.name})"
            self._dot = to_dot(edges, labels, title, order, clusters)
        return self._dot

    def __call__(self, task: Task, values: dict[str, Any]) -> bool:
        digest = hashlib.md5(self.dot().encode()).hexdigest()
        task.value_savers.append(lambda: {"dot": digest})
        return values.get("dot") == digest

    def write(self, dot_file: Path, png: Path) -> None:
        write_graph(dot_file, png, self.dot())


def write_graph(dot_file: Path, png: Path, dot: str) -> None:
    dot_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(dot_file, dot.encode())
    tmp = png.with_name(png.name + ".part")
    try:
        subprocess.run(
            ["dot", "-Tpng", "-o", str(tmp), str(dot_file)],
            check=True,
            capture_output=True,
            text=True,
        )
    except FileNotFoundError:
        raise RuntimeError("Graphviz's `dot` is not installed (apt-get install graphviz)") from None
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"dot failed: {e.stderr.strip()}") from None
    os.replace(tmp, png)
