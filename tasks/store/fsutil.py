"""File-system primitives every module shares: atomic writes and deletes that never cross a
mount point (the Azure Linux toolkit bind-mounts the host's /dev under its build tree)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

MOUNTINFO = "/proc/self/mountinfo"


def atomic_write(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> None:
    """Write ``path`` so that it appears complete or not at all (``.part`` + rename)."""
    path = os.fspath(path)
    tmp = f"{path}.part{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if fsync:
        fsync_dir(os.path.dirname(path) or ".")


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as ``\\ooo``; nothing else."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def mount_points(mountinfo: str = MOUNTINFO) -> list[str]:
    """Every mount point of this process's namespace. Unreadable mountinfo is an error:
    without it no delete could be proven safe."""
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
            return [_unescape(line.split()[4]) for line in f if line.strip()]
    except OSError as e:
        raise MountedError(f"cannot read {mountinfo} ({e.strerror}): refusing to delete") from None


class MountedError(Exception):
    """A delete refused because something is mounted under the tree."""


def mounts_under(tree: str | os.PathLike, mountinfo: str = MOUNTINFO) -> list[str]:
    """The mount points at or below ``tree`` (resolved)."""
    top = os.path.realpath(tree)
    return sorted(
        m for m in mount_points(mountinfo) if m == top or m.startswith(top.rstrip("/") + "/")
    )


def safe_rmtree(tree: str | os.PathLike, mountinfo: str = MOUNTINFO) -> None:
    """``rm -rf tree``, refused (``MountedError``) if anything is mounted inside it, and never
    following symlinks out of it. A missing tree is fine."""
    tree = Path(tree)
    if not tree.exists() and not tree.is_symlink():
        return
    mounted = mounts_under(tree, mountinfo)
    if mounted:
        raise MountedError(
            f"refusing to delete {tree}: mounted inside it: {', '.join(mounted)} "
            "(unmount them first)"
        )
    if tree.is_symlink() or not tree.is_dir():
        tree.unlink()
        return

    # read-only or unreadable directories (as a non-root user) must become deletable first;
    # os.walk does not follow symlinks, and each directory is opened up before it is listed
    os.chmod(tree, 0o700)
    for dirpath, dirnames, _ in os.walk(tree):
        for d in dirnames:
            p = os.path.join(dirpath, d)
            if not os.path.islink(p):
                os.chmod(p, 0o700)
    shutil.rmtree(tree)
