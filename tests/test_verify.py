"""``doit verify``: a package rebuilt apart and compared with its installed manifest, through
the real ``doit``; ROOT, the manifest and the package's state stay as they were."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tasks.build.verify import only_verify
from tests.conftest import Project, real_project
from tests.test_engine import ok, pkg
from tests.test_faults import snapshot


def untouched(project: Project) -> dict:
    state = project.root / "cache" / "state" / "tasks"
    return {
        "root": snapshot(project.sandbox_root),
        "manifests": snapshot(project.root / "cache" / "manifests"),
        "state": {p.name: p.read_bytes() for p in state.glob("*.json") if "verify" not in p.name},
    }


def test_verify_reproducible_and_not(project: Project) -> None:
    pkg(project, "a")
    pkg(project, "b", ("a",), extra='date +%s%N > "$DESTDIR$PREFIX/share/stamp"')
    pkg(project, "c", extra='date +%s%N > "$DESTDIR$PREFIX/share/c-stamp"')
    ok(project.doit())
    before = untouched(project)

    r = ok(project.doit("verify:a"))
    assert "verify a: reproducible (3 entries equal the installed manifest)" in r.err, r.err
    r = project.doit("verify")
    assert r.code != 0
    assert "verify b: not reproducible, 1 of 4 entries differ" in r.out, r.out
    assert "  usr/share/stamp: sha256 " in r.out
    # the run goes on after b: c's verdict is there too, and the last line counts them
    assert "  usr/share/c-stamp: sha256 " in r.out, r.out
    assert r.out.endswith("verify: 1 of 3 packages reproducible; not reproducible: b, c\n")
    assert "#### verify\n" not in r.out  # the group task's "its parts failed": said above
    assert "b.txt" not in r.out  # only what differs is listed
    assert untouched(project) == before
    assert not (project.root / "cache" / "verify" / "a" / "stage").exists()
    kept = project.root / "cache" / "verify" / "b" / "stage"
    assert f"the rebuild's files stay in {kept.resolve()}" in r.out, r.out
    assert next(kept.rglob("stamp")).read_text() != project.installed("share/stamp").read_text()
    assert (project.root / "cache" / "verify" / "c" / "stage").is_dir()
    assert (project.root / "cache" / "verify" / "b" / "log").is_file()
    assert ok(project.doit()).ran == []


def test_verify_rebuilds_at_the_stage_path_of_a_build(project: Project) -> None:
    """Some builds record DESTDIR (Tcl's Makefile compiles it into libtcl's install paths):
    the rebuild is staged where a build stages, so that alone does not make it differ."""
    pkg(project, "a", extra='echo "$DESTDIR" > "$DESTDIR$PREFIX/share/destdir"')
    ok(project.doit())
    r = ok(project.doit("verify:a"))
    assert "verify a: reproducible (4 entries equal the installed manifest)" in r.err, r.err
    assert not (project.root / "cache" / "verify" / "a" / "stage").exists()
    assert not (project.root / "cache" / "stage" / "a").exists()


def test_builds_ignore_the_callers_umask(project: Project) -> None:
    """A build under umask 077 installs what a build under 022 does (the manifest records
    modes): a package built by one user or shell verifies under another."""
    pkg(project, "a")
    doit = 'umask 077 && exec "$0" -m doit "$@"'
    r = subprocess.run(["sh", "-c", doit, sys.executable], cwd=project.root, capture_output=True)
    assert r.returncode == 0, r.stderr
    files = json.loads(project.manifest("a").read_text())["files"]
    assert files["usr/share"]["mode"] == "0755" and files["usr/share/a.txt"]["mode"] == "0644"
    r = ok(project.doit("verify:a"))  # this test's umask (022 on most machines)
    assert "verify a: reproducible" in r.err, r.err


def test_verify_before_the_build_builds_first(project: Project) -> None:
    pkg(project, "a")
    r = ok(project.doit("verify:a"))
    assert r.packages_ran()[:1] == ["a"] and project.manifest("a").is_file()


@pytest.mark.network
@pytest.mark.slow
def test_verify_a_real_package(tmp_path, archive: str) -> None:
    project = real_project(tmp_path / "proj", "lua")
    ok(project.doit())
    before = untouched(project)
    r = project.doit("verify:lua")
    assert r.code == 0, r.out + r.err
    assert "verify lua: reproducible" in r.err
    assert untouched(project) == before


@pytest.mark.parametrize(
    ("argv", "only"),
    [
        (["verify"], True),
        (["-n", "2", "verify:grep", "verify:git"], True),
        (["run", "--continue", "verify"], True),
        ([], False),  # the default task: a build
        (["grep", "verify:grep"], False),
        (["list"], False),
    ],
)
def test_only_verify(argv: list[str], only: bool) -> None:
    assert only_verify(argv) is only
