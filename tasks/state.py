"""Durable doit state: one JSON file per task, committed as soon as the task succeeds.

Stock doit keeps the run's records in memory and writes them once, at the end of the run, so
SIGTERM, SIGKILL or a power cut lose every task that finished in that run. This backend
(registered as the doit BACKEND plugin ``azl``) writes ``cache/state/tasks/<task>.json``
atomically (``.part`` + fsync + rename) when doit's ``Dependency.save_success`` stores the
``deps:`` key, which it always stores last, after the values, the result and every file_dep
state. A task killed mid-build has no new record and reruns; every finished task stays done.

It needs only ``json`` and ``os`` (the live-bootstrap guest's Python has no ``_sqlite3`` and no
``_dbm``). The first write takes the project lock (``tasks.lock``), so two ``doit`` runs never
interleave their state.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from tasks import lock
from tasks.fsutil import atomic_write

# Keys doit writes as the last step of an operation: commit the task's file then.
_COMMIT_KEYS = {"deps:", "ignore:"}


class TaskStateDB:
    """doit backend API: get / set / in_ / remove / remove_all / dump."""

    desc = "one JSON file per task, committed per task (survives SIGKILL)"

    def __init__(self, name: str, codec: Any, *, module_name: str | None = None):
        self.name = name  # the directory (doit's dep_file option)
        self.dir = Path(name) / "tasks"
        self.codec = codec
        self._cache: dict[str, dict[str, Any]] = {}
        self._dirty: set[str] = set()
        self._removed: set[str] = set()  # deleted on dump (a reader never writes)

    def _file(self, task_id: str) -> Path:
        return self.dir / (quote(task_id, safe="+-_.,=@") + ".json")

    def _load(self, task_id: str) -> dict[str, Any]:
        if task_id not in self._cache:
            try:
                with open(self._file(task_id)) as f:
                    self._cache[task_id] = self.codec.decode(f.read())
            except FileNotFoundError:
                self._cache[task_id] = {}
            except (ValueError, UnicodeDecodeError) as e:  # truncated or garbage: not trusted
                sys.stderr.write(
                    f"azl-bootstrap: damaged state file {self._file(task_id)} ({e}): ignored, "
                    f"{task_id} is checked again as if it had never run\n"
                )
                self._cache[task_id] = {}
        return self._cache[task_id]

    def get(self, task_id: str, dependency: str) -> Any:
        return self._load(task_id).get(dependency)

    def set(self, task_id: str, dependency: str, value: Any) -> None:
        self._load(task_id)[dependency] = value
        self._dirty.add(task_id)
        if dependency in _COMMIT_KEYS:
            self._commit(task_id)

    def in_(self, task_id: str) -> bool:
        return bool(self._load(task_id))

    def remove(self, task_id: str) -> None:
        self._cache[task_id] = {}
        self._dirty.discard(task_id)
        self._removed.add(task_id)

    def remove_all(self) -> None:
        self._removed.update(self.task_ids())
        self._removed.update(self._cache)
        self._cache = {t: {} for t in self._removed}
        self._dirty.clear()

    def dump(self) -> None:
        for task_id in sorted(self._dirty):
            self._commit(task_id)
        if self._removed:
            _lock(Path(self.name))
        for task_id in sorted(self._removed):
            with contextlib.suppress(FileNotFoundError):
                self._file(task_id).unlink()
        self._removed.clear()

    def _commit(self, task_id: str) -> None:
        _lock(Path(self.name))
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self._file(task_id), self.codec.encode(self._cache[task_id]).encode())
        self._dirty.discard(task_id)
        self._removed.discard(task_id)

    def task_ids(self) -> list[str]:
        """Tasks with a stored record (for tools and tests)."""
        if not self.dir.is_dir():
            return []
        return sorted(unquote(p.name[: -len(".json")]) for p in self.dir.glob("*.json"))


def _lock(state_dir: Path) -> None:
    """Writers take the project lock; ``doit forget``/``ignore`` while another doit runs
    stop with its one-line message instead of a traceback."""
    try:
        lock.acquire(state_dir)
    except lock.LockedError as e:
        raise SystemExit(f"azl-bootstrap: {e}") from None


def read_record(state_dir: str | os.PathLike, task_id: str) -> dict[str, Any]:
    """The stored record of one task ({} if none)."""
    db = TaskStateDB(os.fspath(state_dir), codec=_JSON())
    return db._load(task_id)


class _JSON:
    def encode(self, data: Any) -> str:
        return json.dumps(data, sort_keys=True)

    def decode(self, text: str) -> Any:
        return json.loads(text)
