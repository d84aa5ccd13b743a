"""``doit preflight``: what this machine has against what the live-bootstrap run needs.

It measures cores, RAM and free disk (psutil, lowered by cgroup v2 ``cpu.max`` /
``memory.max`` or v1 ``cpu.cfs_quota_us`` / ``memory.limit_in_bytes`` of this process's
cgroup and its parents), tries KVM for real (``tasks.host.kvmprobe``: falls back to TCG when it
hangs or fails) and looks for the host tools of ``recipes/preflight.toml``. Each shortfall is
printed with its fix; one that makes the run impossible is fatal (exit status 1).

It picks the sizes later tasks use, each overridable in ``azl-bootstrap.toml``::

    [host]
    cores = 2            # qemu -smp and rootfs.py --cores; default: usable cores
    ram_mib = 8192       # qemu RAM; default: the seed's 16384, less if the machine has less
    image_size = "64G"   # init.img; default: the seed's 100G, less if the disk has less
    kvm = "auto"         # "auto": try it; "off": TCG without trying; "on": fail without KVM

The target ``cache/host/preflight.json`` holds only the decisions (sizes, accelerator, tool
paths) and stable facts, so the tasks that depend on it rerun only when a decision changes;
the measured figures (free disk, probe times, shortfalls) go to
``cache/host/preflight-figures.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tasks.host import kvmprobe
from tasks.model.config import load_config
from tasks.model.recipe import Checker, RecipeError
from tasks.store.fsutil import atomic_write

MIB = 1 << 20
GIB = 1 << 30
SEED_RAM_MIB = 16384  # docs/procedure.md H4: --qemu-ram=16384
MIN_RAM_MIB = 4096  # rootfs.py's default --qemu-ram (less is not known to work)
HOST_RESERVE_MIB = 1024  # left to the host beside qemu
SEED_IMAGE_GIB = 100  # docs/procedure.md H4: --target-size=100g
MIN_IMAGE_GIB = 32  # our floor for a whole live-bootstrap run (inferred, not measured)
DISK_RESERVE_GIB = 10  # distfiles, checkout, logs beside the image
IMAGE_STEP_GIB = 16  # a smaller disk picks a multiple of this, so the pick rarely flaps
TCG_SLOWDOWN = (
    "TCG emulates every guest instruction: expect the live-bootstrap run to take several "
    "times as long as with KVM (the seed's KVM run took about 6 h on an i7-9750H)"
)
DISTROS = ("debian", "fedora", "arch")
_TOOL_KEYS = {"why", "required", "module", *DISTROS}


@dataclass
class Figures:
    """What the machine has. ``*_source`` says which limit decided the figure."""

    cores: int
    cores_source: str
    ram_mib: int
    ram_source: str
    disk_free_gib: float  # free where the image goes, plus what an existing image holds
    disk_path: str


@dataclass
class Shortfall:
    what: str
    have: str
    need: str
    fix: str
    fatal: bool


@dataclass
class Facts:
    figures: Figures
    kvm: dict[str, Any]
    accel: str
    tools: dict[str, str | None]
    sizes: dict[str, Any]
    shortfalls: list[Shortfall] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(s.fatal for s in self.shortfalls)

    def decisions(self) -> dict[str, Any]:
        """The stable part: what later tasks depend on (no measured figures, no timings)."""
        return {
            "accel": self.accel,
            "kvm_usable": self.kvm["usable"],
            "cores": self.figures.cores,
            "ram_mib": self.figures.ram_mib,
            "sizes": self.sizes,
            "tools": self.tools,
        }


# -- measuring ---------------------------------------------------------------------------


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _cgroup_dirs(root: Path, proc_cgroup: str, controller: str) -> list[Path]:
    """This process's cgroup directory for ``controller`` and its parents, innermost first."""
    dirs = []
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        if controllers == "" and (root / "cgroup.controllers").exists():
            base = root  # v2 unified hierarchy
        elif controller in controllers.split(","):
            base = root / controllers  # v1: one mount per controller (set)
            if not base.exists():
                base = root / controller
        else:
            continue
        rel_parts = [p for p in rel.split("/") if p]
        for i in range(len(rel_parts), -1, -1):
            d = base.joinpath(*rel_parts[:i])
            if d.is_dir():
                dirs.append(d)
    return dirs


def cgroup_cpu_limit(root: Path, proc_cgroup: str) -> float | None:
    """CPUs allowed by ``cpu.max`` (v2) or ``cpu.cfs_quota_us``/``cpu.cfs_period_us`` (v1)."""
    limits = []
    for d in _cgroup_dirs(root, proc_cgroup, "cpu"):
        v2 = _read(d / "cpu.max")
        if v2 and not v2.startswith("max"):
            quota, period = v2.split()
            limits.append(int(quota) / int(period))
        quota = _read(d / "cpu.cfs_quota_us")
        period = _read(d / "cpu.cfs_period_us")
        if quota and period and int(quota) > 0:
            limits.append(int(quota) / int(period))
    return min(limits) if limits else None


def cgroup_memory_limit(root: Path, proc_cgroup: str) -> int | None:
    """Bytes allowed by ``memory.max`` (v2) or ``memory.limit_in_bytes`` (v1), if set."""
    limits = []
    for d in _cgroup_dirs(root, proc_cgroup, "memory"):
        for name in ("memory.max", "memory.limit_in_bytes"):
            v = _read(d / name)
            if v and v != "max" and int(v) < 1 << 60:  # v1 "unlimited" is ~2**63
                limits.append(int(v))
    return min(limits) if limits else None


def measure(
    disk_path: Path,
    image: Path | None = None,
    cgroup_root: Path = Path("/sys/fs/cgroup"),
    proc_cgroup: str | None = None,
) -> Figures:
    """The machine's figures; ``image``'s allocated blocks count as free (it is replaced)."""
    import psutil

    if proc_cgroup is None:
        proc_cgroup = _read(Path("/proc/self/cgroup")) or ""
    cores = len(os.sched_getaffinity(0))
    cores_source = "CPU affinity"
    cpu_limit = cgroup_cpu_limit(cgroup_root, proc_cgroup)
    if cpu_limit is not None and int(cpu_limit) < cores:
        cores, cores_source = max(1, int(cpu_limit)), f"cgroup CPU quota {cpu_limit:g}"
    ram = psutil.virtual_memory().total
    ram_source = "physical memory"
    mem_limit = cgroup_memory_limit(cgroup_root, proc_cgroup)
    if mem_limit is not None and mem_limit < ram:
        ram, ram_source = mem_limit, "cgroup memory limit"
    probe = disk_path
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if image is not None and image.exists():
        free += image.stat().st_blocks * 512
    return Figures(cores, cores_source, ram // MIB, ram_source, round(free / GIB, 1), str(probe))


def check_tools(c: Checker, data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``[tools.*]`` tables of a preflight recipe, checked (``c`` names file and field)."""
    tools = c.typed(data, "tools", dict, "", {})
    if not tools:
        c.err("tools", "missing: the host tools to look for")
    for tool, t in tools.items():
        where = f"tools.{tool}."
        if not isinstance(t, dict):
            c.err(where.rstrip("."), "expected a table")
            continue
        c.keys(t, _TOOL_KEYS, where)
        for key in ("why", *DISTROS):
            if not c.typed(t, key, str, where, ""):
                c.err(where + key, "missing")
        if "required" not in t:
            c.err(where + "required", "missing: true if the run cannot go on without it")
        c.typed(t, "required", bool, where, False)
    return tools


def load_tools(recipes: Path) -> dict[str, dict[str, Any]]:
    """The ``[tools.*]`` tables of ``recipes/preflight.toml``, checked as the recipe loader
    checks them: for ``python -m tasks.host.preflight`` and the benchmark."""
    path = recipes / "preflight.toml"
    c = Checker(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise RecipeError(path, "", f"cannot read: {e}") from None
    tools = check_tools(c, data)
    if c.errors:
        raise c.errors[0]
    return tools


def find_tools(
    tools: dict[str, dict[str, Any]], python: str = sys.executable
) -> dict[str, str | None]:
    """Each tool's path (a module: the interpreter that has it), or None."""
    found: dict[str, str | None] = {}
    for name, t in tools.items():
        if "module" in t:
            import subprocess

            r = subprocess.run([python, "-c", f"import {t['module']}"], capture_output=True)
            found[name] = python if r.returncode == 0 else None
        else:
            found[name] = shutil.which(name)
    return found


# -- deciding ----------------------------------------------------------------------------


def _gib(size: str) -> float:
    return int(size[:-1]) / (1 if size[-1] == "G" else 1024)


def _fix_tool(name: str, t: dict[str, Any]) -> str:
    return (
        f"install it: apt-get install {t['debian']} (Debian/Ubuntu), dnf install {t['fedora']} "
        f"(Fedora), pacman -S {t['arch']} (Arch)"
    )


def assess(
    fig: Figures,
    kvm: kvmprobe.Probe,
    tcg: kvmprobe.Probe | None,
    tools: dict[str, dict[str, Any]],
    found: dict[str, str | None],
    host: dict[str, Any],
) -> Facts:
    """Decide sizes and accelerator from the figures; list every shortfall with its fix."""
    short: list[Shortfall] = []
    for name, t in tools.items():
        if found.get(name) is None:
            need = f"{'needed' if t['required'] else 'wanted'}: {t['why']}"
            short.append(Shortfall(name, "not found", need, _fix_tool(name, t), t["required"]))

    mode = host.get("kvm", "auto")
    if kvm.ok and mode != "off":
        accel = "kvm"
    else:
        accel = "tcg"
        if mode == "on":
            short.append(
                Shortfall(
                    "KVM",
                    kvm.reason,
                    "host.kvm = 'on' in the config",
                    "make /dev/kvm work, or set host.kvm = 'auto'",
                    True,
                )
            )
        if tcg is not None and not tcg.ok:
            short.append(
                Shortfall("TCG", tcg.reason, "a working qemu", "reinstall qemu-system-x86_64", True)
            )

    cores = host.get("cores", fig.cores)
    if "cores" not in host and fig.cores < 2:
        short.append(
            Shortfall(
                "cores",
                f"{fig.cores} ({fig.cores_source})",
                "2 or more for a run of hours, not days",
                "give the machine more CPUs",
                False,
            )
        )
    room = fig.ram_mib - HOST_RESERVE_MIB
    ram = host.get("ram_mib", max(0, min(SEED_RAM_MIB, room // 256 * 256)))
    if ram < MIN_RAM_MIB:
        short.append(
            Shortfall(
                "RAM",
                f"{fig.ram_mib} MiB ({fig.ram_source}), {ram} MiB for qemu",
                f"{MIN_RAM_MIB} MiB for qemu + {HOST_RESERVE_MIB} MiB for the host",
                "add memory or raise the cgroup memory limit",
                True,
            )
        )
    elif ram > room:
        short.append(
            Shortfall(
                "RAM",
                f"{fig.ram_mib} MiB ({fig.ram_source})",
                f"host.ram_mib = {ram} + {HOST_RESERVE_MIB} MiB for the host",
                "lower host.ram_mib",
                True,
            )
        )
    usable = fig.disk_free_gib - DISK_RESERVE_GIB
    if "image_size" in host:
        image = host["image_size"]
        need_gib = _gib(image)
    else:
        pick = (
            SEED_IMAGE_GIB
            if usable >= SEED_IMAGE_GIB
            else int(usable // IMAGE_STEP_GIB) * IMAGE_STEP_GIB
        )
        image, need_gib = f"{max(pick, MIN_IMAGE_GIB)}G", max(pick, MIN_IMAGE_GIB)
    if need_gib > usable:
        short.append(
            Shortfall(
                "disk",
                f"{fig.disk_free_gib:g} GiB free at {fig.disk_path}",
                f"{need_gib:g} GiB for the image + {DISK_RESERVE_GIB} GiB for distfiles and logs",
                "free disk space, or set a smaller host.image_size",
                True,
            )
        )
    sizes = {
        "qemu_cores": cores,
        "qemu_ram_mib": ram,
        "image_size": image,
        "from_config": sorted(k for k in host if k != "kvm"),
    }
    kvm_d = {"usable": kvm.ok, "reason": kvm.reason}
    if accel == "tcg":
        kvm_d["fallback"] = TCG_SLOWDOWN
    return Facts(fig, kvm_d, accel, found, sizes, short)


# -- reporting ---------------------------------------------------------------------------


def report(facts: Facts, kvm: kvmprobe.Probe) -> str:
    f = facts.figures
    lines = [
        f"cores      {f.cores} ({f.cores_source})",
        f"RAM        {f.ram_mib} MiB ({f.ram_source})",
        f"disk       {f.disk_free_gib:g} GiB free at {f.disk_path}",
        f"KVM        {'usable' if kvm.ok else 'NOT usable'}: {kvm.reason} (probe {kvm.seconds:.2f} s)",
        f"accel      {facts.accel}" + (f": {TCG_SLOWDOWN}" if facts.accel == "tcg" else ""),
        "sizes      qemu {qemu_cores} cores, {qemu_ram_mib} MiB RAM, image {image_size}".format(
            **facts.sizes
        ),
        "tools      " + ", ".join(f"{n}{'' if p else ' MISSING'}" for n, p in facts.tools.items()),
    ]
    for s in facts.shortfalls:
        tag = "FATAL" if s.fatal else "warning"
        lines.append(f"{tag}: {s.what}: have {s.have}; need {s.need}\n    fix: {s.fix}")
    lines.append("preflight: " + ("ok" if facts.ok else "the run cannot succeed on this machine"))
    return "\n".join(lines)


def run(
    project: Path,
    host: dict[str, Any],
    tools: dict[str, dict[str, Any]],
    image: Path | None = None,
    **measure_args: Any,
) -> tuple[Facts, str]:
    """Measure, probe, decide; write ``cache/host/preflight*.json``. The target is written
    only when the run can succeed, so nothing downstream starts on a machine that cannot."""
    start = time.monotonic()
    found = find_tools(tools)
    fig = measure(project / "cache", image=image, **measure_args)
    qemu = found.get("qemu-system-x86_64")
    tcg = kvmprobe.guest_probe(qemu, "tcg") if qemu else None
    if host.get("kvm", "auto") == "off":
        kvm = kvmprobe.Probe(False, "not tried: host.kvm = 'off' in the config", 0.0)
    else:
        kvm = kvmprobe.kvm_usable(qemu, tcg=tcg)
    facts = assess(fig, kvm, tcg, tools, found, host)
    text = report(facts, kvm)
    out = project / "cache" / "host"
    out.mkdir(parents=True, exist_ok=True)
    figures = {
        "figures": asdict(fig),
        "kvm_probe": asdict(kvm),
        "tcg_probe": asdict(tcg) if tcg else None,
        "shortfalls": [asdict(s) for s in facts.shortfalls],
        "ok": facts.ok,
        "seconds": round(time.monotonic() - start, 2),
    }
    atomic_write(out / "preflight-figures.json", json.dumps(figures, indent=1).encode())
    target = out / "preflight.json"
    if facts.ok:
        data = json.dumps(facts.decisions(), indent=1, sort_keys=True).encode() + b"\n"
        if not target.exists() or target.read_bytes() != data:
            atomic_write(target, data)
    elif target.exists():
        target.unlink()
    return facts, text


def load(project: Path) -> dict[str, Any]:
    """The decisions of the last successful preflight (``cache/host/preflight.json``)."""
    path = project / "cache" / "host" / "preflight.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RecipeError(path, "", "missing: run `doit preflight` first") from None


def main(argv: list[str]) -> int:
    """``python -m tasks.host.preflight [PROJECT]``: print the report; 1 if the run cannot succeed."""
    project = Path(argv[0]) if argv else Path(".")
    try:
        host = load_config(project).host
    except RecipeError as e:
        print(e, file=sys.stderr)
        return 2
    try:
        tools = load_tools(project / "recipes")
    except RecipeError as e:
        print(e, file=sys.stderr)
        return 2
    facts, text = run(project, host, tools)
    print(text)
    return 0 if facts.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
