"""``doit preflight``: this machine's real figures and KVM, and shortfalls from fake cgroups."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tasks.host import kvmprobe, preflight
from tasks.model.config import load_config
from tasks.model.recipe import RecipeError

REPO = Path(__file__).resolve().parent.parent
QEMU = shutil.which("qemu-system-x86_64")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "recipes").mkdir()
    shutil.copy(REPO / "recipes" / "preflight.toml", tmp_path / "recipes")
    return tmp_path


def tools() -> dict:
    return preflight.load_tools(REPO / "recipes")


def cpu_quota() -> float | None:
    """This process's CPU quota in cores, read here without the code under test: cgroup v2's
    ``cpu.max`` or v1's ``cpu.cfs_quota_us / cpu.cfs_period_us`` of its cgroup and every
    parent up to the mount; the smallest, or None."""
    quotas = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, rel = line.split(":", 2)
        if controllers == "":
            base, files = Path("/sys/fs/cgroup"), ("cpu.max",)
        elif "cpu" in controllers.split(","):
            base = next(
                (
                    b
                    for b in Path("/sys/fs/cgroup").glob("cpu*")
                    if (b / "cpu.cfs_quota_us").exists()
                ),
                Path("/nonexistent"),
            )
            files = ("cpu.cfs_quota_us", "cpu.cfs_period_us")
        else:
            continue
        here = base / rel.lstrip("/")
        for d in [here, *here.parents]:
            if not d.is_relative_to(base):
                break
            texts = [(d / f).read_text().split() if (d / f).exists() else [] for f in files]
            if len(files) == 1 and texts[0] and texts[0][0] != "max":
                quotas.append(int(texts[0][0]) / int(texts[0][1]))
            elif len(files) == 2 and texts[0] and texts[1] and int(texts[0][0]) > 0:
                quotas.append(int(texts[0][0]) / int(texts[1][0]))
    return min(quotas) if quotas else None


def measured_cores(project: Path, cpus: set[int] | None = None) -> tuple[int, str]:
    """The cores ``python -m tasks.host.preflight`` reports, run on ``cpus`` (None: all)."""
    r = subprocess.run(
        [sys.executable, "-m", "tasks.host.preflight", str(project)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    fig = json.loads((project / "cache/host/preflight-figures.json").read_text())["figures"]
    assert f"cores      {fig['cores']} ({fig['cores_source']})" in r.stdout, r.stdout
    return fig["cores"], fig["cores_source"]


def test_cores_are_the_usable_cpus_and_the_cgroup_quota(project: Path) -> None:
    """Expected figures from outside the code under test: coreutils' ``nproc`` (the CPUs this
    process may run on), the cgroup files read here, and a run pinned to one CPU."""
    nproc = int(subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout)
    quota = cpu_quota()
    want = min(nproc, max(1, int(quota))) if quota is not None else nproc
    cores, source = measured_cores(project)
    assert cores == want, (cores, source, nproc, quota)
    assert source == ("CPU affinity" if want == nproc else f"cgroup CPU quota {quota:g}")
    one = {min(os.sched_getaffinity(0))}
    assert measured_cores(project, one) == (1, "CPU affinity")


def test_this_machine_real_figures_and_kvm(project: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "tasks.host.preflight", str(project)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    figures = json.loads((project / "cache/host/preflight-figures.json").read_text())
    fig, kvm = figures["figures"], figures["kvm_probe"]
    ram = psutil.virtual_memory().total // preflight.MIB
    assert fig["ram_mib"] <= ram and (fig["ram_mib"] == ram) == (
        fig["ram_source"] == "physical memory"
    )
    assert f"RAM        {fig['ram_mib']} MiB" in r.stdout
    # the probe is bounded by its hard timeouts, whatever KVM does
    assert kvm["seconds"] < 3 + 3 + 5  # two hard timeouts of 3 s, and a margin for a busy machine
    if r.returncode != 0:
        assert "FATAL" in r.stdout
        return
    decisions = json.loads((project / "cache/host/preflight.json").read_text())
    assert decisions["kvm_usable"] == kvm["ok"]
    if not kvm["ok"]:  # this machine: /dev/kvm exists but a guest hangs
        assert decisions["accel"] == "tcg"
        assert "KVM        NOT usable: " + kvm["reason"] in r.stdout
        assert "accel      tcg: TCG emulates every guest instruction" in r.stdout
        if os.path.exists("/dev/kvm") and "hung" in kvm["reason"]:
            assert "killed after 3 s" in kvm["reason"]
        assert figures["tcg_probe"]["ok"], figures["tcg_probe"]
    else:
        assert decisions["accel"] == "kvm"
    assert decisions["sizes"]["qemu_cores"] == fig["cores"]
    assert preflight.MIN_RAM_MIB <= decisions["sizes"]["qemu_ram_mib"] <= preflight.SEED_RAM_MIB


@pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")
def test_tcg_tiny_guest_really_runs() -> None:
    p = kvmprobe.guest_probe(QEMU, "tcg")
    assert p.ok, p.reason


def test_hanging_guest_is_killed_at_the_timeout(tmp_path: Path) -> None:
    fake = tmp_path / "qemu"
    fake.write_text(f"#!/bin/sh\necho $$ > {tmp_path}/pid\nexec sleep 300\n")
    fake.chmod(0o755)
    p = kvmprobe.guest_probe(str(fake), "kvm", timeout=1)
    assert not p.ok and p.reason == "a tiny kvm guest hung: killed after 1 s"
    assert p.seconds < 5
    pid = int((tmp_path / "pid").read_text())
    assert not Path(f"/proc/{pid}").exists()  # killed, not left running


def test_missing_kvm_device_and_failing_guest(tmp_path: Path) -> None:
    p = kvmprobe.ioctl_probe(str(tmp_path / "kvm"))
    assert not p.ok and "does not exist" in p.reason
    fake = tmp_path / "qemu"
    fake.write_text("#!/bin/sh\necho 'qemu: could not access KVM kernel module' >&2\nexit 1\n")
    fake.chmod(0o755)
    p = kvmprobe.guest_probe(str(fake), "kvm")
    assert (
        not p.ok
        and p.reason == "the tiny kvm guest failed: qemu: could not access KVM kernel module"
    )


def fake_v2(tmp_path: Path, cpu_max: str, memory_max: str) -> Path:
    root = tmp_path / "cg2"
    (root / "job").mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu memory\n")
    (root / "job" / "cpu.max").write_text(cpu_max + "\n")
    (root / "job" / "memory.max").write_text(memory_max + "\n")
    return root


def test_cgroup_v2_limits_lower_the_figures(tmp_path: Path) -> None:
    root = fake_v2(tmp_path, "150000 100000", str(3 << 30))
    fig = preflight.measure(tmp_path, cgroup_root=root, proc_cgroup="0::/job\n")
    assert (fig.cores, fig.cores_source) == (1, "cgroup CPU quota 1.5")
    assert (fig.ram_mib, fig.ram_source) == (3072, "cgroup memory limit")
    unlimited = fake_v2(tmp_path / "u", "max 100000", "max")
    fig = preflight.measure(tmp_path, cgroup_root=unlimited, proc_cgroup="0::/job\n")
    assert fig.cores == len(os.sched_getaffinity(0)) and fig.ram_source == "physical memory"


def test_cgroup_v1_limits_in_a_parent(tmp_path: Path) -> None:
    root = tmp_path / "cg1"
    (root / "cpu,cpuacct" / "a" / "b").mkdir(parents=True)
    (root / "cpu,cpuacct" / "a" / "cpu.cfs_quota_us").write_text("50000\n")
    (root / "cpu,cpuacct" / "a" / "cpu.cfs_period_us").write_text("100000\n")
    (root / "memory" / "a" / "b").mkdir(parents=True)
    (root / "memory" / "a" / "b" / "memory.limit_in_bytes").write_text(str(2 << 30))
    proc = "4:memory:/a/b\n3:cpu,cpuacct:/a/b\n0::/\n"
    assert preflight.cgroup_cpu_limit(root, proc) == 0.5
    assert preflight.cgroup_memory_limit(root, proc) == 2 << 30


def test_shortfalls_are_named_with_their_fix_and_exit_1(
    project: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    root = fake_v2(tmp_path, "100000 100000", str(3 << 30))
    monkeypatch.setattr(
        preflight,
        "measure",
        functools.partial(preflight.measure, cgroup_root=root, proc_cgroup="0::/job\n"),
    )
    assert preflight.main([str(project)]) == 1
    out = capsys.readouterr().out
    assert (
        "FATAL: RAM: have 3072 MiB (cgroup memory limit), 2048 MiB for qemu; need 4096 MiB for qemu + 1024 MiB for the host"
        in out
    )
    assert "fix: add memory or raise the cgroup memory limit" in out
    assert "warning: cores: have 1 (cgroup CPU quota 1); need 2 or more" in out
    assert out.rstrip().endswith("preflight: the run cannot succeed on this machine")
    assert not (project / "cache/host/preflight.json").exists()  # nothing downstream can start
    assert json.loads((project / "cache/host/preflight-figures.json").read_text())["ok"] is False


def figures(disk: float, ram: int = 24000, cores: int = 2) -> preflight.Figures:
    return preflight.Figures(cores, "CPU affinity", ram, "physical memory", disk, "/data")


OK = kvmprobe.Probe(True, "booted", 0.1)
HUNG = kvmprobe.Probe(False, "a tiny kvm guest hung: killed after 3 s", 3.0)


def test_missing_tools_name_the_package_per_distribution(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    t = tools()
    found = preflight.find_tools(t)
    assert found["git"] is None and found["qemu-system-x86_64"] is None
    facts = preflight.assess(figures(200), HUNG, OK, t, found, {})
    by = {s.what: s for s in facts.shortfalls}
    q = by["qemu-system-x86_64"]
    assert q.fatal and q.fix == (
        "install it: apt-get install qemu-system-x86 (Debian/Ubuntu), dnf install "
        "qemu-system-x86-core (Fedora), pacman -S qemu-system-x86 (Arch)"
    )
    assert "openssh-clients (Fedora)" in by["ssh"].fix and not by["ssh"].fatal
    assert not facts.ok


def test_sizes_follow_the_machine_and_the_config() -> None:
    t, found = tools(), {n: "/x" for n in tools()}
    big = preflight.assess(figures(500), OK, None, t, found, {})
    assert big.accel == "kvm" and big.ok
    assert big.sizes == {
        "qemu_cores": 2,
        "qemu_ram_mib": 16384,
        "image_size": "100G",
        "from_config": [],
    }
    mid = preflight.assess(figures(70, ram=9000), HUNG, OK, t, found, {})
    assert mid.accel == "tcg" and "fallback" in mid.kvm and mid.ok
    assert (mid.sizes["qemu_ram_mib"], mid.sizes["image_size"]) == (7936, "48G")
    small = preflight.assess(figures(20), OK, None, t, found, {})
    assert [s.what for s in small.shortfalls] == ["disk"] and not small.ok
    assert small.shortfalls[0].have == "20 GiB free at /data"
    cfg = preflight.assess(
        figures(500),
        OK,
        None,
        t,
        found,
        {"image_size": "600G", "ram_mib": 30000, "kvm": "off", "cores": 8},
    )
    assert cfg.accel == "tcg" and cfg.sizes["qemu_cores"] == 8
    assert {s.what for s in cfg.shortfalls} == {"disk", "RAM"}
    on = preflight.assess(figures(500), HUNG, OK, t, found, {"kvm": "on"})
    assert [s.what for s in on.shortfalls] == ["KVM"] and not on.ok


def test_bad_host_config_names_file_and_field(tmp_path: Path) -> None:
    (tmp_path / "azl-bootstrap.toml").write_text('[host]\nimage_size = "big"\n')
    with pytest.raises(RecipeError, match=r"azl-bootstrap.toml: host.image_size: 'big': expected"):
        load_config(tmp_path)
    (tmp_path / "azl-bootstrap.toml").write_text("[host]\nram = 4\n")
    with pytest.raises(RecipeError, match=r"host.ram: unknown key"):
        load_config(tmp_path)
    (tmp_path / "azl-bootstrap.toml").write_text('[host]\nram_mib = 8192\nkvm = "off"\n')
    assert load_config(tmp_path).host == {"ram_mib": 8192, "kvm": "off"}


def test_doit_preflight_prints_the_report_and_fails_when_the_run_cannot_succeed(
    project: Path,
) -> None:
    shutil.copy(REPO / "dodo.py", project)
    (project / "azl-bootstrap.toml").write_text(
        'platform = "sandbox"\n[host]\nimage_size = "100000G"\nkvm = "off"\n'
    )

    def doit() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "doit", "preflight"],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=120,
        )

    r = doit()
    assert r.returncode != 0
    assert "KVM        NOT usable: not tried: host.kvm = 'off' in the config" in r.stdout
    assert "FATAL: disk: have " in r.stdout and "need 100000 GiB for the image" in r.stdout
    assert "preflight: the run cannot succeed on this machine" in r.stdout + r.stderr
    assert not (project / "cache/host/preflight.json").exists()
    (project / "azl-bootstrap.toml").write_text(
        'platform = "sandbox"\n[host]\nimage_size = "1G"\nkvm = "off"\n'
    )
    r = doit()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "preflight: ok" in r.stdout
    decisions = json.loads((project / "cache/host/preflight.json").read_text())
    assert decisions["accel"] == "tcg" and decisions["sizes"]["image_size"] == "1G"


def test_bad_tools_table_names_file_and_field(tmp_path: Path) -> None:
    from tasks.engine.recipeset import parse_recipe

    path = tmp_path / "preflight.toml"
    path.write_text(
        'kind = "preflight"\nplatforms = ["host"]\n'
        '[tools.git]\nwhy = "clones"\nrequired = "yes"\ndebian = "git"\nfedora = "git"\nsuse = "git"\n'
    )
    recipe, errors = parse_recipe(path)
    got = sorted(str(e) for e in errors)
    assert got == [
        f"{path}: tools.git.arch: missing",
        f"{path}: tools.git.required: expected bool, got str",
        f"{path}: tools.git.suse: unknown key",
    ], got


def test_a_kvm_slower_than_tcg_is_not_usable(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine's KVM sometimes finishes the tiny guest in 2.8 s (TCG: 0.3 s) and then
    hangs a real one: a KVM that crawls is reported unusable, one that is quick is used."""
    ok = kvmprobe.Probe(True, "/dev/kvm: API version 12, VM created", 0.01, 12)
    monkeypatch.setattr(kvmprobe, "ioctl_probe", lambda *a, **k: ok)
    tcg = kvmprobe.Probe(True, "a tiny tcg guest booted and exited in 0.30 s", 0.3)

    monkeypatch.setattr(kvmprobe, "guest_probe", lambda *a, **k: kvmprobe.Probe(True, "", 2.8))
    slow = kvmprobe.kvm_usable("qemu", tcg=tcg)
    assert not slow.ok and "9x the same guest under TCG (0.30 s)" in slow.reason

    monkeypatch.setattr(kvmprobe, "guest_probe", lambda *a, **k: kvmprobe.Probe(True, "", 0.2))
    assert kvmprobe.kvm_usable("qemu", tcg=tcg).ok
    # each half of the rule alone is not enough: 5x TCG but under 1 s is fine ...
    fast_tcg = kvmprobe.Probe(True, "a tiny tcg guest booted and exited in 0.10 s", 0.1)
    monkeypatch.setattr(kvmprobe, "guest_probe", lambda *a, **k: kvmprobe.Probe(True, "", 0.5))
    assert kvmprobe.kvm_usable("qemu", tcg=fast_tcg).ok
    # ... and so is over 1 s on a machine where TCG itself takes 1 s (1.5x TCG)
    slow_tcg = kvmprobe.Probe(True, "a tiny tcg guest booted and exited in 1.00 s", 1.0)
    monkeypatch.setattr(kvmprobe, "guest_probe", lambda *a, **k: kvmprobe.Probe(True, "", 1.5))
    assert kvmprobe.kvm_usable("qemu", tcg=slow_tcg).ok
    # both: over 1 s and over 2x TCG
    monkeypatch.setattr(kvmprobe, "guest_probe", lambda *a, **k: kvmprobe.Probe(True, "", 2.1))
    assert not kvmprobe.kvm_usable("qemu", tcg=slow_tcg).ok
    # without a TCG yardstick only the hard timeout decides
    monkeypatch.setattr(kvmprobe, "guest_probe", lambda *a, **k: kvmprobe.Probe(True, "", 2.8))
    assert kvmprobe.kvm_usable("qemu").ok
