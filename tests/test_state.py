"""Tests for tasks.state: one JSON file per task, committed when doit stores ``deps:``,
atomically, under the project lock."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from doit.dependency import Dependency, JSONCodec
from doit.task import Task

from tasks import checker, lock
from tasks.checker import XXH3Checker
from tasks.state import TaskStateDB, read_record

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "cache" / "state"
    yield path
    lock.release(path)  # the lock is per process: give it back for the next test


def new_db(state_dir: Path) -> TaskStateDB:
    return TaskStateDB(str(state_dir), codec=JSONCodec())


def files(state_dir: Path) -> list[str]:
    tasks = state_dir / "tasks"
    return sorted(p.name for p in tasks.iterdir()) if tasks.is_dir() else []


def test_record_is_committed_when_deps_is_set(state_dir: Path) -> None:
    db = new_db(state_dir)
    db.set("pkg", "_values_:", {"signature": {"a": 1}})
    db.set("pkg", "checker:", "XXH3Checker")
    db.set("pkg", "/some/file", [1, 2, 3, 4, "abc"])
    assert files(state_dir) == []  # not yet: the record is incomplete
    db.set("pkg", "deps:", ["/some/file"])
    assert files(state_dir) == ["pkg.json"]  # before any dump, no .part left behind
    on_disk = json.loads((state_dir / "tasks" / "pkg.json").read_text())
    assert on_disk == {
        "_values_:": {"signature": {"a": 1}},
        "checker:": "XXH3Checker",
        "/some/file": [1, 2, 3, 4, "abc"],
        "deps:": ["/some/file"],
    }
    other = new_db(state_dir)
    assert other.in_("pkg")
    assert other.get("pkg", "_values_:") == {"signature": {"a": 1}}
    assert other.get("pkg", "deps:") == ["/some/file"]
    assert other.get("pkg", "nothing") is None
    assert not other.in_("never-ran")
    assert read_record(state_dir, "pkg") == on_disk


def test_ignore_commits_too(state_dir: Path) -> None:
    db = new_db(state_dir)
    db.set("pkg", "ignore:", "1")
    assert new_db(state_dir).get("pkg", "ignore:") == "1"


def test_commit_is_atomic(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = new_db(state_dir)
    db.set("pkg", "deps:", ["old"])
    old = (state_dir / "tasks" / "pkg.json").read_bytes()

    def fail(src, dst):  # noqa: ANN001, ANN202
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="power cut"):
        db.set("pkg", "deps:", ["new"])
    monkeypatch.undo()
    assert (state_dir / "tasks" / "pkg.json").read_bytes() == old
    assert files(state_dir) == ["pkg.json"]


def test_dump_commits_dirty_records(state_dir: Path) -> None:
    db = new_db(state_dir)
    db.set("pkg", "_values_:", {})
    db.set("pkg", "result:", "abc")
    db.dump()
    assert new_db(state_dir).get("pkg", "result:") == "abc"


def test_remove_and_dump_deletes_the_file(state_dir: Path) -> None:
    db = new_db(state_dir)
    db.set("a", "deps:", [])
    db.set("b", "deps:", [])
    db = new_db(state_dir)
    db.remove("a")
    assert not db.in_("a")
    assert files(state_dir) == ["a.json", "b.json"]  # removed on dump, not before
    db.dump()
    assert files(state_dir) == ["b.json"]
    assert not new_db(state_dir).in_("a") and new_db(state_dir).in_("b")


def test_remove_followed_by_a_new_commit_keeps_the_new_record(state_dir: Path) -> None:
    db = new_db(state_dir)
    db.set("pkg", "result:", "old")
    db.set("pkg", "deps:", ["old"])
    db.remove("pkg")  # e.g. the checker changed, then the task ran again
    db.set("pkg", "result:", "new")
    db.set("pkg", "deps:", ["new"])
    db.dump()
    assert read_record(state_dir, "pkg") == {"result:": "new", "deps:": ["new"]}


def test_remove_followed_by_uncommitted_values_keeps_them_after_dump(state_dir: Path) -> None:
    db = new_db(state_dir)
    db.set("pkg", "deps:", ["old"])
    db.remove("pkg")
    db.set("pkg", "_values_:", {"x": 1})
    db.dump()
    assert read_record(state_dir, "pkg") == {"_values_:": {"x": 1}}


def test_remove_all(state_dir: Path) -> None:
    db = new_db(state_dir)
    for t in ("a", "b", "c"):
        db.set(t, "deps:", [])
    db = new_db(state_dir)
    db.get("d", "deps:")  # only cached, never on disk
    db.remove_all()
    db.set("c", "deps:", ["again"])
    db.dump()
    assert files(state_dir) == ["c.json"]
    assert db.task_ids() == ["c"]


@pytest.mark.parametrize("content", ["{not json", "", '{"deps:": [', "\x00\xff garbage"])
def test_damaged_file_is_ignored_with_a_line_naming_it(
    state_dir: Path, content: str, capsys: pytest.CaptureFixture[str]
) -> None:
    new_db(state_dir).set("pkg", "deps:", [])
    path = state_dir / "tasks" / "pkg.json"
    path.write_text(content, errors="surrogateescape")
    db = new_db(state_dir)
    assert db.get("pkg", "deps:") is None  # never trusted: the task is checked as new
    assert not db.in_("pkg")
    err = capsys.readouterr().err
    assert f"damaged state file {path}" in err and "as if it had never run" in err


def test_readers_do_not_take_the_lock_or_write(state_dir: Path) -> None:
    db = new_db(state_dir)
    assert not db.in_("pkg") and db.get("pkg", "deps:") is None
    assert db.task_ids() == []
    db.dump()
    assert not state_dir.exists()
    assert not lock.held(state_dir)


def test_first_write_takes_the_project_lock(state_dir: Path) -> None:
    db = new_db(state_dir)
    db.set("pkg", "result:", "x")
    assert not lock.held(state_dir)
    db.set("pkg", "deps:", [])
    assert lock.held(state_dir)
    assert f"pid {os.getpid()}," in (state_dir / "lock").read_text()


HOLDER = textwrap.dedent(
    """\
    import sys, time
    from pathlib import Path
    from tasks import checker, lock
    lock.acquire(Path(sys.argv[1]))
    print("locked", flush=True)
    time.sleep(120)
    """
)


@contextlib.contextmanager
def lock_held_elsewhere(state_dir: Path) -> Iterator[int]:
    """Another process holds the project lock (it sleeps); killed by its PID afterwards."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(state_dir)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield proc.pid
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()


@pytest.fixture
def other_process_holds_lock(state_dir: Path) -> Iterator[int]:
    with lock_held_elsewhere(state_dir) as pid:
        yield pid


def test_second_writer_stops_with_the_holders_name(
    state_dir: Path, other_process_holds_lock: int
) -> None:
    db = new_db(state_dir)
    assert not db.in_("pkg")  # reading is fine while another process writes
    # a one-line exit (doit forget/ignore would otherwise print a traceback)
    with pytest.raises(SystemExit) as ei:
        db.set("pkg", "deps:", [])
    assert f"pid {other_process_holds_lock}," in str(ei.value)
    assert "another doit" in str(ei.value)
    assert str(state_dir / "lock") in str(ei.value)
    assert files(state_dir) == []
    assert not lock.held(state_dir)


def test_removal_under_someone_elses_lock_is_refused(state_dir: Path) -> None:
    new_db(state_dir).set("pkg", "deps:", [])
    lock.release(state_dir)
    with lock_held_elsewhere(state_dir):
        db = new_db(state_dir)
        db.remove("pkg")
        with pytest.raises(SystemExit, match="another doit"):
            db.dump()
        assert files(state_dir) == ["pkg.json"]
    db.dump()  # the holder is gone: the kernel dropped its lock
    assert files(state_dir) == []


@pytest.mark.parametrize(
    "task_id",
    [
        "mirror:grep-3.11.tar.xz",
        "group/sub:task",
        "../../escape",
        "a:b/c:d/..",
        "percent%2F-not-a-slash",
        "with space+plus=eq@at,comma",
        "ünïcode:ok",
    ],
)
def test_task_ids_round_trip(state_dir: Path, task_id: str) -> None:
    db = new_db(state_dir)
    db.set(task_id, "deps:", [task_id])
    names = files(state_dir)
    assert len(names) == 1 and "/" not in names[0] and names[0].endswith(".json")
    assert all(p.parent == state_dir / "tasks" for p in state_dir.rglob("*.json"))
    other = new_db(state_dir)
    assert other.task_ids() == [task_id]
    assert other.get(task_id, "deps:") == [task_id]


def test_distinct_ids_get_distinct_files(state_dir: Path) -> None:
    ids = ["a:b", "a/b", "a%3Ab", "a%2Fb", "a_b"]
    db = new_db(state_dir)
    for t in ids:
        db.set(t, "deps:", [t])
    assert new_db(state_dir).task_ids() == sorted(ids)
    for t in ids:
        assert read_record(state_dir, t) == {"deps:": [t]}


def test_doit_save_success_commits_before_close(
    state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With doit's own Dependency: a task's record is on disk as soon as it succeeded."""
    monkeypatch.setattr(checker, "_memo", {})  # keep the checker's digest memo to this test
    dep_file = tmp_path / "input.txt"
    dep_file.write_text("hello\n")
    dep = Dependency(TaskStateDB, str(state_dir), checker_cls=XXH3Checker)
    task = Task("pkg", None, file_dep=[str(dep_file)])
    task.values = {"signature": {"v": 1}}
    dep.save_success(task)
    record = read_record(state_dir, "pkg")  # before dep.close()
    assert record["deps:"] == [str(dep_file)]
    assert record["_values_:"] == {"signature": {"v": 1}}
    assert record["checker:"] == "XXH3Checker"
    assert len(record[str(dep_file)]) == 5
    dep.close()
    again = Dependency(TaskStateDB, str(state_dir), checker_cls=XXH3Checker)
    assert again.get_values("pkg") == {"signature": {"v": 1}}
    status = again.get_status(Task("pkg", None, file_dep=[str(dep_file)]), {})
    assert status.status == "up-to-date"
