"""A kill between the manifest write and doit's state commit costs nothing: the next run
adopts the finished build (``tasks.build.adopt``) instead of rebuilding it, through the real
``doit`` killed exactly there (``AZL_FAULT=kill:manifest-written:<pkg>``, tasks.build.faultpoint)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from tasks.store.state import read_record
from tests.conftest import Project
from tests.test_engine import edit, install_script, ok, pkg, share


def counted(project: Project, name: str, deps: tuple[str, ...] = ()) -> Path:
    """A package whose every real build appends a line to ``builds-<name>``."""
    count = project.root / f"builds-{name}"
    return pkg(project, name, deps, install=install_script(deps, f'echo x >> "{count}"'))


def builds(project: Project, name: str) -> int:
    path = project.root / f"builds-{name}"
    return len(path.read_text().splitlines()) if path.exists() else 0


def killed_after_manifest(project: Project, name: str) -> None:
    r = project.doit(env={"AZL_FAULT": f"kill:manifest-written:{name}"})
    assert r.code == -signal.SIGKILL, r.out + r.err
    assert project.manifest(name).is_file()
    assert read_record(project.root / "cache" / "state", name) == {}  # never committed


def test_kill_after_the_manifest_write_is_adopted_not_rebuilt(project: Project) -> None:
    counted(project, "a")
    counted(project, "b", ("a",))
    counted(project, "c", ("b",))
    killed_after_manifest(project, "b")
    assert (builds(project, "a"), builds(project, "b"), builds(project, "c")) == (1, 1, 0)
    manifest = project.manifest("b").read_bytes()

    r = ok(project.doit())
    assert (builds(project, "a"), builds(project, "b"), builds(project, "c")) == (1, 1, 1), r.out
    assert "a" in r.uptodate and r.packages_ran() == ["b", "c"], r.out  # b: adopted only
    assert "adopted, not rebuilt" in (project.root / "cache" / "logs" / "b.log").read_text()
    assert project.manifest("b").read_bytes() == manifest
    assert share(project, "c") == "a 1.0\nb 1.0\nc 1.0\n"
    r = ok(project.doit())
    assert r.ran == [], r.out


def test_the_manifest_holds_no_inputs_key_only_the_installed_record(project: Project) -> None:
    counted(project, "a")
    ok(project.doit())
    assert "inputs" not in json.loads(project.manifest("a").read_text())  # early cutoff intact
    installed = project.root / "cache" / "installed" / "a.json"
    assert len(json.loads(installed.read_text())["inputs"]) == 64


def test_changed_inputs_after_the_kill_rebuild(project: Project) -> None:
    counted(project, "a")
    recipe = counted(project, "b", ("a",))
    killed_after_manifest(project, "b")
    edit(recipe, "echo x >>", "echo y >>")  # a real change of the install script
    r = ok(project.doit())
    assert builds(project, "b") == 2, r.out
    assert "adopted" not in (project.root / "cache" / "logs" / "b.log").read_text()


def test_clean_after_the_kill_still_rebuilds(project: Project) -> None:
    counted(project, "a")
    killed_after_manifest(project, "a")
    ok(project.doit("clean", "a"))
    ok(project.doit())
    assert builds(project, "a") == 2
