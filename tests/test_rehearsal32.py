"""The 32-bit rehearsal (tasks/rehearsal32*.py) for real: a Debian i386 root from the machine's
archive, entered with chroot on this machine's 64-bit kernel, exactly the guest's situation
after the kexec. Slow (the root alone is a debootstrap; it is kept in cache/rehearsal32/).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.rehearsal32 import root as rehearsal32

pytestmark = [
    pytest.mark.slow,
    pytest.mark.network,
    pytest.mark.skipif(os.geteuid() != 0, reason="debootstrap, chroot and mounts need root"),
    pytest.mark.skipif(shutil.which("debootstrap") is None, reason="debootstrap not installed"),
]


@pytest.fixture(scope="module")
def root(archive: str) -> Path:
    return rehearsal32.make_root(REPO, archive)


def elf_class(path: Path) -> int:
    """1 for a 32-bit ELF file, 2 for a 64-bit one."""
    head = path.read_bytes()[:5]
    assert head[:4] == b"\x7fELF", path
    return head[4]


def test_the_root_is_i386_under_a_64bit_kernel(root: Path) -> None:
    assert elf_class(root / "bin/bash") == 1
    out = root / "root/uname"
    before = mounts_in(root)
    with rehearsal32.entered(root, REPO) as run:
        assert len(mounts_in(root)) == len(before) + 5  # proc, sys, dev, dev/pts, the project
        run("uname -m > /root/uname; dpkg --print-architecture >> /root/uname")
    assert out.read_text().split() == ["x86_64", "i386"]
    assert mounts_in(root) == before  # all its own mounts undone (others may be inside too)


def mounts_in(root: Path) -> list[str]:
    lines = Path("/proc/self/mounts").read_text().splitlines()
    return [ln for ln in lines if ln.split()[1].startswith(f"{root}/")]


def test_go_builds_the_toolkit_statfs_line_only_for_amd64(root: Path) -> None:
    from tests.rehearsal32.go import go_check

    r = go_check(REPO, root)
    print(r.summary())
    assert r.go_version.startswith("go version go1.23")
    assert r.default_goarch == "386"  # GOHOSTARCH=386: the default the seed tripped over
    assert r.stage_env["GOARCH"] == "amd64"
    m = re.fullmatch(r"statfs GOARCH=amd64 totalBytes=(\d+)", r.stage_output)
    assert m and int(m.group(1)) > 0, r.stage_output
    assert "mismatched types int32 and int64" in r.default_error, r.default_error


def test_recipes_build_for_i686_inside(root: Path) -> None:
    """A small dependency chain of the guest plan built by the project's doit inside."""
    from tests.rehearsal32.packages import PROJECT_INSIDE, build_packages

    r = build_packages(REPO, root, ["pcre2", "grep", "zstd"], clean=("zstd",))
    print(r.summary())
    assert r.target.startswith("i686-"), r.target
    assert r.built == ["pcre2", "grep", "zstd"] and not r.doit_error, r.summary()
    log = (root.parent / "packages.log").read_text()
    assert re.search(r"^\.  zstd$", log, re.M), log  # really built again, not found done
    sandbox = root / PROJECT_INSIDE.lstrip("/") / "cache/sandbox/root"
    assert elf_class(sandbox / "usr/bin/grep") == 1


def test_sudo_shim_and_stage_env_as_the_toolkit_calls_them_inside(root: Path) -> None:
    """Part (c): the shim's and the stage environment's tests, run by the root's i386 Python
    with the root's bash, dash, useradd and coreutils."""
    from tests.rehearsal32.toolkit import toolkit_check

    r = toolkit_check(REPO, root)
    print(r.summary())
    assert r.machine == "x86_64 i386"
    assert not r.failed and not r.skipped, r.summary()
    sudo = [t for t in r.passed if t.startswith("test_sudo::")]
    assert any("bypass_container_line" in t for t in sudo), r.passed
    assert len([t for t in sudo if "[dash]" in t]) >= 6, r.passed  # the shim under both shells
    assert any(t.startswith("test_stage_env::") for t in r.passed), r.passed
