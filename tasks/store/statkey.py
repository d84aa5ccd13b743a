"""The one stat key of the project, and the one racy rule that says when it can be trusted.

A file's stat key is ``(mtime_ns, ctime_ns, size, inode)``. Every write changes the ctime,
which ``touch`` and ``utime`` cannot set back, and a replaced file has a new inode, so an
equal key means an unchanged file — except within one clock tick of the write (git's "racy
index" rule): a file changed in the same tick as the moment its key was taken keeps its key.
So a key is trusted only if the file's times are older than that moment by ``window``: a
tenth of a second (file times lag the clock by at most one tick, <= 10 ms), or two seconds
on a file system with whole-second (or FAT's two-second) times.

Used by the checker's state (``tasks.store.checker``), the mirror's "verified" record
(``tasks.sources.mirror``), the recipe cache, the journal's read cache and the no-op stamp
(``tasks.store.inputs``, ``tasks.engine.noop``): one field order, one rule.
"""

from __future__ import annotations

import os

Key = tuple[int, int, int, int]  # (mtime_ns, ctime_ns, size, inode)

RACY_NS = 100_000_000  # file times lag the clock by at most a tick (<= 10 ms): ample margin
COARSE_RACY_NS = 2_000_000_000  # whole-second (or FAT's two-second) file times
_SECOND = 1_000_000_000


def of(st: os.stat_result) -> Key:
    """The stat key of a ``stat`` (or ``fstat``, ``lstat``, ``DirEntry.stat``) result."""
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


def of_path(path: str | os.PathLike[str]) -> Key | None:
    """The stat key of ``path`` (symbolic links followed); None if it does not exist."""
    try:
        return of(os.stat(path))
    except OSError:
        return None


def window(key: Key | list[int]) -> int:
    """How long after a file's times its key stays racy (see the module's docstring)."""
    coarse = key[0] % _SECOND == 0 and key[1] % _SECOND == 0
    return COARSE_RACY_NS if coarse else RACY_NS


def racy(key: Key | list[int] | None, taken_ns: int) -> bool:
    """Whether ``key``, taken at ``taken_ns`` (``time.time_ns()`` before the stat), may miss
    a change: the file's mtime or ctime is within the racy window of that moment (or later).
    An absent file (None) is never racy: its creation makes a key."""
    if key is None:
        return False
    return max(key[0], key[1]) >= taken_ns - window(key)
