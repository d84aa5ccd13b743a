"""The sandbox proof of recipes/libelf: its build phases run outside the engine with a chosen
compiler (musl-gcc, or ``gcc -m32`` for a 32-bit host like the i686 guest), against a zlib
built with the same compiler; then the kernel's tools/objtool is built by the kernel's own make
against that libelf, found through pkg-config as in the guest.

Used by tests/test_libelf.py (slow). Inputs come from the repository's ``mirror/`` or Debian's
archive, verified by sha256.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tasks.recipe import PHASES, Recipe, Source

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "recipes" / "libelf.toml"

# live-bootstrap builds zlib 1.2.13 (steps/zlib-1.2.13); Debian bookworm's .orig of it (a
# +dfsg repack: contrib/ removed) is what the proof builds with musl-gcc and -m32, because
# neither Debian's musl-tools nor gcc-multilib ship a zlib. Test input only.
ZLIB = Source(
    file="zlib_1.2.13.dfsg.orig.tar.bz2",
    sha256="71feb7947e3c00ef125f83b79a4e529bde31171e5babe48b391f06758d1ab0a1",
    debian="main/z/zlib/zlib_1.2.13.dfsg.orig.tar.bz2",
)


def recipe() -> Recipe:
    from tasks.loader import parse_recipe

    r, errors = parse_recipe(RECIPE)
    assert r is not None, errors
    return r


def libelf_source() -> Source:
    """The tarball the sandbox builds of recipes/libelf."""
    return recipe().for_platform("sandbox").version.sources[0]


def fetch(source: Source, archive: str) -> Path:
    """``source`` in the repository's mirror/, fetched from Debian's archive (``archive``: its
    base URI) and verified if not there yet."""
    from tasks.download import fetch as download
    from tasks.download import sha256_file

    dest = REPO / "mirror" / source.file
    if not (dest.is_file() and sha256_file(dest) == source.sha256):
        assert source.debian, f"{source.file}: no Debian pool path"
        dest.parent.mkdir(exist_ok=True)
        download(
            [f"{archive.rstrip('/')}/pool/{source.debian}"], dest, source.sha256, progress=False
        )
    return dest


def unpack(tarball: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    subprocess.run(
        ["tar", "-xf", str(tarball), "-C", str(dest), "--strip-components=1"], check=True
    )
    return dest


def _run(cmd: list[str] | str, cwd: Path, env: dict[str, str], log: Path) -> None:
    with open(log, "a") as f:
        f.write(f"$ {cmd}\n")
        f.flush()
        r = subprocess.run(
            cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT, shell=isinstance(cmd, str)
        )
    if r.returncode:
        tail = log.read_text()[-3000:]
        raise AssertionError(f"{cmd}: exit {r.returncode} in {cwd}\n{tail}")


def base_env(**extra: str) -> dict[str, str]:
    """What the engine gives every build (tasks.platform.build_env), plus ``extra``."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LC_ALL": "C",
        "TZ": "UTC",
        "SOURCE_DATE_EPOCH": "0",
        **extra,
    }


def build_zlib(tarball: Path, work: Path, cc: str) -> Path:
    """A static zlib built with ``cc``; its prefix (include/, lib/libz.a)."""
    src, prefix = unpack(tarball, work / "zlib-src"), work / "zlib"
    env = base_env(CC=cc)
    _run(["./configure", "--static", f"--prefix={prefix}"], src, env, work / "zlib.log")
    _run(["make", "-j2", "libz.a"], src, env, work / "zlib.log")
    _run(["make", "install"], src, env, work / "zlib.log")
    return prefix


def build_libelf(
    tarball: Path, work: Path, cc: str, zlib: Path, jobs: int = 2
) -> tuple[Path, float]:
    """The recipe's own phases (its [script]: ``sh -e -c``, in the unpacked source, as the
    engine runs them) with ``CC=cc`` and this zlib, PREFIX=/usr, LIBDIR=/usr/lib, staged in
    ``work/stage``; return the stage and the seconds the phases took."""
    src, stage = unpack(tarball, work / "elfutils-src"), work / "stage"
    env = base_env(
        CC=cc,
        CPPFLAGS=f"-I{zlib / 'include'}",
        LDFLAGS=f"-L{zlib / 'lib'}",
        FILESDIR=str(recipe().files_dir.resolve()),
        DESTDIR=str(stage),
        PREFIX="/usr",
        LIBDIR="/usr/lib",
        JOBS=str(jobs),
    )
    script = recipe().script
    start = time.monotonic()
    for phase in PHASES:
        if phase in script:
            _run(["sh", "-e", "-c", script[phase]], src, env, work / "libelf.log")
    return stage, time.monotonic() - start


def kernel_make(
    src: Path,
    out: Path,
    log: Path,
    args: list[str],
    libelf_stage: Path | None = None,
) -> str:
    """``make O=out ARGS`` in the kernel tree (ARCH=x86_64); pkg-config sees only the
    libelf of ``libelf_stage`` (its sysroot), as objtool's Makefile asks it. Returns the
    output of this make."""
    env = base_env(
        ARCH="x86_64",
        KBUILD_BUILD_TIMESTAMP="@0",
        KBUILD_BUILD_USER="root",
        KBUILD_BUILD_HOST="azl-bootstrap",
    )
    if libelf_stage is not None:
        env["PKG_CONFIG_SYSROOT_DIR"] = str(libelf_stage)
        env["PKG_CONFIG_LIBDIR"] = str(libelf_stage / "usr" / "lib" / "pkgconfig")
    start = len(log.read_text()) if log.exists() else 0
    _run(["make", f"O={out}", *args], src, env, log)
    return log.read_text()[start:]


def musl_cc(work: Path, headers: Path) -> Path:
    """``musl-gcc`` that also sees the kernel's UAPI headers (``make headers_install``) after
    musl's own, as live-bootstrap has both in /usr/include: Debian's musl-gcc has none."""
    if shutil.which("musl-gcc") is None:
        raise FileNotFoundError("musl-gcc")
    wrapper = work / "musl-cc"
    wrapper.write_text(f'#!/bin/sh\nexec musl-gcc -idirafter "{headers}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


@dataclass(frozen=True)
class KernelTree:
    src: Path  # the unpacked kernel
    out: Path  # its O= directory, configured
    log: Path  # every make's output, appended
    hostcc: str  # the musl-gcc wrapper
    host: list[str]  # make arguments: host programs with musl, static, this zlib


def configure_kernel(tarball: Path, work: Path, zlib: Path) -> KernelTree:
    """Unpack the kernel into ``work``, install its UAPI headers for the musl-gcc wrapper and
    make the .config with recipes/kernel64's kconfig64.sh, host programs built with musl."""
    from tests import kernel64_proof

    src = unpack(tarball, work / "linux")
    out, log, headers = work / "out", work / "kernel.log", work / "uapi"
    kernel_make(src, out, log, ["HOSTCC=musl-gcc", "HOSTLDFLAGS=-static",
                                f"INSTALL_HDR_PATH={headers}", "headers_install"])  # fmt: skip
    hostcc = str(musl_cc(work, headers / "include"))
    host = [f"HOSTCC={hostcc}", f"HOSTLDFLAGS=-static -L{zlib / 'lib'}"]
    kconfig = [str(kernel64_proof.FILES / f) for f in ("kconfig64.sh", "kconfig64.fragment")]
    _run(["sh", *kconfig, f"O={out}", *host], src, base_env(ARCH="x86_64"), log)
    return KernelTree(src, out, log, hostcc, host)
