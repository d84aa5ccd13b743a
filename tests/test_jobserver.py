"""One job budget: the engine's GNU make jobserver (tasks.build.jobserver) with real make, and a
real ``doit -n`` run whose fake compiler records how many compile jobs ran at once."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from bench.project import make_jobs_project
from tasks.build import jobserver
from tests.conftest import Project

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")


def peak(probe: Path) -> int:
    return max(int(x) for x in (probe / "peaks").read_text().split())


def test_makes_share_the_pool_and_never_exceed_it(tmp_path: Path) -> None:
    """Three makes at once, each with 4 jobs to run, on a budget of 2: at most 2 jobs run
    at once, and more than 1 (make takes tokens from the pool)."""
    probe = make_jobs_project(tmp_path / "p", 1, 4)
    for i in range(3):
        with tarfile.open(tmp_path / "p" / "mirror" / "m0-1.0.tar.gz") as tar:
            tar.extractall(tmp_path / f"src{i}")  # the test's own tarball
    js = jobserver.JobServer(2)
    errors: list[str] = []

    def build(i: int) -> None:
        with jobserver.slots(2, True) as (jobs, env, server):
            assert jobs == 1
            r = subprocess.run(
                ["make", "-C", str(tmp_path / f"src{i}" / "m0-1.0"), "all"],
                env={"PATH": "/usr/bin:/bin", **env},
                pass_fds=server.fds,
                capture_output=True,
                text=True,
            )
            if r.returncode or "jobserver" in r.stderr:
                errors.append(r.stdout + r.stderr)

    saved, jobserver._server = jobserver._server, js
    try:
        threads = [threading.Thread(target=build, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        jobserver._server = saved
    assert errors == []
    assert peak(probe) == 2  # parallel (make took a token), never above the budget
    assert js.try_acquire(5) == 2  # every token came back


@pytest.mark.parametrize("proc", [True, False], ids=["own fd via /proc", "without /proc"])
def test_share_takes_only_free_tokens(monkeypatch: pytest.MonkeyPatch, proc: bool) -> None:
    if not proc:
        real_open = os.open

        def no_proc(path, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
            if str(path).startswith("/proc/"):
                raise FileNotFoundError(path)
            return real_open(path, *a, **kw)

        monkeypatch.setattr(os, "open", no_proc)
    js = jobserver.JobServer(3)
    saved, jobserver._server = jobserver._server, js
    try:
        with jobserver.slots(3, False) as (first, env, _):
            assert first == 3 and env["JOBS"] == "3"
            assert "--jobserver-auth=" in env["MAKEFLAGS"]
            stop = threading.Event()
            stop.set()
            with pytest.raises(InterruptedError):  # nothing left: it waits, until stopped
                js.acquire(stop)
        with jobserver.slots(3, True) as (jobs, _, _):
            assert jobs == 1 and js.held == 1
        assert js.held == 0
    finally:
        jobserver._server = saved


def test_doit_n_4_runs_no_more_compile_jobs_than_the_budget(tmp_path: Path) -> None:
    """4 make packages under ``doit -n 4`` with ``jobs = 2``: the builds overlap, and the
    compile jobs running at once never exceed 2 (without the jobserver: 8)."""
    probe = make_jobs_project(tmp_path / "p", 4, 4)
    project = Project.__new__(Project)
    project.root = tmp_path / "p"
    r = project.doit("-n", "4")
    assert r.code == 0, r.out + r.err
    assert sorted(r.packages_ran()) == ["m0", "m1", "m2", "m3"]
    assert peak(probe) == 2
    log = (tmp_path / "p" / "cache" / "logs" / "m0.log").read_text()
    assert "jobserver unavailable" not in log and "resetting jobserver" not in log


def test_a_toolkit_stage_runs_its_make_jobs_within_the_budget(
    project: Project, tmp_path: Path
) -> None:
    """The stand-in toolkit's ``make go-tools`` (27 tool jobs, each a fake compile) under
    ``jobs = 2``: make gets the run's jobserver, so 2 jobs run at once (not 1 as a make
    without ``-j``, never more than the budget)."""
    from bench.project import PROBE
    from tests.test_azurelinux import make_azl, ok
    from tests.test_stage_env import dumped

    azl = make_azl(project, tmp_path)
    probe = azl.control / "probe"
    probe.mkdir()
    (azl.control / "probe.sh").write_text(PROBE.replace("sleep 0.3", "sleep 0.1"))
    (azl.control / "probe.sh").chmod(0o755)
    ok(azl.doit("go-tools"))
    assert len((probe / "peaks").read_text().split()) == 27
    assert peak(probe) == 2
    flags = dumped(azl, "go-tools")["MAKEFLAGS"]
    assert "--jobserver-auth=" in flags, flags
    log = azl.log("go-tools", 1).read_text()
    assert "jobserver unavailable" not in log and "resetting jobserver" not in log


def test_serial_phases_of_other_builds_hold_one_token(project: Project, tmp_path: Path) -> None:
    """Script builds under ``doit -n 2`` with ``jobs = 2``: two install phases that run no
    ``${JOBS}`` jobs run at once (each holds one token, not the whole budget), and a compile
    phase naming ``JOBS`` gets every free token."""
    from bench.project import PROBE

    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    probe = tmp_path / "probe.sh"
    probe.write_text(PROBE.replace("sleep 0.3", "sleep 1"))
    probe.chmod(0o755)
    for name in ("s1", "s2"):
        project.recipe(
            name,
            install=f'{probe} {probe_dir}\nmkdir -p "$DESTDIR$PREFIX/share" && touch "$DESTDIR$PREFIX/share/{name}"',
        )
    seen = tmp_path / "jobs-seen"
    project.recipe("j", body=f"script.compile = 'echo \"$JOBS\" > {seen}'")
    r = project.doit("-n", "2", "s1", "s2")
    assert r.code == 0, r.out + r.err
    assert sorted(r.packages_ran()) == ["s1", "s2"]
    assert peak(probe_dir) == 2  # both installs at once: neither kept the other's token
    r = project.doit("j")
    assert r.code == 0, r.out + r.err
    assert seen.read_text().strip() == "2"  # alone, its compile phase has the whole budget
