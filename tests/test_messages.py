"""What the real ``doit`` says in the situations a user meets: ``clean``/``forget`` under
another doit's lock (the refusal and nothing else), what ``clean`` removed and what it leaves
in the root, ``info`` of a name that is no task, a broken recipe's dependents."""

from __future__ import annotations

import pytest

from tests.conftest import Project
from tests.test_engine import chain, edit, gated, ok, pkg, share, stop, wait_for


@pytest.mark.parametrize("command", ["clean", "forget"])
def test_clean_and_forget_under_the_lock_print_only_the_refusal(
    project: Project, command: str
) -> None:
    chain(project, ["a", "b"])
    ok(project.doit())
    gate, started = gated(project, "c", ("b",))
    first = project.popen()
    try:
        wait_for(started.exists, first, "c's build to start")
        r = project.doit(command, "a")
        assert r.code != 0, r.out + r.err
        said = r.out + r.err
        assert f"doit {command}: another doit is working in this project" in said, said
        assert f"pid {first.pid}" in said and "Nothing was changed" in said, said
        for noise in ("executing", "forgetting", "removed", "Traceback"):
            assert noise not in said, said
        assert project.manifest("a").is_file()
    finally:
        gate.touch()
        stop(first)
    r = ok(project.doit())
    assert r.packages_ran() == ["c"], r.out  # a was neither cleaned nor forgotten


def test_clean_says_what_it_removed_and_that_the_root_keeps_the_files(
    project: Project,
) -> None:
    chain(project, ["a", "b"])
    ok(project.doit())
    r = ok(project.doit("clean", "b"))
    assert r.out.splitlines() == [
        "b: removed cache/stage/b, cache/manifests/b.json",
        "  the files b installed stay in the root until its next build replaces them "
        "(cache/installed/b.json lists them); the next doit rebuilds it",
    ], r.out
    assert share(project, "b") == "a 1.0\nb 1.0\n"  # still in the root
    assert not project.manifest("b").exists()
    r = ok(project.doit("clean", "b"))
    assert r.out.startswith("b: removed nothing (it was not built)"), r.out
    assert ok(project.doit()).packages_ran() == ["b"]


@pytest.mark.parametrize("command", ["info", "clean", "forget"])
def test_a_name_that_is_no_task_is_said_plainly(project: Project, command: str) -> None:
    chain(project, ["alpha", "beta"])
    r = project.doit(command, "betta")
    assert r.code != 0
    said = r.out + r.err
    assert "no package or task named 'betta' (did you mean beta?)" in said, said
    assert "Traceback" not in said, said
    r = project.doit(command, "nosuchpkg")
    assert "no package or task named 'nosuchpkg'; `doit list` shows them all" in r.err, r.err


def test_a_broken_recipe_is_named_alone_not_through_its_dependents(project: Project) -> None:
    chain(project)
    pkg(project, "d", ("c", "zzz"))  # zzz really is unknown
    edit(project.root / "recipes" / "b.toml", 'build_system = "script"', 'build_system = "nope"')
    r = project.doit("list")
    assert r.code != 0
    errors = [ln for ln in r.err.splitlines() if ln.startswith("recipes/")]
    assert errors == [
        "recipes/b.toml: build_system: 'nope' is not one of autotools, meson, cmake, make, script",
        "recipes/d.toml: depends: unknown package 'zzz'",
    ], r.err
