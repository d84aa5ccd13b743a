"""kind = "tree": the Azure Linux tree (procedure A1), a git snapshot made a git repository.

Its version's one source is a git snapshot (``git``, ``ref``; fetched and verified by the
mirror like every source once its sha256 is pinned; until then the version is *unconfirmed*
and a run that needs the tree stops in the preflight, before anything is built). The task
unpacks it into a fresh directory, makes that a git repository (so ``git clean -fxd :/``
behaves as in the seed), applies the ``fixes`` (patches under ``recipes/<name>/``), each as a
commit, and moves it into place. Targets: ``target`` (a tracked file of the tree) and
``cache/stages/<name>.json``, whose content names the snapshot and the fixes: that record is
what dependents (the stages) have as file_dep, so a new snapshot reruns them. It refuses a
directory it did not make and while anything is mounted under the tree; it has no clean
action (remove the tree by hand). ``dir`` says where the tree lives per platform; the
config's ``azurelinux_tree`` moves it and ``azurelinux_stages`` switches it on anywhere.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from doit.task import Task

from tasks.build import StepFailed
from tasks.config import Config, Paths
from tasks.fsutil import atomic_write, safe_rmtree
from tasks.kinds.base import Plan, Signature, make_task, unconfirmed_meta
from tasks.platform import Platform
from tasks.recipe import Build, Checker, Recipe, package_fields
from tasks.toolkit import (
    MARKER,
    STAGES_VERSION,
    AttemptAction,
    Fix,
    Tree,
    record_path,
    toolkit_on_platform,
    tree_dir,
)
from tasks.unpack import unpack

KEYS = frozenset({"version", "versions", "target", "dir", "fixes"})
# a fixed identity and date: the same snapshot and fixes always give the same commits
GIT_ENV = {
    "GIT_AUTHOR_NAME": "azl-bootstrap",
    "GIT_AUTHOR_EMAIL": "azl-bootstrap@localhost",
    "GIT_AUTHOR_DATE": "@0 +0000",
    "GIT_COMMITTER_NAME": "azl-bootstrap",
    "GIT_COMMITTER_EMAIL": "azl-bootstrap@localhost",
    "GIT_COMMITTER_DATE": "@0 +0000",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


def parse(c: Checker, data: dict[str, Any], path: Path, name: str) -> dict[str, Any]:
    fields = package_fields(c, data, path, name)
    for ver, v in fields["versions"].items():
        raw = data.get("versions", {}).get(ver, {})
        if isinstance(raw, dict) and len(raw.get("sources", [])) != 1:
            c.err(f"versions.{ver}.sources", "a tree has exactly one source: its git snapshot")
        elif v.sources and not v.sources[0].git:
            c.err(f"versions.{ver}.sources[0].git", "missing: the tree is a git snapshot")
    target = c.typed(data, "target", str, "", "toolkit/Makefile")
    dirs = c.typed(data, "dir", dict, "", {})
    for plat in ("guest", "sandbox"):
        if not isinstance(dirs.get(plat), str) or not dirs[plat]:
            c.err(f"dir.{plat}", "missing: where the tree lives on this platform")
    fixes = []
    for i, fx in enumerate(c.typed(data, "fixes", list, "", [])):
        where = f"fixes[{i}]."
        if not isinstance(fx, dict):
            c.err(where.rstrip("."), "expected a table")
            continue
        c.keys(fx, {"name", "step", "patch", "note"}, where)
        patch = c.typed(fx, "patch", str, where, "")
        files = path.parent / name
        if patch and (patch.startswith("/") or ".." in Path(patch).parts):
            c.err(where + "patch", f"must be a path inside {files}, got {patch!r}")
        elif patch and not (files / patch).is_file():
            c.err(where + "patch", f"file not found: {files / patch}")
        fixes.append(
            Fix(
                c.typed(fx, "name", str, where, f"fix{i}"),
                c.typed(fx, "step", str, where, ""),
                patch,
                c.typed(fx, "note", str, where, ""),
            )
        )
    dirs = {k: v for k, v in dirs.items() if isinstance(v, str)}
    return {**fields, "spec": Tree(dirs, target, tuple(fixes))}


def on_platform(recipe: Recipe, platform: str, config: Config) -> bool:
    return toolkit_on_platform(recipe, platform, config)


def directory(plan: Plan, build: Build) -> Path:
    """Where the tree of ``build`` lives on this machine."""
    return tree_dir(plan.paths.project, plan.config, plan.platform, build.recipe.spec)


def outputs(plan: Plan, build: Build) -> list[str]:
    return [str(record_path(plan.paths, build.name))]


class TreeAction(AttemptAction):
    """A1: the snapshot, unpacked into a fresh directory, made a git repository, fixed; then
    moved into place and recorded."""

    def __init__(self, build: Build, paths: Paths, platform: Platform, tree: Path, record: Path):
        super().__init__(build.name, paths, platform, tree)
        self.source, self.record = build.version.sources[0], record
        self.unconfirmed = build.version.unconfirmed
        self.fixes: tuple[Fix, ...] = build.recipe.spec.fixes
        self.files_dir = build.recipe.files_dir

    def __str__(self) -> str:
        return f"Azure Linux tree {self.source.file} -> {self.tree}"

    def _unconfirmed(self) -> str | None:
        return self.unconfirmed

    def _attempt(self, n: int) -> None:
        tree, src = self.tree.absolute(), self.source
        part = tree.with_name(tree.name + ".part")
        if tree.exists() and not (tree / ".git" / MARKER).exists() and any(tree.iterdir()):
            raise StepFailed(
                "unpack",
                "",
                f"{tree} exists and was not made by azl-bootstrap: move it away, or set "
                "azurelinux_tree in azl-bootstrap.toml to another directory",
            )
        self._refuse_mounted(f"replace {tree}")
        self._step("unpack", lambda: [safe_rmtree(part), safe_rmtree(tree)])
        archive = (self.paths.mirror / src.file).resolve()
        self._note(f"unpack {src.file} into {tree} (strip 1)")
        self._step("unpack", lambda: unpack(archive, part, strip_components=1))
        env = {**self.platform.build_env(), **GIT_ENV}
        git = ["git", "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false"]
        self._command("git", [*git, "init", "-q"], part, env)
        self._command("git", [*git, "add", "-A", "-f"], part, env)  # all of it was tracked
        message = f"{src.git} {src.ref} ({src.file})"
        self._command("git", [*git, "commit", "-q", "-m", message], part, env)
        for fix in self.fixes:
            if not fix.patch:
                self._note(f"fix {fix.name} ({fix.step}): empty slot, nothing applied: {fix.note}")
                continue
            patch = str((self.files_dir / fix.patch).resolve())
            self._command("patch", ["patch", "-p1", "--forward", "--batch", "-i", patch], part, env)
            self._command("git", [*git, "add", "-A", "-f"], part, env)
            self._command("git", [*git, "commit", "-q", "-m", f"{fix.step} {fix.name}"], part, env)
        doc = {
            "file": src.file,
            "sha256": src.sha256,
            "git": src.git,
            "ref": src.ref,
            "fixes": [[f.name, f.step, f.patch] for f in self.fixes],
        }
        atomic_write(part / ".git" / MARKER, json.dumps(doc, indent=1).encode())

        def commit() -> None:
            os.rename(part, tree)
            self.record.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.record, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())

        self._step("record", commit)


def tasks(plan: Plan, build: Build) -> list[Task]:
    paths, spec, src = plan.paths, build.recipe.spec, build.version.sources[0]
    tree = directory(plan, build)
    record = record_path(paths, build.name)
    git = plan.build_of("git")
    fixes = [str(build.recipe.files_dir / f.patch) for f in spec.fixes if f.patch]
    signature = {
        "engine": STAGES_VERSION,
        "tree": {
            "dir": str(tree),
            "file": src.file,
            "sha256": src.sha256,
            "ref": src.ref,
            "fixes": [[f.name, f.patch] for f in spec.fixes],
        },
    }
    order = [git.name] if git else []  # order only: a rebuilt git does not remake the tree
    return [
        make_task(
            name=build.name,
            actions=[TreeAction(build, paths, plan.platform, tree, record)],
            file_dep=[str(paths.mirror / src.file), *fixes],
            targets=[str(tree / spec.target), str(record)],
            uptodate=[Signature(signature)],
            task_dep=order + [d for d in build.depends if d not in order],
            doc=f"{build.recipe.step}  {build.recipe.description}: {src.file} -> {tree}".strip(),
            meta=unconfirmed_meta(build, src.file),
        )
    ]
