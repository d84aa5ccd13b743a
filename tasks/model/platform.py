"""Where a build runs. One recipe set serves every platform; this record holds the differences.

A machine is the **guest** (inside live-bootstrap) or not; a machine that is not the guest is
both the **sandbox** (packages built into ``cache/sandbox/root``) and the **host** (the
machine that prepares and drives live-bootstrap: preflight, pinned checkouts, the
live-bootstrap run, the VM). A recipe names where it is a step with ``platforms = [...]``
(default: sandbox and guest; a host step says ``["host"]``). ``Platform.name`` is the
machine's (``guest`` or ``sandbox``, with its variables); ``plan_platforms`` says which
recipe platforms are in its plan: off the guest, the sandbox's and the host's steps.

Off the guest the default task ``all`` is the sandbox's steps only (what ``./setup.sh``
builds), and the group task ``host`` is every host step: ``doit host`` runs the host side,
``doit preflight`` (or any one host step) runs that step and what it depends on, and neither
builds a sandbox package unless a host step depends on it. Host steps get the sandbox's
variables (``${ROOT}`` is the sandbox's root; ``${PLATFORM}`` is ``sandbox``): one machine.

=========  ===================================  ===========================================
platform   ROOT                                 PREFIX / LIBDIR
=========  ===================================  ===========================================
sandbox    ``<project>/cache/sandbox/root``     ``ROOT/usr`` / ``ROOT/usr/lib``
guest      ``/`` (live-bootstrap, i686 musl)    ``/usr`` / ``/usr/lib/i686-unknown-linux-musl``
=========  ===================================  ===========================================

In the sandbox packages are configured with the real (absolute) prefix inside ROOT and staged
with DESTDIR, so pkg-config files, rpaths and scripts point into ROOT and later packages find
earlier ones there, never the host's copies.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tasks.model.config import Config
from tasks.store import inputs

GUEST_STEPS = Path("/steps")  # live-bootstrap leaves its step scripts and env here


@dataclass(frozen=True)
class Platform:
    name: str
    target: str
    root: str
    prefix: str
    libdir: str
    jobs: int

    def variables(self) -> dict[str, str]:
        """The ``${NAME}`` values recipes may use (the build adds DESTDIR, SRCDIR, ...)."""
        return {
            "PLATFORM": self.name,
            "TARGET": self.target,
            "ROOT": self.root,
            "PREFIX": self.prefix,
            "LIBDIR": self.libdir,
            "JOBS": str(self.jobs),
        }

    def signature(self) -> dict[str, str]:
        """What changes build output. JOBS does not, so it is left out (no rebuild on a new
        machine with more cores)."""
        return {k: v for k, v in self.variables().items() if k != "JOBS"}

    def build_env(self, host_env: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of every build command: an allow-list of the host's variables
        (PATH, TMPDIR) plus the platform's; user settings like CFLAGS do not leak in."""
        if host_env is None:  # a session step's check runs in it: inputs of the plan
            env = {k: v for k in ("PATH", "TMPDIR") if (v := inputs.env(k)) is not None}
        else:
            env = {k: host_env[k] for k in ("PATH", "TMPDIR") if k in host_env}
        env.setdefault("PATH", "/usr/bin:/bin")
        env.update(
            LC_ALL="C",
            TZ="UTC",
            SOURCE_DATE_EPOCH="0",  # as live-bootstrap's steps/env
            KBUILD_BUILD_TIMESTAMP="@0",
            KBUILD_BUILD_USER="root",
            KBUILD_BUILD_HOST="azl-bootstrap",
            PKG_CONFIG_PATH=f"{self.libdir}/pkgconfig:{self.prefix}/share/pkgconfig",
            **{k: v for k, v in self.variables().items() if k != "PLATFORM"},
        )
        if self.root != "/":
            env["PATH"] = f"{self.prefix}/bin:{env['PATH']}"
            env["CPPFLAGS"] = f"-I{self.prefix}/include"
            env["LDFLAGS"] = f"-L{self.libdir} -Wl,-rpath,{self.libdir}"
        return env


def default_jobs() -> int:
    """Cores we may use, capped so each job has about 2 GiB of free memory."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    available = _mem_available()
    if available is not None:
        cores = min(cores, max(1, available // (2 << 30)))
    return max(1, cores)


def _mem_available(meminfo: str = "/proc/meminfo") -> int | None:
    """Bytes of memory available for new work (the kernel's MemAvailable), or None."""
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _guest_env(steps: Path) -> dict[str, str]:
    """The last assignment of each variable in live-bootstrap's ``steps/env``."""
    values: dict[str, str] = {}
    try:
        text = inputs.file(steps / "env").read_text()
    except OSError:
        return values
    for line in text.splitlines():
        key, sep, value = line.strip().removeprefix("export ").partition("=")
        if sep and key.isidentifier():
            values[key] = value.strip().strip('"')
    return values


def compiler_target() -> str:
    """The host C compiler's triple (``cc -dumpmachine``): ``$CC``, else ``cc``, else ``gcc``,
    found on ``PATH`` (each place looked at is an input of the plan: a wrapper put first on
    PATH is another compiler)."""
    for cc in (inputs.env("CC"), "cc", "gcc"):
        if not cc:
            continue
        exe = inputs.which(cc)
        if exe is None:
            continue
        try:
            out = subprocess.run([exe, "-dumpmachine"], capture_output=True, text=True, timeout=30)
        except OSError:
            continue
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    return "unknown-linux-gnu"


MACHINES = ("sandbox", "guest")  # what ``Platform.name`` (a machine's platform) can be


class PlatformError(ValueError):
    """A platform name that is no machine's (``AZL_PLATFORM=gust``, or ``host``, whose steps
    are in the sandbox machine's plan): the message says what to type instead."""

    def __init__(self, name: str):
        if name == "host":
            why = (
                "the host is no plan of its own: its steps are in this machine's plan "
                "(unset AZL_PLATFORM; `doit host` runs them, `doit list` shows them)"
            )
        else:
            import difflib

            close = difflib.get_close_matches(name, MACHINES, n=1)
            why = "no such platform" + (f" (did you mean {close[0]}?)" if close else "")
        super().__init__(
            f"AZL_PLATFORM={name}: {why}.\nAZL_PLATFORM takes sandbox or guest (unset: detected)."
        )


def plan_platforms(name: str) -> tuple[str, ...]:
    """The recipe platforms in the plan of a machine whose platform is ``name``, in the
    order a recipe listing several is resolved for: the guest's steps in the guest; the
    sandbox's, then the host's, on any other machine."""
    return ("guest",) if name == "guest" else ("sandbox", "host")


def detect(
    project: Path, config: Config, steps: Path = GUEST_STEPS, name: str | None = None
) -> Platform:
    """The platform of this machine: the guest inside live-bootstrap (it has
    ``/steps/bootstrap.cfg``), else the sandbox; ``platform`` in the config or ``AZL_PLATFORM`` overrides; ``name`` overrides both."""
    name = (
        name
        or inputs.env("AZL_PLATFORM")  # e.g. AZL_PLATFORM=guest doit list: the guest's plan
        or config.platform
        or ("guest" if inputs.file(steps / "bootstrap.cfg").exists() else "sandbox")
    )
    if name not in MACHINES:
        raise PlatformError(name)
    jobs = config.jobs or default_jobs()
    if name == "guest":
        env = _guest_env(steps)
        target = config.target or env.get("TARGET", "i686-unknown-linux-musl")
        root = "/"
        prefix = config.prefix or "/usr"
        libdir = config.libdir or f"{prefix}/lib/{target}"
    else:
        target = config.target or compiler_target()
        # resolved through links: ROOT moved behind one is another ROOT (every signature)
        root = str(inputs.resolve(project / (config.root or "cache/sandbox/root")))
        prefix = config.prefix or f"{root}/usr"
        libdir = config.libdir or f"{prefix}/lib"
    return Platform(name, target, root, prefix, libdir, jobs)
