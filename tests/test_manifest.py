"""Tests for tasks.build.manifest: scanning a stage, the merge into ROOT, deterministic manifests."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from tasks.build import manifest
from tasks.build.manifest import StageError, dumps, merge, scan_stage


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def populate(base: Path, version: str = "1") -> None:
    """A small install tree under ``base`` (what DESTDIR holds below ROOT)."""
    (base / "usr/bin").mkdir(parents=True)
    (base / "usr/lib/pkgconfig").mkdir(parents=True)
    (base / "usr/share/doc/pkg").mkdir(parents=True)
    (base / "usr/bin/tool").write_bytes(b"#!/bin/sh\necho " + version.encode() + b"\n")
    (base / "usr/bin/tool").chmod(0o755)
    (base / "usr/bin/suid").write_bytes(b"x")
    (base / "usr/bin/suid").chmod(0o4711)
    (base / "usr/lib/libp.so.1.0").write_bytes(b"\x7fELF" + version.encode())
    (base / "usr/lib/libp.so.1.0").chmod(0o644)
    (base / "usr/lib/libp.so.1").symlink_to("libp.so.1.0")
    (base / "usr/lib/libp.so").symlink_to("libp.so.1")
    (base / "usr/lib/pkgconfig/p.pc").write_text("prefix=/usr\n")
    (base / "usr/share/doc/pkg/README").write_text("read me\n")
    (base / "usr/share/doc/pkg/README").chmod(0o600)
    (base / "usr/share/pkg").symlink_to("doc/pkg")  # a symlink to a directory
    (base / "usr/share/doc/pkg").chmod(0o750)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A sandbox ROOT (absolute, as the sandbox platform gives it)."""
    r = tmp_path / "sandbox" / "root"
    r.mkdir(parents=True)
    return r


def stage_for(tmp_path: Path, root: Path, name: str = "stage") -> tuple[Path, Path]:
    """A stage directory and the place in it where ROOT's files go (sandbox layout)."""
    stage = tmp_path / name
    base = stage / str(root).lstrip("/")
    base.mkdir(parents=True)
    return stage, base


def test_scan_stage_sandbox_layout(tmp_path: Path, root: Path) -> None:
    stage, base = stage_for(tmp_path, root)
    populate(base)
    entries = scan_stage(stage, str(root))
    assert entries["usr"] == {"type": "dir", "mode": f"{mode(base / 'usr'):04o}"}
    assert entries["usr/share/doc/pkg"] == {"type": "dir", "mode": "0750"}
    assert entries["usr/bin/tool"] == {
        "type": "file",
        "mode": "0755",
        "sha256": sha(b"#!/bin/sh\necho 1\n"),
    }
    assert entries["usr/bin/suid"]["mode"] == "4711"
    assert entries["usr/share/doc/pkg/README"]["mode"] == "0600"
    assert entries["usr/lib/libp.so.1"] == {"type": "link", "target": "libp.so.1.0"}
    assert entries["usr/lib/libp.so"] == {"type": "link", "target": "libp.so.1"}
    assert entries["usr/share/pkg"] == {"type": "link", "target": "doc/pkg"}
    assert not any(k.startswith("usr/share/pkg/") for k in entries)  # links not followed
    assert sorted(entries) == sorted(
        [
            "usr",
            "usr/bin",
            "usr/bin/suid",
            "usr/bin/tool",
            "usr/lib",
            "usr/lib/libp.so",
            "usr/lib/libp.so.1",
            "usr/lib/libp.so.1.0",
            "usr/lib/pkgconfig",
            "usr/lib/pkgconfig/p.pc",
            "usr/share",
            "usr/share/doc",
            "usr/share/doc/pkg",
            "usr/share/doc/pkg/README",
            "usr/share/pkg",
        ]
    )
    keys = list(entries)
    for k in keys:  # parents come before their children
        parent = os.path.dirname(k)
        assert not parent or keys.index(parent) < keys.index(k)


def test_scan_stage_guest_layout_is_the_whole_stage(tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    populate(stage)
    entries = scan_stage(stage, "/")
    assert "usr/bin/tool" in entries and "usr/lib/libp.so" in entries


def test_scan_empty_stage(tmp_path: Path, root: Path) -> None:
    stage = tmp_path / "stage"
    stage.mkdir()
    assert scan_stage(stage, str(root)) == {}


@pytest.mark.parametrize(
    "outside",
    ["etc/tool.conf", "usr/bin/escaped", "usr/lib/link-outside"],
)
def test_files_outside_root_raise_stage_error_naming_the_path(
    tmp_path: Path, root: Path, outside: str
) -> None:
    stage, base = stage_for(tmp_path, root)
    populate(base)
    p = stage / outside
    p.parent.mkdir(parents=True, exist_ok=True)
    if outside.endswith("link-outside"):
        p.symlink_to("/usr/lib")  # a symlink to a directory counts too
    else:
        p.write_text("ignored its prefix\n")
    with pytest.raises(StageError) as ei:
        scan_stage(stage, str(root))
    assert f"/{outside}" in str(ei.value) and str(root) in str(ei.value)


def test_stage_error_lists_several_paths(tmp_path: Path, root: Path) -> None:
    stage, base = stage_for(tmp_path, root)
    populate(base)
    for i in range(3):
        (stage / f"stray{i}").write_text("x")
    with pytest.raises(StageError) as ei:
        scan_stage(stage, str(root))
    assert all(f"/stray{i}" in str(ei.value) for i in range(3))


def test_info_dir_is_dropped(tmp_path: Path, root: Path) -> None:
    stage, base = stage_for(tmp_path, root)
    (base / "usr/share/info").mkdir(parents=True)
    (base / "usr/share/info/dir").write_text("index\n")
    (base / "usr/share/info/pkg.info").write_text("doc\n")
    entries = scan_stage(stage, str(root))
    assert "usr/share/info/dir" not in entries and "usr/share/info/pkg.info" in entries
    assert not (base / "usr/share/info/dir").exists()


def test_unsupported_file_type(tmp_path: Path, root: Path) -> None:
    stage, base = stage_for(tmp_path, root)
    os.mkfifo(base / "fifo")
    with pytest.raises(StageError, match="fifo"):
        scan_stage(stage, str(root))


# --------------------------------------------------------------------------- merge


def test_merge_installs_files_modes_and_symlinks(tmp_path: Path, root: Path) -> None:
    stage, base = stage_for(tmp_path, root)
    populate(base)
    entries = scan_stage(stage, str(root))
    merge(stage, str(root), entries, {})
    assert (root / "usr/bin/tool").read_bytes() == b"#!/bin/sh\necho 1\n"
    assert mode(root / "usr/bin/tool") == 0o755
    assert mode(root / "usr/bin/suid") == 0o4711
    assert mode(root / "usr/share/doc/pkg/README") == 0o600
    assert os.readlink(root / "usr/lib/libp.so") == "libp.so.1"
    assert os.readlink(root / "usr/share/pkg") == "doc/pkg"
    assert (root / "usr/lib/libp.so").read_bytes() == b"\x7fELF1"
    # ROOT now matches its manifest, and nothing else is in it
    assert scan_stage_of_root(root) == without_dir_modes(entries)
    assert not list(root.rglob("*.azl-new"))
    # the stage is untouched (it is copied, not moved)
    assert scan_stage(stage, str(root)) == entries


def scan_stage_of_root(root: Path) -> dict:
    return without_dir_modes(scan_stage(root, "/"))


def without_dir_modes(entries: dict) -> dict:
    return {
        k: {f: v for f, v in e.items() if e["type"] != "dir" or f != "mode"}
        for k, e in entries.items()
    }


def test_merge_gives_directories_their_manifest_mode(tmp_path: Path, root: Path) -> None:
    stage, base = stage_for(tmp_path, root)
    populate(base)
    (base / "var/spool").mkdir(parents=True)
    (base / "var/spool").chmod(0o1777)
    entries = scan_stage(stage, str(root))
    merge(stage, str(root), entries, {})
    assert mode(root / "var/spool") == 0o1777
    assert mode(root / "usr/share/doc/pkg") == 0o750


def test_merge_replaces_existing_files_atomically(tmp_path: Path, root: Path) -> None:
    stage, base = stage_for(tmp_path, root)
    populate(base, "2")
    # ROOT has an older install; its tool is also hard-linked elsewhere, and its
    # libp.so.1 is a regular file where the new build has a symlink
    populate(root, "1")
    (root / "usr/lib/libp.so.1").unlink()
    (root / "usr/lib/libp.so.1").write_bytes(b"old real file")
    os.link(root / "usr/bin/tool", tmp_path / "hardlink")
    (root / "usr/bin/tool").chmod(0o700)
    old_inode = os.stat(root / "usr/bin/tool").st_ino
    entries = scan_stage(stage, str(root))
    merge(stage, str(root), entries, {})
    assert (root / "usr/bin/tool").read_bytes() == b"#!/bin/sh\necho 2\n"
    assert mode(root / "usr/bin/tool") == 0o755
    assert os.stat(root / "usr/bin/tool").st_ino != old_inode  # replaced, not rewritten
    assert (tmp_path / "hardlink").read_bytes() == b"#!/bin/sh\necho 1\n"
    assert os.readlink(root / "usr/lib/libp.so.1") == "libp.so.1.0"
    assert (root / "usr/lib/libp.so.1.0").read_bytes() == b"\x7fELF2"
    assert not list(root.rglob("*.azl-new"))


def test_merge_replaces_a_symlink_with_a_file_without_following_it(
    tmp_path: Path, root: Path
) -> None:
    stage, base = stage_for(tmp_path, root)
    (base / "etc").mkdir()
    (base / "etc/conf").write_text("new\n")
    victim = tmp_path / "victim"
    victim.write_text("do not touch\n")
    (root / "etc").mkdir()
    (root / "etc/conf").symlink_to(victim)
    merge(stage, str(root), scan_stage(stage, str(root)), {})
    assert not (root / "etc/conf").is_symlink()
    assert (root / "etc/conf").read_text() == "new\n"
    assert victim.read_text() == "do not touch\n"


def test_merge_refuses_a_file_where_root_has_a_directory(tmp_path: Path, root: Path) -> None:
    stage, base = stage_for(tmp_path, root)
    (base / "usr").mkdir()
    (base / "usr/thing").write_text("file\n")
    (root / "usr/thing").mkdir(parents=True)
    with pytest.raises(StageError, match="usr/thing"):
        merge(stage, str(root), scan_stage(stage, str(root)), {})


def test_merge_removes_what_the_old_manifest_had_and_the_new_lacks(
    tmp_path: Path, root: Path
) -> None:
    stage1, base1 = stage_for(tmp_path, root, "stage1")
    populate(base1)
    (base1 / "usr/lib/old").mkdir()
    (base1 / "usr/lib/old/plugin.so").write_bytes(b"plugin")
    (base1 / "usr/lib/old/alias").symlink_to("plugin.so")
    (base1 / "usr/share/shared").mkdir()
    (base1 / "usr/share/shared/mine").write_text("mine\n")
    (base1 / "usr/bin/gone").write_text("gone\n")
    old = scan_stage(stage1, str(root))
    merge(stage1, str(root), old, {})
    # another package (or the user) put a file in a directory the old build owned
    (root / "usr/share/shared/theirs").write_text("theirs\n")

    stage2, base2 = stage_for(tmp_path, root, "stage2")
    populate(base2, "2")
    new = scan_stage(stage2, str(root))
    merge(stage2, str(root), new, old)
    assert not (root / "usr/bin/gone").exists()
    assert not (root / "usr/lib/old").exists()  # files, link and then the empty dir
    assert not (root / "usr/share/shared/mine").exists()
    assert (root / "usr/share/shared/theirs").read_text() == "theirs\n"  # kept, and its dir
    assert (root / "usr/bin/tool").read_bytes() == b"#!/bin/sh\necho 2\n"
    assert os.readlink(root / "usr/lib/libp.so") == "libp.so.1"
    theirs = {"type": "file", "mode": "0644", "sha256": sha(b"theirs\n")}
    (root / "usr/share/shared/theirs").chmod(0o644)
    expected = {**new, "usr/share/shared": {"type": "dir"}, "usr/share/shared/theirs": theirs}
    assert scan_stage_of_root(root) == without_dir_modes(expected)


def test_merge_removes_a_stale_symlink_without_following_it(tmp_path: Path, root: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep\n")
    (root / "usr").mkdir()
    (root / "usr/link").symlink_to(outside)
    old = {"usr": {"type": "dir", "mode": "0755"}, "usr/link": {"type": "link", "target": "x"}}
    stage, _ = stage_for(tmp_path, root)
    merge(stage, str(root), {"usr": old["usr"]}, old)
    assert not (root / "usr/link").is_symlink()
    assert (outside / "keep").read_text() == "keep\n"


def test_manifest_write_and_read(tmp_path: Path, root: Path) -> None:
    stage, base = stage_for(tmp_path, root)
    populate(base)
    entries = scan_stage(stage, str(root))
    path = tmp_path / "manifests" / "pkg.json"
    manifest.write(path, "pkg", "1.0", entries)
    assert manifest.read(path) == entries
    assert json.loads(path.read_text())["package"] == "pkg"
    assert sorted(p.name for p in path.parent.iterdir()) == ["pkg.json"]
    path.write_text("{damaged")
    assert manifest.read(path) == {}
    assert manifest.read(tmp_path / "none.json") == {}


def test_dumps_is_deterministic_and_independent_of_mtimes(tmp_path: Path, root: Path) -> None:
    stage1, base1 = stage_for(tmp_path, root, "stage1")
    populate(base1)
    first = dumps("pkg", "1.0", scan_stage(stage1, str(root)))
    assert dumps("pkg", "1.0", scan_stage(stage1, str(root))) == first  # same tree twice

    # the same content built again: other mtimes, files created in another order
    stage2, base2 = stage_for(tmp_path, root, "stage2")
    populate(base2)
    (base2 / "usr/lib/pkgconfig/p.pc").unlink()
    (base2 / "usr/lib/pkgconfig/p.pc").write_text("prefix=/usr\n")
    for dirpath, dirnames, filenames in os.walk(base2):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (12345, 67890), follow_symlinks=False)
    os.utime(base2, (1, 1))
    second = dumps("pkg", "1.0", scan_stage(stage2, str(root)))
    assert second == first
    doc = json.loads(first)
    assert list(doc) == ["files", "package", "version"]
    assert list(doc["files"]) == sorted(doc["files"])
    assert first.endswith(b"\n")
    # a different content is a different manifest
    (base2 / "usr/lib/pkgconfig/p.pc").write_text("prefix=/opt\n")
    assert dumps("pkg", "1.0", scan_stage(stage2, str(root))) != first
