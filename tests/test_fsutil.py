"""Tests for tasks.store.fsutil: atomic writes, and deletes that never cross a mount point nor follow
a symlink out of the tree."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.store import fsutil
from tasks.store.fsutil import MountedError, atomic_write, mount_points, mounts_under, safe_rmtree

REPO = Path(__file__).resolve().parents[1]
NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"


# --------------------------------------------------------------------------- atomic_write


def listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


@pytest.mark.parametrize("fsync", [True, False])
def test_atomic_write_creates_and_replaces(tmp_path: Path, fsync: bool) -> None:
    path = tmp_path / "f.json"
    atomic_write(path, b"first", fsync=fsync)
    assert path.read_bytes() == b"first"
    inode = os.stat(path).st_ino
    atomic_write(str(path), b"second, longer content", fsync=fsync)
    assert path.read_bytes() == b"second, longer content"
    assert os.stat(path).st_ino != inode  # a new file renamed over the old one
    atomic_write(path, b"", fsync=fsync)
    assert path.read_bytes() == b""
    assert listing(tmp_path) == ["f.json"]


def test_atomic_write_in_the_current_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    atomic_write("plain", b"x")
    assert listing(tmp_path) == ["plain"]


def test_atomic_write_failure_keeps_the_old_content(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"old")
    with pytest.raises(TypeError):
        atomic_write(path, "not bytes")  # type: ignore[arg-type]  # fails while writing
    assert path.read_bytes() == b"old" and listing(tmp_path) == ["f"]

    def fail(src, dst):  # noqa: ANN001, ANN202
        raise OSError("rename failed")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="rename failed"):
        atomic_write(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old" and listing(tmp_path) == ["f"]


def test_atomic_write_into_a_missing_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "nope" / "f", b"x")
    assert listing(tmp_path) == []


# --------------------------------------------------------------------------- safe_rmtree


def make_tree(top: Path) -> None:
    (top / "a/b/c").mkdir(parents=True)
    (top / "a/file").write_text("x")
    (top / "a/b/c/deep").write_bytes(os.urandom(100))
    (top / "a/link").symlink_to("file")
    (top / "a/dangling").symlink_to("/nonexistent/target")
    (top / "ro/sub").mkdir(parents=True)
    (top / "ro/sub/file").write_text("read-only")
    (top / "ro/sub/file").chmod(0o444)
    (top / "ro/sub").chmod(0o555)
    (top / "ro").chmod(0o555)
    (top / "noperm").write_text("")
    (top / "noperm").chmod(0o000)


def test_safe_rmtree_deletes_a_tree_with_read_only_dirs(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    make_tree(tree)
    safe_rmtree(tree)
    assert listing(tmp_path) == []


def test_safe_rmtree_missing_tree_is_fine(tmp_path: Path) -> None:
    safe_rmtree(tmp_path / "nothing")
    safe_rmtree(str(tmp_path / "nothing"))


def test_safe_rmtree_of_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    safe_rmtree(tmp_path / "f")
    assert listing(tmp_path) == []


def test_safe_rmtree_does_not_follow_symlinks_out_of_the_tree(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "precious").write_text("keep")
    (outside / "sub/also").write_text("keep")
    tree = tmp_path / "tree"
    make_tree(tree)
    (tree / "a/to-outside-dir").symlink_to(outside)
    (tree / "to-outside-file").symlink_to(outside / "precious")
    (tree / "a/b/relative-up").symlink_to("../../../outside")
    safe_rmtree(tree)
    assert listing(tmp_path) == ["outside"]
    assert (outside / "precious").read_text() == "keep"
    assert (outside / "sub/also").read_text() == "keep"


def test_safe_rmtree_of_a_symlink_removes_only_the_link(tmp_path: Path) -> None:
    target = tmp_path / "target"
    make_tree(target)
    (tmp_path / "link").symlink_to(target)
    safe_rmtree(tmp_path / "link")
    assert listing(tmp_path) == ["target"]
    assert (target / "a/file").read_text() == "x"


def run_unprivileged(tree: Path) -> subprocess.CompletedProcess:
    """``safe_rmtree(tree)`` in a process of user nobody (root ignores permission bits)."""
    if not Path(SYSTEM_PYTHON).exists():
        pytest.skip(f"{SYSTEM_PYTHON} is needed to run as nobody (ours is under /root)")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from tasks.store.fsutil import safe_rmtree; "
        "safe_rmtree(sys.argv[2])"
    )
    return subprocess.run(
        [SYSTEM_PYTHON, "-c", code, str(REPO), str(tree)],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
    )


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """A directory user nobody may write (pytest's tmp_path is private to root)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user (as non-root the plain test covers it)")
    base = Path(tempfile.mkdtemp(prefix="azl-fsutil-"))
    os.chown(base, NOBODY, NOBODY)
    try:
        yield base
    finally:
        for dirpath, dirnames, _ in os.walk(base):
            for d in dirnames:
                os.chmod(os.path.join(dirpath, d), 0o755)
        shutil.rmtree(base)


def chown_tree(top: Path) -> None:
    os.chown(top, NOBODY, NOBODY, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), NOBODY, NOBODY, follow_symlinks=False)


def test_safe_rmtree_read_only_dirs_as_an_unprivileged_user(nobody_dir: Path) -> None:
    tree = nobody_dir / "tree"
    make_tree(tree)
    chown_tree(tree)
    proc = run_unprivileged(tree)
    assert proc.returncode == 0, proc.stderr
    assert listing(nobody_dir) == []


def test_safe_rmtree_unreadable_dir_as_an_unprivileged_user(nobody_dir: Path) -> None:
    tree = nobody_dir / "tree"
    (tree / "locked").mkdir(parents=True)
    (tree / "locked/file").write_text("x")
    (tree / "locked").chmod(0o000)
    chown_tree(tree)
    proc = run_unprivileged(tree)
    assert proc.returncode == 0, proc.stderr
    assert listing(nobody_dir) == []


# --------------------------------------------------------------------------- mount points


@pytest.fixture
def bind_mount(tmp_path: Path) -> Iterator:
    """``mount(src, dst)`` makes a real bind mount; every mount is undone afterwards."""
    if os.geteuid() != 0:
        pytest.skip("bind mounts need root")
    mounted: list[Path] = []

    def mount(src: Path, dst: Path) -> None:
        proc = subprocess.run(
            ["mount", "--bind", str(src), str(dst)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            msg = proc.stderr.lower()
            if "permission denied" in msg or "not permitted" in msg:
                pytest.skip(f"mount --bind not permitted here (EPERM): {proc.stderr.strip()}")
            raise AssertionError(f"mount --bind failed: {proc.stderr}")
        mounted.append(dst)

    try:
        yield mount
    finally:
        for dst in reversed(mounted):
            if subprocess.run(["umount", str(dst)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(dst)], capture_output=True)


def test_safe_rmtree_refuses_a_tree_with_a_bind_mount_inside(tmp_path: Path, bind_mount) -> None:
    src = tmp_path / "host-dev"
    src.mkdir()
    (src / "precious").write_text("host file\n")
    tree = tmp_path / "build/pkg"
    (tree / "sub").mkdir(parents=True)
    (tree / "other").write_text("x")
    bind_mount(src, tree / "sub")
    assert mounts_under(tree) == [str((tree / "sub").resolve())]
    for target in (tree, tmp_path / "build", tree / "sub"):
        with pytest.raises(MountedError) as ei:
            safe_rmtree(target)
        assert str(target) in str(ei.value) and str(tree / "sub") in str(ei.value)
    assert (src / "precious").read_text() == "host file\n"
    assert (tree / "other").exists() and (tree / "sub/precious").exists()


def test_safe_rmtree_sees_a_mount_through_a_symlinked_path(tmp_path: Path, bind_mount) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "precious").write_text("keep")
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    bind_mount(src, real / "sub")
    (tmp_path / "alias").symlink_to(real)
    with pytest.raises(MountedError):
        safe_rmtree(tmp_path / "alias/sub/..")
    assert (src / "precious").read_text() == "keep"


def test_safe_rmtree_after_unmount_deletes(tmp_path: Path, bind_mount) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "precious").write_text("keep")
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    bind_mount(src, tree / "sub")
    with pytest.raises(MountedError):
        safe_rmtree(tree)
    subprocess.run(["umount", str(tree / "sub")], check=True)
    safe_rmtree(tree)
    assert not tree.exists() and (src / "precious").read_text() == "keep"


def fake_mountinfo(tmp_path: Path, *points: str) -> str:
    """A mountinfo file (proc(5) format) with the given, already escaped, mount points."""
    lines = [
        "22 27 0:21 / /proc rw,relatime - proc proc rw",
        "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw",
    ]
    lines += [
        f"{40 + i} 27 254:0 /srv/x {p} rw,relatime shared:1 - ext4 /dev/vda rw"
        for i, p in enumerate(points)
    ]
    path = tmp_path / "mountinfo"
    path.write_text("\n".join(lines) + "\n\n")
    return str(path)


def test_mount_points_unescapes(tmp_path: Path) -> None:
    info = fake_mountinfo(tmp_path, "/a\\040b", "/tab\\011x", "/back\\134slash", "/plain")
    assert mount_points(info) == ["/proc", "/", "/a b", "/tab\tx", "/back\\slash", "/plain"]
    # without mountinfo no delete can be proven safe: refuse rather than guess
    with pytest.raises(MountedError, match="cannot read"):
        mount_points(str(tmp_path / "missing"))
    tree = tmp_path / "tree"
    tree.mkdir()
    with pytest.raises(MountedError):
        safe_rmtree(tree, mountinfo=str(tmp_path / "missing"))
    assert tree.is_dir()


def test_fake_mountinfo_with_escaped_space_refuses(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "my dir").mkdir(parents=True)
    (tree / "my dir/file").write_text("x")
    top = os.path.realpath(tree)
    info = fake_mountinfo(tmp_path, f"{top}/my\\040dir".replace(" ", "\\040"))
    assert mounts_under(tree, info) == [f"{top}/my dir"]
    with pytest.raises(MountedError) as ei:
        safe_rmtree(tree, mountinfo=info)
    assert f"{top}/my dir" in str(ei.value)
    assert (tree / "my dir/file").exists()


def test_fake_mountinfo_tree_itself_is_a_mount_point(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    info = fake_mountinfo(tmp_path, os.path.realpath(tree))
    with pytest.raises(MountedError):
        safe_rmtree(tree, mountinfo=info)
    assert tree.exists()


def test_fake_mountinfo_mounts_elsewhere_do_not_block(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    make_tree(tree)
    top = os.path.realpath(tree)
    parent = os.path.dirname(top)
    info = fake_mountinfo(tmp_path, f"{top}2", f"{top}-x", f"{top}\\040x", parent)
    assert mounts_under(tree, info) == []
    safe_rmtree(tree, mountinfo=info)
    assert not tree.exists()


def test_fake_mountinfo_non_ascii_path_with_escaped_space_refuses(tmp_path: Path) -> None:
    tree = tmp_path / "projé" / "build"
    (tree / "sub dir").mkdir(parents=True)
    (tree / "sub dir/file").write_text("x")
    top = os.path.realpath(tree)
    info = fake_mountinfo(tmp_path, f"{top}/sub dir".replace(" ", "\\040"))
    assert mounts_under(tree, info) == [f"{top}/sub dir"]
    with pytest.raises(MountedError):
        safe_rmtree(tree, mountinfo=info)


def test_default_mountinfo_is_the_process_namespace() -> None:
    assert fsutil.MOUNTINFO == "/proc/self/mountinfo"
    if not os.path.exists(fsutil.MOUNTINFO):
        pytest.skip("no /proc here")
    assert "/" in mount_points()


def test_mode_bits_helper_sanity(tmp_path: Path) -> None:
    # make_tree really makes read-only directories (else the tests above prove nothing)
    make_tree(tmp_path / "t")
    assert stat.S_IMODE(os.stat(tmp_path / "t/ro").st_mode) == 0o555
    safe_rmtree(tmp_path / "t")
