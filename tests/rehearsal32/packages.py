"""Part (a) of the 32-bit rehearsal (tests/rehearsal32/root.py): the project's own ``doit`` run
inside the i386 root on the 64-bit kernel, building recipes of the guest plan that have
sources here for i686, with Debian's i386 glibc standing in for live-bootstrap's musl.

The run uses a project of its own inside the root (``/root/azl-project``: the checkout's
``dodo.py`` and ``recipes/``, platform sandbox, the checkout's ``mirror/`` as a local mirror,
sources missing there fetched from Debian's archive) and the engine of the checkout (``/azl``
on ``PYTHONPATH``) with doit installed in a venv inside the root. ``doit --continue`` goes on
past a failed package, so one run reports every package that built and every one that could
not (with the failing step from its log).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.rehearsal32.root import INSIDE, RehearsalError, entered

PROJECT_INSIDE = "/root/azl-project"
VENV = "/root/azl-venv"
# A subset of the guest plan that builds in well under an hour on 2 cores (the big ones —
# cmake, git, glib, qemu, rpm, go — are left to an explicit list). What has built, and what
# cannot be built here and why, is listed in README.md ("The 32-bit rehearsal").
DEFAULT = (
    "pcre2", "grep", "zstd", "bzip2", "attr", "acl", "popt", "lua", "libcap", "pcre",
    "rsync", "wget", "jq", "dosfstools", "autoconf-dickey", "ncurses", "iproute2", "dropbear",
)  # fmt: skip


@dataclass
class PackagesResult:
    asked: list[str]
    built: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # package: the failing step, or why
    target: str = ""
    seconds: float = 0.0
    doit_error: str = ""  # how the doit run failed, if it did (its log names the package)

    def summary(self) -> str:
        lines = [f"{len(self.built)} of {len(self.asked)} built for {self.target}: "]
        lines[0] += " ".join(self.built)
        lines += [f"  not built: {p}: {why}" for p, why in self.failed.items()]
        if self.doit_error:
            lines.append(f"  doit: {self.doit_error}")
        return "\n".join(lines)


def _prepare_project(project: Path, root: Path) -> Path:
    inside = root / PROJECT_INSIDE.lstrip("/")
    inside.mkdir(parents=True, exist_ok=True)
    shutil.copy(project / "dodo.py", inside / "dodo.py")
    shutil.copy(project / "pyproject.toml", inside / "pyproject.toml")  # doit's backend plugin
    if (inside / "recipes").exists():
        shutil.rmtree(inside / "recipes")
    shutil.copytree(project / "recipes", inside / "recipes")
    (inside / "azl-bootstrap.toml").write_text(
        'platform = "sandbox"\njobs = 2\n' + f"mirrors = {json.dumps([f'{INSIDE}/mirror'])}\n"
    )
    return inside


def _engine_requirements(project: Path) -> list[str]:
    """pyproject's dependencies but the C extensions (psutil, xxhash: Debian's i386 ones)."""
    from tasks.guest.wheelhouse import SDISTS, engine_requirements, requirement_name

    return [
        r
        for r in engine_requirements(project / "pyproject.toml")
        if requirement_name(r) not in SDISTS
    ]


def _engine_wheels(project: Path) -> Path:
    """The engine's pure-Python dependencies as wheels (doit, and requests and urllib3 newer
    than Debian 12's), downloaded by the host's pip: the root's pip may not reach the package
    index where the host's does (a proxy's CA is the host's). Their own dependencies (idna,
    certifi, ...) are Debian's i386 packages."""
    wheels = project / "cache" / "rehearsal32" / "wheels"
    wanted = "\n".join(_engine_requirements(project)) + "\n"
    stamp = wheels / "requirements.txt"
    if not stamp.is_file() or stamp.read_text() != wanted:
        if wheels.exists():
            shutil.rmtree(wheels)
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels)]
        cmd += ["--only-binary", ":all:", *wanted.split()]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            raise RehearsalError(f"pip download {wanted.split()}: {r.stderr.strip()[-500:]}")
        stamp.write_text(wanted)
    return wheels


def ensure_venv(project: Path, root: Path, run: Callable[..., None], log: Path) -> None:
    """The venv inside the root (``VENV``) with the engine's dependencies; ``run`` is
    :func:`tests.rehearsal32.root.entered`'s."""
    wheels = _engine_wheels(project)
    inside = f"{INSIDE}/{wheels.relative_to(project)}"
    if not (root / VENV.lstrip("/") / "bin/python").exists():
        run(f"python3 -m venv --system-site-packages {VENV}", log)
    # the wheel files themselves, so that these versions shadow Debian's older ones (requests
    # 2.28 would do for a requirement, but not with urllib3 2); a no-op when they are there.
    # --no-deps: theirs are Debian's (requests' newest certifi floor is only a CA bundle's age)
    files = " ".join(f"{inside}/{w.name}" for w in sorted(wheels.glob("*.whl")))
    run(f"{VENV}/bin/pip install -q --no-index --no-deps {files}", log)


def build_packages(
    project: Path, root: Path, names: list[str] | None = None, clean: tuple[str, ...] = ()
) -> PackagesResult:
    """Build ``names`` (default: DEFAULT) inside; ``clean`` are removed first (``doit
    clean``), so they are really built again."""
    names = list(names or DEFAULT)
    result = PackagesResult(asked=names)
    inside = _prepare_project(project, root)
    (project / "mirror").mkdir(exist_ok=True)
    log = root.parent / "packages.log"
    log.write_text("")
    env = {"PYTHONPATH": INSIDE}
    start = time.monotonic()
    with entered(root, project) as run:
        ensure_venv(project, root, run, log)
        run(f"gcc -dumpmachine > {PROJECT_INSIDE}/target", log)
        result.target = (inside / "target").read_text().strip()
        if clean:
            run(f"cd {PROJECT_INSIDE} && {VENV}/bin/doit clean {' '.join(clean)}", log, env)
        # --continue: a failed package does not stop the others; each failure is read below
        try:
            run(f"cd {PROJECT_INSIDE} && {VENV}/bin/doit --continue {' '.join(names)}", log, env)
        except RehearsalError as e:
            result.doit_error = str(e)
    result.seconds = time.monotonic() - start
    for name in names:
        if (inside / "cache" / "manifests" / f"{name}.json").is_file():
            result.built.append(name)
        else:
            result.failed[name] = _why(inside, name)
    return result


def _why(inside: Path, name: str) -> str:
    """The failing step of a package from its log, or that it never started."""
    log = inside / "cache" / "logs" / f"{name}.log"
    if not log.is_file():
        return "not started (a dependency failed, or its source could not be fetched)"
    steps = re.findall(r"^==> (\w+): exit (-?\d+)", log.read_text(errors="replace"), re.M)
    failed = [s for s in steps if s[1] != "0"]
    if failed:
        return f"{failed[-1][0]} failed (exit {failed[-1][1]}, cache/logs/{name}.log)"
    return f"did not finish (cache/logs/{name}.log)"
