"""Recipes parsed and validated once per change of the recipe files.

Every ``doit`` (a no-op, ``doit list``) needs the validated recipe set; parsing and checking
hundreds of TOML files is most of what a no-op spends in Python. ``load`` keeps the result
of a successful load in ``cache/state/recipes.cache`` (a pickle: the project's own cache,
trusted like its ``dodo.py``) with the key it was made from:

- every file and directory under ``recipes/`` (patches and ``files/`` too: validation checks
  that they exist) with its stat key (size, mtime, ctime, inode) and its content digest
  (xxh3), so an added, removed, renamed or edited file misses;
- the engine's own source files (``tasks/**/*.py``) by stat key, and the Python version, so a
  new engine never reuses recipes parsed by an old one.

A file whose stat key matches is trusted without reading it only if its ctime is older than
the cache by more than ``RACY_NS`` (as git does with its index): an edit in the same clock
tick as the cache's write, with the same size, has the same stat key, so such a "racily
clean" file is read and compared by content. A load that finds errors is never cached: the
errors are reported on every run until fixed. A missing, damaged or foreign cache file only
costs a full parse.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import xxhash

from tasks.fsutil import atomic_write

T = TypeVar("T")
RACY_NS = 2_000_000_000  # a stat key this close to the cache's write is checked by content
FORMAT = 1
ENGINE = Path(__file__).resolve().parent


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _scan(top: Path) -> dict[str, tuple[int, int, int, int]]:
    """Stat key of every file and directory under ``top`` (relative path -> key)."""
    found: dict[str, tuple[int, int, int, int]] = {}
    todo = [""]
    while todo:
        rel = todo.pop()
        with os.scandir(top / rel if rel else top) as it:
            for e in it:
                name = f"{rel}/{e.name}" if rel else e.name
                st = e.stat(follow_symlinks=True)
                found[name] = _stat_key(st)
                if e.is_dir(follow_symlinks=True):
                    todo.append(name)
    return found


def _engine_key() -> tuple:
    files = sorted(ENGINE.rglob("*.py"))
    return (FORMAT, sys.version, tuple((str(p), _stat_key(p.stat())) for p in files))


def _digest(path: Path) -> str:
    try:
        return xxhash.xxh3_128(path.read_bytes()).hexdigest()
    except IsADirectoryError:
        return "dir"


def load(recipes_dir: Path, cache_file: Path, parse: Callable[[Path], T]) -> T:
    """``parse(recipes_dir)``, or its result from the last run if no recipe file changed."""
    try:
        files = _scan(recipes_dir)
        engine = _engine_key()
    except OSError:
        return parse(recipes_dir)  # parse reports the missing directory
    cached = _read(cache_file)
    if cached is not None and cached["engine"] == engine and _same(recipes_dir, files, cached):
        return cached["value"]
    written = time.time_ns()
    # digests before parsing: a file edited meanwhile then differs from its digest next time
    try:
        entries = {rel: (key, _digest(recipes_dir / rel)) for rel, key in files.items()}
    except OSError:
        return parse(recipes_dir)
    value = parse(recipes_dir)  # raises on invalid recipes: nothing cached
    if _scan(recipes_dir) != files:  # changed while parsing: do not cache a mix
        return value
    with contextlib.suppress(OSError, pickle.PicklingError, TypeError, AttributeError):
        data = pickle.dumps(
            {"engine": engine, "files": entries, "written": written, "value": value},
            protocol=pickle.HIGHEST_PROTOCOL,
        )
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cache_file, data, fsync=False)  # a cache: losing it costs one parse
    return value


def _read(cache_file: Path) -> dict | None:
    try:
        with open(cache_file, "rb") as f:
            data = pickle.load(f)
    except Exception:  # noqa: BLE001 - missing, damaged, from another engine: parse again
        return None
    return data if isinstance(data, dict) and {"engine", "files", "value"} <= set(data) else None


def _same(recipes_dir: Path, files: dict[str, tuple], cached: dict) -> bool:
    old = cached["files"]
    if set(old) != set(files):
        return False
    racy_after = cached["written"] - RACY_NS
    for rel, key in files.items():
        old_key, digest = old[rel]
        if tuple(old_key) != key:
            return False
        if key[2] >= racy_after:
            try:
                if _digest(recipes_dir / rel) != digest:
                    return False
            except OSError:
                return False
    return True
