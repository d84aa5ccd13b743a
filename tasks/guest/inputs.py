"""What the guest plan reads, worked out from its tasks: what the host must fetch, verify and
push before the guest can build offline (issue 16).

A guest task reads:

- its ``file_dep``, unless another guest task makes that file (a package's manifest, a stage's
  outputs, the tree's record): recipe files and patches (under the project) and mirror files;
- the mirror file of a fetch task (``meta["source"]``): offline, the guest's fetch only verifies
  what is in ``mirror/``;
- a pinned checkout (``meta["pin"]``: the Azure Linux tree): a bundle, bare repository or
  snapshot tarball of the commit in ``mirror/`` (``tasks.sources.gitpin.offline_missing``);
- whole mirror directories it names (``meta["mirror_dirs"]``: a stage's Go module cache,
  ``mirror/go-modules``).

``plan_reads`` collects them from the tasks themselves, so a new kind of input that a task
declares is pushed without a list kept by hand; ``mirror_files`` turns them into the files of
``mirror/`` that ``doit guest`` pushes (``tasks.guest.drive.prepare``), and ``missing`` says
which are not on the host yet.
"""

from __future__ import annotations

import os
import subprocess
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.sources.gitpin import (
    TARBALL_SUFFIXES,
    Pin,
    PinError,
    fetch_commit,
    git,
    has_commit,
    local_sources,
    make_snapshot,
    repo_name,
    snapshot_tarballs,
    verify_source,
)
from tasks.store.fsutil import atomic_write

SUMS = "SHA256SUMS"


@dataclass
class Reads:
    """What a set of guest tasks reads; paths relative to the project or to ``mirror/``."""

    mirror: dict[str, str] = field(default_factory=dict)  # mirror file -> task reading it
    mirror_dirs: dict[str, str] = field(default_factory=dict)  # mirror dir -> task
    pins: dict[str, Pin] = field(default_factory=dict)  # task -> pinned checkout
    project: dict[str, str] = field(default_factory=dict)  # project file -> task
    outside: dict[str, str] = field(default_factory=dict)  # a read nothing in the guest makes

    def count(self) -> int:
        return len(self.mirror) + len(self.mirror_dirs) + len(self.pins) + len(self.project)


def _rel(path: str, project: Path) -> tuple[str, str]:
    """``("mirror" | "project" | "outside", relative path)`` of a task's path."""
    p = Path(path)
    full = Path(os.path.abspath(p if p.is_absolute() else project / p))
    root = Path(os.path.abspath(project))
    try:
        rel = full.relative_to(root)
    except ValueError:
        return "outside", str(full)
    if rel.parts[:1] == ("mirror",):
        return "mirror", str(Path(*rel.parts[1:]))
    return "project", str(rel)


def plan_reads(tasks: Iterable[Any], project: Path) -> Reads:
    """Everything the doit ``tasks`` (a guest plan's) read that none of them makes."""
    tasks = list(tasks)
    made = {os.path.abspath(project / t) for task in tasks for t in map(str, task.targets)}
    made |= {os.path.abspath(t) for task in tasks for t in map(str, task.targets)}
    reads = Reads()
    for task in tasks:
        meta = task.meta or {}
        src = meta.get("source")
        if src is not None:
            reads.mirror.setdefault(src.file, task.name)
        if meta.get("pin"):
            reads.pins[task.name] = meta["pin"][0]
        for d in meta.get("mirror_dirs", ()):
            reads.mirror_dirs.setdefault(str(d), task.name)
        for dep in map(str, task.file_dep):
            if os.path.abspath(project / dep) in made or os.path.abspath(dep) in made:
                continue
            where, rel = _rel(dep, project)
            getattr(reads, where).setdefault(rel, task.name)
    return reads


def pin_entries(pin: Pin, mirror: Path) -> list[Path]:
    """What in ``mirror`` lets the guest check ``pin`` out offline, best first: a bare
    repository or bundle (one with the commit), else a snapshot tarball of the commit."""
    found = [
        p for p in local_sources(pin.url, [mirror])
        if p.name.endswith(".bundle") or has_commit(p, pin.commit)
    ]  # fmt: skip
    return found + snapshot_tarballs(pin.url, pin.commit, [mirror])


def _files_under(top: Path, mirror: Path) -> list[str]:
    if top.is_file():
        return [str(top.relative_to(mirror))]
    out = []
    for d, _, files in os.walk(top):
        out += [str(Path(d, f).relative_to(mirror)) for f in files if not f.endswith(".part")]
    return out


def mirror_files(reads: Reads, mirror: Path) -> set[str]:
    """The files of ``mirror`` that hold what ``reads`` names and that the host has: pushed
    to the guest's mirror/ (with SHA256SUMS, which the guest's fetch tasks rewrite)."""
    out = {f for f in reads.mirror if (mirror / f).is_file()}
    for d in reads.mirror_dirs:
        if (mirror / d).exists():
            out.update(_files_under(mirror / d, mirror))
    for pin in reads.pins.values():
        best = pin_entries(pin, mirror)[:1]
        for entry in best:
            out.update(_files_under(entry, mirror))
    if (mirror / SUMS).is_file():
        out.add(SUMS)
    return out


def missing(reads: Reads, project: Path, mirror: Path) -> list[str]:
    """What the guest would read that the host does not have, each with the task reading it."""
    out = [f"mirror/{f} (read by {t})" for f, t in sorted(reads.mirror.items())
           if not (mirror / f).is_file()]  # fmt: skip
    out += [f"mirror/{d}/ (read by {t})" for d, t in sorted(reads.mirror_dirs.items())
            if not (mirror / d).exists()]  # fmt: skip
    for task, pin in sorted(reads.pins.items()):
        if not pin_entries(pin, mirror):
            out.append(
                f"a bundle or snapshot of {pin.url} at {pin.commit} in mirror/ (read by {task})"
            )
    out += [f"{f} (read by {t})" for f, t in sorted(reads.project.items())
            if not (project / f).exists()]  # fmt: skip
    out += [f"{f} (read by {t}; outside the project, and no guest step makes it)"
            for f, t in sorted(reads.outside.items())]  # fmt: skip
    return out


# -- made on the host -------------------------------------------------------------------


def snapshot_path(pin: Pin, mirror: Path) -> Path:
    """Where the host puts the tree's snapshot: ``mirror/<name>-<commit>.tar.gz``, a name
    ``tasks.sources.gitpin`` looks for offline."""
    return mirror / f"{repo_name(pin.url)}-{pin.commit}.tar.gz"


def make_tree_snapshot(
    pin: Pin, mirror: Path, sources: list[Path], network: bool, work: Path
) -> str:
    """The pinned tree in ``mirror/`` as a content-pinned snapshot the guest checks out
    offline (its tree id is re-created and checked there). Made from a local repository or
    bundle that has the commit (``sources``), else from the URL; the commit's tree id is
    checked before the snapshot is written. Returns where it came from."""
    if pin_entries(pin, mirror):
        return "already in the mirror"
    gitdir = work / f"{repo_name(pin.url)}.git"
    if not gitdir.is_dir():
        gitdir.parent.mkdir(parents=True, exist_ok=True)
        git("init", "--quiet", "--bare", gitdir)
    errors = []
    origin = ""
    if has_commit(gitdir, pin.commit):
        origin = str(gitdir)
    for src in [*map(str, sources), *([pin.url] if network else [])]:
        if origin:
            break
        try:
            fetch_commit(gitdir, src, pin.commit, pin.ref)
            origin = src
        except PinError as e:
            errors.append(str(e))
    if not origin:
        how = "" if network else " (offline: put a bundle or bare repository in mirror/)"
        raise PinError(
            f"{pin.label}: commit {pin.commit} is in no repository here{how}:\n  "
            + "\n  ".join(errors or ["no local repository or bundle of " + pin.url])
        )
    verify_source(pin, gitdir)  # the commit's tree is the pinned one
    dest = snapshot_path(pin, mirror)
    make_snapshot(gitdir, pin.commit, dest, f"{repo_name(pin.url)}-{pin.commit}")
    return origin


def module_files(pin: Pin, mirror: Path, module: str, work: Path) -> Path:
    """``go.mod`` and ``go.sum`` of the tree's Go module directory ``module`` at the pinned
    commit, read from the tree's entry in ``mirror/`` (a snapshot, or the repository the
    snapshot was made from) into ``work/<commit>/<module>``; that directory."""
    out = work / pin.commit / module
    if (out / "go.mod").is_file() and (out / "go.sum").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    gitdir = work.parent / "git" / f"{repo_name(pin.url)}.git"
    entries = [gitdir] if has_commit(gitdir, pin.commit) else []
    entries += pin_entries(pin, mirror)
    for entry in entries:
        if entry.name.endswith(TARBALL_SUFFIXES):
            wanted = {f"{module}/go.mod", f"{module}/go.sum"}
            with tarfile.open(entry) as tar:
                for member in tar:
                    rel = member.name.split("/", 1)[-1]
                    if rel in wanted and member.isfile():
                        data = tar.extractfile(member)
                        assert data is not None
                        atomic_write(out / Path(rel).name, data.read())
        elif not entry.name.endswith(".bundle"):
            for name in ("go.mod", "go.sum"):
                got = subprocess.run(
                    ["git", "--git-dir", str(entry), "show", f"{pin.commit}:{module}/{name}"],
                    capture_output=True, check=False,
                )  # fmt: skip
                if got.returncode == 0:  # exact bytes: the guest compares their sha256
                    atomic_write(out / name, got.stdout)
        if (out / "go.mod").is_file() and (out / "go.sum").is_file():
            return out
    raise PinError(
        f"{pin.label}: {module}/go.mod and go.sum at {pin.commit}: not readable from "
        f"{', '.join(map(str, entries)) or 'mirror/ (no snapshot of the tree yet)'}"
    )
