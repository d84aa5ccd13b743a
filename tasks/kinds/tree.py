"""kind = "tree": the Azure Linux tree (procedure A1), a pinned commit as a git repository.

Either a git commit pin (``url``, ``commit``, its ``tree`` id, ``ref``: the keys of kind
``git``, see ``tasks/kinds/git.py``): the task checks the commit out with ``tasks.sources.gitpin``
(from a local git mirror, the URL, or a snapshot tarball ``<name>-<commit>.tar.gz`` verified by
re-creating the tree id; offline, local ones only) and verifies commit and tree id; no sha256
is needed. Or, the older form, a version whose one source is a git snapshot (``git``,
``ref``; fetched and verified by the mirror like every source once its sha256 is pinned;
until then the version is *unconfirmed* and a run that needs the tree stops in the preflight,
before anything is built), unpacked and made a git repository. Either way the tree is a git
repository (so ``git clean -fxd :/`` behaves as in the seed), the ``fixes`` (patches under
``recipes/<name>/``) are applied, each as a commit, and it is moved into place; the previous
tree is removed only then. Targets: ``target`` (a tracked file of the tree) and
``cache/stages/<name>.json``, whose content names the pin (or snapshot) and the fixes: that
record is what dependents (the stages) have as file_dep, so a new pin reruns them. It refuses
a directory it did not make and while anything is mounted under the tree; it has no clean
action (remove the tree by hand). ``dir`` says where the tree lives per platform; the
config's ``azurelinux_tree`` moves it and ``azurelinux_stages`` switches it on anywhere.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from doit.task import Task

from tasks.build.action import StepFailed
from tasks.build.unpack import unpack
from tasks.kinds.base import Plan, Signature, make_task, unconfirmed_meta
from tasks.kinds.git import PIN_KEYS, git_mirrors, pin_fields
from tasks.model.config import Config, Paths
from tasks.model.platform import Platform
from tasks.model.recipe import Build, Checker, Recipe, Version, package_fields
from tasks.sources.gitpin import PinError, checkout
from tasks.store.fsutil import atomic_write, safe_rmtree
from tasks.toolkit.action import (
    MARKER,
    STAGES_VERSION,
    AttemptAction,
    Fix,
    Tree,
    record_path,
    toolkit_on_platform,
    tree_dir,
)

KEYS = frozenset({"version", "versions", "target", "dir", "fixes"}) | PIN_KEYS
# whether a no-op may trust the stat of its files (tasks/engine/noop.py): its source or fixes, its targets and the signature in the journal
STAT_DETERMINED = True
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
    pin = None
    if "commit" in data:  # a git commit pin: no snapshot, no sha256
        pin = pin_fields(c, data, name)
        for key in ("version", "versions"):
            if key in data:
                c.err(key, "a tree pinned by `commit` has no versions: the commit is its version")
        version = pin.commit[:8] or "0"
        fields = {"version": version, "versions": {version: Version(version, ())}}
    else:
        fields = package_fields(c, data, path, name)
    for ver, v in fields["versions"].items() if pin is None else ():
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
    return {**fields, "spec": Tree(dirs, target, tuple(fixes), pin)}


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

    def __init__(
        self, build: Build, paths: Paths, platform: Platform, tree: Path, record: Path,
        mirrors: tuple[list[Path], bool] = ([], False),
    ):  # fmt: skip
        super().__init__(build.name, paths, platform, tree)
        self.pin = build.recipe.spec.pin
        self.source = None if self.pin else build.version.sources[0]
        self.record, (self.git_mirrors, self.network) = record, mirrors
        self.unconfirmed = build.version.unconfirmed
        self.fixes: tuple[Fix, ...] = build.recipe.spec.fixes
        self.files_dir = build.recipe.files_dir

    def __str__(self) -> str:
        what = self.pin.commit if self.pin else self.source.file
        return f"Azure Linux tree {what} -> {self.tree}"

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
        self._step("unpack", lambda: safe_rmtree(part))  # the old tree goes once this one is made
        env = {**self.platform.build_env(), **GIT_ENV}
        git = ["git", "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false"]
        if self.pin:
            pin = self.pin
            self._note(f"check out {pin.url} at {pin.commit} (tree {pin.tree}) into {tree}")
            try:
                got = checkout(pin, part, mirrors=self.git_mirrors, network=self.network)
            except PinError as e:
                raise StepFailed("checkout", "", str(e)) from None
            self._note(f"verified: commit {pin.commit}, tree {got['tree']}, from {got['origin']}")
            message = f"{pin.url} {pin.commit} (snapshot {got['origin']})"
        else:
            archive = (self.paths.mirror / src.file).resolve()
            self._note(f"unpack {src.file} into {tree} (strip 1)")
            self._step("unpack", lambda: unpack(archive, part, strip_components=1))
            got, message = {}, f"{src.git} {src.ref} ({src.file})"
        if not got.get("commit") or got.get("snapshot"):  # files only: make them a repository
            self._command("git", [*git, "init", "-q"], part, env)
            self._command("git", [*git, "add", "-A", "-f"], part, env)  # all of it was tracked
            self._command("git", [*git, "commit", "-q", "-m", message], part, env)
        for fix in self.fixes:
            if not fix.patch:
                self._note(f"fix {fix.name} ({fix.step}): empty slot, nothing applied: {fix.note}")
                continue
            patch = str((self.files_dir / fix.patch).resolve())
            self._command("patch", ["patch", "-p1", "--forward", "--batch", "-i", patch], part, env)
            self._command("git", [*git, "add", "-A", "-f"], part, env)
            self._command("git", [*git, "commit", "-q", "-m", f"{fix.step} {fix.name}"], part, env)
        doc = (
            {"url": self.pin.url, "commit": self.pin.commit, "tree": self.pin.tree}
            if self.pin
            else {"file": src.file, "sha256": src.sha256, "git": src.git, "ref": src.ref}
        ) | {"fixes": [[f.name, f.step, f.patch] for f in self.fixes]}
        atomic_write(part / ".git" / MARKER, json.dumps(doc, indent=1).encode())

        def commit() -> None:
            safe_rmtree(tree)
            os.rename(part, tree)
            self.record.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.record, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())

        self._step("record", commit)


def tasks(plan: Plan, build: Build) -> list[Task]:
    paths, spec = plan.paths, build.recipe.spec
    tree = directory(plan, build)
    record = record_path(paths, build.name)
    git = plan.build_of("git")
    fixes = [str(build.recipe.files_dir / f.patch) for f in spec.fixes if f.patch]
    if spec.pin:  # a commit pin: checked out (and verified) by the task itself
        pin = spec.pin
        identity = {"url": pin.url, "commit": pin.commit, "tree": pin.tree}
        inputs, what = [], pin.commit[:12]
    else:
        src = build.version.sources[0]
        identity = {"file": src.file, "sha256": src.sha256, "ref": src.ref}
        inputs, what = [str(paths.mirror / src.file)], src.file
    signature = {
        "engine": STAGES_VERSION,
        "tree": {"dir": str(tree), **identity, "fixes": [[f.name, f.patch] for f in spec.fixes]},
    }
    order = [git.name] if git else []  # order only: a rebuilt git does not remake the tree
    mirrors = (git_mirrors(plan), not plan.mirror.offline)
    return [
        make_task(
            name=build.name,
            actions=[TreeAction(build, paths, plan.platform, tree, record, mirrors)],
            file_dep=[*inputs, *fixes],
            targets=[str(tree / spec.target), str(record)],
            uptodate=[Signature(signature)],
            task_dep=order + [d for d in build.depends if d not in order],
            doc=f"{build.recipe.step}  {build.recipe.description}: {what} -> {tree}".strip(),
            meta=(unconfirmed_meta(build, what) or {})
            | ({"pin": (spec.pin, mirrors[0])} if spec.pin else {}),
        )
    ]
