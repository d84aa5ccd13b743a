"""End-to-end tests of the engine: the real ``doit`` on throw-away projects of tiny mock recipes.

What a user of ``doit`` sees: which packages build and in which order, what lands in ROOT,
the exit code and the messages; incremental rebuilds (content, not clocks), early cutoff,
``clean``, durability against kill -9 / SIGTERM, the project lock and failure reports.

Mock packages install ``share/<pkg>.txt`` = the files of their dependencies followed by their
own ``data.txt``, so a changed output propagates down a chain exactly like a rebuilt library
would, and an unchanged output lets the cascade stop (early cutoff).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from tasks.store.state import read_record
from tests.conftest import Project, Result

PACKAGES = ["a", "b", "c"]
# an install line that puts the recipe's FLAG into the installed file
FLAG_LINE = 'echo "flag=$FLAG" >> "$DESTDIR$PREFIX/share/$PKG.txt"'


# --------------------------------------------------------------------------- helpers


def install_script(deps: Iterable[str] = (), extra: str = "") -> str:
    """The install phase of a mock package: its deps' installed files, then its data.txt."""
    cats = " ".join(f'"$PREFIX/share/{d}.txt"' for d in deps)
    out = '"$DESTDIR$PREFIX/share/$PKG.txt"'
    script = f'mkdir -p "$DESTDIR$PREFIX/share" && cat {cats} data.txt > {out}'
    return script + (f"\n{extra}" if extra else "")


def pkg(
    project: Project,
    name: str,
    deps: tuple[str, ...] = (),
    *,
    body: str = "",
    extra: str = "",
    install: str | None = None,
    files: dict[str, str] | None = None,
) -> Path:
    """A mock package whose output includes its dependencies' output."""
    script = install if install is not None else install_script(deps, extra)
    return project.recipe(name, body, deps=deps, install=script, files=files)


def chain(project: Project, names: Iterable[str] = PACKAGES) -> None:
    """``a -> b -> c``: each package depends on the previous one."""
    prev: tuple[str, ...] = ()
    for name in names:
        pkg(project, name, prev)
        prev = (name,)


def ok(r: Result) -> Result:
    assert r.code == 0, f"exit {r.code}\n--- out\n{r.out}\n--- err\n{r.err}"
    return r


def edit(path: Path, old: str, new: str) -> None:
    """Replace ``old`` (which must be there) by ``new`` in a text file."""
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}:\n{text}"
    path.write_text(text.replace(old, new))


def share(project: Project, name: str) -> str:
    return project.installed(f"share/{name}.txt").read_text()


def unified_diff(old: str, new: str) -> str:
    """A real unified diff of the one-line ``data.txt`` (applied with ``patch -p1``)."""
    return f"--- a/data.txt\n+++ b/data.txt\n@@ -1 +1 @@\n-{old}\n+{new}\n"


def patched_chain(project: Project, patched_line: str) -> Path:
    """``a -> b -> c`` where b has ``patches = ["x.patch"]``; returns the patch path."""
    patch = project.root / "recipes" / "b" / "x.patch"
    patch.parent.mkdir(parents=True)
    patch.write_text(unified_diff("b 1.0", patched_line))
    pkg(project, "a")
    pkg(project, "b", ("a",), body='patches = ["x.patch"]')
    pkg(project, "c", ("b",))
    return patch


def wait_for(
    cond: Callable[[], bool], proc: subprocess.Popen, what: str, limit: float = 60
) -> None:
    """Poll ``cond`` until it holds; fail (with the doit output) if ``proc`` exits first.
    ``limit`` only guards against a hang, nothing is asserted about the time taken."""
    deadline = time.monotonic() + limit
    while not cond():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"doit exited {proc.returncode} before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] not in "ZX":
            pids.append(int(entry))
    return pids


def group_gone(pgid: int, limit: float = 15) -> bool:
    """Whether process group ``pgid`` has no live process left (waits up to ``limit``)."""
    deadline = time.monotonic() + limit
    while group_members(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def kill_group(pgid: int | None) -> None:
    """SIGKILL what is left of a process group (cleanup: tests never leak processes)."""
    if pgid is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def stop(proc: subprocess.Popen) -> None:
    """Cleanup of a ``project.popen()``: kill its group and reap it."""
    if proc.poll() is None:
        kill_group(proc.pid)
    proc.communicate()


def read_pgid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


# --------------------------------------------------------------------------- 1. no-op


def test_first_run_builds_in_dependency_order_second_builds_nothing(project: Project) -> None:
    # recipes written in reverse so file order cannot explain the build order
    pkg(project, "c", ("b",))
    pkg(project, "b", ("a",))
    pkg(project, "a")
    r = ok(project.doit())
    assert r.packages_ran() == ["a", "b", "c"]
    assert share(project, "c") == "a 1.0\nb 1.0\nc 1.0\n"

    r = ok(project.doit())
    assert r.ran == [], r.out
    assert set(PACKAGES) <= set(r.uptodate)


# --------------------------------------------------------------------------- 2. touch


def test_touch_of_recipe_tarball_and_patch_rebuilds_nothing(project: Project) -> None:
    patch = patched_chain(project, "b patched")
    ok(project.doit())
    touched = [project.root / "recipes" / "b.toml", project.root / "mirror" / "b-1.0.tar.gz"]
    touched.append(patch)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in touched}
    later = time.time_ns() + 5 * 10**9
    for p in touched:
        os.utime(p, ns=(later, later))
    for p in touched:
        assert p.stat().st_mtime_ns != before[p][1]
        assert p.read_bytes() == before[p][0]

    r = ok(project.doit())
    assert r.packages_ran() == [], r.out
    r = ok(project.doit())
    assert r.ran == [], r.out


# --------------------------------------------------------------------------- 3. real changes


def test_changed_source_rebuilds_package_and_dependents(project: Project) -> None:
    chain(project)
    ok(project.doit())
    pkg(project, "a", files={"data.txt": "a 1.0 fixed\n"})  # new tarball, new sha256
    r = ok(project.doit())
    assert r.packages_ran() == ["a", "b", "c"]
    assert share(project, "c") == "a 1.0 fixed\nb 1.0\nc 1.0\n"
    assert ok(project.doit()).ran == []


def test_changed_patch_rebuilds_package_and_dependents(project: Project) -> None:
    patch = patched_chain(project, "b patched once")
    ok(project.doit())
    assert share(project, "c") == "a 1.0\nb patched once\nc 1.0\n"
    patch.write_text(unified_diff("b 1.0", "b patched twice"))
    r = ok(project.doit())
    assert r.packages_ran() == ["b", "c"]
    assert share(project, "c") == "a 1.0\nb patched twice\nc 1.0\n"
    assert ok(project.doit()).ran == []


def test_changed_flag_rebuilds_package_and_dependents(project: Project) -> None:
    pkg(project, "a")
    recipe = pkg(project, "b", ("a",), body='env = { FLAG = "1" }', extra=FLAG_LINE)
    pkg(project, "c", ("b",))
    ok(project.doit())
    assert share(project, "c") == "a 1.0\nb 1.0\nflag=1\nc 1.0\n"
    edit(recipe, 'FLAG = "1"', 'FLAG = "2"')
    r = ok(project.doit())
    assert r.packages_ran() == ["b", "c"]
    assert share(project, "c") == "a 1.0\nb 1.0\nflag=2\nc 1.0\n"
    assert ok(project.doit()).ran == []


# --------------------------------------------------------------------------- 4. early cutoff


def test_flag_change_with_identical_output_stops_the_cascade(project: Project) -> None:
    pkg(project, "a")
    recipe = pkg(project, "b", ("a",), body='env = { FLAG = "1" }')  # install ignores FLAG
    pkg(project, "c", ("b",))
    pkg(project, "d", ("c",))
    ok(project.doit())
    manifest = project.manifest("b").read_bytes()
    edit(recipe, 'FLAG = "1"', 'FLAG = "2"')

    r = ok(project.doit())
    assert r.packages_ran() == ["b"], r.out
    assert {"a", "c", "d"} <= set(r.uptodate), r.out
    assert project.manifest("b").read_bytes() == manifest
    assert ok(project.doit()).ran == []


# --------------------------------------------------------------------------- 5. clocks


def test_content_change_with_mtime_reset_is_detected(project: Project) -> None:
    patch = patched_chain(project, "b patched-1")
    os.utime(patch, (0, 0))  # live-bootstrap's 1970 timestamps
    ok(project.doit())
    st = patch.stat()
    patch.write_text(unified_diff("b 1.0", "b patched-2"))  # same size
    os.utime(patch, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert patch.stat().st_mtime_ns == st.st_mtime_ns == 0
    assert patch.stat().st_size == st.st_size

    r = ok(project.doit())
    assert r.packages_ran() == ["b", "c"], r.out
    assert share(project, "c") == "a 1.0\nb patched-2\nc 1.0\n"


# --------------------------------------------------------------------------- 6. clean


def test_clean_one_package_rebuilds_only_it_and_keeps_the_mirror(project: Project) -> None:
    chain(project)
    ok(project.doit())
    mirror = {p: p.read_bytes() for p in (project.root / "mirror").iterdir()}
    assert sorted(p.name for p in mirror) == [
        "SHA256SUMS", "a-1.0.tar.gz", "b-1.0.tar.gz", "c-1.0.tar.gz",
    ]  # fmt: skip
    cache = project.root / "cache"
    assert (cache / "stage" / "b").is_dir() and project.manifest("b").is_file()

    ok(project.doit("clean", "b"))
    assert not (cache / "build" / "b").exists()
    assert not (cache / "stage" / "b").exists()
    assert not project.manifest("b").exists()
    assert project.manifest("a").is_file() and project.manifest("c").is_file()
    assert {p: p.read_bytes() for p in (project.root / "mirror").iterdir()} == mirror

    r = ok(project.doit())
    assert r.packages_ran() == ["b"], r.out
    assert {"a", "c"} <= set(r.uptodate)
    assert {p: p.read_bytes() for p in (project.root / "mirror").iterdir()} == mirror
    assert share(project, "c") == "a 1.0\nb 1.0\nc 1.0\n"

    ok(project.doit("clean"))  # every package
    assert not any((cache / "manifests").iterdir())
    assert {p: p.read_bytes() for p in (project.root / "mirror").iterdir()} == mirror
    assert ok(project.doit()).packages_ran() == ["a", "b", "c"]


def test_file_dropped_after_clean_is_removed_from_root(project: Project) -> None:
    old = 'echo old > "$DESTDIR$PREFIX/share/b-old.txt"'
    pkg(project, "a")
    recipe = pkg(project, "b", ("a",), extra=old)
    ok(project.doit())
    assert project.installed("share/b-old.txt").is_file()
    ok(project.doit("clean", "b"))
    edit(recipe, old, "")
    assert ok(project.doit()).packages_ran() == ["b"]
    assert "b-old.txt" not in project.manifest("b").read_text()
    assert not project.installed("share/b-old.txt").exists()


# --------------------------------------------------------------------------- 7. one target


def test_building_one_package_builds_its_dependencies_only(project: Project) -> None:
    chain(project)
    r = ok(project.doit("b"))
    assert r.packages_ran() == ["a", "b"]
    assert project.manifest("b").is_file()
    assert not project.manifest("c").exists()
    assert not project.installed("share/c.txt").exists()


# --------------------------------------------------------------------------- 8. determinism


def many_deps(project: Project) -> None:
    pkg(project, "zeta")
    pkg(project, "alpha")
    pkg(project, "mid", ("zeta", "alpha"))
    pkg(project, "omega", ("mid", "alpha", "zeta"))
    pkg(project, "beta", ("omega", "zeta", "mid", "alpha"))


def test_list_deps_is_identical_whatever_the_hash_seed(project: Project) -> None:
    many_deps(project)
    outs = {seed: ok(project.doit("list", "--deps", env={"PYTHONHASHSEED": seed})).out
            for seed in ("1", "2", "3", "4")}  # fmt: skip
    assert len(set(outs.values())) == 1, outs
    out = outs["1"]
    beta = out[out.index("beta") :].split("\n\n")[0]
    for dep in ("omega", "zeta", "mid", "alpha"):
        assert f"cache/manifests/{dep}.json" in beta
    assert "mirror/beta-1.0.tar.gz" in beta
    assert "recipes/beta.toml" not in beta  # its normalised signature decides, not its text


def test_info_is_identical_whatever_the_hash_seed(project: Project) -> None:
    many_deps(project)
    outs = {seed: project.doit("info", "beta", env={"PYTHONHASHSEED": seed}).out
            for seed in ("1", "2", "3", "4")}  # fmt: skip
    assert len(set(outs.values())) == 1, outs
    assert "cache/manifests/omega.json" in outs["1"]


# --------------------------------------------------------------------------- 9. info


def flag_chain(project: Project) -> Path:
    pkg(project, "a")
    recipe = pkg(project, "b", ("a",), body='env = { FLAG = "1" }', extra=FLAG_LINE)
    pkg(project, "c", ("b",))
    return recipe


def test_info_says_whether_up_to_date(project: Project) -> None:
    recipe = flag_chain(project)
    r = ok(project.doit("info", "b"))  # exit 0 either way: it answers a question
    assert "status: would run, because" in r.out and "never built" in r.out, r.out
    ok(project.doit())
    r = ok(project.doit("info", "b"))
    assert "status: up to date" in r.out
    edit(recipe, 'FLAG = "1"', 'FLAG = "2"')
    r = ok(project.doit("info", "b"))
    assert "status: would run, because" in r.out, r.out
    assert "recipes/b.toml" in r.out  # the changed file
    assert "recipe changed" in r.out
    assert ok(project.doit()).packages_ran() == ["b", "c"]
    ok(project.doit("info", "b"))


def test_info_names_the_changed_recipe_field(project: Project) -> None:
    recipe = flag_chain(project)
    ok(project.doit())
    edit(recipe, 'FLAG = "1"', 'FLAG = "2"')
    r = ok(project.doit("info", "b"))
    changed = re.search(r"recipe changed \((\S+)\): ([\w, ]+?)(?: \(|$)", r.out, re.M)
    assert changed and changed.group(2) == "env", r.out  # the one field that changed
    assert changed.group(1) == "recipes/b.toml", r.out  # and the file


# --------------------------------------------------------------------------- 10. durability


def durability_chain(project: Project, pgid_file: Path) -> Path:
    """``a -> b -> c -> d``; c records its process group and then sleeps."""
    pkg(project, "a")
    pkg(project, "b", ("a",))
    slow = install_script(("b",), f'echo $$ > "{pgid_file}"\nsleep 30')
    recipe = pkg(project, "c", ("b",), install=slow)
    pkg(project, "d", ("c",))
    return recipe


def start_and_wait_for_c(project: Project, pgid_file: Path) -> subprocess.Popen:
    proc = project.popen()
    wait_for(
        lambda: (
            project.manifest("b").exists()
            and (project.root / "cache" / "logs" / "c.log").exists()
            and read_pgid(pgid_file) is not None
        ),
        proc,
        "c's build to start",
    )
    return proc


def test_kill_9_keeps_finished_packages(project: Project) -> None:
    pgid_file = project.root / "c.pgid"
    recipe = durability_chain(project, pgid_file)
    proc = start_and_wait_for_c(project, pgid_file)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
    finally:
        stop(proc)
        kill_group(read_pgid(pgid_file))  # the build runs in its own session
    assert not project.manifest("c").exists()

    edit(recipe, "sleep 30", "true")
    r = ok(project.doit())
    assert "a" not in r.ran and "b" not in r.ran, r.out
    assert r.packages_ran() == ["c", "d"], r.out
    assert share(project, "d") == "a 1.0\nb 1.0\nc 1.0\nd 1.0\n"


def test_kill_9_of_the_doit_group_leaves_no_build_running(project: Project) -> None:
    pgid_file = project.root / "c.pgid"
    durability_chain(project, pgid_file)
    proc = start_and_wait_for_c(project, pgid_file)
    build = read_pgid(pgid_file)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        assert group_gone(build, limit=2), f"build process group {build} still running"
    finally:
        stop(proc)
        kill_group(build)


def test_sigterm_stops_the_build_and_keeps_finished_packages(project: Project) -> None:
    pgid_file = project.root / "c.pgid"
    recipe = durability_chain(project, pgid_file)
    proc = start_and_wait_for_c(project, pgid_file)
    build = read_pgid(pgid_file)
    try:
        os.kill(proc.pid, signal.SIGTERM)  # the doit process only
        _, err = proc.communicate(timeout=30)
        assert proc.returncode != 0
        assert "Traceback" not in err, err
        assert group_gone(proc.pid), "doit's process group survived SIGTERM"
        assert group_gone(build), "the build's process group survived SIGTERM"
        with pytest.raises(ProcessLookupError):
            os.killpg(proc.pid, 0)
    finally:
        stop(proc)
        kill_group(build)
    assert not project.manifest("c").exists()

    edit(recipe, "sleep 30", "true")
    r = ok(project.doit())
    assert "a" not in r.ran and "b" not in r.ran, r.out
    assert r.packages_ran() == ["c", "d"], r.out


def test_sigterm_stops_every_build_of_a_parallel_run(project: Project) -> None:
    files = {name: project.root / f"{name}.pgid" for name in ("b", "c")}
    pkg(project, "a")
    for name, file in files.items():
        pkg(project, name, ("a",), install=install_script(("a",), f'echo $$ > "{file}"\nsleep 30'))
    pkg(project, "d", ("b", "c"))
    proc = project.popen("-n", "2")
    try:
        wait_for(lambda: all(read_pgid(f) for f in files.values()), proc, "b and c to start")
        os.kill(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=30)
        assert proc.returncode != 0
        for name, file in files.items():
            assert group_gone(read_pgid(file), limit=2), f"{name}'s build survived SIGTERM"
    finally:
        stop(proc)
        for file in files.values():
            kill_group(read_pgid(file))


def test_parallel_run_builds_a_diamond(project: Project) -> None:
    pkg(project, "a")
    pkg(project, "b", ("a",))
    pkg(project, "c", ("a",))
    pkg(project, "d", ("b", "c"))
    r = ok(project.doit("-n", "2"))
    ran = r.packages_ran()
    assert sorted(ran) == ["a", "b", "c", "d"]
    assert ran[0] == "a" and ran[-1] == "d"
    assert share(project, "d") == "a 1.0\nb 1.0\na 1.0\nc 1.0\nd 1.0\n"
    assert ok(project.doit("-n", "2")).ran == []


# --------------------------------------------------------------------------- 11. the lock


def gated(project: Project, name: str, deps: tuple[str, ...]) -> tuple[Path, Path]:
    """A package whose build says it started, then waits until the test opens the gate
    (no sleeps to tune: the test decides when the build may go on)."""
    gate, started = project.root / "gate", project.root / "started"
    wait = f'touch "{started}"\nwhile [ ! -e "{gate}" ]; do sleep 0.05; done'
    pkg(project, name, deps, install=install_script(deps, wait))
    return gate, started


def test_second_doit_stops_while_one_is_running(project: Project) -> None:
    pkg(project, "a")
    gate, started = gated(project, "b", ("a",))
    pkg(project, "c", ("b",))
    first = project.popen()
    try:
        wait_for(started.exists, first, "b's build to start")
        second = project.doit(timeout=60)
        assert second.code != 0
        msg = second.out + second.err
        assert "another doit" in msg and f"pid {first.pid}" in msg, msg
        assert second.ran == []
        listing = ok(project.doit("list"))
        assert "a" in listing.out.split() and "c" in listing.out.split()
        assert first.poll() is None, "the first doit was disturbed"
        gate.touch()
        out, err = first.communicate(timeout=60)
    finally:
        gate.touch()
        stop(first)
    assert first.returncode == 0, out + err
    assert Result(0, out, err).packages_ran() == ["a", "b", "c"]
    assert share(project, "c") == "a 1.0\nb 1.0\nc 1.0\n"
    assert ok(project.doit()).ran == []


# --------------------------------------------------------------------------- 12. failures


def test_failing_build_is_reported_and_leaves_the_rest_consistent(project: Project) -> None:
    pkg(project, "a")
    recipe = pkg(project, "b", ("a",), install="echo boom-marker; exit 3")
    pkg(project, "c", ("b",))
    r = project.doit()
    assert r.code == 1, r.out + r.err
    msg = r.out + r.err
    assert "b: install failed" in msg, msg
    assert "cache/logs/b.log" in msg
    tail = msg[msg.index("last 20 lines") :]
    assert "boom-marker" in tail
    assert "boom-marker" in (project.root / "cache" / "logs" / "b.log").read_text()
    assert r.packages_ran() == ["a", "b"]
    assert not project.manifest("b").exists()
    assert not project.manifest("c").exists()
    assert not project.installed("share/b.txt").exists()

    r = project.doit()  # still broken: a stays done
    assert r.code == 1
    assert r.packages_ran() == ["b"], r.out
    assert not project.manifest("b").exists()

    edit(recipe, "echo boom-marker; exit 3", install_script(("a",)))
    r = ok(project.doit())
    assert r.packages_ran() == ["b", "c"], r.out
    assert share(project, "c") == "a 1.0\nb 1.0\nc 1.0\n"


# --------------------------------------------------------------------------- 13. verbosity


def test_verbose_run_streams_build_output(project: Project) -> None:
    pkg(project, "a")
    extra = 'echo "stream-marker-$FLAG"'
    recipe = pkg(project, "b", ("a",), body='env = { FLAG = "1" }', extra=extra)
    r = ok(project.doit("-v", "2"))
    assert "stream-marker-1" in r.out
    assert r.out.index("stream-marker-1") > r.out.index(".  b")
    edit(recipe, 'FLAG = "1"', 'FLAG = "2"')
    r = ok(project.doit())  # the default is quiet: the output only goes to the log
    assert r.packages_ran() == ["b"]
    assert "stream-marker" not in r.out + r.err
    assert "stream-marker-2" in (project.root / "cache" / "logs" / "b.log").read_text()


# --------------------------------------------------------------------------- 14. stale files


def test_file_dropped_from_a_package_is_removed_from_root(project: Project) -> None:
    old = 'mkdir -p "$DESTDIR$PREFIX/share/bdoc" && echo old > "$DESTDIR$PREFIX/share/bdoc/old.txt"'
    pkg(project, "a")
    recipe = pkg(project, "b", ("a",), extra=old)
    ok(project.doit())
    assert project.installed("share/bdoc/old.txt").read_text() == "old\n"

    edit(recipe, old, "")
    r = ok(project.doit())
    assert r.packages_ran() == ["b"]
    assert not project.installed("share/bdoc/old.txt").exists()
    assert not project.installed("share/bdoc").exists()
    assert share(project, "b") == "a 1.0\nb 1.0\n"
    assert share(project, "a") == "a 1.0\n"  # another package's files stay
    assert "share/bdoc" not in project.manifest("b").read_text()


# --------------------------------------------------------------------------- 15. state


def test_state_is_one_journal_and_a_noop_does_not_write_it(project: Project) -> None:
    chain(project)
    ok(project.doit())
    state = project.root / "cache" / "state"
    for name in PACKAGES:
        record = read_record(state, name)
        assert isinstance(record, dict) and record.get("deps:"), name
    before = (state / "journal").read_bytes()
    assert ok(project.doit()).ran == []
    assert (state / "journal").read_bytes() == before  # no commit, no fsync on a no-op


# --------------------------------------------------------------------------- 16. guest Python

NO_SQLITE_NO_BZ2 = """\
import sys
for mod in ("sqlite3", "_sqlite3", "bz2", "_bz2", "dbm.gnu", "_gdbm", "dbm.ndbm", "_dbm"):
    sys.modules[mod] = None
from doit.doit_cmd import DoitMain
from doit.cmd_base import DodoTaskLoader
code = DoitMain(DodoTaskLoader()).run(sys.argv[1:])
for mod in ("sqlite3", "bz2"):
    assert sys.modules[mod] is None, mod
sys.exit(code)
"""


def bz2_recipe(project: Project, name: str, deps: tuple[str, ...]) -> None:
    """A mock package whose only source is a real ``.tar.bz2``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:bz2") as tar:
        data = f"{name} from bz2\n".encode()
        info = tarfile.TarInfo(f"{name}-1.0/data.txt")
        info.size, info.mode, info.mtime = len(data), 0o644, 1_000_000_000
        tar.addfile(info, io.BytesIO(data))
    file = f"{name}-1.0.tar.bz2"
    (project.root / "mirror" / file).write_bytes(buf.getvalue())
    sha = hashlib.sha256(buf.getvalue()).hexdigest()
    (project.root / "recipes" / f"{name}.toml").write_text(
        'version = "1.0"\n'
        f"depends = {json.dumps(list(deps))}\n"
        'build_system = "script"\n'
        f"script.install = '''{install_script(deps)}'''\n"
        '[versions."1.0"]\n'
        f'sources = [{{ file = "{file}", sha256 = "{sha}", urls = ["file:///nonexistent/{file}"] }}]\n'
    )


def test_recipe_files_are_dependencies_read_through_filesdir(project: Project) -> None:
    """``files = [...]`` under recipes/<name>/: read by the build as ${FILESDIR}/<file>, and a
    changed file rebuilds the package (and, its output changing, its dependents)."""
    files = project.root / "recipes" / "a"
    files.mkdir()
    (files / "conf").write_text("one\n")
    pkg(
        project,
        "a",
        body='files = ["conf"]',
        install='mkdir -p "$DESTDIR$PREFIX/share" && cp "$FILESDIR/conf" "$DESTDIR$PREFIX/share/a.txt"',
    )
    pkg(project, "b", ("a",))
    assert ok(project.doit()).packages_ran() == ["a", "b"]
    assert share(project, "a") == "one\n"
    os.utime(files / "conf")  # touched, same content: nothing
    assert ok(project.doit()).packages_ran() == []
    (files / "conf").write_text("two\n")
    assert ok(project.doit()).packages_ran() == ["a", "b"]
    assert share(project, "b") == "two\nb 1.0\n"
    (files / "conf").unlink()
    r = project.doit("list")
    assert r.code == 3 and "files[0]" in r.err and "recipes/a.toml" in r.err, r.err


def test_runs_without_sqlite3_and_bz2(project: Project) -> None:
    pkg(project, "a")
    bz2_recipe(project, "b", ("a",))
    pkg(project, "c", ("b",))

    def run() -> Result:
        proc = subprocess.run(
            [sys.executable, "-c", NO_SQLITE_NO_BZ2],
            cwd=project.root,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    r = ok(run())
    assert r.packages_ran() == ["a", "b", "c"]
    assert share(project, "c") == "a 1.0\nb from bz2\nc 1.0\n"
    assert ok(run()).ran == []


# --------------------------------------------------------------------------- no network in builds


@pytest.mark.skipif(os.geteuid() != 0, reason="a network namespace needs root")
def test_builds_have_no_network_unless_the_config_allows_it(project: Project) -> None:
    """As root (the guest), every build runs in an empty network namespace: a build that
    reaches for the network fails, even for loopback; only fetch tasks use the network."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        connect = (
            f"python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), 5)'"
            " && echo reached-net$((1 + 1))"  # the log shows the command too: not the output
        )
        pkg(project, "a", extra=connect)
        r = project.doit()
        assert r.code == 1, r.out
        assert "a: install failed" in r.out
        log = (project.root / "cache" / "logs" / "a.log").read_text()
        assert "reached-net2" not in log
        assert "unreachable" in log.lower() or "refused" in log.lower(), log

        # a step that acts on the machine's network says so in its recipe
        edit(
            project.root / "recipes" / "a.toml",
            'build_system = "script"',
            'build_system = "script"\nnetwork = true',
        )
        ok(project.doit())
        assert "reached-net2" in (project.root / "cache" / "logs" / "a.log").read_text()
        # and the config can turn isolation off for every build
        pkg(project, "b", extra=connect)
        project.config('platform = "sandbox"\njobs = 2\nisolate_network = false\n')
        ok(project.doit())
        assert "reached-net2" in (project.root / "cache" / "logs" / "b.log").read_text()
    finally:
        listener.close()
