"""Durable doit state: one append-only journal, a record committed per task as it succeeds.

Stock doit keeps the run's records in memory and writes them once, at the end of the run, so
SIGTERM, SIGKILL or a power cut lose every task that finished in that run. This backend
(registered as the doit BACKEND plugin ``azl``) appends the task's whole record to
``cache/state/journal`` and ``fdatasync``s it when doit's ``Dependency.save_success`` stores
the ``deps:`` key, which it always stores last, after the values, the result and every
file_dep state. A task killed mid-build has no new record and reruns; every finished task
stays done. A record equal to the one on disk (an up-to-date group task, a task that ran and
changed nothing) is not written at all.

The journal is read in one go (a no-op reads one file, not one per task). One line per
record, ``<crc32> <json [task, record-or-null]>``; the last line for a task wins and ``null``
forgets it. A line cut short by a crash or a power cut is only ever the last one (each commit
is one ``write`` then ``fdatasync``): it is ignored and cut off by the next commit. A bad line
followed by good ones is damage: it is skipped with one line on stderr naming the file and
line (never trusted, never a traceback), the records around it stand. When superseded lines
outnumber live ones the writer rewrites the journal (``.part`` + fsync + rename), like
Ninja's ``.ninja_log``. Per-task JSON files of older versions (``cache/state/tasks/``) are
read once and folded into the journal at the first commit.

It needs only ``json``, ``zlib`` and ``os`` (the live-bootstrap guest's Python has no
``_sqlite3`` and no ``_dbm``). The first write takes the project lock (``tasks.store.lock``), so two
``doit`` runs never interleave their state.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from tasks.store import inputs, lock, statkey
from tasks.store.fsutil import atomic_write, fsync_dir

JOURNAL = "journal"
# Keys doit writes as the last step of an operation: commit the task's record then.
_COMMIT_KEYS = {"deps:", "ignore:"}
COMPACT_MIN_LINES = 256  # below this a journal is never rewritten


def _encode(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _line(task_id: str, record: dict[str, Any] | None) -> bytes:
    body = _encode([task_id, record]).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


_Journal = tuple[dict[str, dict[str, Any]], int, int, bool]
_read_cache: dict[str, tuple[tuple[int, ...], _Journal]] = {}  # path -> (stat key, journal)


def read_journal(path: Path) -> _Journal:
    """``(records, lines, good_length, damaged)``: the live record of each task, the number
    of valid lines, the byte length up to the end of the last valid one (a torn tail is
    beyond) and whether damaged lines were skipped. Parsed once per process while the file
    is unchanged (the loader and the backend share it); the records must not be mutated."""
    inputs.file(path)  # what every task's up-to-date check reads
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            key = statkey.of(st)
            hit = _read_cache.get(str(path))
            if hit is not None and hit[0] == key:
                return hit[1]
            data = f.read()
    except FileNotFoundError:
        return {}, 0, 0, False
    result = _parse_journal(path, data)
    _read_cache[str(path)] = (key, result)
    return result


def damaged_reads() -> bool:
    """Whether a journal read in this process skipped damaged lines (its warning is then
    due on every run until a writer rewrites it: ``tasks.engine.noop`` writes no stamp)."""
    return any(journal[3] for _, journal in _read_cache.values())


def _parse_journal(path: Path, data: bytes) -> _Journal:
    records: dict[str, dict[str, Any]] = {}
    lines = good = 0
    bad: list[int] = []  # line numbers of bad lines not yet followed by a good one
    damaged = False
    for number, entry, end in _entries(data):
        if entry is None:
            bad.append(number)
            continue
        if bad:  # not a torn tail: damage in the middle
            sys.stderr.write(
                f"azl-bootstrap: damaged state journal {path}: line(s) "
                f"{', '.join(map(str, bad))} ignored; their tasks are checked by their "
                "earlier records or as if they had never run\n"
            )
            bad, damaged = [], True
        task_id, record = entry
        if record is None:
            records.pop(task_id, None)
        else:
            records[task_id] = record
        lines += 1
        good = end
    return records, lines, good, damaged


_Entry = tuple[str, dict[str, Any] | None]


def _entries(data: bytes) -> list[tuple[int, _Entry | None, int]]:
    """``(line number, entry or None if bad, end offset)`` per line; the lines whose crc
    holds are decoded in one ``json.loads`` (one call, not one per line)."""
    lines: list[tuple[int, bytes | None, int]] = []
    pos = number = 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        number += 1
        if end < 0:  # no newline: a torn tail
            lines.append((number, None, len(data)))
            break
        crc, _, body = data[pos:end].partition(b" ")
        try:
            ok = len(crc) == 8 and int(crc, 16) == zlib.crc32(body)
        except ValueError:
            ok = False
        lines.append((number, body if ok else None, end + 1))
        pos = end + 1
    bodies = [b for _, b, _ in lines if b is not None]
    try:
        decoded = iter(json.loads(b"[" + b",".join(bodies) + b"]"))
    except ValueError:  # a body with a good crc that is not JSON: decode one by one
        decoded = iter(_loads(b) for b in bodies)
    return [(n, _entry(next(decoded)) if b is not None else None, e) for n, b, e in lines]


def _loads(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _entry(value: Any) -> _Entry | None:
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)):
        return None
    if value[1] is not None and not isinstance(value[1], dict):
        return None
    return value[0], value[1]


def _legacy(tasks_dir: Path) -> dict[str, dict[str, Any]]:
    """The per-task JSON files of versions before the journal."""
    records = {}
    for p in sorted(tasks_dir.glob("*.json")):
        task_id = unquote(p.name[: -len(".json")])
        try:
            records[task_id] = json.loads(p.read_text())
        except (ValueError, UnicodeDecodeError) as e:  # truncated or garbage: not trusted
            sys.stderr.write(
                f"azl-bootstrap: damaged state file {p} ({e}): ignored, "
                f"{task_id} is checked again as if it had never run\n"
            )
    return records


class TaskStateDB:
    """doit backend API: get / set / in_ / remove / remove_all / dump."""

    desc = "one append-only journal, a record committed per task (survives SIGKILL)"

    def __init__(self, name: str, codec: Any = None, *, module_name: str | None = None):
        self.name = name  # the directory (doit's dep_file option)
        self.path = Path(name) / JOURNAL
        self.legacy_dir = Path(name) / "tasks"
        self._loaded = False
        self._disk: dict[str, dict[str, Any]] = {}  # what the journal holds now
        self._cache: dict[str, dict[str, Any]] = {}  # records touched in this process
        self._dirty: set[str] = set()
        self._removed: set[str] = set()  # forgotten on dump (a reader never writes)
        self._lines = 0
        self._good = 0  # bytes of the journal up to its last valid line
        self._legacy = False  # records came from per-task files: write them all first
        self._fd: int | None = None
        self._damaged = False  # skipped damaged lines: the next writer rewrites the journal
        self._mutex = threading.Lock()

    def _read(self) -> None:
        if self._loaded:
            return
        self._disk, self._lines, self._good, self._damaged = read_journal(self.path)
        if not self.path.exists() and inputs.listing(self.legacy_dir).is_dir():
            self._disk, self._legacy = _legacy(self.legacy_dir), True
        self._loaded = True

    def _load(self, task_id: str) -> dict[str, Any]:
        record = self._cache.get(task_id)
        if record is None:
            self._read()
            record = self._cache[task_id] = dict(self._disk.get(task_id, {}))
        return record

    def get(self, task_id: str, dependency: str) -> Any:
        record = self._cache.get(task_id)
        if record is None:  # the common case of a no-op: read, never copy
            self._read()
            record = self._disk.get(task_id, {})
        return record.get(dependency)

    def set(self, task_id: str, dependency: str, value: Any) -> None:
        self._load(task_id)[dependency] = value
        self._dirty.add(task_id)
        if dependency in _COMMIT_KEYS:
            self._commit([task_id])

    def in_(self, task_id: str) -> bool:
        if task_id in self._cache:
            return bool(self._cache[task_id])
        self._read()
        return bool(self._disk.get(task_id))

    def remove(self, task_id: str) -> None:
        self._cache[task_id] = {}
        self._dirty.discard(task_id)
        self._removed.add(task_id)

    def remove_all(self) -> None:
        self._read()
        self._removed.update(self._disk)
        self._removed.update(self._cache)
        self._cache = {t: {} for t in self._removed}
        self._dirty.clear()

    def dump(self) -> None:
        if self._removed:
            self._read()
        todo = sorted(self._dirty | {t for t in self._removed if t in self._disk})
        if todo:
            self._commit(todo)
        self._removed.clear()
        wrote = self._fd is not None  # this process wrote (and holds the lock)
        superseded = self._lines >= COMPACT_MIN_LINES and self._lines > 2 * len(self._disk)
        if wrote and (superseded or self._damaged):
            self._compact(self._disk)
            self._damaged = False
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _commit(self, task_ids: list[str]) -> None:
        """Append the records of ``task_ids`` that differ from the journal's; one write and
        one fdatasync for all of them."""
        with self._mutex:
            self._read()
            out, changed = [], {}
            for t in task_ids:
                record = self._cache.get(t, {}) or None
                if record == self._disk.get(t) or _same(record, self._disk.get(t)):
                    continue
                out.append(_line(t, record))
                changed[t] = record
            if out or self._legacy:
                _lock(Path(self.name))  # refused: nothing changed, the next dump tries again
                disk = dict(self._disk)
                for t, record in changed.items():
                    if record is None:
                        disk.pop(t, None)
                    else:
                        disk[t] = json.loads(_encode(record))  # as a reader will see it
                if self._legacy:
                    self._compact(disk)
                    self._legacy = False
                else:
                    self._append(b"".join(out))  # a failed write changes nothing here
                    self._lines += len(out)
                self._disk = disk
            self._dirty.difference_update(task_ids)
            self._removed.difference_update(task_ids)

    def _append(self, data: bytes) -> None:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            new = not self.path.exists()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            os.ftruncate(self._fd, self._good)  # cut a torn tail off
            if new:
                fsync_dir(self.path.parent)
        os.lseek(self._fd, self._good, os.SEEK_SET)
        os.write(self._fd, data)
        os.fdatasync(self._fd)
        self._good += len(data)

    def _compact(self, disk: dict[str, dict[str, Any]]) -> None:
        """Rewrite the journal as ``disk``, one line per live task (atomically, durably)."""
        data = b"".join(_line(t, r) for t, r in sorted(disk.items()))
        atomic_write(self.path, data)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._lines, self._good = len(disk), len(data)
        if self.legacy_dir.is_dir():
            shutil.rmtree(self.legacy_dir)

    def task_ids(self) -> list[str]:
        """Tasks with a stored record (for tools and tests)."""
        self._read()
        return sorted(t for t, r in self._disk.items() if r)


def _same(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Equal once stored (doit gives tuples where the journal gives back lists)."""
    return a is not None and b is not None and _encode(a) == _encode(b)


def _lock(state_dir: Path) -> None:
    """Writers take the project lock; ``doit forget``/``ignore`` while another doit runs
    stop with its one-line message instead of a traceback."""
    try:
        lock.acquire(state_dir)
    except lock.LockedError as e:
        raise SystemExit(f"azl-bootstrap: {e}") from None


def read_record(state_dir: str | os.PathLike, task_id: str) -> dict[str, Any]:
    """The stored record of one task ({} if none)."""
    db = TaskStateDB(os.fspath(state_dir))
    db._read()
    return dict(db._disk.get(task_id, {}))


def recorded_seconds(state_dir: str | os.PathLike) -> dict[str, float]:
    """How long each task's last successful run took (the ``seconds`` its action stored)."""
    db = TaskStateDB(os.fspath(state_dir))
    db._read()
    out = {}
    for task_id, record in db._disk.items():
        seconds = (record.get("_values_:") or {}).get("seconds")
        if isinstance(seconds, int | float):
            out[task_id] = float(seconds)
    return out
