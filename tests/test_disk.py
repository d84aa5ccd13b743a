"""The guest's disk grows with its image (issue 16): live-bootstrap made ``sda1`` and its
ext4 fit its own image; ``tasks.guest.vm.grow_root`` grows both to the size the image was
grown to, on the host before the boot. On a real image file laid out as live-bootstrap's
(an MBR, partition 1 from sector 2048, ext4), small: 64 MiB grown to 256 MiB. The guest's
own ``df`` after the boot is checked by tests/test_vm.py."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tasks.guest.vm import grow_image, grow_root

MiB = 1 << 20
TOOLS = ("sfdisk", "mkfs.ext4", "e2fsck", "resize2fs", "dumpe2fs", "debugfs")
pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in TOOLS),
    reason=f"needs {', '.join(TOOLS)} (fdisk, e2fsprogs)",
)


def run(*argv: str, input: str | None = None) -> str:
    return subprocess.run(argv, input=input, capture_output=True, text=True, check=True).stdout


def partition(image: Path) -> dict:
    return json.loads(run("sfdisk", "-J", str(image)))["partitiontable"]["partitions"][0]


def fs_size(device: str) -> tuple[int, int]:
    """(size in bytes, free bytes) of the ext4 at ``device``: what ``df`` in the guest shows
    as the root's size and available space come from these superblock counts."""
    head = dict(
        (k.strip(), v.strip())
        for k, _, v in (ln.partition(":") for ln in run("dumpe2fs", "-h", device).splitlines())
    )
    bs = int(head["Block size"])
    return int(head["Block count"]) * bs, int(head["Free blocks"]) * bs


def live_bootstrap_like(image: Path, size: int) -> str:
    """A disk of ``size`` bytes: MBR, partition 1 from sector 2048 to the end, ext4 on it
    holding a file; the partition's ``file?offset=`` device."""
    subprocess.run(["truncate", "-s", str(size), str(image)], check=True)
    run("sfdisk", "-q", str(image), input="label: dos\nstart=2048, type=83\n")
    part = partition(image)
    device = f"{image}?offset={part['start'] * 512}"
    run("mkfs.ext4", "-q", "-F", "-E", f"offset={part['start'] * 512}", str(image),
        f"{part['size'] * 512 // 1024}k")  # fmt: skip
    (image.parent / "hello").write_text("written by live-bootstrap\n")
    run("debugfs", "-w", "-R", f"write {image.parent / 'hello'} hello", device)
    return device


def test_partition_and_ext4_grow_with_the_image(tmp_path: Path) -> None:
    image = tmp_path / "init.img"
    device = live_bootstrap_like(image, 64 * MiB)
    before, _ = fs_size(device)
    assert before < 64 * MiB

    assert grow_image(image, 256 * MiB)
    note = grow_root(image)
    assert note and "partition 1" in note and "ext4" in note, note

    part = partition(image)
    assert part["start"] == 2048  # the data stays where it is
    assert (part["start"] + part["size"]) * 512 > 255 * MiB  # to the end of the disk
    size, free = fs_size(device)
    # the filesystem fills its partition (in whole block groups of 8 MiB here), not more
    assert part["size"] * 512 - 8 * MiB < size <= part["size"] * 512
    assert image.stat().st_size == 256 * MiB  # resize2fs's cut of the file was undone
    assert free > 200 * MiB
    subprocess.run(["e2fsck", "-f", "-n", device], check=True, capture_output=True)  # clean
    assert run("debugfs", "-R", "cat hello", device) == "written by live-bootstrap\n"
    assert image.stat().st_blocks * 512 < 32 * MiB  # still sparse

    assert grow_root(image) is None  # the next boot: nothing to do
    assert grow_image(image, 128 * MiB) is False  # never shrunk
    assert fs_size(device)[0] == size


def test_a_disk_without_a_partition_table_is_left_alone(tmp_path: Path) -> None:
    image = tmp_path / "bare.img"
    subprocess.run(["truncate", "-s", str(16 * MiB), str(image)], check=True)
    run("mkfs.ext4", "-q", "-F", str(image))
    grow_image(image, 32 * MiB)
    assert grow_root(image) is None
