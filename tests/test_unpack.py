"""Tests for tasks.build.unpack: formats, stripping, metadata and every rejection case."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tasks.build.unpack import UnpackError, UnsafeArchive, unpack

REPO = Path(__file__).resolve().parents[1]
T0 = 1_000_000_000  # a fixed, old mtime

COMPRESSORS = {  # format -> argv that compresses stdin to stdout
    "plain": None,
    "gzip": ["gzip", "-c"],
    "bzip2": ["bzip2", "-c"],
    "xz": ["xz", "-c"],
    "zstd": ["zstd", "-q", "-c"],
}


def compress(tar_path: Path, fmt: str, out: Path) -> Path:
    """Compress `tar_path` with the real binary into `out` (a name that tells nothing)."""
    if COMPRESSORS[fmt] is None:
        shutil.copyfile(tar_path, out)
    else:
        with open(tar_path, "rb") as src, open(out, "wb") as dst:
            subprocess.run(COMPRESSORS[fmt], stdin=src, stdout=dst, check=True)
    return out


def make_source_tree(top: Path) -> None:
    """An autotools-like tree: configure newer than configure.ac, an executable, links."""
    (top / "sub").mkdir(parents=True)
    (top / "configure.ac").write_text("AC_INIT\n")
    (top / "configure").write_text("#!/bin/sh\necho configured\n")
    (top / "configure").chmod(0o755)
    (top / "sub" / "data.txt").write_bytes(os.urandom(200_000))
    (top / "README").symlink_to("sub/data.txt")
    os.link(top / "configure.ac", top / "configure.ac.orig")
    os.utime(top / "configure.ac", (T0, T0))
    os.utime(top / "configure", (T0 + 100, T0 + 100))
    os.utime(top / "sub" / "data.txt", (T0 + 50, T0 + 50))
    os.utime(top / "sub", (T0 + 200, T0 + 200))
    os.utime(top, (T0 + 300, T0 + 300))


@pytest.fixture
def gnu_tar(tmp_path: Path) -> Path:
    """A plain tar of pkg-1.0/ made by the real GNU tar."""
    make_source_tree(tmp_path / "src" / "pkg-1.0")
    out = tmp_path / "pkg.tar"
    subprocess.run(["tar", "-cf", out, "-C", tmp_path / "src", "pkg-1.0"], check=True)
    return out


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **attrs) -> tuple:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mtime = attrs.pop("mtime", T0)
    info.mode = attrs.pop("mode", 0o755 if kind == tarfile.DIRTYPE else 0o644)
    for key, value in attrs.items():
        setattr(info, key, value)
    if kind in (tarfile.REGTYPE, tarfile.AREGTYPE):
        info.size = len(data)
    return info, data


def make_tar(path: Path, *members: tuple, compression: str = "") -> Path:
    with tarfile.open(path, "w:" + compression, format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- formats -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", sorted(COMPRESSORS))
def test_every_compression_format_by_magic(tmp_path: Path, gnu_tar: Path, fmt: str) -> None:
    archive = compress(gnu_tar, fmt, tmp_path / "archive.bin")
    dest = tmp_path / "dest"
    names = unpack(archive, dest)
    assert names == [
        "pkg-1.0",
        "pkg-1.0/README",
        "pkg-1.0/configure",
        "pkg-1.0/configure.ac",
        "pkg-1.0/configure.ac.orig",
        "pkg-1.0/sub",
        "pkg-1.0/sub/data.txt",
    ]
    top, src = dest / "pkg-1.0", tmp_path / "src" / "pkg-1.0"
    assert digest(top / "sub" / "data.txt") == digest(src / "sub" / "data.txt")
    assert os.readlink(top / "README") == "sub/data.txt"
    assert os.path.samefile(top / "configure.ac", top / "configure.ac.orig")


@pytest.mark.parametrize("compression", ["", "gz", "bz2", "xz"])
def test_python_tarfile_archives(tmp_path: Path, compression: str) -> None:
    archive = make_tar(
        tmp_path / "a.tar",
        member("d", tarfile.DIRTYPE),
        member("d/f", data=b"x"),
        compression=compression,
    )
    assert unpack(archive, tmp_path / "dest") == ["d", "d/f"]
    assert (tmp_path / "dest" / "d" / "f").read_bytes() == b"x"


def unpack_without(module: str, archive: Path, dest: Path) -> subprocess.CompletedProcess:
    """Run unpack in a Python where `module` cannot be imported."""
    code = (
        "import sys\n"
        f"sys.modules[{module!r}] = None\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from tasks.build.unpack import unpack\n"
        f"try:\n    import {module}\nexcept ImportError:\n    pass\n"
        "else:\n    raise SystemExit('module not hidden')\n"
        "print('\\n'.join(unpack(sys.argv[1], sys.argv[2])))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, archive, dest], capture_output=True, text=True
    )


@pytest.mark.parametrize(("module", "fmt"), [("bz2", "bzip2"), ("lzma", "xz"), ("gzip", "gzip")])
def test_external_decompressor_when_module_is_missing(
    tmp_path: Path, gnu_tar: Path, module: str, fmt: str
) -> None:
    archive = compress(gnu_tar, fmt, tmp_path / "pkg.tar.x")
    dest = tmp_path / "dest"
    out = unpack_without(module, archive, dest)
    assert out.returncode == 0, out.stderr
    assert "pkg-1.0/sub/data.txt" in out.stdout.split()
    assert digest(dest / "pkg-1.0/sub/data.txt") == digest(tmp_path / "src/pkg-1.0/sub/data.txt")
    assert os.stat(dest / "pkg-1.0" / "configure").st_mtime == T0 + 100
    assert os.stat(dest / "pkg-1.0" / "sub").st_mtime == T0 + 200


def test_truncated_bz2_without_module(tmp_path: Path, gnu_tar: Path) -> None:
    archive = compress(gnu_tar, "bzip2", tmp_path / "pkg.tar.bz2")
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    out = unpack_without("bz2", archive, tmp_path / "dest")
    assert out.returncode != 0
    assert "UnpackError" in out.stderr
    assert "pkg.tar.bz2: bzip2 -dc failed" in out.stderr


def test_failing_external_decompressor_names_archive(tmp_path: Path, gnu_tar: Path) -> None:
    archive = compress(gnu_tar, "zstd", tmp_path / "pkg.tar.zst")
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnpackError, match=r"pkg\.tar\.zst.*zstd"):
        unpack(archive, tmp_path / "dest")


def test_missing_external_decompressor(
    tmp_path: Path, gnu_tar: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = compress(gnu_tar, "zstd", tmp_path / "pkg.tar.zst")
    monkeypatch.setenv("PATH", str(tmp_path / "no-such-dir"))
    with pytest.raises(UnpackError, match=r"pkg\.tar\.zst: cannot run 'zstd'"):
        unpack(archive, tmp_path / "dest")


def test_trailing_garbage_fails_external_decompressor(tmp_path: Path, gnu_tar: Path) -> None:
    archive = compress(gnu_tar, "zstd", tmp_path / "pkg.tar.zst")
    with open(archive, "ab") as f:
        f.write(b"garbage after the frame" * 100)
    with pytest.raises(UnpackError, match=r"pkg\.tar\.zst: zstd -dc failed"):
        unpack(archive, tmp_path / "dest")


def test_truncated_gzip_names_archive(tmp_path: Path, gnu_tar: Path) -> None:
    archive = compress(gnu_tar, "gzip", tmp_path / "pkg.tar.gz")
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnpackError, match=r"pkg\.tar\.gz"):
        unpack(archive, tmp_path / "dest")


@pytest.mark.parametrize("content", [b"", b"hello, this is not a tarball\n" * 40])
def test_not_a_tar_archive(tmp_path: Path, content: bytes) -> None:
    archive = tmp_path / "notes.tar"
    archive.write_bytes(content)
    with pytest.raises(UnpackError, match=r"notes\.tar: not a tar archive"):
        unpack(archive, tmp_path / "dest")


def test_compressed_non_tar(tmp_path: Path) -> None:
    text = tmp_path / "notes"
    text.write_text("just text\n" * 100)
    archive = compress(text, "xz", tmp_path / "notes.tar.xz")
    with pytest.raises(UnpackError, match=r"notes\.tar\.xz: not a tar archive"):
        unpack(archive, tmp_path / "dest")


# --- strip_components, metadata, duplicates --------------------------------------------------


def test_strip_components(tmp_path: Path) -> None:
    archive = make_tar(
        tmp_path / "a.tar",
        member("TOPFILE", data=b"dropped"),
        member("pkg-1.0", tarfile.DIRTYPE),
        member("pkg-1.0/a", data=b"a"),
        member("pkg-1.0/sub/b", data=b"b"),
        member("pkg-1.0/h", tarfile.LNKTYPE, linkname="pkg-1.0/a"),
        member("./pkg-1.0/c", data=b"c"),  # "." counts as a component, as in GNU tar
    )
    dest = tmp_path / "one"
    assert unpack(archive, dest, strip_components=1) == ["a", "h", "pkg-1.0/c", "sub/b"]
    assert not (dest / "TOPFILE").exists()
    assert os.path.samefile(dest / "a", dest / "h")
    assert unpack(archive, tmp_path / "two", strip_components=2) == ["b", "c"]


def test_strip_components_matches_gnu_tar(tmp_path: Path, gnu_tar: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    theirs.mkdir()
    subprocess.run(["tar", "-xf", gnu_tar, "-C", theirs, "--strip-components=1"], check=True)
    names = unpack(gnu_tar, ours, strip_components=1)
    expected = sorted(str(p.relative_to(theirs)) for p in theirs.rglob("*"))
    assert names == expected
    for name in expected:
        a, b = os.lstat(ours / name), os.lstat(theirs / name)
        assert stat.S_IFMT(a.st_mode) == stat.S_IFMT(b.st_mode), name
        if not stat.S_ISLNK(a.st_mode):
            assert a.st_mtime == b.st_mtime, name


def test_mtimes_preserved_for_files_and_directories(tmp_path: Path, gnu_tar: Path) -> None:
    dest = tmp_path / "dest"
    unpack(gnu_tar, dest)
    top = dest / "pkg-1.0"
    assert os.stat(top / "configure.ac").st_mtime == T0
    assert os.stat(top / "configure").st_mtime == T0 + 100
    assert os.stat(top / "configure").st_mtime > os.stat(top / "configure.ac").st_mtime
    assert os.stat(top / "sub" / "data.txt").st_mtime == T0 + 50
    # Directories come before their contents in the tar, yet keep their own mtimes.
    assert os.stat(top / "sub").st_mtime == T0 + 200
    assert os.stat(top).st_mtime == T0 + 300


def test_permissions(tmp_path: Path) -> None:
    archive = make_tar(
        tmp_path / "a.tar",
        member("exe", data=b"#!/bin/sh\n", mode=0o755),
        member("plain", data=b"x", mode=0o644),
        member("setuid", data=b"x", mode=0o4755),
        member("locked", data=b"x", mode=0o000),
        member("world", data=b"x", mode=0o666),
        member("sticky", tarfile.DIRTYPE, mode=0o1777),
        member("setgid", tarfile.DIRTYPE, mode=0o2775),
        member("rodir", tarfile.DIRTYPE, mode=0o500),
        member("rodir/f", data=b"x", mode=0o444),
    )
    dest = tmp_path / "dest"
    unpack(archive, dest)
    modes = {p.name: stat.S_IMODE(os.lstat(p).st_mode) for p in dest.rglob("*")}
    assert modes == {
        "exe": 0o755,
        "plain": 0o644,
        "setuid": 0o755,
        "locked": 0o600,
        "world": 0o644,
        "sticky": 0o755,
        "setgid": 0o755,
        "rodir": 0o700,
        "f": 0o644,
    }
    assert os.access(dest / "exe", os.X_OK)


def test_duplicate_file_replaces_earlier_but_not_through_hardlink(tmp_path: Path) -> None:
    archive = make_tar(
        tmp_path / "a.tar",
        member("a", data=b"original"),
        member("b", tarfile.LNKTYPE, linkname="a"),
        member("b", data=b"replacement"),
        member("a", data=b"second a"),
    )
    dest = tmp_path / "dest"
    assert unpack(archive, dest) == ["a", "b"]
    assert (dest / "b").read_bytes() == b"replacement"
    assert (dest / "a").read_bytes() == b"second a"
    assert not os.path.samefile(dest / "a", dest / "b")


def test_existing_member_of_other_type_is_an_error(tmp_path: Path) -> None:
    archive = make_tar(
        tmp_path / "a.tar", member("x", tarfile.DIRTYPE), member("x", data=b"now a file")
    )
    with pytest.raises(UnsafeArchive, match=r"a\.tar: member 'x'.*directory"):
        unpack(archive, tmp_path / "dest")


def test_real_upstream_tarball(tmp_path: Path) -> None:
    """``AZL_TEST_TARBALL``, else the Azure Linux toolkit's ``git archive`` in ../shared (about
    a thousand members: Go sources, scripts, resources), unpacked by us and by tar alike."""
    shared = REPO.parent / "shared" / "azurelinux" / "toolkit-6a8b54d4.tar.gz"
    tarball = Path(os.environ.get("AZL_TEST_TARBALL") or shared)
    assert tarball.is_file(), f"{tarball} is missing (see ../shared/azurelinux/README.md)"
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    theirs.mkdir()
    subprocess.run(["tar", "-xf", tarball, "-C", theirs, "--strip-components=1"], check=True)
    names = unpack(tarball, ours, strip_components=1)
    expected = sorted(str(p.relative_to(theirs)) for p in theirs.rglob("*"))
    assert names == expected
    for name in expected:
        a, b = ours / name, theirs / name
        sa, sb = os.lstat(a), os.lstat(b)
        assert stat.S_IFMT(sa.st_mode) == stat.S_IFMT(sb.st_mode), name
        if stat.S_ISREG(sa.st_mode):
            assert digest(a) == digest(b), name
            assert sa.st_mtime == sb.st_mtime, name
            assert sa.st_mode & 0o100 == sb.st_mode & 0o100, name
        elif stat.S_ISDIR(sa.st_mode):
            assert sa.st_mtime == sb.st_mtime, name


# --- rejections ------------------------------------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """The directory around dest; nothing may appear or change in it except dest itself."""
    (tmp_path / "secret").write_text("do not touch\n")
    return tmp_path


def assert_untouched(outside: Path) -> None:
    assert sorted(p.name for p in outside.iterdir()) == ["a.tar", "dest", "secret"]
    assert (outside / "secret").read_text() == "do not touch\n"


UNSAFE = {
    "absolute": ([member("{outside}/pwned", data=b"x")], "{outside}/pwned"),
    "dotdot": ([member("ok/../../pwned", data=b"x")], "ok/../../pwned"),
    "dotdot-dir": ([member("..", tarfile.DIRTYPE)], ".."),
    "symlink-lexical": (
        [member("link", tarfile.SYMTYPE, linkname="../"), member("link/pwned", data=b"x")],
        "link",
    ),
    "symlink-absolute": (
        [member("etc", tarfile.SYMTYPE, linkname="/etc"), member("etc/pwned", data=b"x")],
        "etc",
    ),
    "symlink-chain": (
        [
            member("d1/d2", tarfile.DIRTYPE),
            member("d1/d2/up", tarfile.SYMTYPE, linkname=".."),
            member("x", tarfile.SYMTYPE, linkname="d1/d2/up/../.."),
            member("x/pwned", data=b"x"),
        ],
        "x",
    ),
    "symlink-made-unsafe-later": (
        [
            member("x", tarfile.SYMTYPE, linkname="y/.."),  # "." while y does not exist
            member("y", tarfile.SYMTYPE, linkname="."),  # now x is dest/..
            member("x/pwned", data=b"x"),
        ],
        "x/pwned",
    ),
    "write-through-symlink": (
        [member("f", tarfile.SYMTYPE, linkname="g"), member("f", data=b"x")],
        "f",
    ),
    "hardlink-outside": ([member("h", tarfile.LNKTYPE, linkname="../secret")], "h"),
    "hardlink-absolute": ([member("h", tarfile.LNKTYPE, linkname="/etc/passwd")], "h"),
    "hardlink-not-extracted": ([member("h", tarfile.LNKTYPE, linkname="later")], "h"),
    "hardlink-to-symlink": (
        [member("s", tarfile.SYMTYPE, linkname="."), member("h", tarfile.LNKTYPE, linkname="s")],
        "h",
    ),
    "char-device": ([member("null", tarfile.CHRTYPE, devmajor=1, devminor=3)], "null"),
    "block-device": ([member("sda", tarfile.BLKTYPE, devmajor=8, devminor=0)], "sda"),
    "fifo": ([member("fifo", tarfile.FIFOTYPE)], "fifo"),
    "unknown-type": ([member("odd", b"Q")], "odd"),
}


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_unsafe_members_are_rejected(outside: Path, case: str) -> None:
    members, name = UNSAFE[case]
    name = name.format(outside=outside)
    for info, _ in members:
        info.name = info.name.format(outside=outside)
    archive = make_tar(outside / "a.tar", *members)
    with pytest.raises(UnsafeArchive, match=r"a\.tar: member ") as caught:
        unpack(archive, outside / "dest")
    assert repr(name) in str(caught.value)
    assert_untouched(outside)
    assert not (outside / "dest" / "h").exists()


def test_symlink_already_in_dest_is_not_followed(outside: Path) -> None:
    dest = outside / "dest"
    dest.mkdir()
    (dest / "out").symlink_to(outside)
    (dest / "secretlink").symlink_to(outside / "secret")
    archive = make_tar(outside / "a.tar", member("out/pwned", data=b"x"))
    with pytest.raises(UnsafeArchive, match=r"'out/pwned'.*outside"):
        unpack(archive, dest)
    archive = make_tar(outside / "a.tar", member("secretlink", data=b"overwritten"))
    with pytest.raises(UnsafeArchive, match=r"'secretlink'"):
        unpack(archive, dest)
    assert_untouched(outside)
