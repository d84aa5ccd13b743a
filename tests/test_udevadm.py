"""recipes/udevadm: built through the engine (the machine's compiler, as the guest builds it
with its own), then run as root on a real loop device holding partitions, the way Azure
Linux's toolkit uses it (diskutils.go: ``losetup --show -f -P IMAGE``, ``lsblk``, ``udevadm
settle``, then the partition is formatted and mounted).

Stand-ins, named: this machine's kernel has no partition-table parsers
(``CONFIG_MSDOS_PARTITION``/``CONFIG_EFI_PARTITION`` unset), so when ``losetup -P`` finds no
partitions the test adds them with util-linux's ``partx --add`` (the BLKPG ioctl: the kernel
makes the same partition devices a scan would). It has no vfat either: the partition is
formatted ext4 where the ISO builder's efiboot.img is FAT (the mount is the same call). The
guest's 64-bit kernel has both (x86_64_defconfig). A /dev without devtmpfs is a tmpfs
mounted over /dev in a private mount namespace (``unshare -m``), which nothing outside sees.

Every loop device is attached with ``--show`` and detached by that name.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import vmimage
from tests.conftest import REPO, Project, real_project, run

TOOLS = ("losetup", "partx", "sfdisk", "mkfs.ext4", "unshare", "lsblk", "mount", "umount")
needs_loop = pytest.mark.skipif(
    os.geteuid() != 0
    or not Path("/dev/loop-control").exists()
    or not all(shutil.which(t) for t in TOOLS),
    reason=f"loop devices need root, /dev/loop-control and {', '.join(TOOLS)}",
)


@pytest.fixture(scope="module")
def udevadm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The recipe built by ``doit udevadm`` in a throw-away sandbox project."""
    project: Project = real_project(tmp_path_factory.mktemp("udevadm") / "proj", "udevadm")
    r = project.doit("udevadm", timeout=600)
    assert r.code == 0, r.out + r.err
    binary = project.installed("bin/udevadm")
    assert os.access(binary, os.X_OK)
    return binary


@dataclass
class Loop:
    device: str  # /dev/loopN, as losetup --show printed it
    name: str  # loopN
    partitions: list[str]  # loopNp1, loopNp2: their sysfs names

    def sysfs_dev(self, name: str) -> tuple[int, int]:
        major, minor = Path(f"/sys/class/block/{name}/dev").read_text().split(":")
        return int(major), int(minor)


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[Loop]:
    """An 8 MiB image with a DOS partition table (a 2 MiB and a 5 MiB partition, made by
    sfdisk) attached as the toolkit attaches its images; detached afterwards."""
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(8 << 20)
    run("sfdisk", "-q", image, input="label: dos\n,2M,L\n,5M,L\n")
    device = run("losetup", "--show", "-f", "-P", image).stdout.strip()
    name = Path(device).name
    try:
        parts = [f"{name}p1", f"{name}p2"]
        if not Path(f"/sys/class/block/{parts[0]}").exists():
            run("partx", "--add", device)  # this kernel's stand-in for the scan (see above)
        assert all(Path(f"/sys/class/block/{p}").exists() for p in parts)
        yield Loop(device, name, parts)
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


def private_dev(script: str, *, readonly: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (sh) in a private mount namespace whose /dev is an empty tmpfs (no
    devtmpfs: nobody makes device nodes but the script)."""
    mount = "mount -t tmpfs -o mode=755" + (",ro" if readonly else "") + " azl-dev /dev"
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-ec", f"{mount}\n{script}"],
        capture_output=True,
        text=True,
        timeout=300,
    )


@needs_loop
def test_settle_makes_the_partition_nodes_on_a_dev_without_devtmpfs(
    udevadm: Path, loop: Loop, tmp_path: Path
) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    p1 = f"/dev/{loop.partitions[0]}"
    script = f"""
        test ! -e {p1} && echo "before: no {p1}"
        lsblk --nodeps --output MAJ:MIN {loop.device} 2>/dev/null || echo "before: lsblk fails"
        {udevadm} settle
        # the toolkit's calls after it (diskutils.go: GetDiskIds, GetDiskPartitions)
        echo "lsblk $(lsblk --nodeps --noheadings --output MAJ:MIN {loop.device})"
        echo "parts $(lsblk --noheadings --list --output NAME,TYPE {loop.device} | grep -c part)"
        stat -c 'node %n %t:%T %F %a %U' {loop.device} /dev/{loop.partitions[0]} /dev/{loop.partitions[1]}
        mkfs.ext4 -q -F {p1}
        mount {p1} {mnt}
        echo azl > {mnt}/hello
        umount {mnt}
        mount -o ro {p1} {mnt}
        cat {mnt}/hello
        umount {mnt}
    """
    r = private_dev(script)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"before: no {p1}" in r.stdout and "before: lsblk fails" in r.stdout
    major, minor = loop.sysfs_dev(loop.name)
    assert re.search(rf"^lsblk\s+{major}:{minor}\s*$", r.stdout, re.M), r.stdout
    assert "parts 2" in r.stdout, r.stdout
    nodes = {
        ln.split()[1]: ln.split()[2:] for ln in r.stdout.splitlines() if ln.startswith("node ")
    }
    for name in (loop.name, *loop.partitions):
        major, minor = loop.sysfs_dev(name)
        # stat prints the numbers in hex
        assert nodes[f"/dev/{name}"][0] == f"{major:x}:{minor:x}", (name, nodes)
        assert nodes[f"/dev/{name}"][1:4] == ["block", "special", "file"], nodes
        assert f"made /dev/{name} ({major}:{minor})" in r.stderr
    assert r.stdout.rstrip().endswith("azl")  # the partition was formatted and mounted


def dev_is_devtmpfs() -> bool:
    mounts = [ln.split() for ln in Path("/proc/self/mounts").read_text().splitlines()]
    return [m[2] for m in mounts if m[1] == "/dev"][-1:] == ["devtmpfs"]


@needs_loop
def test_settle_leaves_devtmpfs_to_the_kernel(udevadm: Path, loop: Loop) -> None:
    """On a devtmpfs /dev (this machine's, and the guest's 64-bit kernel's) the kernel has
    made the nodes: settle returns at once and makes none."""
    if not dev_is_devtmpfs():
        pytest.skip("this machine's /dev is not a devtmpfs (the VM test covers devtmpfs)")
    t0 = time.monotonic()
    r = run(udevadm, "settle")
    assert time.monotonic() - t0 < 1
    assert "made" not in r.stderr, r.stderr
    for name in (loop.name, *loop.partitions):
        st = os.stat(f"/dev/{name}")
        assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == loop.sysfs_dev(name)


@needs_loop
def test_settle_times_out_naming_the_node_it_cannot_make(udevadm: Path, loop: Loop) -> None:
    t0 = time.monotonic()
    r = private_dev(f"{udevadm} settle --timeout=1", readonly=True)
    took = time.monotonic() - t0
    assert r.returncode == 1, r.stdout + r.stderr
    assert 1 <= took < 10, took
    assert f"cannot make /dev/{loop.partitions[0]}" in r.stderr
    assert "timed out after 1 s" in r.stderr


@needs_loop
def test_settle_without_sysfs_fails_at_once(udevadm: Path) -> None:
    t0 = time.monotonic()
    r = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         f"mount -t tmpfs azl-nosys /sys && exec {udevadm} settle"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 1 and time.monotonic() - t0 < 5, r.stderr
    assert "cannot read /sys/class/block" in r.stderr and "sysfs" in r.stderr


@needs_loop
def test_settle_replaces_a_stale_node(udevadm: Path, loop: Loop) -> None:
    """A node left by an earlier image with other numbers (a static /dev keeps it) is
    replaced by the one sysfs names; a file in the way is reported, not removed."""
    p1, p2 = (f"/dev/{p}" for p in loop.partitions)
    major, minor = loop.sysfs_dev(loop.partitions[0])
    script = f"""
        mknod {p1} b 1 3
        echo data > {p2}
        {udevadm} settle -t 1 || echo "settle: exit $?"
        stat -c 'node %n %t:%T' {p1}
        cat {p2}
    """
    r = private_dev(script)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"node {p1} {major:x}:{minor:x}" in r.stdout
    assert "settle: exit 1" in r.stdout and "data" in r.stdout
    assert f"{p2} ({loop.sysfs_dev(loop.partitions[1])[0]}:" in r.stderr
    assert "is in the way: not a device node" in r.stderr


def test_commands_it_does_not_have_fail_naming_the_ones_it_has(udevadm: Path) -> None:
    r = subprocess.run([udevadm, "info", "/dev/null"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "'info' is not supported" in r.stderr and "settle" in r.stderr
    assert "azl-bootstrap" in run(udevadm, "--version").stdout
    bad = subprocess.run([udevadm, "settle", "--timeout=soon"], capture_output=True, text=True)
    assert bad.returncode == 2 and "bad timeout soon" in bad.stderr


# ----------------------------------------------------------------------------- in a VM

VM_INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys
# a /dev that no kernel fills: a tmpfs, as a static /dev would be
mount -t tmpfs -o mode=755 dev /dev; mknod /dev/console c 5 1; mknod /dev/null c 1 3
exec >/dev/console 2>&1
{insmods}
say() {{ echo "AZL-TEST $*"; }}
say static-loop-nodes-before $(ls /dev | grep -c '^loop')
udevadm settle; say static-first-settle-exit $?
say static-loop-nodes-after $(ls /dev | grep -c '^loop')
dev=$(losetup -f); losetup -P $dev /disk.img; say static-losetup $dev $?
[ -e ${{dev}}p1 ] || say static-p1-missing-before-settle
udevadm settle; say static-settle-exit $?
say static-p1 $(stat -c '%t:%T %F' ${{dev}}p1) sysfs $(cat /sys/class/block/${{dev#/dev/}}p1/dev)
mkdir /mnt; mount -t vfat -o ro ${{dev}}p1 /mnt && say static-read $(cat /mnt/HELLO.TXT)
umount /mnt; losetup -d $dev
# the kernel's devtmpfs: the 64-bit guest kernel mounts it on /dev
mount -t devtmpfs dev /dev
dev=$(losetup -f); losetup -P $dev /disk.img; say devtmpfs-losetup $dev $?
[ -b ${{dev}}p1 ] && say devtmpfs-p1-made-by-the-kernel
udevadm settle 2>/tmp/err; say devtmpfs-settle-exit $? made $(grep -c made /tmp/err)
mount -t vfat -o ro ${{dev}}p1 /mnt && say devtmpfs-read $(cat /mnt/HELLO.TXT)
umount /mnt; losetup -d $dev
say done
poweroff -f
"""


def guest_build(tmp_path: Path) -> Path:
    """The recipe's own compile line, with musl-gcc -static as the guest's compiler (the
    guest's gcc links musl too): a program the initramfs runs without a libc of its own."""
    recipe = tomllib.loads((REPO / "recipes" / "udevadm.toml").read_text())
    env = {**os.environ, "CC": "musl-gcc", "CFLAGS": "-O2", "LDFLAGS": "-static",
           "CPPFLAGS": "", "FILESDIR": str(REPO / "recipes" / "udevadm")}  # fmt: skip
    run("sh", "-ec", recipe["script"]["compile"], cwd=tmp_path, env=env)
    assert "statically linked" in run("file", tmp_path / "udevadm").stdout
    return tmp_path / "udevadm"


def efi_disk(path: Path) -> None:
    """An 8 MiB image with a DOS partition table whose first partition (3 MiB, type c) is a
    FAT file system holding HELLO.TXT: an efiboot.img inside a disk."""
    with open(path, "wb") as f:
        f.truncate(8 << 20)
    run("sfdisk", "-q", path, input="label: dos\n,3M,c\n,,L\n")
    run("mkfs.vfat", "--offset", "2048", path, "3072")
    hello = path.with_name("HELLO.TXT")
    hello.write_text("azl-efi\n")
    run("mcopy", "-i", f"{path}@@1M", hello, "::/HELLO.TXT")


VM_TOOLS = ("qemu-system-x86_64", "cpio", "musl-gcc", "sfdisk", "mkfs.vfat", "mcopy", "file")


@pytest.mark.skipif(
    bool(vmimage.missing_tools()) or not all(shutil.which(t) for t in VM_TOOLS),
    reason=f"needs {', '.join(VM_TOOLS)} and {vmimage.missing_tools() or 'the VM tools'}",
)
def test_in_a_vm_losetup_scans_the_partitions_and_settle_makes_their_nodes(
    tmp_path: Path,
) -> None:
    """Debian's kernel (partition tables and vfat built in or as modules) in an initramfs:
    ``losetup -P`` (busybox's) makes the kernel scan the table itself; on a /dev that is a
    tmpfs settle makes /dev/loopN and then /dev/loopNp1, which mounts as vfat; on a devtmpfs
    the kernel has made them and settle makes none."""
    disk = tmp_path / "disk.img"
    efi_disk(disk)
    files = {"/sbin/udevadm": guest_build(tmp_path), "/disk.img": disk,
             "/etc/group": _write(tmp_path / "group", "root:x:0:\ndisk:x:6:\n")}  # fmt: skip
    modules = ("loop", "vfat", "nls_cp437", "nls_ascii")
    kernel, initrd = vmimage.initramfs_guest(tmp_path / "vm", VM_INIT, modules, files)
    out = vmimage.boot_initramfs(kernel, initrd)
    said = dict(
        (m.group(1), m.group(2).strip()) for m in re.finditer(r"^AZL-TEST (\S+) ?(.*)$", out, re.M)
    )
    assert "done" in said, out[-3000:]
    # a /dev nobody fills: settle makes the loop devices, then the partitions losetup -P found
    assert said["static-loop-nodes-before"] == "0", said
    assert said["static-first-settle-exit"] == "0" and int(said["static-loop-nodes-after"]) >= 1
    assert said["static-settle-exit"] == "0", said
    dev, code = said["static-losetup"].split()
    assert code == "0" and "static-p1-missing-before-settle" in said, said
    numbers, _, dev_t = said["static-p1"].partition(" sysfs ")  # "103:0 block special file"
    major, minor = (int(x) for x in dev_t.split(":"))
    assert numbers == f"{major:x}:{minor:x} block special file", said
    assert f"made {dev}p1 ({major}:{minor})" in out
    assert said["static-read"] == "azl-efi", said
    # the kernel's devtmpfs: nothing to make
    assert said["devtmpfs-losetup"].endswith(" 0") and "devtmpfs-p1-made-by-the-kernel" in said
    assert said["devtmpfs-settle-exit"] == "0 made 0", said
    assert said["devtmpfs-read"] == "azl-efi", said


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
