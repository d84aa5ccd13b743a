"""The no-op stamp never lies: random sequences of what users do to a project, each followed
by the stamped run and, when that run was replayed from the stamp, the real check (stamp
removed), through the real ``doit``. They must agree on the exit status, the output and what
ran (nothing: a replay runs nothing).

The project (``World``): three mock packages ``a -> b -> c`` (``b`` patched), a stand-in
live-bootstrap (a real git repository made here, with ``steps/manifest`` and
``steps/*/sources``: a stand-in, the real one is too large for a quick test) pinned by a
``git`` recipe whose URL no machine has, and its ``distfiles`` step; the project is offline,
its mock tarballs also in a local ``file://`` mirror. The actions are what users do: edit or
touch a recipe or a patch, move ROOT behind a symbolic link (and back), fill or empty a git
mirror directory (``mirror/`` or one named by ``AZL_GIT_MIRRORS``), change the config or an
``AZL_*`` variable, delete a cache file, add a recipe, put another C compiler first on PATH (a
wrapper script), run from another checkout of the engine (a copy of ``tasks/`` on
``PYTHONPATH`` whose packages have another engine version).

``test_the_stamp_agrees_with_the_real_check`` is bounded (3 sequences of 2-6 actions: about
a minute and a half on an idle 2-core machine); ``-m slow`` runs 20 sequences of up to 14
(``test_..._long``). Each prints how many actions it tried and how many replays it compared.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tasks.engine import noop
from tasks.sources.gitpin import GIT_ENV
from tasks.store import statkey
from tests.conftest import REPO, Project, Result
from tests.test_engine import FLAG_LINE, edit, pkg, unified_diff

LOAD_PROBE = '\nwith open("dodo-loads", "a") as _probe:\n    _probe.write("x")\n'
LB_URL = "https://example.invalid/fosslinux/live-bootstrap"
STATS = {"actions": 0, "steps": 0, "replays": 0, "compared": 0}


def git(cwd: Path, *args: str) -> str:
    r = subprocess.run(
        ["git", "-c", "init.defaultBranch=main", *args],
        cwd=cwd, env=GIT_ENV, capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0, f"git {args}: {r.stderr}"
    return r.stdout.strip()


@dataclass
class World:
    """A project, its surroundings (a git mirror, a PATH directory, another engine) and the
    environment every ``doit`` of the test gets."""

    tmp: Path
    project: Project = field(init=False)
    env: dict[str, str] = field(default_factory=dict)
    added: int = 0
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.project = Project(self.tmp / "proj")
        root = self.project.root
        with open(root / "dodo.py", "a") as f:
            f.write(LOAD_PROBE)
        self.bin = self.tmp / "bin"
        self.bin.mkdir()
        self.env = {"PATH": f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        # the mock packages, their tarballs also in a local mirror (a deleted one comes back)
        patch = root / "recipes" / "b" / "x.patch"
        patch.parent.mkdir(parents=True)
        patch.write_text(unified_diff("b 1.0", "b patched"))
        pkg(self.project, "a")
        pkg(self.project, "b", ("a",), body='patches = ["x.patch"]\nenv = { FLAG = "1" }',
            extra=FLAG_LINE)  # fmt: skip
        pkg(self.project, "c", ("b",))
        self.local = self.tmp / "local-mirror"
        shutil.copytree(root / "mirror", self.local)
        self.config_extra = ""
        self.write_config()
        # a stand-in live-bootstrap: steps/manifest and two steps' sources
        work = self.tmp / "lb-work"
        work.mkdir()
        git(work, "init", "-q")
        (work / "steps" / "x-1.0").mkdir(parents=True)
        (work / "steps" / "y-2.0").mkdir(parents=True)
        (work / "steps" / "manifest").write_text("build: x-1.0\nbuild: y-2.0\n")
        for step, sha in (("x-1.0", "1" * 64), ("y-2.0", "2" * 64)):
            (work / "steps" / step / "sources").write_text(
                f"https://example.invalid/{step}.tar.gz {sha}\n"
            )
        git(work, "add", "-A")
        git(work, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "stand-in")
        commit = git(work, "rev-parse", "HEAD")
        tree = git(work, "rev-parse", "HEAD^{tree}")
        self.lb_bare = self.tmp / "lb.git"
        git(self.tmp, "clone", "-q", "--bare", str(work), str(self.lb_bare))
        (root / "recipes" / "live-bootstrap.toml").write_text(
            f'kind = "git"\nstep = "H2"\nplatforms = ["host"]\ndescription = "stand-in"\n'
            f'url = "{LB_URL}"\ncommit = "{commit}"\ntree = "{tree}"\n'
        )
        (root / "recipes" / "lb-mirror.toml").write_text(
            'kind = "distfiles"\nstep = "H3"\nplatforms = ["host"]\ndescription = "stand-in"\n'
            'depends = ["live-bootstrap"]\ncheckout = "live-bootstrap"\n'
        )
        self.other_mirrors = self.tmp / "git-mirrors"
        self.other_mirrors.mkdir()
        # another checkout of the engine: a copy whose packages have another engine version
        self.engine2 = self.tmp / "engine2"
        shutil.copytree(REPO / "tasks", self.engine2 / "tasks",
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        edit(self.engine2 / "tasks" / "build" / "__init__.py", "ENGINE_VERSION = 1",
             "ENGINE_VERSION = 2")  # fmt: skip
        self.elsewhere = self.tmp / "other-disk"
        self.elsewhere.mkdir()

    def write_config(self) -> None:
        self.project.config(
            f'platform = "sandbox"\njobs = 2\noffline = true\n'
            f'mirrors = ["file://{self.local}"]\n{self.config_extra}'
        )

    @property
    def stamp(self) -> Path:
        return self.project.root / "cache" / "state" / noop.NAME

    def loads(self) -> int:
        probe = self.project.root / "dodo-loads"
        return len(probe.read_text()) if probe.exists() else 0

    def doit(self, *args: str) -> tuple[Result, bool]:
        """A run and whether it was replayed (``dodo.py`` not loaded)."""
        before = self.loads()
        r = self.project.doit(*args, env=self.env)
        return r, self.loads() == before


def settle() -> None:
    time.sleep(statkey.RACY_NS * 2.5 / 1e9)


# ---------------------------------------------------------------- the actions users take


def edit_recipe(w: World) -> None:
    path = w.project.root / "recipes" / "b.toml"
    text = path.read_text()
    flag = "2" if 'FLAG = "1"' in text else "1"
    path.write_text(
        text.replace('FLAG = "1"', f'FLAG = "{flag}"').replace('FLAG = "2"', f'FLAG = "{flag}"')
    )


def touch_recipe(w: World) -> None:
    os.utime(w.project.root / "recipes" / "a.toml")


def edit_patch(w: World) -> None:
    path = w.project.root / "recipes" / "b" / "x.patch"
    w.edits = getattr(w, "edits", 0) + 1
    path.write_text(unified_diff("b 1.0", f"b patched {w.edits}"))


def touch_patch(w: World) -> None:
    os.utime(w.project.root / "recipes" / "b" / "x.patch")


def root_behind_link(w: World) -> None:
    """Move ROOT to another place and leave a link (or move it back)."""
    root = w.project.sandbox_root
    if root.is_symlink():
        target = root.resolve()
        root.unlink()
        shutil.move(target, root)
    elif root.exists():
        dest = w.elsewhere / f"root{len(list(w.elsewhere.iterdir()))}"
        shutil.move(root, dest)
        root.symlink_to(dest)


def fill_or_empty_mirror(w: World) -> None:
    dest = w.project.root / "mirror" / "live-bootstrap.git"
    if dest.exists():
        shutil.rmtree(dest)
    else:
        git(w.tmp, "clone", "-q", "--bare", str(w.lb_bare), str(dest))


def fill_or_empty_env_mirror(w: World) -> None:
    """A git mirror directory named by AZL_GIT_MIRRORS, filled or emptied."""
    w.env["AZL_GIT_MIRRORS"] = str(w.other_mirrors)
    dest = w.other_mirrors / "fosslinux+live-bootstrap.git"
    if dest.exists():
        shutil.rmtree(dest)
    else:
        git(w.tmp, "clone", "-q", "--bare", str(w.lb_bare), str(dest))


def change_config(w: World) -> None:
    w.config_extra = "" if w.config_extra else 'target = "x86_64-other-linux-gnu"\n'
    w.write_config()


def change_env(w: World) -> None:
    if "AZL_PLATFORM" in w.env:
        del w.env["AZL_PLATFORM"]
    else:
        w.env["AZL_PLATFORM"] = "sandbox"


def delete_cache_file(w: World) -> None:
    root = w.project.root
    for path in (
        root / "cache" / "manifests" / "b.json",
        *sorted((root / "cache" / "lb-distfiles").glob("*.json")),
        root / "mirror" / "a-1.0.tar.gz",
    ):
        if path.exists():
            path.unlink()
            return


def add_recipe(w: World) -> None:
    w.added += 1
    pkg(w.project, f"d{w.added}", ("c",))
    shutil.copy(w.project.root / "mirror" / f"d{w.added}-1.0.tar.gz", w.local)


def replace_compiler(w: World) -> None:
    """A wrapper ``cc`` first on PATH, reporting another triple (or taken away again)."""
    cc = w.bin / "cc"
    if cc.exists():
        cc.unlink()
    else:
        cc.write_text(
            '#!/bin/sh\n[ "$1" = -dumpmachine ] && { echo x86_64-wrapped-linux-gnu; exit 0; }\nexec gcc "$@"\n'
        )
        cc.chmod(0o755)


def nothing(w: World) -> None:
    """The next doit at once, nothing changed."""


def unrelated_changes(w: World) -> None:
    """What no plan reads: a note in the project, a build log gone, an unknown variable."""
    (w.project.root / "NOTES.txt").write_text(f"note {time.time_ns()}\n")
    for log in (w.project.root / "cache" / "logs").glob("*.log"):
        log.unlink()
        break
    w.env["AZL_UNUSED"] = str(time.time_ns())


def other_checkout(w: World) -> None:
    if "PYTHONPATH" in w.env:
        del w.env["PYTHONPATH"]
    else:
        w.env["PYTHONPATH"] = str(w.engine2)


ACTIONS: dict[str, Callable[[World], None]] = {
    f.__name__: f
    for f in (
        edit_recipe, touch_recipe, edit_patch, touch_patch, root_behind_link,
        fill_or_empty_mirror, fill_or_empty_env_mirror, change_config, change_env,
        delete_cache_file, add_recipe, replace_compiler, other_checkout, nothing,
        unrelated_changes,
    )
}  # fmt: skip
COMMANDS = [(), ("mirror",), ("c",)]


def step(w: World, command: tuple[str, ...], action: str) -> tuple[bool, bool]:
    """A stamp for ``command`` (the real no-op writes it), the action, then the stamped run;
    if that was replayed, the real check must agree. Whether there was a stamp before the
    action, and whether the run after it was replayed."""
    for _ in range(3):
        settle()
        r, _ = w.doit(*command)
        if w.stamp.exists() or r.code:
            break
    stamped_before = w.stamp.exists()
    STATS["steps"] += 1
    ACTIONS[action](w)
    STATS["actions"] += 1
    w.log.append(f"{action} then doit {' '.join(command)}")
    stamped, replayed = w.doit(*command)
    if not replayed:
        return stamped_before, False  # the stamp was not trusted: this was the real check
    STATS["replays"] += 1
    w.stamp.unlink()
    real, again = w.doit(*command)
    assert not again
    STATS["compared"] += 1
    history = "\n  ".join(w.log)
    assert (real.code, real.out, real.ran) == (stamped.code, stamped.out, []), (
        f"the stamp lied after:\n  {history}\n--- replayed (exit {stamped.code})\n{stamped.out}"
        f"--- real check (exit {real.code})\n{real.out}{real.err}"
    )
    return stamped_before, True


# the failure message holds the whole history; shrinking a sequence of doit runs takes minutes
NO_SHRINK = (Phase.explicit, Phase.generate)


def sequences(longest: int) -> st.SearchStrategy:
    step = st.tuples(st.sampled_from(COMMANDS), st.sampled_from(sorted(ACTIONS)))
    return st.lists(step, min_size=2, max_size=longest)


def run_sequence(sequence: list[tuple[tuple[str, ...], str]]) -> None:
    with tempfile.TemporaryDirectory(prefix="azl-noop-prop-") as t:
        w = World(Path(t))
        first, _ = w.doit()
        assert first.code == 0, first.out + first.err
        for command, action in sequence:
            step(w, command, action)


def test_the_audit_cases_are_checked_for_real() -> None:
    """What the stamp replayed as "up to date" before its inputs were registered where read
    (each found by the property test, or by the audit of issue 17): a stamp is there, the
    action, and the next run is the real check."""
    cases = [
        ((), "root_behind_link"),  # ROOT resolved through a link: every package rebuilds
        ((), "root_behind_link"),  # and moved back
        ((), "other_checkout"),  # another engine: every package rebuilds
        ((), "other_checkout"),
        (("c",), "replace_compiler"),  # another TARGET from `cc -dumpmachine`
        (("c",), "replace_compiler"),
        (("mirror",), "fill_or_empty_mirror"),  # a bare repository in mirror/: 2 distfiles
    ]
    with tempfile.TemporaryDirectory(prefix="azl-noop-prop-") as t:
        w = World(Path(t))
        assert w.doit()[0].code == 0
        for command, action in cases:
            before, replayed = step(w, command, action)
            assert before, f"no stamp before {action}"
            assert not replayed, f"{action} then doit {' '.join(command)}: replayed"


@settings(
    max_examples=3,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    phases=NO_SHRINK,
    database=None,
)
@given(sequences(6))
def test_the_stamp_agrees_with_the_real_check(sequence: list) -> None:
    run_sequence(sequence)


@pytest.mark.slow
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    phases=NO_SHRINK,
    database=None,
)
@given(sequences(10))
def test_the_stamp_agrees_with_the_real_check_long(sequence: list) -> None:
    run_sequence(sequence)


def teardown_module() -> None:
    sys.stdout.write(f"\nno-op stamp property: {STATS}\n")
