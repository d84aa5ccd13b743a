"""The sandbox proof of recipes/kernel64: build the kernel with kconfig64.sh and this machine's
gcc, and boot it under TCG qemu from a SATA (AHCI) disk whose ext4 root=/dev/sda1 holds a
32-bit static /init (tests/kernel64/init32.c) that prints what tests/test_kernel64.py checks.

The built kernel is kept in ``cache/kernel64/`` (``AZL_KERNEL64_CACHE`` overrides), with the
sha256 of its inputs (tarball, fragment, script): a changed fragment makes it stale. Used by
the tests and by tests/bench_kernel64.py, which prints the build and boot times.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.vmimage import console_of

REPO = Path(__file__).resolve().parent.parent
FILES = REPO / "recipes" / "kernel64"
INIT_SOURCE = Path(__file__).resolve().parent / "kernel64" / "init32.c"
SUBSTITUTE = "6.1.170"  # the recipe's version the sandbox can fetch (Debian's .orig)


def cache_dir() -> Path:
    return Path(os.environ.get("AZL_KERNEL64_CACHE") or REPO / "cache" / "kernel64")


@dataclass(frozen=True)
class Built:
    bzimage: Path
    config: Path
    seconds: float  # how long the build took when it was made


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def gcc_links_32bit_static() -> bool:
    """Whether this machine's gcc links a 32-bit static program (gcc-multilib)."""
    probe = subprocess.run(
        ["gcc", "-m32", "-static", "-x", "c", "-o", "/dev/null", "-"],
        input="int main(void){return 0;}",
        text=True,
        capture_output=True,
    )
    return probe.returncode == 0


def substitute_source():  # -> tasks.model.recipe.Source
    """The recipe's Debian source of the substitute version."""
    from tasks.engine.recipeset import parse_recipe

    recipe, errors = parse_recipe(REPO / "recipes" / "kernel64.toml")
    assert recipe is not None, errors
    return recipe.versions[SUBSTITUTE].sources[0]


def inputs(tarball_sha256: str) -> dict[str, str]:
    """What a cached kernel was built from; any change makes it stale."""
    return {
        "tarball": tarball_sha256,
        "kconfig64.fragment": _sha256(FILES / "kconfig64.fragment"),
        "kconfig64.sh": _sha256(FILES / "kconfig64.sh"),
    }


def cached(expected_inputs: dict[str, str] | None = None) -> Built | None:
    """The cached kernel, if one was built (from ``expected_inputs``, when given)."""
    d = cache_dir()
    try:
        record = json.loads((d / "build.json").read_text())
    except (OSError, ValueError):
        return None
    if not (d / "bzImage").is_file():
        return None
    if expected_inputs is not None and record.get("inputs") != expected_inputs:
        return None
    return Built(d / "bzImage", d / "config", float(record["seconds"]))


def fetch_source(source, archive: str) -> Path:  # source: tasks.model.recipe.Source
    """``source`` in the repository's mirror/, fetched from Debian's archive (``archive``: its
    base URI from the apt sources) and verified if not there yet."""
    from tasks.sources.download import fetch, sha256_file

    dest = REPO / "mirror" / source.file
    if not (dest.is_file() and sha256_file(dest) == source.sha256):
        assert source.debian, f"{source.file}: no Debian pool path"
        dest.parent.mkdir(exist_ok=True)
        fetch([f"{archive.rstrip('/')}/pool/{source.debian}"], dest, source.sha256, progress=False)
    return dest


def fetch_tarball(archive: str) -> Path:
    """The substitute kernel's .orig (``fetch_source``)."""
    return fetch_source(substitute_source(), archive)


def build(tarball: Path, sha256: str, jobs: int = 2) -> Built:
    """Unpack ``tarball``, make the .config with kconfig64.sh, build bzImage with the
    machine's gcc; keep bzImage, .config and the build time in the cache."""
    d = cache_dir()
    src, out = d / "src", d / "build"
    for p in (src, out):
        shutil.rmtree(p, ignore_errors=True)
        p.mkdir(parents=True)
    subprocess.run(["tar", "-xf", str(tarball), "-C", str(src), "--strip-components=1"], check=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "ARCH": "x86_64",
        "LC_ALL": "C",
        "KBUILD_BUILD_TIMESTAMP": "@0",
        "KBUILD_BUILD_USER": "root",
        "KBUILD_BUILD_HOST": "azl-bootstrap",
    }
    start = time.monotonic()
    with open(d / "build.log", "w") as log:
        for cmd in (
            ["sh", str(FILES / "kconfig64.sh"), str(FILES / "kconfig64.fragment"), f"O={out}"],
            ["make", f"O={out}", f"-j{jobs}", "bzImage"],
        ):
            r = subprocess.run(cmd, cwd=src, env=env, stdout=log, stderr=subprocess.STDOUT)
            if r.returncode:
                raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}, see {d / 'build.log'}")
    seconds = time.monotonic() - start
    shutil.copy(out / "arch" / "x86" / "boot" / "bzImage", d / "bzImage")
    shutil.copy(out / ".config", d / "config")
    record = {"inputs": inputs(sha256), "seconds": round(seconds, 1), "jobs": jobs}
    (d / "build.json").write_text(json.dumps(record, indent=1) + "\n")
    shutil.rmtree(src)
    shutil.rmtree(out)
    return Built(d / "bzImage", d / "config", seconds)


def make_disk(work: Path) -> Path:
    """A raw disk image: an MBR partition table and one ext4 partition (sda1) whose root holds
    the 32-bit static /init. No root rights or loop devices needed (mkfs.ext4 -d)."""
    root = work / "rootfs"
    for sub in ("dev", "proc", "sys"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["gcc", "-m32", "-static", "-O2", "-o", str(root / "init"), str(INIT_SOURCE)],
        check=True,
        capture_output=True,
    )
    part = work / "part.img"
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(root), str(part), "32M"],
        check=True,
        capture_output=True,
    )
    disk = work / "disk.img"
    offset = 1 << 20
    with open(disk, "wb") as out, open(part, "rb") as f:
        out.truncate(offset)
        out.seek(offset)
        shutil.copyfileobj(f, out)
    subprocess.run(
        ["sfdisk", "--quiet", str(disk)],
        input="label: dos\nstart=2048, type=83\n",
        text=True,
        check=True,
        capture_output=True,
    )
    return disk


def boot(bzimage: Path, disk: Path, timeout: float = 900) -> tuple[str, float]:
    """Boot under TCG qemu (q35: the disk on its ICH9 AHCI controller, an e1000 NIC), the
    kernel's console on the serial port; return the console output and the seconds from the
    start of qemu to the end of /init. qemu is stopped (by its PID) whatever happens."""
    cmd = [
        "qemu-system-x86_64",
        "-accel", "tcg",
        "-machine", "q35",
        "-m", "512",
        "-smp", "1",
        "-kernel", str(bzimage),
        "-append", "root=/dev/sda1 rootwait rw init=/init console=ttyS0 loglevel=4 panic=-1",
        "-drive", f"file={disk},format=raw,if=none,id=root",
        "-device", "ide-hd,drive=root,bus=ide.0",
        "-nic", "user,model=e1000",
        "-display", "none",
        "-serial", "stdio",
        "-monitor", "none",
        "-no-reboot",
    ]  # fmt: skip
    start = time.monotonic()
    out = console_of(cmd, timeout)
    return out, time.monotonic() - start
