"""Content, not clocks: doit's file_dep checker on xxh3_128 digests.

doit's stock ``MD5Checker`` trusts an unchanged mtime. live-bootstrap resets mtimes to 1970,
so a file whose content changed but whose mtime was reset would be missed. We compare the
whole stat key (mtime, ctime, size, inode): ctime cannot be set back by ``touch``, so any write
is seen; a file with a new stat key is re-hashed, and only a different digest is a change
(``touch`` alone rebuilds nothing).

Each file is hashed at most once per run, however many tasks depend on it (an in-process
memo; under ``doit -n`` a lock per path makes a second thread wait for the first one's
digest instead of reading the file again), and at most once after a ``touch`` across runs (a persistent cache of stat key ->
digest, ``cache/state/digests.json``, written atomically at exit). doit never re-saves the
state of an up-to-date task, so without the persistent cache a touched file would be
re-hashed on every run (pydoit/doit#431).

Files are read with ``readinto`` into a page-aligned buffer (an anonymous ``mmap``, one per
thread) and hashed from it without copies: a ``bytearray`` buffer that sits off a page
boundary reads several times slower on some kernels.
"""

from __future__ import annotations

import atexit
import json
import mmap
import os
import threading

import xxhash
from doit.dependency import FileChangedChecker

from tasks.store import statkey
from tasks.store.fsutil import atomic_write

_lock = threading.Lock()
_memo: dict[str, str] = {}  # "path\0" + the stat key (tasks.store.statkey) joined by "\0" -> digest
_cache_path: str | None = None
_dirty = False
_path_locks: dict[str, threading.Lock] = {}  # one hasher per file at a time
_local = threading.local()  # each thread's read buffer
BUFFER_SIZE = 1 << 20
hashed_bytes = 0  # bytes read for hashing in this process (for tests and benchmarks)


def use_cache(path: str | os.PathLike) -> None:
    """Load the persistent digest cache from ``path`` and save it there at exit."""
    global _cache_path
    if _cache_path is not None:
        return
    _cache_path = os.fspath(path)
    try:
        with open(_cache_path) as f:
            _memo.update(json.load(f))
    except (OSError, ValueError):  # missing or damaged: it only costs re-hashing
        pass
    atexit.register(save_cache)


def save_cache() -> None:
    """Write the digests of files as they are now (atomically): one entry per existing file,
    so the cache does not grow with every touch."""
    global _dirty
    if not (_cache_path and _dirty):
        return
    with _lock:
        live = {k: v for k, v in _memo.items() if _current(k)}
        _dirty = False
    os.makedirs(os.path.dirname(_cache_path), exist_ok=True)
    atomic_write(_cache_path, json.dumps(live, sort_keys=True).encode(), fsync=False)


def _current(key: str) -> bool:
    """Whether ``key`` is the stat key of its file as it is now."""
    path = key.split("\0", 1)[0]
    try:
        return _key(path, os.stat(path)) == key
    except OSError:
        return False


def _key(path: str, st: os.stat_result) -> str:
    return "\0".join([os.path.abspath(path), *map(str, statkey.of(st))])


def file_digest(path: str, st: os.stat_result | None = None) -> str:
    """xxh3_128 of a file's content, memoised on its stat key."""
    global _dirty
    st = st or os.stat(path)
    key = _key(path, st)
    digest = _memo.get(key)
    if digest is not None:
        return digest
    with _lock:
        path_lock = _path_locks.setdefault(key, threading.Lock())
    with path_lock:  # another thread hashing this file: wait for its digest
        digest = _memo.get(key)
        if digest is None:
            digest = _hash(path)
            with _lock:
                _memo[key] = digest
                _dirty = True
    with _lock:
        _path_locks.pop(key, None)
    return digest


def _hash(path: str) -> str:
    global hashed_bytes
    buf = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = mmap.mmap(-1, BUFFER_SIZE)  # page-aligned
    view = memoryview(buf)
    h = xxhash.xxh3_128()
    try:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                h.update(view[:n] if n < BUFFER_SIZE else view)
                hashed_bytes += n
    finally:
        view.release()
    return h.hexdigest()


def _stat_state(st: os.stat_result) -> list[int]:
    return list(statkey.of(st))


class XXH3Checker(FileChangedChecker):
    """State = ``[mtime_ns, ctime_ns, size, inode, xxh3_128]``."""

    def check_modified(self, file_path: str, file_stat: os.stat_result, state: list) -> bool:
        if not isinstance(state, list) or len(state) != 5:
            return True  # a state from another checker
        if _stat_state(file_stat) == state[:4]:
            return False
        if file_stat.st_size != state[2]:
            return True
        return file_digest(file_path, file_stat) != state[4]

    def get_state(self, dep: str, current_state: list | None) -> list | None:
        st = os.stat(dep)
        if current_state and list(current_state[:4]) == _stat_state(st):
            return None  # unchanged: keep the stored state
        return _stat_state(st) + [file_digest(dep, st)]
