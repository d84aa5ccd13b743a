"""Every input of the plan is registered where it is read (tasks/store/inputs.py): the plan
of a project with packages, a patch, a stand-in live-bootstrap found in a git mirror
directory and its distfiles is made under an audit hook (``sys.addaudithook``) and with an
``os.environ`` that records which variables are asked for; every file opened for reading,
directory listed, program run and variable read must be in the register, or be one of the
reads that decide nothing (the interpreter's and doit's modules, the caches whose every
entry is checked against its source, free memory for JOBS)."""

from __future__ import annotations

import os
import shutil
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from tasks.engine.plan import Project
from tasks.model.config import Config
from tasks.model.platform import detect
from tasks.store import inputs
from tests.conftest import REPO
from tests.test_noop_property import World, fill_or_empty_mirror

_active: list[list[tuple[str, Any]]] = []  # the hook cannot be removed: it records while set


def _hook(event: str, args: tuple) -> None:
    if _active and event in ("open", "os.listdir", "os.scandir", "glob.glob", "subprocess.Popen"):
        _active[-1].append((event, args))


sys.addaudithook(_hook)


class RecordingEnviron(dict):
    """``os.environ`` that remembers the names asked for."""

    def __init__(self, data: dict[str, str]):
        super().__init__(data)
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self.asked.add(str(key))
        return super().__contains__(key)


def _exempt(path: str, state: str) -> bool:
    """Reads that decide nothing the no-op replays."""
    prefixes = (sys.prefix, sys.base_prefix, str(inputs.ENGINE), "/proc/", "/dev/")
    caches = (f"{state}/recipes.cache", f"{state}/digests.json", f"{state}/lock")
    return path.startswith(prefixes) or "site-packages" in path or path in caches


def _git_dir(argv: list[str]) -> str:
    for i, a in enumerate(argv):
        if a.startswith("--git-dir="):
            return a.split("=", 1)[1]
        if a == "--git-dir":
            return argv[i + 1]
    raise AssertionError(f"git without --git-dir: {argv}")


def _reading(args: tuple) -> bool:
    path, mode, flags = args
    if isinstance(mode, str):
        return not any(c in mode for c in "wax+")
    return flags is None or (flags & os.O_ACCMODE) == os.O_RDONLY


def unregistered_reads(platform: str | None = None) -> tuple[list[str], list[str]]:
    """Make the plan of the project in the current directory under the audit hook and the
    recording environment: the reads that are not registered, the variables likewise."""
    environ = RecordingEnviron(dict(os.environ))
    events: list[tuple[str, Any]] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "environ", environ)
        inputs.begin()
        _active.append(events)
        try:
            tasks = list(Project(Path("."), platform=platform).tasks())
        finally:
            _active.pop()
    assert tasks
    read = inputs.snapshot()
    state = os.path.abspath("cache/state")
    imports = {os.path.abspath(p or ".") for p in sys.path}  # the import system lists these
    unregistered = []
    for event, args in events:
        if event == "open":
            if isinstance(args[0], int) or not _reading(args):
                continue
            paths = [os.path.abspath(os.fsdecode(args[0]))]
        elif event == "subprocess.Popen":
            argv = [os.fsdecode(a) for a in args[1]]
            if argv[0] == "git":  # a repository asked for an object: where it could be
                paths = [os.path.join(os.path.abspath(_git_dir(argv)), "objects", "pack")]
            else:
                paths = [os.path.abspath(argv[0])]  # a program: the one found on PATH
        else:
            path = os.path.abspath(os.fsdecode(args[0] if args[0] is not None else "."))
            if path in imports:
                continue
            paths = [path]
        for path in paths:
            if not _exempt(path, state) and path not in read.files:
                unregistered.append(f"{event} {path}")
    asked = environ.asked - {"PYTHONHASHSEED"}
    return unregistered, sorted(asked - set(read.env))


def test_every_read_of_the_plan_is_registered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Packages, a patch, a git pin and live-bootstrap's distfiles read from a git mirror."""
    w = World(tmp_path)
    assert w.doit()[0].code == 0
    fill_or_empty_mirror(w)  # the distfile list is read from the git mirror: git runs
    monkeypatch.chdir(w.project.root)
    monkeypatch.setenv("PATH", w.env["PATH"])
    assert unregistered_reads() == ([], [])
    read = inputs.snapshot()
    assert {"AZL_PLATFORM", "AZL_GIT_MIRRORS", "PATH", "CC"} <= set(read.env)
    assert str(w.project.root / "mirror" / "live-bootstrap.git" / "objects" / "pack") in read.files


@pytest.mark.parametrize("platform", ["sandbox", "guest"])
def test_every_read_of_the_repositorys_plan_is_registered(
    platform: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The repository's own recipes, planned for the sandbox (and host) and for the guest."""
    shutil.copytree(REPO / "recipes", tmp_path / "recipes")
    monkeypatch.chdir(tmp_path)
    assert unregistered_reads(platform) == ([], [])


def test_root_is_resolved_through_every_link(tmp_path: Path) -> None:
    """ROOT behind a link, behind another: the resolution registers each entry it walked."""
    (tmp_path / "disk" / "root").mkdir(parents=True)
    (tmp_path / "proj" / "cache" / "sandbox").mkdir(parents=True)
    (tmp_path / "hop").symlink_to(tmp_path / "disk")
    (tmp_path / "proj" / "cache" / "sandbox" / "root").symlink_to("../../../hop/root")
    inputs.begin()
    platform = detect(tmp_path / "proj", Config(platform="sandbox", target="t"))
    assert platform.root == str((tmp_path / "disk" / "root").resolve())
    links = inputs.snapshot().links
    assert links[str(tmp_path / "proj" / "cache" / "sandbox" / "root")] == "link:../../../hop/root"
    assert links[str(tmp_path / "hop")] == f"link:{tmp_path / 'disk'}"
    assert links[str(tmp_path / "disk" / "root")] == "dir"


def test_the_guest_reads_steps_env(tmp_path: Path) -> None:
    """In the guest TARGET comes from live-bootstrap's steps/env: an input of the plan."""
    steps = tmp_path / "steps"
    steps.mkdir()
    (steps / "bootstrap.cfg").write_text("")
    (steps / "env").write_text("export TARGET=i386-unknown-linux-musl\n")
    inputs.begin()
    platform = detect(tmp_path, Config(), steps=steps)
    assert (platform.name, platform.target) == ("guest", "i386-unknown-linux-musl")
    read = inputs.snapshot()
    assert {str(steps / "env"), str(steps / "bootstrap.cfg")} <= set(read.files)
    assert "AZL_PLATFORM" in read.env


def test_entry_kinds(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_text("")
    (tmp_path / "l").symlink_to("d")
    os.mkfifo(tmp_path / "p")
    kinds = {n: inputs.entry_kind(str(tmp_path / n)) for n in ("d", "f", "l", "p", "none")}
    assert kinds == {"d": "dir", "f": "file", "l": "link:d", "p": "file", "none": "absent"}
    assert stat.S_ISFIFO(os.stat(tmp_path / "p").st_mode)
