"""Tests for tasks.store.checker: content, not clocks; each file hashed at most once per process, and
at most once after a touch across processes (the persistent digest cache)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import xxhash

from tasks.store import checker
from tasks.store.checker import XXH3Checker

REPO = Path(__file__).resolve().parents[1]
SIZE = 3 * (1 << 20) + 12345  # several read buffers


@pytest.fixture(autouse=True)
def fresh_checker(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checker keeps module globals: give every test its own, empty ones."""
    monkeypatch.setattr(checker, "_memo", {})
    monkeypatch.setattr(checker, "_cache_path", None)
    monkeypatch.setattr(checker, "_dirty", False)


@pytest.fixture
def dep(tmp_path: Path) -> Path:
    path = tmp_path / "dep.bin"
    path.write_bytes(os.urandom(SIZE))
    return path


def state_of(path: Path) -> list:
    state = XXH3Checker().get_state(str(path), None)
    assert state is not None
    return state


def modified(path: Path, state: list) -> bool:
    return XXH3Checker().check_modified(str(path), os.stat(path), state)


def wait_for_new_ctime(path: Path, old_ctime_ns: int) -> None:
    """File timestamps come from a coarse clock: make sure a change is a new tick."""
    deadline = time.monotonic() + 5
    while os.stat(path).st_ctime_ns == old_ctime_ns:
        assert time.monotonic() < deadline, "ctime did not advance"
        time.sleep(0.005)
        os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns))


def touch(path: Path) -> None:
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns + 10**9, st.st_mtime_ns + 10**9))
    wait_for_new_ctime(path, st.st_ctime_ns)


def test_state_is_stat_key_and_xxh3_digest(dep: Path) -> None:
    st = os.stat(dep)
    state = state_of(dep)
    assert state == [
        st.st_mtime_ns,
        st.st_ctime_ns,
        st.st_size,
        st.st_ino,
        xxhash.xxh3_128(dep.read_bytes()).hexdigest(),
    ]
    json.dumps(state)  # doit stores it with the JSON codec


def test_unchanged_file_is_not_modified_and_not_rehashed(dep: Path) -> None:
    state = state_of(dep)
    before = checker.hashed_bytes
    assert modified(dep, state) is False
    assert XXH3Checker().get_state(str(dep), state) is None
    assert checker.hashed_bytes == before


def test_get_state_returns_none_for_a_state_read_back_from_json(dep: Path) -> None:
    state = json.loads(json.dumps(state_of(dep)))
    assert XXH3Checker().get_state(str(dep), state) is None


def test_touch_with_same_content_is_not_a_change(dep: Path) -> None:
    state = state_of(dep)
    touch(dep)
    assert modified(dep, state) is False
    new = XXH3Checker().get_state(str(dep), state)
    assert new is not None and new[:4] != state[:4] and new[4] == state[4]


def test_content_change_with_mtime_reset_and_same_size_is_detected(dep: Path) -> None:
    state = state_of(dep)
    data = bytearray(dep.read_bytes())
    data[SIZE // 2] ^= 0xFF
    with open(dep, "r+b") as f:  # in place: same inode
        f.write(data)
    os.utime(dep, ns=(state[0], state[0]))  # as live-bootstrap resets mtimes
    wait_for_new_ctime(dep, state[1])
    os.utime(dep, ns=(state[0], state[0]))
    st = os.stat(dep)
    assert (st.st_mtime_ns, st.st_size, st.st_ino) == (state[0], state[2], state[3])
    assert modified(dep, state) is True
    new = XXH3Checker().get_state(str(dep), state)
    assert new is not None and new[4] != state[4]


def test_replaced_file_with_same_content_and_mtime_is_not_a_change(dep: Path) -> None:
    state = state_of(dep)
    copy = dep.with_name("copy")
    copy.write_bytes(dep.read_bytes())
    os.utime(copy, ns=(state[0], state[0]))
    os.replace(copy, dep)  # new inode
    assert os.stat(dep).st_ino != state[3]
    assert modified(dep, state) is False


def test_size_change_is_detected_without_hashing(dep: Path) -> None:
    state = state_of(dep)
    with open(dep, "ab") as f:
        f.write(b"x")
    os.utime(dep, ns=(state[0], state[0]))
    before = checker.hashed_bytes
    assert modified(dep, state) is True
    assert checker.hashed_bytes == before


@pytest.mark.parametrize("state", [["a", "b"], "d41d8cd98f00b204e9800998ecf8427e", None, {}])
def test_state_from_another_checker_is_a_change(dep: Path, state) -> None:
    assert modified(dep, state) is True


def test_file_is_hashed_at_most_once_per_process(
    dep: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = state_of(dep)
    touch(dep)
    before = checker.hashed_bytes
    for _ in range(20):  # many tasks depend on it, each with its own checker
        assert modified(dep, state) is False
        assert XXH3Checker().get_state(str(dep), state)[4] == state[4]
    assert checker.hashed_bytes - before == SIZE
    # the same file by a relative path is the same file
    monkeypatch.chdir(tmp_path)
    assert XXH3Checker().check_modified(dep.name, os.stat(dep.name), state) is False
    assert checker.hashed_bytes - before == SIZE


def test_threads_asking_for_the_same_file_hash_it_once(dep: Path) -> None:
    """Under ``doit -n`` several tasks check the same touched file at once: one thread reads
    it, the others wait for its digest."""
    state = state_of(dep)
    touch(dep)
    before = checker.hashed_bytes
    start = threading.Barrier(8)
    results: list[bool] = []

    def check() -> None:
        start.wait()
        results.append(modified(dep, state))

    threads = [threading.Thread(target=check) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [False] * 8
    assert checker.hashed_bytes - before == SIZE


def test_digest_is_xxh3_128_of_the_whole_file(dep: Path) -> None:
    """The page-aligned read buffer hashes every byte once, the last partial one too."""
    assert checker.file_digest(str(dep)) == xxhash.xxh3_128(dep.read_bytes()).hexdigest()


def test_each_change_is_hashed_once(dep: Path) -> None:
    state = state_of(dep)
    before = checker.hashed_bytes
    for i in range(3):
        touch(dep)
        for _ in range(5):
            modified(dep, state)
        assert checker.hashed_bytes - before == (i + 1) * SIZE


# --------------------------------------------------------------------------- persistent cache


def test_save_cache_writes_json_atomically(dep: Path, tmp_path: Path) -> None:
    cache = tmp_path / "state" / "digests.json"
    checker.use_cache(cache)
    checker.save_cache()
    assert not cache.exists()  # nothing hashed: nothing to write
    state = state_of(dep)
    checker.save_cache()
    data = json.loads(cache.read_text())
    key = "\0".join([str(dep)] + [str(v) for v in state[:4]])
    assert data == {key: state[4]}
    assert sorted(p.name for p in cache.parent.iterdir()) == ["digests.json"]  # no .part


def test_save_cache_only_when_dirty(dep: Path, tmp_path: Path) -> None:
    cache = tmp_path / "digests.json"
    checker.use_cache(cache)
    state_of(dep)
    checker.save_cache()
    os.utime(cache, ns=(0, 0))
    checker.save_cache()  # nothing new
    assert os.stat(cache).st_mtime_ns == 0
    other = tmp_path / "other"
    other.write_bytes(b"x")
    state_of(other)
    checker.save_cache()
    assert os.stat(cache).st_mtime_ns != 0
    assert len(json.loads(cache.read_text())) == 2


def test_save_cache_failure_keeps_the_old_cache(
    dep: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "digests.json"
    checker.use_cache(cache)
    state_of(dep)
    checker.save_cache()
    old = cache.read_bytes()
    (tmp_path / "other").write_bytes(b"x")
    state_of(tmp_path / "other")

    def fail(src, dst):  # noqa: ANN001, ANN202
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        checker.save_cache()
    monkeypatch.undo()
    assert cache.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dep.bin", "digests.json", "other"]


def test_save_cache_drops_deleted_files(dep: Path, tmp_path: Path) -> None:
    cache = tmp_path / "digests.json"
    checker.use_cache(cache)
    gone = tmp_path / "gone"
    gone.write_bytes(b"bye")
    state_of(gone)
    state_of(dep)
    gone.unlink()
    checker.save_cache()
    (key,) = json.loads(cache.read_text())
    assert key.startswith(f"{dep}\0")


def test_save_cache_keeps_one_entry_per_file_however_often_it_was_touched(
    dep: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "digests.json"
    checker.use_cache(cache)
    for _ in range(3):
        old = os.stat(dep).st_ctime_ns
        touch(dep)
        wait_for_new_ctime(dep, old)
        state_of(dep)
    assert len(checker._memo) >= 3  # every stat key seen in this run
    checker.save_cache()
    (key,) = json.loads(cache.read_text())
    st = os.stat(dep)
    assert key == f"{dep}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_size}\0{st.st_ino}"


def test_damaged_cache_costs_only_rehashing(dep: Path, tmp_path: Path) -> None:
    cache = tmp_path / "digests.json"
    cache.write_text('{"truncated": ')
    checker.use_cache(cache)
    before = checker.hashed_bytes
    state_of(dep)
    assert checker.hashed_bytes - before == SIZE


CHILD = textwrap.dedent(
    """\
    import json, os, sys
    from tasks.store import checker
    path, state, cache = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    if cache:
        checker.use_cache(cache)
    modified = checker.XXH3Checker().check_modified(path, os.stat(path), state)
    print(json.dumps({"modified": modified, "hashed": checker.hashed_bytes}))
    """
)


def run_child(path: Path, state: list, cache: Path | None) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), json.dumps(state), str(cache or "")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_fresh_process_does_not_rehash_a_touched_file_whose_digest_is_cached(
    dep: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "state" / "digests.json"
    checker.use_cache(cache)
    state = state_of(dep)  # the state stored at the last build
    touch(dep)
    # without the cache every process re-hashes the touched file
    assert run_child(dep, state, None) == {"modified": False, "hashed": SIZE}
    assert modified(dep, state) is False  # this run hashes it once ...
    checker.save_cache()  # ... and saves the digest at exit
    mtime = os.stat(cache).st_mtime_ns
    assert run_child(dep, state, cache) == {"modified": False, "hashed": 0}
    assert os.stat(cache).st_mtime_ns == mtime  # the reader had nothing new to save
    # a real change is still seen by a fresh process
    dep.write_bytes(os.urandom(SIZE))
    os.utime(dep, ns=(state[0], state[0]))
    assert run_child(dep, state, cache) == {"modified": True, "hashed": SIZE}
