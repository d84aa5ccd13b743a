"""The plan: the validated recipe set (``tasks.engine.recipeset``) resolved for this machine,
then doit tasks. ``dodo.py`` calls ``setup`` and nothing else.

``Project`` resolves the recipes for one platform (platforms, versions, chains) and asks each
build's kind for its tasks; ``for_platform`` plans the same set for another platform (the
guest's plan, read on the host), never through the environment. Besides the kinds' tasks:

- ``mirror:<file>`` for each source (target ``mirror/<file>``), grouped under ``mirror``;
- ``all``: every step of the plan but the host steps (the default task: ``./setup.sh``'s
  sandbox build; in the guest, the whole guest procedure);
- ``host``: every host step (off the guest; see tasks/model/platform.py);
- ``graph``: the DAG as a picture.

file_dep sets iterate sorted, so ``doit list --deps`` and ``doit info`` print the same on
every run whatever ``PYTHONHASHSEED`` is.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from doit.exceptions import InvalidDodoFile
from doit.task import Task
from doit.tools import config_changed

from tasks.engine.graph import DotGraph, critical_first, topo_order
from tasks.engine.recipeset import load_recipes
from tasks.kinds import KINDS
from tasks.kinds.base import make_task
from tasks.model.config import CONFIG_NAME, Config, Paths, load_config
from tasks.model.platform import Platform, detect, plan_platforms
from tasks.model.recipe import (
    Build,
    Recipe,
    RecipeError,
    RecipeErrors,
    Source,
    step_rank,
)
from tasks.sources.mirror import MirrorSettings, Verified, fetch_source, missing_sources, write_sums
from tasks.store import recipecache, state

SUMS = "SHA256SUMS"


def _task(name: str, actions: list | None, **fields: Any) -> Task:
    """The loader's own tasks (fetches, SHA256SUMS, groups, graph): each decides from its
    files and the recipes alone (``tasks.engine.noop`` may trust their stat)."""
    task = make_task(name, actions, **fields)
    task.stat_determined = True
    return task


class Project:
    """A recipe set resolved for this machine: what ``dodo.py`` turns into tasks."""

    collect_after_load = False  # ``setup`` turned the GC off: ``tasks`` turns it on

    def __init__(self, project: Path, platform: str | None = None):
        self.paths = Paths(project)
        recipe_cache = recipecache.RecipeCache(self.paths.state / "recipes.cache")
        errors: list[RecipeError] = []
        try:
            self.config: Config = load_config(project)
        except RecipeError as e:  # report it with the recipes' errors, not instead of them
            errors.append(e)
            self.config = Config()
        try:
            # parsed and validated once per change of recipes/ (tasks.store.recipecache)
            self.recipes: dict[str, Recipe] = recipe_cache.load(self.paths.recipes, load_recipes)
        except RecipeErrors as e:
            raise RecipeErrors(errors + e.errors) from None
        if errors:
            raise RecipeErrors(errors)
        self.platform: Platform = detect(project, self.config, name=platform)
        config_file = project / CONFIG_NAME
        for name, version in sorted(self.config.versions.items()):
            if name not in self.recipes:
                errors.append(RecipeError(config_file, f"versions.{name}", "no such package"))
            elif version not in self.recipes[name].versions:
                known = ", ".join(sorted(self.recipes[name].versions))
                msg = f"unknown version {version!r} of {name} (known: {known})"
                errors.append(RecipeError(config_file, f"versions.{name}", msg))
        if errors:
            raise RecipeErrors(errors)
        self.builds = self._resolve()
        self._outputs: dict[str, list[str]] = {}
        self.order = topo_order({n: b.depends for n, b in self.builds.items()}, key=self._step_key)
        offline = (
            self.config.offline
            if self.config.offline is not None
            else self.platform.name == "guest"
        )
        self.sources = self._sources()
        # builds get no network (a new network namespace) where we may make one: as root
        isolate = self.config.isolate_network
        self.isolate = os.geteuid() == 0 if isolate is None else isolate
        self.mirror = MirrorSettings.make(
            self.config.mirrors, self.config.debian_archive, offline, project
        )
        recipe_cache.save()  # everything validated: remember the parsed recipes

    def _step_key(self, name: str) -> tuple[int, int, str]:
        """The procedure's order, then the name."""
        return (*step_rank(self.builds[name].recipe.step), name)

    def _resolve(self) -> dict[str, Build]:
        """The steps of this machine's plan: a recipe may make none (its kind's
        ``on_platform`` says no to every platform of this machine), one, or a chain of them.
        Dependencies name recipes; a chain's recipe name stands for its last link; a
        dependency that is not in the plan is a step of another platform (the guest's kernel,
        say) and is dropped."""
        builds: dict[str, Build] = {}
        alias: dict[str, str] = {}
        for name, recipe in self.recipes.items():
            kind = KINDS[recipe.kind]
            plat = next(
                (
                    p
                    for p in plan_platforms(self.platform.name)
                    if kind.on_platform(recipe, p, self.config)
                ),
                None,
            )
            if plat is None:
                continue
            made = recipe.builds(plat, self.config.versions.get(name), listed=False)
            builds.update((b.name, b) for b in made)
            if made:
                alias[name] = made[-1].name
        for b in builds.values():
            b.depends = [alias.get(d, d) for d in b.depends if alias.get(d, d) in builds]
        self.alias = alias
        return builds

    def for_platform(self, name: str) -> Project:
        """The same recipe set planned for another platform (the guest's plan, on the host)."""
        return Project(self.paths.project, platform=name)

    def build_of(self, recipe: str) -> Build | None:
        """The build a recipe name stands for in this plan (a chain's last link), if any."""
        name = self.alias.get(recipe)
        return self.builds[name] if name else None

    def outputs(self, name: str) -> list[str]:
        """The files a dependent of the build ``name`` has as file_dep ([]: order only);
        asked once per dependency edge, so worked out once per build."""
        out = self._outputs.get(name)
        if out is None:
            build = self.builds[name]
            out = self._outputs[name] = KINDS[build.recipe.kind].outputs(self, build)
        return list(out)

    def tasks(self) -> Iterator[Task]:
        """Every task of the plan; a mistake only visible in the plan (a stage without its
        tree) stops doit before anything runs, naming file and field."""
        try:
            yield from self._tasks()
        finally:
            if self.collect_after_load:  # see ``setup``: loading is over
                self.collect_after_load = False
                gc.freeze()
                gc.enable()

    def _tasks(self) -> Iterator[Task]:
        try:
            steps = []
            for n in self.order:
                kind = KINDS[self.builds[n].recipe.kind]
                made = kind.tasks(self, self.builds[n])
                if getattr(kind, "STAT_DETERMINED", False):  # see tasks/engine/noop.py
                    for t in made:
                        t.stat_determined = True
                steps += made
        except (RecipeError, RecipeErrors) as e:
            raise InvalidDodoFile(f"invalid recipes or config:\n{e}") from None
        # doit offers ready tasks in the order of the groups' dependencies (and a package
        # becomes ready when its fetch is done): the longest remaining chain first, by the
        # times the last builds recorded, which shortens a parallel run
        seconds = state.recorded_seconds(self.paths.state)
        edges = {n: b.depends for n, b in self.builds.items()}
        ranked = critical_first(edges, lambda n: seconds.get(n, 1.0), self.order)
        rank = {n: i for i, n in enumerate(ranked)}
        yield from self._fetch_tasks(rank)
        yield from steps
        yield self._graph_task()
        host = [n for n in self.order if self.builds[n].platform == "host"]
        # fetch every source before building anything: a missing file stops the run early
        # (the sources of this platform's steps: the host's, e.g. live-bootstrap's
        # distfiles, are fetched by `doit mirror` or by the host step that needs them);
        # a group task does no work: up to date, so a no-op neither reruns nor records it
        by_rank = sorted(self.sources.items(), key=lambda kv: rank.get(kv[1][1], 0))
        fetches = [f"mirror:{f}" for f, _ in by_rank if f not in self.host_only]
        yield _task(
            name="all",
            actions=None,
            task_dep=[*fetches, f"mirror:{SUMS}", *(n for n in ranked if n not in host)],
            uptodate=[True],
            doc="build every step of this platform"
            + ("" if self.platform.name == "guest" else " (the host's: doit host)"),
        )
        if self.platform.name != "guest":
            yield _task(
                name="host",
                actions=None,
                task_dep=[t for n in ranked if n in host for t in self._host_tasks(n)],
                uptodate=[True],
                doc="every host step, up to a guest that is ready to build (then: doit iso)",
            )

    def _host_tasks(self, name: str) -> list[str]:
        """What stands for a host step in ``doit host``: the step, unless its kind says
        otherwise (``host_tasks``: the guest's is ``push``, a guest ready to build, not the
        whole guest plan; lb-image's is itself, then all of live-bootstrap's distfiles)."""
        kind = KINDS[self.builds[name].recipe.kind]
        fn = getattr(kind, "host_tasks", None)
        return fn(self, self.builds[name]) if fn else [name]

    def preflight(self, tasks: dict[str, Task], names: set[str]) -> str | None:
        """Checked before a run starts, so it stops before building anything: no package of
        the run may be unconfirmed, and offline every source must be at hand."""
        problems = []
        unconfirmed = [
            f"{n}: {tasks[n].meta['unconfirmed']}"
            for n in sorted(names)
            if (tasks[n].meta or {}).get("unconfirmed")
        ]
        if unconfirmed:
            problems.append(
                f"{len(unconfirmed)} step(s) of this run are marked unconfirmed (a sha256 or an "
                "input that could not be confirmed) and are never built:\n  "
                + "\n  ".join(unconfirmed)
                + "\nConfirm what is missing and pin it in the recipe, or choose a confirmed "
                "version."
            )
        missing = missing_sources(tasks, names, self.mirror) if self.mirror.offline else []
        if missing:
            problems.append(
                f"offline, and {len(missing)} source(s) of this run are not in the mirror:\n"
                + "\n".join(missing)
                + "\nFetch them where there is network (doit mirror) and copy mirror/ here, "
                "or name a local mirror in azl-bootstrap.toml."
            )
        from tasks.sources.gitpin import offline_missing  # only offline: its import is not free

        absent = [
            f"{n}: {why}"
            for n in sorted(names)
            if self.mirror.offline and (pin := (tasks[n].meta or {}).get("pin"))
            if (why := offline_missing(*pin))
        ]
        if absent:
            problems.append(
                f"offline, and {len(absent)} pinned git checkout(s) of this run are in no local "
                "mirror:\n  " + "\n  ".join(absent) + "\nPut a bare repository, a bundle or a "
                "snapshot (tasks.sources.gitpin.make_snapshot) of the commit into mirror/."
            )
        return "\n".join(problems) + "\nNothing was built." if problems else None

    def _sources(self) -> dict[str, tuple[Source, str]]:
        """Every mirror file of the plan: file -> (source, first package needing it). Two
        packages may share a file only with the same sha256 (``RecipeErrors`` otherwise)."""
        owners: dict[str, tuple[Source, str]] = {}
        errors = []
        self.host_only: set[str] = set()  # files that only host steps need
        needed_off_host: set[str] = set()
        for name in self.order:
            build = self.builds[name]
            if build.version.unconfirmed:
                continue  # nothing to verify it against: never fetched
            kind = KINDS[build.recipe.kind]
            # a kind may list sources the recipe cannot (live-bootstrap's distfiles)
            found = kind.sources(self, build) if hasattr(kind, "sources") else build.version.sources
            for src in found:
                if build.platform != "host":
                    needed_off_host.add(src.file)
                if src.file not in owners:
                    owners[src.file] = (src, name)
                elif owners[src.file][0].sha256 != src.sha256:
                    first, other = owners[src.file]
                    errors.append(
                        RecipeError(
                            self.builds[name].recipe.path,
                            "sources",
                            f"{src.file} has sha256 {src.sha256} here but {first.sha256} in "
                            f"{self.builds[other].recipe.path}: one mirror file cannot be both",
                        )
                    )
        if errors:
            raise RecipeErrors(errors)
        self.host_only = set(owners) - needed_off_host
        return owners

    def _fetch_tasks(self, rank: dict[str, int]) -> Iterator[Task]:
        """One fetch task per source (in the order of the packages' ``rank``),
        mirror/SHA256SUMS, and the group ``mirror``."""
        names = []
        for src, name in sorted(self.sources.values(), key=lambda s: rank.get(s[1], 0)):
            names.append(f"mirror:{src.file}")
            target = self.paths.mirror_file(src.file)
            yield _task(
                name=f"mirror:{src.file}",
                subtask_of="mirror",
                actions=[(fetch_source, [src, self.paths, self.mirror])],
                targets=[target],
                uptodate=[Verified(target, src.sha256)],
                doc=f"fetch and verify {src.file}",
                meta={"source": src, "package": name},
            )
        sums = {f: src.sha256 for f, (src, _) in self.sources.items()}
        sums_file = self.paths.mirror / SUMS
        # one SHA256SUMS for both halves: every file of the plan that is in mirror/ (the host
        # steps' files are written in by `doit mirror` and by the step that fetched them)
        yield _task(
            name=f"mirror:{SUMS}",
            subtask_of="mirror",
            actions=[(write_sums, [sums_file, sums, self.paths.mirror])],
            file_dep=[self.paths.mirror_file(f) for f in sums if f not in self.host_only],
            targets=[str(sums_file)],
            uptodate=[config_changed(sums)],
            doc="mirror/SHA256SUMS for sha256sum -c",
        )
        names.append(f"mirror:{SUMS}")
        yield _task(
            name="mirror",
            actions=None,
            task_dep=names,
            has_subtask=True,
            uptodate=[True],
            doc="fetch every source",
        )

    def _graph_task(self) -> Task:
        """``doit graph``: the DAG as cache/graph.dot and, with Graphviz, cache/graph.png."""
        dot_file, png = self.paths.cache / "graph.dot", self.paths.cache / "graph.png"
        graph = DotGraph(self)
        return _task(
            name="graph",
            actions=[(graph.write, [dot_file, png])],
            targets=[str(dot_file), str(png)],
            uptodate=[graph],
            doc="draw the dependency graph: cache/graph.dot and cache/graph.png (Graphviz)",
        )
