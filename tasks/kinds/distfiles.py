"""kind = "distfiles": live-bootstrap's distfiles, through this project's mirror, laid out
where ``rootfs.py`` reads them (procedure H3, in place of ``mirror.sh``).

``checkout`` names the recipe (kind ``git``) of the live-bootstrap checkout; the list is
live-bootstrap's own ``steps/*/sources`` at that recipe's commit (``tasks.sources.lbsources``), read
from any git directory that has the commit (``tasks.sources.lbmirror``). Each distfile is a source of
this step, so the loader makes its ``mirror:<file>`` task like any other (one mirror, one
summary, one ``mirror/SHA256SUMS``, resume, fallbacks, the offline report); ``debian`` names
the Debian pool path of those whose Debian ``.orig`` is byte-identical (regenerate with
``tests/data/make_lb_sources.py``). The step links every file into
``<checkout>/<layout>/`` (default ``distfiles``), where ``rootfs.py`` copies them from.

If no git directory had the commit when the tasks were made (a fresh machine: the checkout
is made by this very run), the step reads the list from the new checkout and fetches the
files itself with the same fetch function; the next run has them as tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed
from doit.task import Task

from tasks.kinds import git as gitkind
from tasks.kinds.base import Plan, debian_table, make_task, on_listed_platform
from tasks.model.config import Config, Paths
from tasks.model.recipe import Build, Checker, Recipe, RecipeError, Source, Version
from tasks.sources.gitpin import local_sources
from tasks.sources.lbmirror import distfile_list, layout
from tasks.sources.lbsources import SourcesError, distfiles, read_checkout
from tasks.sources.mirror import MirrorSettings, fetch_source, write_sums
from tasks.store import lock

KEYS = frozenset({"checkout", "debian", "layout"})
# whether a no-op may trust the stat of its files (tasks/engine/noop.py): the checkout's record and the links it lays out
STAT_DETERMINED = True


@dataclass(frozen=True)
class Distfiles:
    checkout: str  # the kind "git" recipe of live-bootstrap
    layout: str = "distfiles"
    debian: dict[str, str] = field(default_factory=dict)  # file -> Debian pool path


def parse(c: Checker, data: dict[str, Any], path: Path, name: str) -> dict[str, Any]:
    checkout = c.typed(data, "checkout", str, "", "")
    if not checkout:
        c.err("checkout", 'missing: the kind = "git" recipe of the live-bootstrap checkout')
    where = c.typed(data, "layout", str, "", "distfiles")
    if where.startswith("/") or ".." in Path(where).parts:
        c.err("layout", f"must be a directory inside the checkout, got {where!r}")
    debian = debian_table(c, data)
    return {
        "version": "0",
        "versions": {"0": Version("0", ())},
        "spec": Distfiles(checkout, where, dict(debian)),
    }


def on_platform(recipe: Recipe, platform: str, config: Config) -> bool:
    return on_listed_platform(recipe, platform, config)


def outputs(plan: Plan, build: Build) -> list[str]:
    return []


def _checkout(plan: Plan, build: Build) -> tuple[Recipe, Path]:
    spec: Distfiles = build.recipe.spec
    recipe = plan.recipes.get(spec.checkout)
    if recipe is None or recipe.kind != "git":
        raise RecipeError(
            build.recipe.path, "checkout", f'{spec.checkout!r} is not a kind = "git" recipe'
        )
    return recipe, gitkind.directory(plan.paths, recipe.spec)


def sources(plan: Plan, build: Build) -> tuple[Source, ...]:
    """The distfiles as mirror sources, if a git directory has the pinned commit now."""
    recipe, dest = _checkout(plan, build)
    pin = recipe.spec.pin
    here = [Path(pin.url)] if pin.url.startswith("/") else []  # a repository on this machine
    stores = [dest / ".git", *here] + local_sources(pin.url, gitkind.git_mirrors(plan))
    try:
        items = distfile_list(
            pin.commit, stores, plan.paths.cache / "lb-distfiles", build.recipe.spec.debian
        )
    except SourcesError as e:
        raise RecipeError(build.recipe.path, "checkout", str(e)) from None
    return tuple(e.source for e in items or ())


class LayoutAction:
    def __init__(self, build: Build, paths: Paths, settings: MirrorSettings, dest: Path,
                 known: tuple[Source, ...], sums: dict[str, str]):  # fmt: skip
        self.build, self.paths, self.settings, self.dest = build, paths, settings, dest
        self.known, self.sums = known, sums

    def __call__(self) -> TaskFailed | dict[str, Any]:
        lock.acquire(self.paths.state)
        spec: Distfiles = self.build.recipe.spec
        files = list(self.known)
        if not files:  # the list was not readable when the tasks were made: read it now
            try:
                items = distfiles(read_checkout(self.dest))
            except SourcesError as e:
                return TaskFailed(str(e))
            files = [e.source for e in items]
            failed = []
            for src in files:
                src = replace(src, debian=spec.debian.get(src.file))
                got = fetch_source(src, self.paths, self.settings)
                if isinstance(got, TaskFailed):
                    failed.append(str(got))
            if failed:
                return TaskFailed(
                    f"{len(failed)} of {len(files)} distfiles could not be had:\n"
                    + "\n".join(failed)
                )
        counts = layout(self.paths.mirror, self.dest / spec.layout, [s.file for s in files])
        sums = dict(self.sums) | {s.file: s.sha256 for s in files}
        present = {f: h for f, h in sums.items() if (self.paths.mirror / f).exists()}
        write_sums(self.paths.mirror / "SHA256SUMS", present)
        print(
            f"{len(files)} distfiles in {self.dest / spec.layout}: "
            + ", ".join(f"{n} {k}" for k, n in counts.items() if n)
        )
        return {"files": len(files)}

    def __str__(self) -> str:
        return f"lay live-bootstrap's distfiles out in {self.dest / self.build.recipe.spec.layout}"


def host_tasks(plan: Plan, build: Build) -> list[str]:
    """In ``doit host`` this step comes after the image that needs only its early files
    (``tasks.kinds.lbimage.host_tasks``), unless no image step waits for it."""
    waits = [
        b for b in plan.builds.values() if b.recipe.kind == "lbimage" and build.name in b.depends
    ]
    return [] if waits else [build.name]


def tasks(plan: Plan, build: Build) -> list[Task]:
    recipe, dest = _checkout(plan, build)
    spec: Distfiles = build.recipe.spec
    known = sources(plan, build)
    sums = {f: s.sha256 for f, (s, _) in getattr(plan, "sources", {}).items()}
    checkout = plan.build_of(spec.checkout)
    return [
        make_task(
            name=build.name,
            actions=[LayoutAction(build, plan.paths, plan.mirror, dest, known, sums)],
            file_dep=[str(gitkind.record_path(plan.paths, checkout.name))] if checkout else [],
            task_dep=[f"mirror:{s.file}" for s in known] + ([checkout.name] if checkout else []),
            targets=[str(dest / spec.layout / s.file) for s in known],
            clean=True,  # the links only: the files stay in mirror/
            doc=f"{build.recipe.step}  {build.recipe.description}".strip(),
        )
    ]
