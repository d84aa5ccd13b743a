"""Part (a) of the 32-bit rehearsal (tasks/rehearsal32.py): the project's own ``doit`` run
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
from dataclasses import dataclass, field
from pathlib import Path

from tasks.rehearsal32 import INSIDE, RehearsalError, entered

PROJECT_INSIDE = "/root/azl-project"
VENV = "/root/azl-venv"
DOIT = "doit~=0.37.0"  # as pyproject.toml; its other dependencies come from Debian's i386 packages
# A subset of the guest plan that builds in well under an hour on 2 cores (the big ones —
# cmake, git, glib, qemu, rpm, go — are left to an explicit list).
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


def _doit_wheel(project: Path) -> Path:
    """doit's wheel (pure Python, no dependencies), downloaded by the host's pip: the root's
    pip may not reach the package index where the host's does (a proxy's CA is the host's)."""
    wheels = project / "cache" / "rehearsal32" / "wheels"
    if not list(wheels.glob("doit-*.whl")):
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels)]
        r = subprocess.run([*cmd, DOIT], capture_output=True, text=True)
        if r.returncode:
            raise RehearsalError(f"pip download {DOIT}: {r.stderr.strip()[-500:]}")
    return wheels


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
        if not (root / VENV.lstrip("/") / "bin/doit").exists():
            wheels = _doit_wheel(project)
            run(
                f"python3 -m venv --system-site-packages {VENV} && {VENV}/bin/pip install -q "
                f"--no-index --find-links {INSIDE}/{wheels.relative_to(project)} '{DOIT}'",
                log,
            )
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
