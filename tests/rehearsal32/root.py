"""The 32-bit rehearsal: the guest's situation after the kexec (a 64-bit kernel under a 32-bit
userland) made on any Debian x86_64 machine, as root: a Debian i386 root made by debootstrap
from the machine's Debian archive (its URI from the apt sources), entered with chroot.

    python -m tests.rehearsal32.root root              make (or reuse) cache/rehearsal32/root
    python -m tests.rehearsal32.root shell             a shell in it (the project at /azl)
    python -m tests.rehearsal32.root go                go1.23 with GOHOSTARCH=386, the Statfs check
    python -m tests.rehearsal32.root packages [PKG..]  the project's recipes built for i686 in it
    python -m tests.rehearsal32.root toolkit           the sudo/runuser shim and stage env tests in it
    python -m tests.rehearsal32.root gotools           the real toolkit's go-tools stage in it, offline

The root is kept between runs (``cache/rehearsal32/root``, made as ``root.part`` and renamed
when complete); ``root --fresh`` makes it again. Inside, ``uname -m`` says x86_64 (no
``linux32``), as live-bootstrap's userland sees it after the kexec. The chroot gets /proc,
/sys, /dev, /dev/pts and the project checkout at ``/azl``, all unmounted on the way out. Other
work may reuse it through :func:`entered` (``toolkit`` runs the sudo/runuser shim's and the
stage environment's tests there).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tasks.sources.download import debian_archive_uri

SUITE = "bookworm"
# build-essential comes with the buildd variant; the rest is what the recipes' build systems
# and the engine (python3 + doit's dependencies) need, and the libraries the recipes take from
# live-bootstrap (as setup.sh's for the sandbox): zlib, OpenSSL, libffi (glib), libmagic
# (file-5.44: rpm requires magic.h), liblzma (xz). PAM is the sandbox's, not live-bootstrap's
# (util-linux's recipe is checked without it in tests/test_sudo.py).
PACKAGES = (
    "python3", "python3-venv", "python3-pip", "python3-psutil", "python3-requests",
    "python3-xxhash", "python3-tqdm", "pkg-config", "m4", "autoconf", "automake", "libtool",
    "bison", "flex", "gawk", "git", "xz-utils", "bzip2", "curl", "ca-certificates",
    "zlib1g-dev", "libssl-dev", "libpam0g-dev", "gettext", "texinfo",
    "libffi-dev", "libmagic-dev", "liblzma-dev",
    # what the toolkit's own tests run (make go-tools runs them: tests/rehearsal32/gotools.py):
    # rpm/rpmspec and zstd, which the guest has from its chain (V23 rpm 4.18.2, V13 zstd);
    # Debian's rpm 4.18.0 and zstd stand in for them
    "rpm", "zstd",
)  # fmt: skip
# The i386 bootstrap Go of go1.23 (which needs Go >= 1.20): bookworm-backports' golang-1.22.
BOOTSTRAP_GO = ("golang-1.22-go", "/usr/lib/go-1.22")
READY = ".azl-rehearsal32"  # written last into a complete root
INSIDE = "/azl"  # where the project checkout appears inside


class RehearsalError(Exception):
    """A step of the rehearsal failed; the message names it and where its output is."""


def root_dir(project: Path) -> Path:
    return project / "cache" / "rehearsal32" / "root"


def _run(cmd: list[str], log: Path | None = None, **kw: object) -> None:
    out = open(log, "a") if log else None  # noqa: SIM115 - closed below
    try:
        r = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT if out else None, **kw)
    finally:
        if out:
            out.close()
    if r.returncode:
        where = f", see {log}" if log else ""
        raise RehearsalError(f"{shlex.join(cmd)}: exit {r.returncode}{where}")


def make_root(project: Path, archive: str | None = None, fresh: bool = False) -> Path:
    """The i386 root, made with debootstrap once and reused while it is complete."""
    root = root_dir(project)
    if fresh and root.exists():
        _rmtree_root(root)
    if (root / READY).is_file():
        _add_packages(root, project)
        return root
    if os.geteuid() != 0:
        raise RehearsalError("the 32-bit rehearsal needs root (debootstrap, chroot, mounts)")
    if shutil.which("debootstrap") is None:
        raise RehearsalError("debootstrap is not installed (apt-get install debootstrap)")
    archive = archive or debian_archive_uri()
    if not archive:
        raise RehearsalError("no Debian archive in the apt sources to debootstrap from")
    part = root.with_name("root.part")
    log = root.with_name("debootstrap.log")
    # debootstrap removes its work directory <root>/debootstrap when it has finished: a part
    # without it is a complete base system (a run killed later goes on from there)
    done = (part / "usr/bin/python3").exists() and not (part / "debootstrap").exists()
    if not done:
        if part.exists():
            _rmtree_root(part)
        part.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")
        _run(
            ["debootstrap", "--arch=i386", "--variant=buildd", f"--include={','.join(PACKAGES)}"]
            + [SUITE, str(part), archive],
            log,
        )
    (part / "etc/apt/sources.list").write_text(
        f"deb {archive} {SUITE} main\ndeb {archive} {SUITE}-backports main\n"
    )
    with entered(part, project) as run:
        run("apt-get update -q", log)
        run(f"apt-get install -y -q -t {SUITE}-backports {BOOTSTRAP_GO[0]}", log)
    (part / READY).write_text("\n".join(PACKAGES + BOOTSTRAP_GO[:1]) + "\n")
    os.replace(part, root)
    return root


def _add_packages(root: Path, project: Path) -> None:
    """Install into a kept root what PACKAGES gained since it was made (READY lists what it
    has), so a longer list does not need a fresh debootstrap."""
    ready = root / READY
    have = set(ready.read_text().split())
    missing = [p for p in PACKAGES if p not in have]
    if not missing:
        return
    if os.geteuid() != 0:
        raise RehearsalError(f"{root} lacks {' '.join(missing)}; installing them needs root")
    log = root.with_name("debootstrap.log")
    with entered(root, project) as run:
        run(f"apt-get install -y -q {' '.join(missing)}", log)
    ready.write_text("\n".join(sorted(have | set(missing))) + "\n")


def _rmtree_root(root: Path) -> None:
    """Remove a root, refusing while anything is still mounted inside it."""
    mounts = Path("/proc/self/mounts").read_text().split("\n")
    inside = [m.split()[1] for m in mounts if m and m.split()[1].startswith(f"{root}/")]
    if inside:
        raise RehearsalError(f"{root}: still mounted inside: {', '.join(inside)}")
    shutil.rmtree(root)


@contextlib.contextmanager
def entered(root: Path, project: Path) -> Iterator:
    """Mount what a chroot needs (and the project at /azl), yield ``run(script, log=None,
    env=None, network=True)`` that runs ``script`` with sh inside (without network: in a
    network namespace of its own, with only a loopback), unmount everything afterwards."""
    mounts: list[Path] = []

    def mount(args: list[str], target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        _run(["mount", *args, str(target)])
        mounts.append(target)

    try:
        mount(["-t", "proc", "proc"], root / "proc")
        mount(["--bind", "/sys"], root / "sys")  # binds stack: two users may enter at once
        mount(["--bind", "/dev"], root / "dev")
        mount(["-t", "devpts", "-o", "newinstance,ptmxmode=0666", "devpts"], root / "dev/pts")
        mount(["--bind", str(project)], root / INSIDE.lstrip("/"))
        shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")

        def run(
            script: str,
            log: Path | None = None,
            env: dict[str, str] | None = None,
            network: bool = True,
        ):
            base = {
                "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
                "HOME": "/root",
                "LC_ALL": "C",
                "DEBIAN_FRONTEND": "noninteractive",
            }
            cmd = ["chroot", str(root), "/bin/sh", "-c", script]
            if not network:  # a network namespace of its own: a loopback (up, as the guest's)
                up = 'ip link set lo up && exec "$@"'
                cmd = ["unshare", "--net", "sh", "-c", up, "sh", *cmd]
            _run(cmd, log, env={**base, **(env or {})})

        yield run
    finally:
        for target in reversed(mounts):
            if subprocess.run(["umount", str(target)], capture_output=True).returncode:
                subprocess.run(["umount", "-l", str(target)], capture_output=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.rehearsal32", description=__doc__)
    parser.add_argument("what", choices=["root", "shell", "go", "packages", "toolkit", "gotools"])
    parser.add_argument("packages", nargs="*", help="for `packages`: recipes to build")
    parser.add_argument("--fresh", action="store_true", help="make the root again")
    args = parser.parse_args(argv)
    project = Path(__file__).resolve().parents[2]
    try:
        root = make_root(project, fresh=args.fresh)
        if args.what == "shell":
            with entered(root, project):
                return subprocess.run(["chroot", str(root), "/bin/bash", "-l"]).returncode
        if args.what == "go":
            from tests.rehearsal32.go import go_check

            print(go_check(project, root).summary())
        if args.what == "packages":
            from tests.rehearsal32.packages import build_packages

            print(build_packages(project, root, args.packages).summary())
        if args.what == "toolkit":
            from tests.rehearsal32.toolkit import toolkit_check

            result = toolkit_check(project, root)
            print(result.summary())
            return 1 if result.failed else 0
        if args.what == "gotools":
            from tests.rehearsal32.gotools import gotools_check

            print(gotools_check(project, root).summary())
    except RehearsalError as e:
        print(f"rehearsal32: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    # run the main of the module `tests.rehearsal32.root`, not of `__main__`: the part modules
    # import RehearsalError from there, and main must catch that class
    from tests.rehearsal32.root import main as _main

    sys.exit(_main())
