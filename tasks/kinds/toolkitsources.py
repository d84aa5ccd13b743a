"""kind = "toolkitsources": the Azure Linux toolkit's own downloads through this project's
mirror, laid out where the toolkit stages serve them from (issue 18).

``tree`` names the recipe (kind ``tree``) of the pinned Azure Linux tree. The list is the
tree's own at that commit (``tasks.sources.toolkitlist``: the raw toolchain's
``toolchain-sha256sums`` with the kernel tarball, and the SPECs' ``*.signatures.json``), read
when the tasks are made from any git directory that has the commit (the tree's own, the
pin's URL if it is a local path, a local git mirror), from the checked-out tree, or from a
snapshot tarball ``azurelinux-<commit>.tar.gz`` in a local mirror, and kept in
``cache/toolkit-sources/`` by commit id. Every file is a source of this step, so the loader
makes its ``mirror:<file>`` task like any other (resume, fallbacks: the toolkit's source
server, the upstream URL, Debian's byte-identical ``.orig`` that ``debian`` names; the
summary, ``mirror/SHA256SUMS``, the offline report naming each missing file and its URLs).
Being sources of a step of the guest's plan, they are among the mirror files the guest's
push carries (``tasks.kinds.guest.guest_mirror_files``).

The step links every file into ``cache/toolkit-sources/files/`` (relative symbolic links to
``mirror/``) and writes ``cache/toolkit-sources/<name>.json``, the list with each file's
sha256, URLs and sets: its output. A stage with ``toolkit_sources`` serves that directory on
127.0.0.1 while its make runs and passes ``SOURCE_URL`` (``tasks.kinds.stage``), so the
toolkit's wget and srpmpacker fetch from the mirror and need no network.

If no tree had the commit when the tasks were made (the guest before its tree is checked
out), the step reads the list from the tree when it runs and fetches the files itself with
the same fetch function; the next run has them as tasks.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed
from doit.task import Task
from doit.tools import config_changed

from tasks.kinds.base import Plan, debian_table, dependency_inputs, make_task
from tasks.kinds.git import git_mirrors
from tasks.model.config import Config, Paths
from tasks.model.recipe import Build, Checker, Recipe, RecipeError, Source, Version
from tasks.sources.gitpin import (
    Pin,
    PinError,
    fetch_commit,
    git,
    has_commit,
    local_sources,
    repo_name,
    snapshot_tarballs,
)
from tasks.sources.lbmirror import layout
from tasks.sources.mirror import MirrorSettings, fetch_source, write_sums
from tasks.sources.toolkitlist import (
    SETS,
    DirTree,
    GitTree,
    Item,
    ListError,
    TarTree,
    TreeFiles,
    cached_lists,
    with_debian,
)
from tasks.store import inputs, lock
from tasks.store.fsutil import atomic_write
from tasks.toolkit.action import MARKER, toolkit_on_platform, tree_dir

KEYS = frozenset({"tree", "debian"})
# whether a no-op may trust the stat of its files (tasks/engine/noop.py): the list (by
# commit, in the recipe signature), the links it lays out and its record
STAT_DETERMINED = True
FILES = "files"  # cache/toolkit-sources/files/: what a stage serves


@dataclass(frozen=True)
class ToolkitSources:
    tree: str  # the kind "tree" recipe of the pinned Azure Linux tree
    debian: dict[str, str] = field(default_factory=dict)  # file -> Debian pool path


def parse(c: Checker, data: dict[str, Any], path: Path, name: str) -> dict[str, Any]:
    tree = c.typed(data, "tree", str, "", "")
    if not tree:
        c.err("tree", 'missing: the kind = "tree" recipe of the Azure Linux tree')
    debian = debian_table(c, data)
    return {
        "version": "0",
        "versions": {"0": Version("0", ())},
        "spec": ToolkitSources(tree, dict(debian)),
    }


def on_platform(recipe: Recipe, platform: str, config: Config) -> bool:
    """A host step where ``platforms`` lists the host (it fetches there); elsewhere where the
    toolkit stages are (the guest, or wherever ``azurelinux_stages`` says)."""
    if platform == "host":
        return platform in recipe.platforms
    return toolkit_on_platform(recipe, platform, config)


def directory(paths: Paths) -> Path:
    """``cache/toolkit-sources``: the cached lists, the served files, the records."""
    return paths.cache / "toolkit-sources"


def served_dir(paths: Paths) -> Path:
    return directory(paths) / FILES


def record_path(paths: Paths, name: str) -> Path:
    return directory(paths) / f"{name}.json"


def outputs(plan: Plan, build: Build) -> list[str]:
    return [str(record_path(plan.paths, build.name))]


@dataclass(frozen=True)
class Where:
    """Where this machine may read the tree at the pinned commit (plain data: the action
    keeps it, and an action may be pickled)."""

    recipe: Path  # the toolkitsources recipe, for messages
    pin: Pin
    checkout: Path  # the tree's directory on this platform
    mirrors: tuple[Path, ...]  # local git mirror directories
    cache: Path  # cache/toolkit-sources
    debian: dict[str, str] = field(default_factory=dict)


def where(plan: Plan, build: Build) -> Where:
    spec: ToolkitSources = build.recipe.spec
    recipe = plan.recipes.get(spec.tree)
    if recipe is None or recipe.kind != "tree":
        raise RecipeError(build.recipe.path, "tree", f'{spec.tree!r} is not a kind = "tree" recipe')
    if recipe.spec.pin is None:
        raise RecipeError(
            build.recipe.path,
            "tree",
            f"{spec.tree!r} pins no commit: the lists are read at the tree's pinned commit",
        )
    return Where(
        build.recipe.path,
        recipe.spec.pin,
        tree_dir(plan.paths.project, plan.config, plan.platform, recipe.spec),
        tuple(git_mirrors(plan)),
        directory(plan.paths),
        spec.debian,
    )


def _trees(w: Where) -> list[TreeFiles]:
    """Where the tree at the pinned commit can be read on this machine, best first: git
    directories that have the commit, the checked-out tree if it was made from it, snapshot
    tarballs of the commit."""
    pin = w.pin
    here = [Path(pin.url)] if pin.url.startswith("/") else []
    stores = [w.checkout / ".git", *here, *local_sources(pin.url, w.mirrors)]
    stores = [s / ".git" if inputs.file(s / ".git" / "HEAD").exists() else s for s in stores]
    found: list[TreeFiles] = [
        GitTree(s, pin.commit)
        for s in stores
        if inputs.file(s / "HEAD").exists() and has_commit(s, pin.commit)
    ]
    try:
        made = json.loads(inputs.file(w.checkout / ".git" / MARKER).read_text())
    except (OSError, ValueError):
        made = {}
    if made.get("commit") == pin.commit:  # a tree checked out from a verified snapshot
        found.append(DirTree(w.checkout))
    # a snapshot tarball (read, not verified here: the tree's checkout verifies its tree id)
    found += [TarTree(t) for t in snapshot_tarballs(pin.url, pin.commit, w.mirrors)]
    return found


class _Lazy:
    """The trees, looked for only if the cached list is not there (git calls cost)."""

    def __init__(self, w: Where):
        self.w = w

    def __iter__(self):  # noqa: ANN204
        return iter(_trees(self.w))


def read_items(w: Where) -> list[Item] | None:
    """The toolkit's downloads (None if no tree at the commit can be read here yet)."""
    try:
        found = cached_lists(w.cache, w.pin.commit, _Lazy(w))
    except ListError as e:
        raise RecipeError(w.recipe, "tree", f"the tree at {w.pin.commit[:12]}: {e}") from None
    return None if found is None else with_debian(found, w.debian)


def sources(plan: Plan, build: Build) -> tuple[Source, ...]:
    """The toolkit's downloads as mirror sources, if the list can be read now."""
    return tuple(i.source for i in read_items(where(plan, build)) or ())


def read_record(path: Path) -> dict[str, Any]:
    """A record written by this step: ``{"commit", "files": {file: {sha256, urls, sets}}}``."""
    return json.loads(path.read_text())


class LayoutAction:
    def __init__(
        self, w: Where, name: str, paths: Paths, settings: MirrorSettings,
        known: list[Item] | None, sums: dict[str, str],
    ):  # fmt: skip
        self.w, self.name, self.paths, self.settings = w, name, paths, settings
        self.known, self.sums = known, sums

    def __call__(self) -> TaskFailed | dict[str, Any]:
        lock.acquire(self.paths.state)
        found = self.known
        if found is None:  # the list was not readable when the tasks were made: read it now
            try:
                found = read_items(self.w)
                why = None if found is not None else self._fetch_tree()
                if found is None and why is None:
                    found = read_items(self.w)
            except RecipeError as e:
                return TaskFailed(str(e))
            if found is None:
                pin = self.w.pin
                return TaskFailed(
                    f"the Azure Linux tree at {pin.commit} is in no git directory here and "
                    f"not checked out ({why or 'no lists in it'}): put a bare repository of it "
                    f"({pin.url}) into mirror/ or a local mirror (azl-bootstrap.toml's mirrors, "
                    "AZL_GIT_MIRRORS)"
                )
            failed = [
                str(got)
                for i in found
                if isinstance(got := fetch_source(i.source, self.paths, self.settings), TaskFailed)
            ]
            if failed:
                return TaskFailed(
                    f"{len(failed)} of {len(found)} toolkit sources could not be had:\n"
                    + "\n".join(failed)
                )
        files = [i.source.file for i in found]
        missing = [f for f in files if not (self.paths.mirror / f).is_file()]
        if missing:  # their fetch tasks ran: only a file removed since can be missing
            return TaskFailed(f"not in {self.paths.mirror}: {', '.join(missing)}")
        served = served_dir(self.paths)
        counts = layout(self.paths.mirror, served, files)
        stale = [p for p in served.iterdir() if p.name not in set(files)] if served.is_dir() else []
        for p in stale:  # an earlier pin's files: never served again (the mirror keeps them)
            p.unlink()
        sums = dict(self.sums) | {i.source.file: i.source.sha256 for i in found}
        present = {f: h for f, h in sums.items() if (self.paths.mirror / f).exists()}
        write_sums(self.paths.mirror / "SHA256SUMS", present)
        text = json.dumps(_record(self.w.pin.commit, found), indent=1, sort_keys=True)
        atomic_write(record_path(self.paths, self.name), (text + "\n").encode())
        by_set = {s: sum(s in i.sets for i in found) for s in SETS}
        print(
            f"{len(files)} toolkit sources in {os.path.relpath(served)} "
            f"({', '.join(f'{n} {s}' for s, n in by_set.items())}): "
            + ", ".join(f"{n} {k}" for k, n in counts.items() if n)
            + (f", {len(stale)} stale link(s) removed" if stale else "")
        )
        return {"files": len(files)}

    def _fetch_tree(self) -> str | None:
        """Not offline: bring the pinned commit into ``mirror/<name>.git`` (where the
        tree's own checkout looks too); why not, or None."""
        pin = self.w.pin
        if self.settings.offline:
            return "offline"
        gitdir = self.paths.mirror / f"{repo_name(pin.url)}.git"
        try:
            if not (gitdir / "HEAD").exists():
                git("init", "--quiet", "--bare", gitdir)
            fetch_commit(gitdir, pin.url, pin.commit, pin.ref)
        except PinError as e:
            return str(e)
        return None

    def __str__(self) -> str:
        return f"lay the Azure Linux toolkit's sources out in {served_dir(self.paths)}"


def _record(commit: str, found: list[Item]) -> dict[str, Any]:
    return {
        "commit": commit,
        "files": {
            i.source.file: {
                "sha256": i.source.sha256,
                "urls": list(i.source.urls),
                "debian": i.source.debian,
                "sets": list(i.sets),
                "where": i.where,
            }
            for i in found
        },
    }


def tasks(plan: Plan, build: Build) -> list[Task]:
    w = where(plan, build)
    known = read_items(w)
    sums = {f: s.sha256 for f, (s, _) in getattr(plan, "sources", {}).items()}
    file_dep, order = dependency_inputs(plan, build)
    served = served_dir(plan.paths)
    listed = [i.source for i in known or ()]
    signature = {
        "files": {s.file: [s.sha256, s.debian] for s in listed},
        "known": known is not None,
    }
    return [
        make_task(
            name=build.name,
            actions=[LayoutAction(w, build.name, plan.paths, plan.mirror, known, sums)],
            file_dep=file_dep,
            task_dep=[f"mirror:{s.file}" for s in listed] + order,
            targets=[str(record_path(plan.paths, build.name))]
            + [str(served / s.file) for s in listed],
            uptodate=[config_changed(signature)],
            clean=True,  # the links and the record: the files stay in mirror/
            doc=f"{build.recipe.step}  {build.recipe.description}".strip(),
        )
    ]
