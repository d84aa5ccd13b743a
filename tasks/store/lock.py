"""One writer per project: an ``fcntl.flock`` on ``cache/state/lock``.

Readers (``doit list``, ``doit info``) never take it. The first thing of a run that would
change anything takes it and holds it until the process exits: the reporter before the first
task, a build or clean action, the state backend's first write. A second ``doit`` that wants
to write while another holds it stops at once with a message naming the holder; it has
changed nothing by then. The kernel drops the lock when the holder dies, even by SIGKILL.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from pathlib import Path

_held: dict[str, int] = {}  # resolved state dir -> fd, for the life of the process


class LockedError(Exception):
    """Another process holds the project lock."""


def acquire(state_dir: Path) -> None:
    """Take the project lock (idempotent within a process); ``LockedError`` if it is held."""
    key = os.path.realpath(state_dir)
    if key in _held:
        return
    os.makedirs(key, exist_ok=True)
    path = os.path.join(key, "lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown process"
        os.close(fd)
        raise LockedError(
            f"another doit is working in this project ({holder}); wait for it to finish or "
            f"stop it, then run again. Lock: {path}"
        ) from None
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    note = f"pid {os.getpid()}, since {stamp}: {' '.join(sys.argv)}\n".encode()
    # written over, then cut to length: a truncation to zero first makes ext4 flush the file
    # when it is closed (its replace-by-truncate heuristic), tens of ms on every run
    os.pwrite(fd, note, 0)
    os.ftruncate(fd, len(note))
    _held[key] = fd


def held(state_dir: Path) -> bool:
    return os.path.realpath(state_dir) in _held


def release(state_dir: Path) -> None:
    """Give the lock back (tests; a normal run keeps it until exit)."""
    fd = _held.pop(os.path.realpath(state_dir), None)
    if fd is not None:
        os.close(fd)
