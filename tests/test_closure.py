"""The closure check (issue 16): everything the guest plan's tasks read is in what ``doit
guest`` pushes.

Both sides come from the plan itself: what the guest reads is worked out here from the guest
plan's tasks and recipes (file dependencies nothing in the guest makes, the fetch tasks'
sources, the tree's pinned commit, the stages' Go module directory, the recipe files and the
engine), independently of ``tasks.guest.inputs``; what is pushed is what the real push
(``tasks.guest.drive.prepare``, with the mirror files ``doit guest`` chooses) leaves in a
guest directory, reached through a local stand-in for the SSH link (``sh -c`` instead of
``ssh``). The host's mirror holds stand-in files (named as such) for every input, plus a
host-only file that must not go.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tasks.engine.plan import Project
from tasks.guest.drive import GuestSettings, prepare
from tasks.kinds.guest import guest_mirror_files
from tasks.sources.gomodules import DEFAULT_DIR, RECORD
from tests.conftest import REPO


class LocalLink:
    """Stand-in for ``tasks.guest.link.Endpoint``: the "guest" is a directory of this machine
    and its shell is ``sh -c`` (the push's tar stream and python snippets run unchanged)."""

    def ssh_argv(self, command: str) -> list[str]:
        return ["sh", "-c", command]

    def run(self, command: str, *, input: bytes | None = None, timeout: float | None = None):
        return subprocess.run(["sh", "-c", command], input=input, capture_output=True,
                              timeout=timeout)  # fmt: skip


def _project(root: Path) -> Path:
    """A copy of this repository's project (recipes, engine, dodo.py) with an empty mirror."""
    for name in ("recipes", "tasks"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dodo.py", "pyproject.toml"):
        shutil.copy(REPO / name, root / name)
    (root / "mirror").mkdir()
    (root / "azl-bootstrap.toml").write_text('platform = "sandbox"\n')
    wheelhouse = root / "cache" / "wheelhouse"  # made earlier (the real one needs PyPI)
    wheelhouse.mkdir(parents=True)
    (wheelhouse / "requirements.txt").write_text("doit\n")
    return root


def guest_reads(root: Path) -> dict[str, set[str]]:
    """What the guest plan reads, from its tasks and recipes: project files, mirror files,
    and mirror directories read whole."""
    plan = Project(root, platform="guest")
    tasks = list(plan.tasks())
    made = {os.path.abspath(root / str(t)) for task in tasks for t in task.targets}
    project: set[str] = {"dodo.py", "pyproject.toml"}
    mirror: set[str] = set()
    dirs: set[str] = set()
    for task in tasks:
        for dep in map(str, task.file_dep):
            full = os.path.abspath(root / dep)
            if full in made:
                continue  # made in the guest: a manifest, a stage's output
            rel = os.path.relpath(full, root)
            assert not rel.startswith(".."), f"{task.name} reads {dep}, outside the project"
            if rel.startswith("mirror/"):
                mirror.add(rel.removeprefix("mirror/"))
            else:
                project.add(rel)
        src = (task.meta or {}).get("source")
        if src is not None:
            mirror.add(src.file)
    for build in plan.builds.values():
        recipe = build.recipe
        project.add(os.path.relpath(recipe.path, root))
        spec = recipe.spec
        if recipe.kind == "tree" and spec.pin:  # checked out offline from a snapshot
            mirror.add(f"{recipe.name}-{spec.pin.commit}.tar.gz")
        if recipe.kind == "stage" and spec.go_modules:
            dirs.add(DEFAULT_DIR)
    for top, _, files in os.walk(root / "tasks"):
        project.update(os.path.relpath(Path(top, f), root) for f in files)
    return {"project": project, "mirror": mirror, "dirs": dirs}


def test_everything_the_guest_plan_reads_is_pushed(tmp_path: Path) -> None:
    root = _project(tmp_path / "host")
    reads = guest_reads(root)
    mirror = root / "mirror"
    # stand-ins for what the host's guest-inputs step fetches (never opened by this test)
    for f in reads["mirror"]:
        (mirror / f).write_bytes(f"stand-in for {f}\n".encode())
    go = mirror / DEFAULT_DIR
    (go / "cache" / "download" / "example.com" / "m" / "@v").mkdir(parents=True)
    (go / RECORD).write_text('{"modules": [["example.com/m", "v1.0.0"]]}\n')
    (go / "cache" / "download" / "example.com" / "m" / "@v" / "v1.0.0.mod").write_text(
        "module example.com/m  // stand-in\n"
    )
    (mirror / "host-only-distfile-1.0.tar.gz").write_bytes(b"a live-bootstrap distfile")

    dest = tmp_path / "guest" / "azl-bootstrap"
    settings = GuestSettings(dest=str(dest), python=sys.executable)
    lines: list[str] = []
    files = guest_mirror_files(Project(root))  # what `doit guest` pushes of mirror/
    prepare(root, LocalLink(), settings, lines.append, files)  # type: ignore[arg-type]

    wanted = [f"mirror/{f}" for f in reads["mirror"]] + sorted(reads["project"])
    for d in reads["dirs"]:
        wanted += [str(p.relative_to(root)) for p in (mirror / d).rglob("*") if p.is_file()]
    absent = [f for f in wanted if not (dest / f).is_file()]
    assert not absent, f"read by the guest plan but not pushed: {absent}\n" + "\n".join(lines)
    for f in wanted:
        assert (dest / f).read_bytes() == (root / f).read_bytes(), f
    assert not (dest / "mirror" / "host-only-distfile-1.0.tar.gz").exists()
    pushed = sum(1 for p in dest.rglob("*") if p.is_file())
    print(f"closure: the guest plan reads {len(wanted)} files; {pushed} files pushed")
