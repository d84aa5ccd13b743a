"""kind = "git": a pinned git checkout (a host step; procedure H2 for live-bootstrap).

A commit id is a content pin: no tarball sha256 is needed. The recipe names ``url``,
``commit``, the commit's ``tree`` id, optionally the ``ref`` that reaches it (fetched, never
checked out: a moved branch changes nothing), the ``submodules`` the commit records
(``path = "commit"``, checked) and the submodule paths to ``skip``. ``tasks.sources.gitpin`` makes the
checkout in ``dir`` (default ``cache/<name>``) from, in order: a bare repository, bundle or
snapshot tarball in a local mirror (``mirror/``, the config's local ``mirrors``, the
directories of ``AZL_GIT_MIRRORS``: ``<owner>+<name>/repo``, ``<name>.git``, ``<name>.bundle``,
``<name>-<commit>.tar.gz``), else the URL (not offline). Nothing half-made ever sits under
``dir``.

Target and output: ``cache/checkouts/<name>.json``, the record of every repository's commit,
tree and origin. The step is up to date while the record matches the pin and every
repository's HEAD is still its pinned commit. ``doit clean <name>`` removes the checkout and
the record (refused while something is mounted under it).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed
from doit.task import Task

from tasks.build.action import clean_paths, say_removed
from tasks.kinds.base import Plan, make_task, on_listed_platform
from tasks.model.config import Config, Paths
from tasks.model.recipe import Build, Checker, Recipe, Version
from tasks.sources.gitpin import Pin, PinError, checkout, checkout_differs, write_record
from tasks.store import inputs, lock, uptodate

PIN_KEYS = frozenset({"url", "commit", "tree", "ref", "submodules", "skip"})
KEYS = PIN_KEYS | {"dir"}
# whether a no-op may trust the stat of its files (tasks/engine/noop.py): the repositories' HEADs decide, read through git
STAT_DETERMINED = False
_OID = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class GitPin:
    pin: Pin
    dir: str  # relative to the project unless absolute
    fields: dict[str, Any] = field(default_factory=dict)  # the pin as recorded


def pin_fields(c: Checker, data: dict[str, Any], name: str, where: str = "") -> Pin:
    """Validate the pin keys (``url``, ``commit``, ``tree``, ``ref``, ``submodules``,
    ``skip``) of ``data``; every mistake names its field."""
    url = c.typed(data, "url", str, where, "")
    if not url:
        c.err(where + "url", "missing: the repository's URL")
    ids = {}
    for key in ("commit", "tree"):
        value = c.typed(data, key, str, where, "")
        if not _OID.match(value):
            c.err(where + key, f"expected a full 40-hex-digit git id, got {value!r}")
        ids[key] = value
    ref = c.typed(data, "ref", str, where, None)
    if ref is not None and not ref.startswith("refs/"):
        c.err(where + "ref", f"expected a full ref name (refs/...), got {ref!r}")
    subs = c.typed(data, "submodules", dict, where, {})
    for path, commit in subs.items():
        if not isinstance(commit, str) or not _OID.match(commit):
            c.err(f"{where}submodules.{path}", f"expected the 40-hex-digit commit, got {commit!r}")
    skip = c.typed(data, "skip", list, where, [])
    if not all(isinstance(s, str) for s in skip):
        c.err(where + "skip", "expected a list of submodule paths")
    return Pin(url, ids["commit"], ids["tree"], ref, dict(subs), tuple(skip), name)


def parse(c: Checker, data: dict[str, Any], path: Path, name: str) -> dict[str, Any]:
    pin = pin_fields(c, data, name)
    where = c.typed(data, "dir", str, "", f"cache/{name}")
    version = pin.commit[:8] or "0"
    return {
        "version": version,
        "versions": {version: Version(version, ())},
        "spec": GitPin(pin, where),
    }


def on_platform(recipe: Recipe, platform: str, config: Config) -> bool:
    return on_listed_platform(recipe, platform, config)


def directory(paths: Paths, spec: GitPin) -> Path:
    return paths.project / spec.dir


def record_path(paths: Paths, name: str) -> Path:
    return paths.cache / "checkouts" / f"{name}.json"


def outputs(plan: Plan, build: Build) -> list[str]:
    return [str(record_path(plan.paths, build.name))]


def git_mirrors(plan: Plan) -> list[Path]:
    """Local directories that may hold a pinned repository: ``mirror/``, the config's local
    mirrors, then ``AZL_GIT_MIRRORS`` (colon-separated)."""
    dirs = [plan.paths.mirror]
    for m in plan.config.mirrors:
        if m.startswith("file://"):
            dirs.append(Path(m.removeprefix("file://")))
        elif "://" not in m:
            dirs.append(plan.paths.project / m)
    dirs += [Path(d) for d in (inputs.env("AZL_GIT_MIRRORS") or "").split(":") if d]
    return [d for d in dirs if inputs.listing(d).is_dir()]  # their entries decide too


def pin_record(pin: Pin) -> dict[str, Any]:
    return {
        "url": pin.url,
        "commit": pin.commit,
        "tree": pin.tree,
        "ref": pin.ref,
        "submodules": dict(sorted(pin.submodules.items())),
        "skip": sorted(pin.skip),
    }


class CheckoutAction:
    """Check the pin out into its directory (``.part`` first) and write the record."""

    def __init__(self, pin: Pin, dest: Path, record: Path, paths: Paths, mirrors: list[Path],
                 network: bool):  # fmt: skip
        self.pin, self.dest, self.record, self.paths = pin, dest, record, paths
        self.mirrors, self.network = mirrors, network

    def __call__(self) -> TaskFailed | None:
        lock.acquire(self.paths.state)
        try:
            done = checkout(self.pin, self.dest, mirrors=self.mirrors, network=self.network)
        except PinError as e:
            return TaskFailed(str(e))
        self.record.parent.mkdir(parents=True, exist_ok=True)
        write_record(self.record, {"pin": pin_record(self.pin), "dir": str(self.dest), **done})
        return None

    def __str__(self) -> str:
        return f"check out {self.pin.url} at {self.pin.commit} into {self.dest}"


class CheckedOut:
    """uptodate: the record is this pin's and every repository is still at its commit."""

    __signature__ = uptodate.SIGNATURE  # doit's inspect.signature, once

    def __init__(self, pin: Pin, dest: Path, record: Path):
        self.pin, self.dest, self.record = pin, dest, record
        self.why = ""

    def __call__(self, task: Task, values: dict[str, Any]) -> bool:
        try:
            done = json.loads(self.record.read_text())
        except (OSError, ValueError):
            self.why = "never checked out"
            return False
        if done.get("pin") != pin_record(self.pin) or done.get("dir") != str(self.dest):
            self.why = "the pin changed"
            return False
        self.why = checkout_differs(self.dest, done) or ""
        return not self.why

    def __str__(self) -> str:
        return self.why or f"{self.dest} is at {self.pin.commit}"


def clean(paths: Paths, name: str, dest: Path, record: Path, dryrun: bool = False) -> None:
    """``doit clean <name>``: the checkout and its record, said by name (the checkout may be
    the one the host half works in); refused while something is mounted under it."""
    removed = clean_paths(paths, name, [dest, record], dryrun, mount_root=dest)
    if not dryrun:
        then = f"; that was the pinned checkout: the next `doit {name}` checks it out again"
        say_removed(paths, name, removed, "it was not checked out", then if dest in removed else "")


def tasks(plan: Plan, build: Build) -> list[Task]:
    spec: GitPin = build.recipe.spec
    dest = directory(plan.paths, spec)
    record = record_path(plan.paths, build.name)
    network = not plan.mirror.offline
    return [
        make_task(
            name=build.name,
            actions=[
                CheckoutAction(spec.pin, dest, record, plan.paths, git_mirrors(plan), network)
            ],
            targets=[str(record)],
            uptodate=[CheckedOut(spec.pin, dest, record)],
            task_dep=list(build.depends),
            clean=[(clean, [plan.paths, build.name, dest, record])],
            meta={"pin": (spec.pin, git_mirrors(plan))},  # the offline preflight looks
            doc=f"{build.recipe.step}  {build.recipe.description}: {spec.pin.commit[:12]} -> {dest}".strip(),
        )
    ]
