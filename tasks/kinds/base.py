"""What every kind module shares: the plan it reads (``Plan``), the task maker and the
recipe-signature check. This module imports no kind and not the loader."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from doit.task import Task

from tasks.build import ENGINE_VERSION  # noqa: F401 - the kinds' records name it
from tasks.model.config import Config, Paths
from tasks.model.platform import Platform
from tasks.model.recipe import Build, Checker, Recipe
from tasks.sources.mirror import MirrorSettings
from tasks.store import uptodate


class Plan(Protocol):
    """The resolved recipe set a kind makes its tasks from (``tasks.engine.plan.Project``)."""

    paths: Paths
    config: Config
    platform: Platform
    mirror: MirrorSettings
    isolate: bool  # builds run without network (as root)
    recipes: dict[str, Recipe]
    builds: dict[str, Build]  # every step of this machine's plan, by task name
    order: list[str]  # the builds in dependency order
    sources: dict[str, Any]  # mirror file -> (source, first step needing it)

    def outputs(self, name: str) -> list[str]:
        """The files a dependent of the build ``name`` has as file_dep ([]: order only)."""
        ...

    def build_of(self, recipe: str) -> Build | None:
        """The build a recipe name stands for in this plan (a chain's last link), if any."""
        ...

    def for_platform(self, name: str) -> Plan:
        """The same recipe set planned for another platform (the guest's plan, on the host)."""
        ...

    def tasks(self) -> Iterator[Task]:
        """Every doit task of the plan (what the kinds make, the fetches and the groups)."""
        ...


@dataclass(frozen=True)
class Place:
    """Where a step sits in the pipeline, for ``doit list`` and ``doit help``: the platform
    it runs on (host, sandbox or guest), its procedure step id (``H2``, ``V27``; "" if none)
    and its version ("" when it has none)."""

    platform: str
    step: str = ""
    version: str = ""


class SortedSet(set):
    """A set that iterates in sorted order (doit keeps file_dep in a plain set)."""

    def __iter__(self):  # noqa: ANN204
        return iter(sorted(set.__iter__(self)))


def make_task(name: str, actions: list | None, **fields: Any) -> Task:
    """A doit ``Task`` whose file_dep iterates sorted, so ``doit list --deps`` and ``doit
    info`` print the same on every run whatever ``PYTHONHASHSEED`` is. A task the preflight
    would refuse (``meta["unconfirmed"]``) says so in ``doit list``: ``[unconfirmed]``."""
    if (fields.get("meta") or {}).get("unconfirmed"):
        fields["doc"] = f"{fields.get('doc') or ''}  [unconfirmed]".strip()
    task = Task(name, actions, **fields)
    task.file_dep = SortedSet(task.file_dep)
    return task


def on_listed_platform(recipe: Recipe, platform: str, config: Config) -> bool:
    """The usual ``on_platform``: the recipe's ``platforms`` list ``platform``."""
    return platform in recipe.platforms


def dependency_inputs(plan: Plan, build: Build) -> tuple[list[str], list[str]]:
    """``(file_dep, task_dep)`` for a build's dependencies: the files each dependency's kind
    names as its outputs (a package's manifest, a stage's outputs), or, for a step without
    output files (a checkpoint, a session step), the task itself, to order only."""
    files: list[str] = []
    order: list[str] = []
    for dep in build.depends:
        out = plan.outputs(dep)
        if out:
            files += out
        else:
            order.append(dep)
    return files, order


class Signature:
    """uptodate: the recipe's normalised content and the platform are what they were at the
    last successful build. ``doit info PKG`` shows which fields changed."""

    __signature__ = uptodate.SIGNATURE  # doit's inspect.signature, once

    def __init__(self, signature: dict[str, Any], recipe: Path | None = None):
        # flat, so a change names its field: {"engine": 1, "platform.TARGET": ..., ...}
        self.signature = signature
        self.recipe = recipe  # named in the message (a package's recipe is no file_dep)
        self.changed: list[str] | None = None

    def __call__(self, task: Task, values: dict[str, Any]) -> bool:
        task.value_savers.append(lambda: {"signature": self.signature})
        old = values.get("signature")
        if old is None:
            self.changed = ["never built"]
        elif old == self.signature:  # the common case, one comparison in C
            self.changed = []
        else:
            keys = sorted(set(old) | set(self.signature))
            self.changed = [k for k in keys if old.get(k) != self.signature.get(k)]
        return not self.changed

    def __str__(self) -> str:
        if self.changed is None:
            return "recipe signature"
        if self.changed == ["never built"]:
            return "recipe signature: never built"
        where = f" ({self.recipe})" if self.recipe else ""
        if not self.changed:
            return "recipe unchanged"
        return f"recipe changed{where}: " + ", ".join(self.changed)

    __repr__ = __str__


def unconfirmed_meta(build: Build, what: str | None = None) -> dict[str, str] | None:
    """The task ``meta`` that makes the run's preflight stop before a step whose version is
    unconfirmed (``what`` names it; default: its version)."""
    why = build.version.unconfirmed
    if not why:
        return None
    return {"unconfirmed": f"{what or build.version.version}: {why}"}


def files_of(recipe: Recipe) -> list[str]:
    """The recipe's patches and files: a step reruns when one changes. Not the recipe file
    itself: its normalised signature (``Signature``) decides, so a comment, key order,
    whitespace, a URL, a description or a note reruns nothing."""
    paths: list[Path] = [*recipe.patch_paths(), *recipe.file_paths()]
    return [str(p) for p in paths]


def debian_table(c: Checker, data: dict[str, Any]) -> dict[str, str]:
    """A recipe's ``debian`` table (file -> the relative pool path of Debian's byte-identical
    copy), checked: no absolute path, no ``..``."""
    debian = c.typed(data, "debian", dict, "", {})
    for file, pool in debian.items():
        if not isinstance(pool, str) or pool.startswith("/") or ".." in pool.split("/"):
            c.err(f"debian.{file}", f"expected a relative pool path, got {pool!r}")
    return debian
