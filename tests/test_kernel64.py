"""recipes/kernel64's config, proven: the kernel built from x86_64_defconfig + kconfig64.fragment
boots under TCG qemu from a SATA (AHCI) disk's ext4 root=/dev/sda1 without an initrd, runs a
32-bit static /init (IA32 emulation), has its e1000 NIC, devtmpfs on /dev, and gives a child
an empty network namespace (what the sandboxed builds after the kexec need).

The build (20-40 min on 2 cores) is slow; the boot of an already built kernel (the cache of
tests/kernel64_proof.py) is in the default run and skips only when none has been built.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import kernel64_proof as proof

FRAGMENT = proof.FILES / "kconfig64.fragment"
NEEDED = ("qemu-system-x86_64", "mkfs.ext4", "sfdisk", "gcc")


def _tools() -> None:
    missing = [t for t in NEEDED if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")
    if not proof.gcc_links_32bit_static():
        pytest.skip("gcc cannot link 32-bit static programs (apt-get install gcc-multilib)")


def fragment_options() -> list[str]:
    return re.findall(r"^(CONFIG_\w+)=y$", FRAGMENT.read_text(), re.M)


def test_every_fragment_option_says_why() -> None:
    """Each option of the fragment belongs to a block that starts with a comment."""
    block_has_comment = False
    for line in FRAGMENT.read_text().splitlines():
        if not line.strip():
            block_has_comment = False
        elif line.startswith("#"):
            block_has_comment = True
        else:
            assert re.fullmatch(r"CONFIG_\w+=y", line), f"{FRAGMENT}: not an =y option: {line}"
            assert block_has_comment, f"{FRAGMENT}: {line} has no comment saying why"
    for must in ("IA32_EMULATION", "NET_NS", "SATA_AHCI", "E1000", "EXT4_FS", "DEVTMPFS_MOUNT",
                 "KEXEC", "BLK_DEV_LOOP", "OVERLAY_FS"):  # fmt: skip
        assert f"CONFIG_{must}" in fragment_options()


def check_boot(built: proof.Built, work: Path) -> float:
    """Boot ``built`` and check what /init printed; return the boot time."""
    config = built.config.read_text()
    for option in fragment_options():
        assert f"{option}=y\n" in config, f"{option} is not =y in the built kernel's config"
    console, seconds = proof.boot(built.bzimage, proof.make_disk(work))
    lines = "\n".join(ln.strip() for ln in console.splitlines() if ln.startswith("AZL "))
    tail = console[-3000:]
    assert "AZL ia32 machine=x86_64 pointer_bits=32" in lines, tail
    assert re.search(r"^AZL mount /dev/root / ext4 rw", lines, re.M), tail
    assert re.search(r"^AZL mount devtmpfs /dev devtmpfs", lines, re.M), tail
    sda = re.search(r"^AZL link /sys/block/sda -> (\S+)", lines, re.M)
    ahci = re.search(r"^AZL ahci: (\S+)", lines, re.M)  # a PCI device the ahci driver has
    assert sda and ahci and f"/{ahci.group(1)}/ata" in sda.group(1), tail  # sda hangs off it
    net = re.search(r"^AZL net:(.*)$", lines, re.M)
    assert net and "eth0" in net.group(1).split(), tail  # e1000 built in
    netns = re.search(r"^AZL netns:(.*)$", lines, re.M)  # unshare(CLONE_NEWNET): a new,
    assert netns and "lo" in netns.group(1).split(), tail  # empty namespace: lo (and the
    assert "eth0" not in netns.group(1).split(), tail  # per-namespace sit0), not the NIC
    assert "AZL unshare exit=0" in lines, tail
    assert "AZL done" in lines, tail
    return seconds


def test_the_built_kernel_boots_32bit_init_from_sata(tmp_path: Path) -> None:
    _tools()
    built = proof.cached()
    if built is None:
        pytest.skip(
            f"no kernel built yet in {proof.cache_dir()}: "
            "the slow test_kernel_builds_and_boots builds one (-m slow)"
        )
    check_boot(built, tmp_path)


@pytest.mark.slow
@pytest.mark.network
def test_kernel_builds_and_boots(tmp_path: Path, archive: str) -> None:
    """The substitute kernel built with kconfig64.sh from scratch (or reused when built from
    the same tarball, fragment and script), then booted."""
    _tools()
    src = proof.substitute_source()
    tarball = proof.fetch_tarball(archive)
    built = proof.cached(proof.inputs(src.sha256)) or proof.build(tarball, src.sha256)
    check_boot(built, tmp_path)


@pytest.mark.slow
@pytest.mark.network
def test_kconfig64_stops_on_a_lost_option(tmp_path: Path, archive: str) -> None:
    """An option Kconfig drops (unknown or unmet dependency) stops kconfig64.sh, naming it."""
    tarball = proof.fetch_tarball(archive)
    src = tmp_path / "src"
    src.mkdir()
    subprocess.run(["tar", "-xf", str(tarball), "-C", str(src), "--strip-components=1"], check=True)
    fragment = tmp_path / "frag"
    fragment.write_text(FRAGMENT.read_text() + "# a typo\nCONFIG_EXT4_FS_TYPO=y\n")
    r = subprocess.run(
        ["sh", str(proof.FILES / "kconfig64.sh"), str(fragment), f"O={tmp_path / 'out'}"],
        cwd=src,
        env={"PATH": "/usr/bin:/bin", "ARCH": "x86_64"},
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1
    assert "CONFIG_EXT4_FS_TYPO=y" in r.stderr and str(fragment) in r.stderr
