"""Recipes -> doit tasks. ``dodo.py`` calls ``setup`` and nothing else.

Per package ``PKG``:

- ``mirror:<file>`` for each source (target ``mirror/<file>``), grouped under ``mirror``;
- ``PKG``: file_dep = the recipe, its patches, its source files and the **manifests** of its
  dependencies (task_dep alone would order but never invalidate); uptodate = the normalised
  recipe signature (a changed flag reruns it); target = ``cache/manifests/PKG.json``;
- ``all``: every package (the default task).

Because dependents depend on manifest *content*, a rebuild with byte-identical output stops
the cascade there (early cutoff). file_dep sets iterate sorted, so ``doit list --deps`` and
``doit info`` print the same on every run whatever ``PYTHONHASHSEED`` is.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from doit.exceptions import InvalidDodoFile
from doit.task import Task
from doit.tools import config_changed

from tasks import checker
from tasks.azurelinux import stage_tasks
from tasks.build import BuildAction, clean_package, stop_all_builds
from tasks.config import CONFIG_NAME, Config, Paths, load_config
from tasks.fsutil import atomic_write
from tasks.graph import to_dot, topo_order
from tasks.mirror import MirrorSettings, Verified, fetch_source, missing_sources, write_sums
from tasks.platform import Platform, detect
from tasks.recipe import (
    Build,
    Recipe,
    RecipeError,
    RecipeErrors,
    Source,
    load_recipes,
    step_rank,
)
from tasks.report import make_reporter

# Bump when the meaning of a build changes (templates, environment): every package reruns.
ENGINE_VERSION = 1
SUMS = "SHA256SUMS"


class SortedSet(set):
    """A set that iterates in sorted order (doit keeps file_dep in a plain set)."""

    def __iter__(self):  # noqa: ANN204
        return iter(sorted(set.__iter__(self)))


class Signature:
    """uptodate: the recipe's normalised content and the platform are what they were at the
    last successful build. ``doit info PKG`` shows which fields changed."""

    def __init__(self, signature: dict[str, Any]):
        # flat, so a change names its field: {"engine": 1, "platform.TARGET": ..., ...}
        self.signature = signature
        self.changed: list[str] | None = None

    def __call__(self, task: Task, values: dict[str, Any]) -> bool:
        task.value_savers.append(lambda: {"signature": self.signature})
        old = values.get("signature")
        if old is None:
            self.changed = ["never built"]
        else:
            keys = sorted(set(old) | set(self.signature))
            self.changed = [k for k in keys if old.get(k) != self.signature.get(k)]
        return not self.changed

    def __str__(self) -> str:
        if self.changed is None:
            return "recipe signature"
        if self.changed == ["never built"]:
            return "recipe signature: never built"
        return "recipe changed: " + ", ".join(self.changed) if self.changed else "recipe unchanged"

    __repr__ = __str__


class MachineIs:
    """uptodate: the running kernel's machine (``uname -m``; ``AZL_MACHINE`` overrides it,
    so tests inject the check instead of kexec-ing the test machine)."""

    def __init__(self, machine: str):
        self.machine = machine

    def __call__(self, task: Task, values: dict[str, Any]) -> bool:
        return (os.environ.get("AZL_MACHINE") or os.uname().machine) == self.machine

    def __str__(self) -> str:
        return f"running machine is {self.machine}"

    __repr__ = __str__


def _task(name: str, actions: list | None, **fields: Any) -> Task:
    task = Task(name, actions, **fields)
    task.file_dep = SortedSet(task.file_dep)
    return task


class Project:
    """A recipe set resolved for this machine: what ``dodo.py`` turns into tasks."""

    def __init__(self, project: Path):
        self.paths = Paths(project)
        errors: list[RecipeError] = []
        try:
            self.config: Config = load_config(project)
        except RecipeError as e:  # report it with the recipes' errors, not instead of them
            errors.append(e)
            self.config = Config()
        try:
            self.recipes: dict[str, Recipe] = load_recipes(self.paths.recipes)
        except RecipeErrors as e:
            raise RecipeErrors(errors + e.errors) from None
        if errors:
            raise RecipeErrors(errors)
        self.platform: Platform = detect(project, self.config)
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

    def _step_key(self, name: str) -> tuple[int, int, str]:
        """The procedure's order, then the name."""
        return (*step_rank(self.builds[name].recipe.step), name)

    def _resolve(self) -> dict[str, Build]:
        """The packages of this platform: a recipe may make none (``platforms``), one, or a
        chain of them. Dependencies name packages; a chain's recipe name stands for its last
        link; a dependency that does not exist on this platform is a step of another platform
        (the guest's kernel, say) and is dropped."""
        plat = self.platform.name
        builds: dict[str, Build] = {}
        alias: dict[str, str] = {}
        for name, recipe in self.recipes.items():
            made = recipe.builds(plat, self.config.versions.get(name))
            builds.update((b.name, b) for b in made)
            if made:
                alias[name] = made[-1].name
        for b in builds.values():
            b.depends = [alias.get(d, d) for d in b.depends if alias.get(d, d) in builds]
        return builds

    def tasks(self) -> Iterator[Task]:
        stages = list(stage_tasks(self))  # the Azure Linux tree and toolkit stages
        stage_fetches = [t.name for t in stages if t.name.startswith("mirror:")]
        yield from self._fetch_tasks(stage_fetches)
        for name in self.order:
            yield self._package_task(self.builds[name])
        yield from stages
        yield self._graph_task()
        # fetch every source before building anything: a missing file stops the run early
        yield _task(
            name="all",
            actions=None,
            task_dep=[
                "mirror",
                *self.order,
                *(t.name for t in stages if t.name not in stage_fetches),
            ],
            doc="build every package",
        )

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
        return "\n".join(problems) + "\nNothing was built." if problems else None

    def _sources(self) -> dict[str, tuple[Source, str]]:
        """Every mirror file of the plan: file -> (source, first package needing it). Two
        packages may share a file only with the same sha256 (``RecipeErrors`` otherwise)."""
        owners: dict[str, tuple[Source, str]] = {}
        errors = []
        for name in self.order:
            if self.builds[name].version.unconfirmed:
                continue  # nothing to verify it against: never fetched
            for src in self.builds[name].version.sources:
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
        return owners

    def _fetch_tasks(self, more: list[str]) -> Iterator[Task]:
        """One fetch task per source, mirror/SHA256SUMS, and the group ``mirror`` (which also
        holds ``more``: fetch tasks made elsewhere, like the Azure Linux tree snapshot)."""
        names = list(more)
        for src, name in self.sources.values():
            names.append(f"mirror:{src.file}")
            yield _task(
                name=f"mirror:{src.file}",
                subtask_of="mirror",
                actions=[(fetch_source, [src, self.paths, self.mirror])],
                targets=[str(self.paths.mirror / src.file)],
                uptodate=[Verified(self.paths.mirror / src.file, src.sha256)],
                doc=f"fetch and verify {src.file}",
                meta={"source": src, "package": name},
            )
        sums = {f: src.sha256 for f, (src, _) in self.sources.items()}
        sums_file = self.paths.mirror / SUMS
        yield _task(
            name=f"mirror:{SUMS}",
            subtask_of="mirror",
            actions=[(write_sums, [sums_file, sums])],
            file_dep=[str(self.paths.mirror / f) for f in sums],
            targets=[str(sums_file)],
            uptodate=[config_changed(sums)],
            doc="mirror/SHA256SUMS for sha256sum -c",
        )
        names.append(f"mirror:{SUMS}")
        yield _task(
            name="mirror", actions=None, task_dep=names, has_subtask=True, doc="fetch every source"
        )

    def _package_task(self, build: Build) -> Task:
        recipe, paths = build.recipe, self.paths
        if recipe.running_machine:
            return self._checkpoint_task(build)
        file_dep = [str(recipe.path)]
        file_dep += [str(p) for p in recipe.patch_paths() + recipe.file_paths()]
        if not build.version.unconfirmed:
            file_dep += [str(paths.mirror / s.file) for s in build.version.sources]
        # a package's output is its manifest; a checkpoint has none and only orders
        checkpoints = [d for d in build.depends if self.builds[d].recipe.running_machine]
        file_dep += [str(paths.manifest(d)) for d in build.depends if d not in checkpoints]
        signature = {
            "engine": ENGINE_VERSION,
            **{f"platform.{k}": v for k, v in self.platform.signature().items()},
            **build.signature(),
        }
        doc = f"{build.version.version}  {recipe.description}".rstrip()
        if build.version.substitute_for:
            doc += f"  [substitute for {build.version.substitute_for}]"
        if build.version.unconfirmed:  # `doit list` shows what the preflight would refuse
            doc += "  [unconfirmed]"
        return _task(
            name=build.name,
            actions=[
                BuildAction(
                    build,
                    self.platform,
                    paths,
                    self.config.keep_build,
                    isolate_network=self.isolate,
                )
            ],
            file_dep=file_dep,
            targets=[str(paths.manifest(build.name))],
            uptodate=[Signature(signature)],
            clean=[(clean_package, [paths, build.name])],
            task_dep=checkpoints,
            doc=doc,
            meta=(
                {"unconfirmed": f"{build.version.version}: {build.version.unconfirmed}"}
                if build.version.unconfirmed
                else None
            ),
        )

    def _graph_task(self) -> Task:
        """``doit graph``: the DAG as cache/graph.dot and, with Graphviz, cache/graph.png."""
        edges = {n: b.depends for n, b in self.builds.items()}
        labels = {
            n: f"{n}\n{b.version.version} {b.recipe.step}".rstrip() for n, b in self.builds.items()
        }
        dot = to_dot(edges, labels, f"azl-bootstrap ({self.platform.name})")
        dot_file, png = self.paths.cache / "graph.dot", self.paths.cache / "graph.png"
        return _task(
            name="graph",
            actions=[(write_graph, [dot_file, png, dot])],
            targets=[str(dot_file), str(png)],
            uptodate=[config_changed(dot)],
            doc="draw the dependency graph: cache/graph.dot and cache/graph.png (Graphviz)",
        )

    def _checkpoint_task(self, build: Build) -> Task:
        """A step whose result is the state of the running machine, not files: the kexec
        into the 64-bit kernel is done exactly while ``uname -m`` says x86_64. It has no
        file_dep and no target: after the kexec ends this doit, the next run finds it done;
        after a reboot into the old kernel it runs again."""
        machine = build.recipe.running_machine
        assert machine
        return _task(
            name=build.name,
            actions=[BuildAction(build, self.platform, self.paths, checkpoint=True)],
            uptodate=[MachineIs(machine)],
            task_dep=list(build.depends),
            doc=f"{build.recipe.description}  [done while the machine is {machine}]".strip(),
        )


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


def _stop(signum: int, frame: Any) -> None:
    """SIGINT/SIGTERM: stop every running build (they run in their own process groups, and
    under ``-n N`` in worker threads), then unwind like Ctrl-C; finished tasks are saved."""
    stop_all_builds()
    raise KeyboardInterrupt(f"signal {signum}")


def _interrupted(typ: type, value: BaseException, tb: Any, _default: Any = sys.excepthook) -> None:
    """Ctrl-C or SIGTERM: one line instead of a traceback."""
    if issubclass(typ, KeyboardInterrupt):
        sys.stderr.write(
            "\nazl-bootstrap: interrupted; every finished task is saved, run doit again to go on\n"
        )
    else:
        _default(typ, value, tb)


def setup(project: Path) -> tuple[dict[str, Any], Project]:
    """Load the project at ``project`` and return ``(DOIT_CONFIG, Project)``.

    Recipe and config errors become ``InvalidDodoFile``: doit prints every one of them
    (file and field) and exits 3 before anything is written."""
    try:
        proj = Project(project)
    except (RecipeError, RecipeErrors) as e:
        raise InvalidDodoFile(f"invalid recipes or config:\n{e}") from None
    checker.use_cache(proj.paths.state / "digests.json")
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # not when imported by a test run
        signal.signal(signal.SIGTERM, _stop)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _stop)
        sys.excepthook = _interrupted
    config = {
        "default_tasks": ["all"],
        "backend": "azl",
        "dep_file": str(proj.paths.state),
        "check_file_uptodate": checker.XXH3Checker,
        "reporter": make_reporter(proj.paths.state, proj.preflight),
        "par_type": "thread",
    }
    return config, proj
