"""Tests for tasks.store.state: one journal, a task's record committed when doit stores ``deps:``
(one append + fdatasync), read in one go, under the project lock; torn tails ignored,
damage reported, compaction, and the per-task files of older versions folded in."""

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

from tasks.store import checker, lock, state
from tasks.store.checker import XXH3Checker
from tasks.store.state import TaskStateDB, read_record

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "cache" / "state"
    yield path
    lock.release(path)  # the lock is per process: give it back for the next test


def new_db(state_dir: Path) -> TaskStateDB:
    return TaskStateDB(str(state_dir), codec=JSONCodec())


def stored(state_dir: Path) -> list[str]:
    """The tasks with a record, as a fresh reader (the next doit) sees them."""
    return new_db(state_dir).task_ids()


def journal(state_dir: Path) -> Path:
    return state_dir / "journal"


def test_record_is_committed_when_deps_is_set(state_dir: Path) -> None:
    db = new_db(state_dir)
    db.set("pkg", "_values_:", {"signature": {"a": 1}})
    db.set("pkg", "checker:", "XXH3Checker")
    db.set("pkg", "/some/file", [1, 2, 3, 4, "abc"])
    assert stored(state_dir) == []  # not yet: the record is incomplete
    db.set("pkg", "deps:", ["/some/file"])
    assert stored(state_dir) == ["pkg"]  # before any dump
    assert sorted(p.name for p in state_dir.iterdir()) == ["journal", "lock"]  # no .part
    on_disk = read_record(state_dir, "pkg")
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


@pytest.mark.parametrize("cut", ["one byte", "the crc", "half", "all but the newline"])
def test_record_cut_short_by_a_crash_is_ignored_and_cut_off(state_dir: Path, cut: str) -> None:
    """SIGKILL or a power cut mid-append leaves part of the last line: that task has no new
    record (it runs again), every earlier one stands, and the next commit starts clean."""
    db = new_db(state_dir)
    db.set("a", "deps:", ["a"])
    db.set("b", "deps:", ["old"])
    good = journal(state_dir).read_bytes()
    db.set("b", "deps:", ["new"])
    whole = journal(state_dir).read_bytes()
    n = len(whole) - len(good)
    keep = {"one byte": 1, "the crc": 9, "half": n // 2, "all but the newline": n - 1}[cut]
    torn = whole[: len(good) + keep]
    journal(state_dir).write_bytes(torn)
    lock.release(state_dir)

    again = new_db(state_dir)
    assert again.get("a", "deps:") == ["a"] and again.get("b", "deps:") == ["old"]
    again.set("c", "deps:", ["c"])
    assert journal(state_dir).read_bytes().startswith(good)  # the torn bytes are gone
    assert journal(state_dir).read_bytes().count(b"\n") == 3
    third = new_db(state_dir)
    assert [third.get(t, "deps:") for t in "abc"] == [["a"], ["old"], ["c"]]


def test_power_cut_zeros_at_the_tail_are_a_torn_record(state_dir: Path) -> None:
    """A file system may keep the new size but not the data after a power cut."""
    new_db(state_dir).set("a", "deps:", ["a"])
    with open(journal(state_dir), "ab") as f:
        f.write(b"\0" * 300)
    assert new_db(state_dir).get("a", "deps:") == ["a"]


def test_unchanged_record_is_not_written_again(state_dir: Path) -> None:
    """A no-op's group tasks and a task that ran to the same result cost no write, no fsync."""
    db = new_db(state_dir)
    db.set("all", "_values_:", {})
    db.set("all", "deps:", ())
    size = journal(state_dir).stat().st_size
    lock.release(state_dir)
    again = new_db(state_dir)
    again.set("all", "_values_:", {})
    again.set("all", "deps:", [])  # a tuple then, a list now: the same once stored
    again.dump()
    assert journal(state_dir).stat().st_size == size
    assert not lock.held(state_dir)  # nothing written: not even the lock was needed


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
    assert stored(state_dir) == ["a", "b"]  # removed on dump, not before
    db.dump()
    assert stored(state_dir) == ["b"]
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
    assert stored(state_dir) == ["c"]
    assert db.task_ids() == ["c"]


@pytest.mark.parametrize("damage", ["bad crc", "not json", "zeros"])
def test_damaged_line_between_good_ones_is_ignored_with_a_line_naming_it(
    state_dir: Path, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = new_db(state_dir)
    for t in ("a", "b", "c"):
        db.set(t, "deps:", [t])
    lines = journal(state_dir).read_bytes().split(b"\n")
    lines[1] = {
        "bad crc": b"00000000" + lines[1][8:],
        "not json": lines[1][:9] + b"{not json",
        "zeros": b"\0" * len(lines[1]),
    }[damage]
    journal(state_dir).write_bytes(b"\n".join(lines))
    again = new_db(state_dir)
    assert again.get("b", "deps:") is None  # never trusted: b is checked as new
    assert again.get("a", "deps:") == ["a"] and again.in_("c")  # the others stand
    err = capsys.readouterr().err
    assert f"damaged state journal {journal(state_dir)}: line(s) 2 ignored" in err
    again.set("b", "deps:", ["b2"])  # the next writer rewrites the journal without it
    again.dump()
    assert journal(state_dir).read_bytes().count(b"\n") == 3
    assert new_db(state_dir).get("b", "deps:") == ["b2"]
    assert capsys.readouterr().err == ""


def test_damaged_file_of_an_older_version_is_ignored_with_a_line_naming_it(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = state_dir / "tasks"
    old.mkdir(parents=True)
    (old / "pkg.json").write_text('{"deps:": [')
    (old / "ok.json").write_text('{"deps:": []}')
    db = new_db(state_dir)
    assert db.get("pkg", "deps:") is None and db.get("ok", "deps:") == []
    assert f"damaged state file {old / 'pkg.json'}" in capsys.readouterr().err


def test_journal_is_compacted_when_mostly_superseded(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state, "COMPACT_MIN_LINES", 10)
    db = new_db(state_dir)
    for i in range(30):
        db.set("a", "deps:", [str(i)])
        if i == 0:
            db.set("b", "deps:", ["b"])
    assert journal(state_dir).read_bytes().count(b"\n") == 31
    db.dump()
    assert journal(state_dir).read_bytes().count(b"\n") == 2
    again = new_db(state_dir)
    assert again.get("a", "deps:") == ["29"] and again.get("b", "deps:") == ["b"]
    again.set("a", "deps:", ["30"])  # appending goes on after the rewrite
    assert new_db(state_dir).get("a", "deps:") == ["30"]


def test_per_task_files_of_older_versions_are_folded_into_the_journal(state_dir: Path) -> None:
    """A project built before the journal keeps its state: nothing rebuilds."""
    old = state_dir / "tasks"
    old.mkdir(parents=True)
    (old / "pkg.json").write_text(json.dumps({"deps:": ["x"], "_values_:": {"v": 1}}))
    (old / "mirror%3Aa.tar.gz.json").write_text(json.dumps({"deps:": []}))
    db = new_db(state_dir)
    assert db.get("pkg", "_values_:") == {"v": 1}
    assert db.task_ids() == ["mirror:a.tar.gz", "pkg"]
    db.set("new", "deps:", [])
    assert not old.exists()
    assert stored(state_dir) == ["mirror:a.tar.gz", "new", "pkg"]
    assert read_record(state_dir, "pkg") == {"deps:": ["x"], "_values_:": {"v": 1}}


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
    from tasks.store import checker
    from tasks.store import lock
    from tasks.store import state
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
    assert stored(state_dir) == []
    assert not lock.held(state_dir)


def test_removal_under_someone_elses_lock_is_refused(state_dir: Path) -> None:
    new_db(state_dir).set("pkg", "deps:", [])
    lock.release(state_dir)
    with lock_held_elsewhere(state_dir):
        db = new_db(state_dir)
        db.remove("pkg")
        with pytest.raises(SystemExit, match="another doit"):
            db.dump()
        assert stored(state_dir) == ["pkg"]
    db.dump()  # the holder is gone: the kernel dropped its lock
    assert stored(state_dir) == []


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
    assert [p.name for p in state_dir.iterdir() if p.name != "lock"] == ["journal"]
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
