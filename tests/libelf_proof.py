"""The sandbox proof of recipes/libelf: its build phases run outside the engine with a chosen
musl compiler (Debian's musl-gcc for x86_64, or an i386 musl built here, the guest's kind of
host), against a zlib built with the same compiler; then the kernel's tools/objtool is built
by the kernel's own make against that libelf, found through pkg-config as in the guest.

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

from tasks.model.recipe import PHASES, Recipe, Source

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


# The guest's host is i686 musl; Debian has no musl for i386 on an amd64 machine, so the proof
# builds one: Debian bookworm's .orig of musl 1.2.3 (upstream's musl-1.2.3.tar.gz, signature
# verified: reference/sources.md), compiled with gcc -m32. Test input only.
MUSL = Source(
    file="musl_1.2.3.orig.tar.gz",
    sha256="7d5b0b6062521e4627e099e4c9dc8248d32a30285e959b7eecaa780cf8cfd4a4",
    debian="main/m/musl/musl_1.2.3.orig.tar.gz",
)


def recipe() -> Recipe:
    from tasks.engine.recipeset import parse_recipe

    r, errors = parse_recipe(RECIPE)
    assert r is not None, errors
    return r


def libelf_source() -> Source:
    """The tarball the sandbox builds of recipes/libelf."""
    return recipe().for_platform("sandbox").version.sources[0]


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
    """What the engine gives every build (tasks.model.platform.build_env), plus ``extra``."""
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


def wrapper(path: Path, command: str) -> Path:
    """An executable ``sh`` script at ``path`` that runs ``command "$@"``."""
    path.write_text(f"#!/bin/sh\nexec {command}\n")
    path.chmod(0o755)
    return path


def musl_cc(work: Path, headers: Path, cc: str = "musl-gcc") -> Path:
    """``cc`` (a musl compiler) that also sees the kernel's UAPI headers (``make
    headers_install``) after musl's own, as live-bootstrap has both in /usr/include: Debian's
    musl-gcc has none."""
    if shutil.which(cc) is None:
        raise FileNotFoundError(cc)
    return wrapper(work / f"{Path(cc).name}-uapi", f'{cc} -idirafter "{headers}" "$@"')


def build_musl_i386(tarball: Path, work: Path) -> Path:
    """musl for i386, static only, built with ``gcc -m32`` into ``work/musl``; return a
    compiler for it (gcc -m32 with musl's specs: its headers, crt and libc, no glibc)."""
    src, prefix = unpack(tarball, work / "musl-src"), work / "musl"
    env = base_env()
    configure = ["./configure", "--target=i386-linux-musl", "CC=gcc -m32", f"--prefix={prefix}",
                 "--disable-shared"]  # fmt: skip
    _run(configure, src, env, work / "musl.log")
    for target in ("all", "install"):  # the host's ar: no i386-linux-musl-ar here
        _run(["make", "-j2", "CROSS_COMPILE=", target], src, env, work / "musl.log")
    # musl's specs replace gcc's link spec, and with it the -m elf_i386 that -m32 implies
    specs = prefix / "lib" / "musl-gcc.specs"
    return wrapper(work / "musl-i386-cc", f'gcc -m32 -Wl,-m,elf_i386 "$@" -specs "{specs}"')


@dataclass(frozen=True)
class KernelTree:
    src: Path  # the unpacked kernel
    out: Path  # its O= directory, configured
    log: Path  # every make's output, appended
    uapi: Path  # the kernel's UAPI headers (make headers_install)
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
    hostcc = str(musl_cc(work, headers / "include"))  # musl-gcc, x86_64
    host = [f"HOSTCC={hostcc}", f"HOSTLDFLAGS=-static -L{zlib / 'lib'}"]
    kconfig = [str(kernel64_proof.FILES / f) for f in ("kconfig64.sh", "kconfig64.fragment")]
    _run(["sh", *kconfig, f"O={out}", *host], src, base_env(ARCH="x86_64"), log)
    return KernelTree(src, out, log, headers / "include", hostcc, host)
