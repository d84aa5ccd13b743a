"""The no-op fast path (tasks/engine/noop.py) through ``doit`` as users type it: a no-op after a
real one is replayed from ``cache/state/noop.stamp`` without loading ``dodo.py``, with the
same output; every change that can matter makes the next run do the real check.

Whether ``dodo.py`` was loaded is seen through a line the test adds to the project's copy of
it (before the first build): each load appends to ``dodo-loads``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.engine import noop
from tasks.model.config import Paths
from tasks.store import statkey
from tests.conftest import Project, Result
from tests.test_engine import FLAG_LINE, chain, edit, ok, patched_chain, pkg

LOAD_PROBE = '\nwith open("dodo-loads", "a") as _probe:\n    _probe.write("x")\n'


@pytest.fixture
def counted(project: Project) -> Project:
    with open(project.root / "dodo.py", "a") as f:
        f.write(LOAD_PROBE)
    return project


def loads(project: Project) -> int:
    probe = project.root / "dodo-loads"
    return len(probe.read_text()) if probe.exists() else 0


def stamp(project: Project) -> Path:
    return project.root / "cache" / "state" / noop.NAME


def settle() -> None:
    """Let the last writes age past the racy window (a stamp never trusts newer files)."""
    time.sleep(statkey.RACY_NS * 2 / 1e9)


def real_noop(project: Project, *args: str, env: dict[str, str] | None = None) -> Result:
    """A run that must do the real check (load dodo.py) and find everything up to date."""
    before = loads(project)
    r = ok(project.doit(*args, env=env))
    assert loads(project) == before + 1, "expected a real check"
    assert r.ran == [], r.out
    return r


def replayed(project: Project, *args: str, env: dict[str, str] | None = None) -> Result:
    before = loads(project)
    r = ok(project.doit(*args, env=env))
    assert loads(project) == before, f"expected a replay, dodo.py was loaded\n{r.out}{r.err}"
    return r


def built(project: Project) -> Result:
    """The stamp written by a real no-op after the build, then replayed."""
    settle()
    first = real_noop(project)
    assert stamp(project).exists()
    again = replayed(project)
    assert (again.out, again.err) == (first.out, first.err)
    return first


def test_stamp_lives_in_the_state_directory(tmp_path: Path) -> None:
    assert Path(noop.state_dir(str(tmp_path))) == Paths(tmp_path).state


def test_noop_is_replayed_with_identical_output(counted: Project) -> None:
    chain(counted)
    ok(counted.doit())
    first = built(counted)
    assert {"a", "b", "c", "mirror:a-1.0.tar.gz"} <= set(first.uptodate)
    third = replayed(counted)
    assert third.out == first.out and third.code == 0


def test_touch_and_content_change_of_a_source(counted: Project) -> None:
    patch = patched_chain(counted, "b patched once")
    ok(counted.doit())
    built(counted)
    later = time.time_ns() - 10**9  # a new mtime, old enough not to be racy
    os.utime(patch, ns=(later, later))
    settle()
    real_noop(counted)  # touched: checked for real, nothing rebuilt
    replayed(counted)
    patch.write_text(patch.read_text().replace("once", "twice"))
    r = ok(counted.doit())
    assert r.packages_ran() == ["b", "c"]


def test_recipe_edit_forget_clean_and_deleted_target_each_rerun(counted: Project) -> None:
    pkg(counted, "a")
    recipe = pkg(counted, "b", ("a",), body='env = { FLAG = "1" }', extra=FLAG_LINE)
    pkg(counted, "c", ("b",))
    ok(counted.doit())
    built(counted)

    edit(recipe, 'FLAG = "1"', 'FLAG = "2"')  # a field that matters
    assert ok(counted.doit()).packages_ran() == ["b", "c"]
    built(counted)

    ok(counted.doit("ignore", "c"))  # a journal commit: no command of ours deletes the stamp
    settle()  # the commit is newer than the racy window: a run at once would write no stamp
    assert "!! c (ignored)" in real_noop(counted).out
    assert "!! c (ignored)" in replayed(counted).out
    ok(counted.doit("forget", "c"))
    assert ok(counted.doit()).packages_ran() == ["c"]
    built(counted)

    ok(counted.doit("clean", "b"))
    assert ok(counted.doit()).packages_ran() == ["b"]  # same output: c is not rebuilt
    built(counted)

    counted.manifest("c").unlink()
    assert ok(counted.doit()).packages_ran() == ["c"]
    built(counted)


def test_another_environment_or_option_is_checked_for_real(counted: Project) -> None:
    chain(counted)
    ok(counted.doit())
    built(counted)
    real_noop(counted, env={"AZL_PLATFORM": "sandbox"})  # a variable the plan reads
    replayed(counted, env={"AZL_PLATFORM": "sandbox"})
    replayed(counted, env={"AZL_PLATFORM": "sandbox", "AZL_GIT_MIRRORS": "/x"})  # one it does not
    real_noop(counted, "-n", "2")
    replayed(counted, "-n", "2")
    real_noop(counted, "c")
    r = replayed(counted, "c")
    assert "-- a" in r.out and "-- c" in r.out


def test_a_task_whose_check_runs_a_command_disables_it(counted: Project) -> None:
    chain(counted)
    (counted.root / "recipes" / "mounted.toml").write_text(
        'kind = "session"\nplatforms = ["sandbox"]\ncheck = "true"\ndepends = ["c"]\n'
        "[script]\ninstall = 'true'\n"
    )
    ok(counted.doit())
    settle()
    for _ in range(2):
        r = real_noop(counted)
        assert "-- mounted" in r.out
        assert not stamp(counted).exists()
    real_noop(counted, "c")  # a selection without it is decided by files alone
    replayed(counted, "c")


DAMAGES = {
    "truncated": lambda data: data[: len(data) // 2],
    "empty": lambda data: b"",
    "stats not a list": lambda data: json.dumps({**json.loads(data), "stats": 7}).encode(),
    "paths mismatch": lambda data: json.dumps({**json.loads(data), "paths": [1, 2]}).encode(),
    "garbage": lambda data: b"\xff\xfe not json",
}


def test_a_damaged_stamp_is_ignored(counted: Project) -> None:
    chain(counted)
    ok(counted.doit())
    first = built(counted)
    path = stamp(counted)
    for what, damage in DAMAGES.items():
        path.write_bytes(damage(path.read_bytes()))
        r = real_noop(counted)  # ignored and dropped; this run writes a good one
        assert (r.out, r.err) == (first.out, first.err), what
        assert json.loads(path.read_bytes())["key"], what
        replayed(counted)


def test_a_dodo_file_named_from_another_directory(counted: Project) -> None:
    """doit changes into dodo.py's directory: the stamp's paths hold from either place."""
    chain(counted)
    ok(counted.doit())
    settle()

    def doit_f() -> Result:
        proc = subprocess.run(
            [sys.executable, "-m", "doit", "-f", f"{counted.root.name}/dodo.py"],
            cwd=counted.root.parent,
            capture_output=True,
            text=True,
        )
        return ok(Result(proc.returncode, proc.stdout, proc.stderr))

    before = loads(counted)
    first = doit_f()
    assert "-- c" in first.out and loads(counted) == before + 1
    assert doit_f().out == first.out and loads(counted) == before + 1  # replayed
    pkg(counted, "c", ("b",), files={"data.txt": "c 2\n"})
    assert doit_f().packages_ran() == ["c"]
