"""Recipes parsed and validated once per change of the recipe files.

Every ``doit`` (a no-op, ``doit list``) needs the validated recipe set; parsing and checking
hundreds of TOML files is most of what a no-op spends in Python. ``RecipeCache.load`` returns
the result of the last successful load while nothing changed; ``save`` (called once the whole
project validated: a run stopped by a bad config writes nothing) keeps a new one in
``cache/state/recipes.cache`` (a pickle: the project's own cache, trusted like its
``dodo.py``) with the key it was made from:

- every file and directory under ``recipes/`` (patches and ``files/`` too: validation checks
  that they exist) with its stat key (``tasks.store.statkey``) and its content digest
  (xxh3), so an added, removed, renamed or edited file misses;
- the engine's own source files (``tasks/**/*.py``) by stat key, and the Python version, so a
  new engine never reuses recipes parsed by an old one.

A file whose stat key matches is trusted without reading it only if it is not racy
(``statkey.racy``, as git does with its index) against the moment the cache was made: an
edit in the same clock tick, with the same size, has the same stat key, so such a "racily
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

from tasks.store import inputs, statkey
from tasks.store.fsutil import atomic_write

T = TypeVar("T")
FORMAT = 2  # 2: tasks.store.statkey's field order
ENGINE = inputs.ENGINE


def scan(top: Path) -> dict[str, statkey.Key]:
    """Stat key of every file and directory under ``top`` (relative path -> key); each is
    an input of the plan (``tasks.store.inputs``), ``top`` too."""
    found: dict[str, statkey.Key] = {}
    inputs.listing(top)
    todo = [""]
    while todo:
        rel = todo.pop()
        with os.scandir(top / rel if rel else top) as it:
            for e in it:
                name = f"{rel}/{e.name}" if rel else e.name
                inputs.file(e.path)
                found[name] = statkey.of(e.stat(follow_symlinks=True))
                if e.is_dir(follow_symlinks=True):
                    todo.append(name)
    return found


def _engine_key() -> tuple:
    return (FORMAT, sys.version, tuple(inputs.engine_files().items()))


def _digest(path: Path) -> str:
    try:
        return xxhash.xxh3_128(path.read_bytes()).hexdigest()
    except IsADirectoryError:
        return "dir"


class RecipeCache:
    """The cache file of one project: ``load`` then, once everything validated, ``save``."""

    def __init__(self, cache_file: Path):
        self.cache_file = cache_file
        self._pending: dict | None = None

    def load(self, recipes_dir: Path, parse: Callable[[Path], T]) -> T:
        """``parse(recipes_dir)``, or its result from the last run if no file changed."""
        try:
            files = scan(recipes_dir)
            engine = _engine_key()
        except OSError:
            return parse(recipes_dir)  # parse reports the missing directory
        cached = _read(self.cache_file)
        if cached is not None and cached["engine"] == engine and _same(recipes_dir, files, cached):
            return cached["value"]
        written = time.time_ns()
        # digests before parsing: a file edited meanwhile then differs from its digest
        try:
            entries = {rel: (key, _digest(recipes_dir / rel)) for rel, key in files.items()}
        except OSError:
            return parse(recipes_dir)
        value = parse(recipes_dir)  # raises on invalid recipes: nothing to cache
        if scan(recipes_dir) == files:  # else changed while parsing: do not cache a mix
            self._pending = {"engine": engine, "files": entries, "written": written, "value": value}
        return value

    def save(self) -> None:
        """Write what ``load`` parsed (if it parsed), atomically; a failure costs a parse."""
        if self._pending is None:
            return
        with contextlib.suppress(OSError, pickle.PicklingError, TypeError, AttributeError):
            data = pickle.dumps(self._pending, protocol=pickle.HIGHEST_PROTOCOL)
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.cache_file, data, fsync=False)  # a cache: losing it costs a parse
        self._pending = None


def load(recipes_dir: Path, cache_file: Path, parse: Callable[[Path], T]) -> T:
    """Load and save at once (for callers that validate nothing more)."""
    cache = RecipeCache(cache_file)
    value = cache.load(recipes_dir, parse)
    cache.save()
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
    for rel, key in files.items():
        old_key, digest = old[rel]
        if tuple(old_key) != key:
            return False
        if statkey.racy(key, cached["written"]):
            try:
                if _digest(recipes_dir / rel) != digest:
                    return False
            except OSError:
                return False
    return True
