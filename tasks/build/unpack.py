"""Safe tar extraction: no member can write, link or point outside its destination.

The compression is detected from the magic bytes (gzip, xz, bzip2, zstd or a plain tar).
Python's ``gzip``/``lzma``/``bz2`` modules are used when importable; otherwise, and always
for zstd, the archive is piped through the external ``<tool> -dc``. The tar is read as a
stream and extracted member by member by our own code: only regular files, directories,
symlinks and hard links are allowed, and each is checked before anything is written.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import os
import posixpath
import shutil
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from types import ModuleType
from typing import IO, Any

# magic bytes -> (format, Python module, external decompressor)
_MAGIC = (
    (b"\x1f\x8b", "gzip", "gzip", "gzip"),
    (b"\xfd7zXZ\x00", "xz", "lzma", "xz"),
    (b"BZh", "bzip2", "bz2", "bzip2"),
    (b"\x28\xb5\x2f\xfd", "zstd", None, "zstd"),
)


class UnsafeArchive(Exception):
    """Raised when an archive member would escape the destination or is of a forbidden type.

    The message names the archive and the member.
    """


class UnpackError(Exception):
    """Any other failure: not a tar, corrupt data, a failing decompressor, an I/O error."""


def _module(name: str | None) -> ModuleType | None:
    """The module `name`, or None when it is unavailable (e.g. Python built without bz2)."""
    try:
        return importlib.import_module(name) if name else None
    except ImportError:
        return None


# What reading a corrupt archive may raise (BadGzipFile and bz2 errors are OSErrors).
_READ_ERRORS: tuple[type[BaseException], ...] = (tarfile.TarError, EOFError, OSError) + tuple(
    getattr(m, e) for m, e in ((_module("zlib"), "error"), (_module("lzma"), "LZMAError")) if m
)


@contextlib.contextmanager
def _decompressed(archive: str) -> Iterator[IO[bytes]]:
    """Yield the archive's tar bytes as a readable stream."""
    with open(archive, "rb") as f:
        head = f.read(8)
    found = [m for m in _MAGIC if head.startswith(m[0])]
    if not found:
        with open(archive, "rb") as f:
            yield f
        return
    _, fmt, module_name, tool = found[0]
    module = _module(module_name)
    if module is not None:
        opener = {"gzip": "GzipFile", "xz": "LZMAFile", "bzip2": "BZ2File"}[fmt]
        with getattr(module, opener)(archive, "rb") as f:
            yield f
        return
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(
                [tool, "-dc", "--", archive], stdout=subprocess.PIPE, stderr=err
            )
        except OSError as e:
            raise UnpackError(f"{archive}: cannot run {tool!r} to decompress {fmt}: {e}") from e
        assert proc.stdout is not None
        failure: Exception | None = None
        try:
            try:
                yield proc.stdout
            except UnsafeArchive:
                raise
            except Exception as e:
                failure = e  # perhaps the decompressor's fault: let it finish and see
            while proc.stdout.read(1 << 16):  # the rest, e.g. the padding after the tar
                pass
        except BaseException:
            proc.kill()
            raise
        finally:
            proc.stdout.close()
            returncode = proc.wait()
        if returncode != 0:
            err.seek(0)
            msg = err.read().decode(errors="replace").strip()
            raise UnpackError(f"{archive}: {tool} -dc failed ({returncode}): {msg}") from failure
        if failure is not None:
            raise failure


def _open_tar(archive: str, stream: IO[bytes]) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=stream, mode="r|")
    except _READ_ERRORS as e:
        raise UnpackError(f"{archive}: not a tar archive ({e})") from e


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def _kind(st_mode: int) -> str:
    if stat.S_ISDIR(st_mode):
        return "directory"
    if stat.S_ISLNK(st_mode):
        return "symlink"
    return "file" if stat.S_ISREG(st_mode) else "special file"


def _relname(archive: str, name: str, strip: int) -> str | None:
    """The member path relative to dest after stripping, None to skip; reject unsafe names."""
    if name.startswith("/"):
        raise UnsafeArchive(f"{archive}: member {name!r} has an absolute path")
    parts = [p for p in name.split("/") if p]
    if ".." in parts:
        raise UnsafeArchive(f"{archive}: member {name!r} contains '..'")
    # Like GNU tar, a leading "." counts as a component: "./pkg/a" stripped of 1 is "pkg/a".
    return "/".join(p for p in parts[strip:] if p != ".") or None


# A decompression bomb (a gzip of zeros, millions of empty members): the tar stream may not
# grow past BOMB_RATIO times the archive's size, nor past BOMB_FLOOR for a small archive.
# Real source tarballs expand 3 to 15 times.
BOMB_RATIO = 100
BOMB_FLOOR = 256 << 20
MAX_MEMBERS = 1_000_000  # the Linux kernel has under 100 000


class _Budget:
    """A read-only stream that refuses to deliver more than ``limit`` bytes."""

    def __init__(self, stream: IO[bytes], archive: str, limit: int) -> None:
        self.stream, self.archive, self.limit, self.total = stream, archive, limit, 0

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.total += len(data)
        if self.total > self.limit:
            raise UnsafeArchive(
                f"{self.archive}: expands to more than {self.limit} bytes of tar, over "
                f"{BOMB_RATIO} times its size: a decompression bomb, not a source archive"
            )
        return data


def unpack(
    archive: str | os.PathLike, dest: str | os.PathLike, strip_components: int = 0
) -> list[str]:
    """Extract `archive` into directory `dest` (created if missing) safely.

    Return the sorted list of extracted member paths (relative to dest, after stripping).
    Raises ``UnsafeArchive`` for a dangerous member or a decompression bomb (``BOMB_RATIO``)
    and ``UnpackError`` for anything else (a full disk names the destination); on error,
    dest is left as it is for the caller to delete.
    """
    archive, dest = os.fspath(archive), os.fspath(dest)
    os.makedirs(dest, exist_ok=True)
    ex = _Extractor(archive, os.path.realpath(dest), strip_components)
    limit = max(BOMB_FLOOR, BOMB_RATIO * os.path.getsize(archive))
    with _decompressed(archive) as raw:
        budget: Any = _Budget(raw, archive, limit)
        with _open_tar(archive, budget) as tar:
            try:
                for count, member in enumerate(tar, 1):
                    if count > MAX_MEMBERS:
                        raise UnsafeArchive(f"{archive}: more than {MAX_MEMBERS} members")
                    ex.extract(tar, member)
            except _READ_ERRORS as e:
                raise UnpackError(f"{archive}: corrupt or truncated archive ({e})") from e
    for rel, (mode, mtime) in ex.dirs.items():  # last, so that no later write changes them
        path = os.path.join(ex.root, rel)
        os.chmod(path, mode)
        os.utime(path, (mtime, mtime), follow_symlinks=False)
    return sorted(ex.done)


class _Extractor:
    """Checks and writes members one by one below `root` (already a realpath)."""

    def __init__(self, archive: str, root: str, strip: int) -> None:
        self.archive, self.root, self.strip = archive, root, strip
        self.done: set[str] = set()
        self.dirs: dict[str, tuple[int, float]] = {}

    def extract(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        rel = _relname(self.archive, member.name, self.strip)
        if rel is None:
            return
        what = f"{self.archive}: member {member.name!r}"
        if member.isdir():
            kind = "directory"
        elif member.issym():
            kind = "symlink"
        elif member.isreg() or member.islnk():
            kind = "file"
        else:
            raise UnsafeArchive(f"{what}: forbidden member type {member.type!r}")
        path = os.path.join(self.root, rel)
        parent = os.path.dirname(path)
        if not _inside(os.path.realpath(parent), self.root):
            raise UnsafeArchive(f"{what}: its directory resolves outside the destination")
        try:
            os.makedirs(parent, exist_ok=True)
            have = _kind(os.lstat(path).st_mode) if os.path.lexists(path) else None
            if have not in (None, kind):
                raise UnsafeArchive(f"{what}: would replace an existing {have} with a {kind}")
            if member.isdir():
                if have is None:
                    os.mkdir(path, 0o700)
                self.dirs[rel] = ((member.mode & 0o755) | 0o700, member.mtime)
            elif member.issym():
                self._symlink(what, member.linkname, rel, path, replace=have is not None)
            elif member.islnk():
                self._hardlink(what, member.linkname, path, replace=have is not None)
            else:
                self._file(tar, member, path, replace=have is not None)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise UnpackError(f"{what}: no space left on the device of {self.root}") from e
            raise UnpackError(f"{what}: {e}") from e
        self.done.add(rel)

    def _symlink(self, what: str, target: str, rel: str, path: str, replace: bool) -> None:
        lexical = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
        real = os.path.realpath(os.path.join(os.path.dirname(path), target))
        if (
            not target
            or target.startswith("/")
            or lexical == ".."
            or lexical.startswith("../")
            or not _inside(real, self.root)
        ):
            raise UnsafeArchive(f"{what}: symlink target {target!r} leaves the destination")
        if replace:
            os.unlink(path)
        os.symlink(target, path)

    def _hardlink(self, what: str, target: str, path: str, replace: bool) -> None:
        try:
            rel = _relname(self.archive, target, self.strip)
        except UnsafeArchive:
            rel = None
        src = os.path.join(self.root, rel or "")
        if (
            rel not in self.done
            or not _inside(os.path.realpath(src), self.root)
            or not stat.S_ISREG(os.lstat(src).st_mode)
        ):
            raise UnsafeArchive(f"{what}: hard link target {target!r} is not an extracted file")
        if replace and os.path.samefile(src, path):
            return
        if replace:
            os.unlink(path)
        os.link(src, path, follow_symlinks=False)

    def _file(
        self, tar: tarfile.TarFile, member: tarfile.TarInfo, path: str, replace: bool
    ) -> None:
        if replace:  # a duplicate member replaces the file; it never writes through a link
            os.unlink(path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with os.fdopen(os.open(path, flags, 0o600), "wb") as out:
            data = tar.extractfile(member)
            if data is not None:
                shutil.copyfileobj(data, out, 1 << 20)
            out.flush()
            os.fchmod(out.fileno(), (member.mode & 0o755) | 0o600)
            os.utime(out.fileno(), (member.mtime, member.mtime))
