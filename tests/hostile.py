"""Hostile inputs made in bulk, for the fault suite (``test_faults.py``, ``bench_faults.py``):
tarballs that try to write outside their destination or to exhaust the machine, and recipes
broken in one field each."""

from __future__ import annotations

import io
import lzma
import random
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Hostile:
    kind: str  # the attack
    name: str  # file name of the archive
    data: bytes


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", data: bytes | None = None):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.mtime = kind, link, 0o644, 1_000_000_000
    if kind == tarfile.DIRTYPE:
        info.mode = 0o755
    return info, (data if data is not None else (b"x\n" if kind == tarfile.REGTYPE else None))


def _compress(raw: bytes, how: str) -> tuple[str, bytes]:
    if how == "gz":
        c = zlib.compressobj(6, zlib.DEFLATED, 31)
        return ".tar.gz", c.compress(raw) + c.flush()
    if how == "xz":
        return ".tar.xz", lzma.compress(raw)
    return ".tar", raw


def _escapes(rng: random.Random) -> dict[str, list]:
    """Member lists, by attack, for a top directory ``pkg``; randomised names and depths."""
    depth = "../" * rng.randint(1, 4)
    word = f"f{rng.randrange(10**6)}"
    d = rng.choice(["", "sub/", "a/b/"])
    return {
        "absolute path": [_member("pkg/ok"), _member(f"/tmp/{word}")],
        "'..' in a path": [_member("pkg/ok"), _member(f"pkg/{d}{depth}{word}")],
        "symlink then write through it": [
            _member(f"pkg/{d}{word}", tarfile.SYMTYPE, rng.choice([depth + "out", "/tmp"])),
            _member(f"pkg/{d}{word}/evil"),
        ],
        "symlink out, replaced by a file": [
            _member(f"pkg/{word}", tarfile.SYMTYPE, f"{depth}outside-{word}"),
            _member(f"pkg/{word}", data=b"overwrite\n"),
        ],
        "hard link outside": [
            _member(f"pkg/{word}", tarfile.LNKTYPE, rng.choice(["/etc/passwd", f"{depth}x"]))
        ],
        "character device": [_member(f"pkg/{d}{word}", tarfile.CHRTYPE)],
        "block device": [_member(f"pkg/{d}{word}", tarfile.BLKTYPE)],
        "fifo": [_member(f"pkg/{d}{word}", tarfile.FIFOTYPE)],
    }


def _repeat_gz(block: bytes, times: int) -> bytes:
    """gzip of ``block`` repeated ``times`` times, without holding the whole in memory."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = block * max(1, (1 << 20) // len(block))
    out, left = [], times
    per = len(chunk) // len(block)
    while left > 0:
        n = min(per, left)
        out.append(c.compress(chunk if n == per else block * n))
        left -= n
    return b"".join(out) + c.flush()


def bombs(size: int) -> Iterator[Hostile]:
    """A gzip of ``size`` zero bytes in one member, and ``size // 512`` empty members."""
    info, _ = _member("pkg/zeros")
    info.size = size
    header = info.tobuf(tarfile.GNU_FORMAT)
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    zero = bytes(1 << 20)
    parts = [c.compress(header)]
    for _ in range(size >> 20):
        parts.append(c.compress(zero))
    parts.append(c.compress(bytes(1024)) + c.flush())
    yield Hostile("gzip bomb", "bomb.tar.gz", b"".join(parts))
    empty, _ = _member("pkg/e", data=b"")
    block = empty.tobuf(tarfile.GNU_FORMAT)
    yield Hostile("huge member count", "members.tar.gz", _repeat_gz(block, size // len(block)))


def tarballs(count: int, seed: int = 0) -> Iterator[Hostile]:
    """``count`` hostile tarballs cycling through the escape attacks, with random names,
    depths and compressions (plain, gzip, xz)."""
    rng = random.Random(seed)
    kinds = sorted(_escapes(rng))
    for i in range(count):
        kind = kinds[i % len(kinds)]
        members = _escapes(rng)[kind]
        suffix, data = _compress(_tar(members), rng.choice(["", "gz", "xz"]))
        yield Hostile(kind, f"hostile-{i}{suffix}", data)
