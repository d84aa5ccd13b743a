"""The Go bootstrap chain, the kexec checkpoint and the guest setup steps (procedure V1-V44).

- recipes/go.toml makes one package per link (go1.4 -> go1.17 -> go1.20 -> go1.23 in the guest,
  go1.23.1 alone in the sandbox); each link is bootstrapped by the previous one's GOROOT.
- recipes/kexec.toml is a checkpoint: done exactly while the running kernel is x86_64
  (``AZL_MACHINE`` stands in for ``uname -m``); a kexec ends the doit that ran it.
- recipes/sudo/sudo (sudo and runuser) is run for real in tests/test_sudo.py.
- ``-m slow``: go1.23.1 built from source in the sandbox with the machine's Go 1.22
  (tests/run_slow.sh installs it).

Nothing here builds a guest-only package: the guest's ROOT is this machine's ``/``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import textwrap
import tomllib
from pathlib import Path

import pytest

from tasks.build.action import BuildAction
from tasks.build.systems import phases
from tasks.engine.plan import Project as Plan
from tasks.kinds.checkpoint import MachineIs
from tests.conftest import REPO, Project, Result

# the seed's line, plus console=ttyS0: the host reads the 64-bit boot on the VM's serial console
SEED_KEXEC = (
    "kexec -f --command-line='root=/dev/sda1 rootwait rw init=/init consoleblank=0 console=ttyS0'"
    " /boot/vmlinuz"
)
GUEST_CHAIN = ["go1.4", "go1.17", "go1.20", "go1.23"]
MY_GUEST_STEPS = ["guest-setup", "ssh-access", "lfs-user", "sudo", "hosts", "devpts", "root-home"]


def ok(r: Result) -> Result:
    assert r.code == 0, f"exit {r.code}\n--- out\n{r.out}\n--- err\n{r.err}"
    return r


def stub(project: Project, name: str, body: str = "") -> None:
    """A sourceless guest-only script recipe standing in for a real one."""
    text = f'platforms = ["guest"]\nbuild_system = "script"\nscript.install = "true"\n{body}'
    (project.root / "recipes" / f"{name}.toml").write_text(text)


def go_project(project: Project) -> Project:
    """The real go recipe, with a stub for the step it depends on (the kexec)."""
    shutil.copy(REPO / "recipes" / "go.toml", project.root / "recipes")
    stub(project, "kexec", 'kind = "checkpoint"\nrunning_machine = "x86_64"\n')
    return project


def plan(monkeypatch: pytest.MonkeyPatch, root: Path, platform: str) -> Plan:
    monkeypatch.setenv("AZL_PLATFORM", platform)
    return Plan(root)


def build_env(p: Plan, name: str) -> dict[str, str]:
    """The environment the build of ``name`` would get (the engine's own expansion)."""
    action = BuildAction(p.builds[name], p.platform, p.paths)
    return action.environment(action.variables())


def list_deps(out: str) -> dict[str, list[str]]:
    """``doit list --deps``: task name -> its file dependencies."""
    deps: dict[str, list[str]] = {}
    name = None
    for line in out.splitlines():
        if line.startswith(" -  ") and name:
            deps[name].append(line[4:].strip())
        elif line.strip():
            name = line.split()[0]
            deps[name] = []
    return deps


# --------------------------------------------------------------------------- the Go chain


def test_guest_chain_links_depend_on_the_previous_manifest(project: Project) -> None:
    go_project(project)
    r = ok(project.doit("list", "--deps", env={"AZL_PLATFORM": "guest"}))
    deps = list_deps(r.out)
    assert {n for n in deps if n.startswith("go")} == set(GUEST_CHAIN)
    for prev, link in zip(GUEST_CHAIN, GUEST_CHAIN[1:], strict=False):
        manifests = [d for d in deps[link] if "cache/manifests/" in d]
        assert manifests == [f"cache/manifests/{prev}.json"], (link, deps[link])
        assert "recipes/go.toml" not in deps[link]  # its normalised signature decides
    # the first link follows the checkpoint, which has no manifest: ordered, not a file_dep
    assert not [d for d in deps["go1.4"] if "cache/manifests/" in d], deps["go1.4"]
    assert "mirror/go1.4-bootstrap-20171003.tar.gz" in deps["go1.4"]
    assert "go1.23.1" not in deps


def test_guest_chain_environment_is_the_seeds(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = plan(monkeypatch, go_project(project).root, "guest")
    assert [n for n in p.order if n.startswith("go")] == GUEST_CHAIN
    tasks = {t.name: t for t in p.tasks()}
    assert "kexec" in tasks["go1.4"].task_dep  # after the kexec into the 64-bit kernel
    prefix = p.platform.prefix
    for i, link in enumerate(GUEST_CHAIN):
        build = p.builds[link]
        env = build_env(p, link)
        assert env["GOHOSTARCH"] == "386", link
        assert env["GOTOOLCHAIN"] == "local"
        # Go's caches and GOPATH stay in the build tree, like HOME
        for var in ("GOCACHE", "GOPATH", "HOME"):
            assert env[var].startswith(env["BUILDDIR"]), (link, var, env[var])
        if link == "go1.4":
            assert (env["CGO_ENABLED"], env["GOARCH"]) == ("0", "386")
            assert "GOROOT_BOOTSTRAP" not in env
            assert build.prev is None
        else:
            assert "CGO_ENABLED" not in env and "GOARCH" not in env, link
            prev = GUEST_CHAIN[i - 1]
            assert build.prev == prev and build.depends == [prev]
            assert env["GOROOT_BOOTSTRAP"] == f"{prefix}/lib/{prev}", link
    # ... which is where the previous link installs its GOROOT: ${PREFIX}/lib/${PKG}
    install = p.builds["go1.4"].recipe.script["install"]
    assert 'dest="$DESTDIR$PREFIX/lib/$PKG"' in install
    assert p.builds["go1.23"].version.sources[0].file == "go1.23.12.src.tar.gz"
    # only the last link goes on PATH
    assert [n for n in GUEST_CHAIN if build_env(p, n).get("GO_ON_PATH")] == ["go1.23"]


def test_sandbox_has_only_go1231_bootstrapped_by_the_host(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = plan(monkeypatch, go_project(project).root, "sandbox")
    assert sorted(p.builds) == ["go1.23.1"]  # the kexec is a guest step: dropped
    build = p.builds["go1.23.1"]
    assert build.depends == [] and build.prev is None
    src = build.version.sources[0]
    assert src.sha256 == "6ee44e298379d146a5e5aa6b1c5b5d5f5d0a3365eabdd70741e6e21340ec3b0d"
    assert src.debian == "main/g/golang-1.23/golang-1.23_1.23.1.orig.tar.gz"
    env = build_env(p, "go1.23.1")
    assert env["GOROOT_BOOTSTRAP"] == "/usr/lib/go-1.22"
    for var in ("GOHOSTARCH", "GOARCH", "CGO_ENABLED"):
        assert var not in env, var  # this machine's own architecture
    assert env["GO_ON_PATH"] == "1"


def test_a_missing_bootstrap_go_fails_clearly(tmp_path: Path) -> None:
    script = tomllib.loads((REPO / "recipes" / "go.toml").read_text())["script"]["prepare"]
    env = {"PATH": os.environ["PATH"], "PKG": "go1.23.1", "GOROOT_BOOTSTRAP": str(tmp_path)}
    r = subprocess.run(["sh", "-e", "-c", script], env=env, capture_output=True, text=True)
    assert r.returncode != 0
    assert f"no bootstrap Go at GOROOT_BOOTSTRAP={tmp_path}" in r.stderr
    assert "golang-1.22-go" in r.stderr


# --------------------------------------------------------------------------- the kexec checkpoint


def kexec_chain(project: Project, marker: Path) -> None:
    """a -> kexec -> b. The mock kexec records that it ran, then ends the doit that runs it at
    once, as `kexec -f` does: it SIGKILLs doit (its supervisor's parent)."""
    project.recipe("a")
    kill = "\n".join(
        [
            f'echo ran >> "{marker}"',
            """kill -9 "$(awk '{ print $4 }' "/proc/$PPID/stat")\"""",
            "sleep 30",
        ]
    )
    project.recipe(
        "kexec", 'kind = "checkpoint"\nrunning_machine = "x86_64"\n', deps=("a",), install=kill
    )
    project.recipe("b", deps=("kexec",))


def runs(marker: Path) -> int:
    return len(marker.read_text().splitlines()) if marker.exists() else 0


def test_kexec_checkpoint_runs_on_i686_and_is_done_on_x86_64(
    project: Project, tmp_path: Path
) -> None:
    marker = tmp_path / "kexec-ran"
    kexec_chain(project, marker)

    # 32-bit kernel: a builds, the checkpoint runs and the "kexec" ends doit
    r = project.doit(env={"AZL_MACHINE": "i686"})
    assert r.code == -9, r.out + r.err
    assert runs(marker) == 1
    assert project.manifest("a").exists()
    assert not project.manifest("b").exists()

    # the 64-bit kernel runs now: the checkpoint is done, the run goes on after it
    r = ok(project.doit("info", "kexec", env={"AZL_MACHINE": "x86_64"}))
    assert "up-to-date" in r.out
    r = ok(project.doit(env={"AZL_MACHINE": "x86_64"}))
    assert r.packages_ran() == ["b"], r.out
    assert runs(marker) == 1
    assert ok(project.doit(env={"AZL_MACHINE": "x86_64"})).packages_ran() == []

    # a reboot into the 32-bit kernel: the checkpoint is due again, and runs first
    r = project.doit("info", "kexec", env={"AZL_MACHINE": "i686"})
    assert r.code != 0, r.out
    assert "running machine is x86_64" in r.out
    b_manifest = project.manifest("b").read_bytes()
    r = project.doit(env={"AZL_MACHINE": "i686"})
    assert r.code == -9, r.out + r.err
    assert runs(marker) == 2
    assert project.manifest("b").read_bytes() == b_manifest  # nothing rebuilt after it


def test_kexec_checkpoint_never_runs_on_a_64_bit_kernel(project: Project, tmp_path: Path) -> None:
    marker = tmp_path / "kexec-ran"
    kexec_chain(project, marker)
    r = ok(project.doit(env={"AZL_MACHINE": "x86_64"}))
    assert r.packages_ran() == ["a", "b"], r.out
    assert runs(marker) == 0


def test_the_real_kexec_step_is_the_seeds(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(REPO / "recipes" / "kexec.toml", project.root / "recipes")
    stub(project, "kernel64")
    p = plan(monkeypatch, project.root, "guest")
    build = p.builds["kexec"]
    assert build.recipe.kind == "checkpoint" and build.recipe.spec.machine == "x86_64"
    assert build.recipe.platforms == ("guest",)
    assert build.depends == ["kernel64"]
    assert phases(build, {}) == [("install", [SEED_KEXEC])]
    task = next(t for t in p.tasks() if t.name == "kexec")
    assert not task.file_dep and not task.targets
    assert task.task_dep == ["kernel64"]
    checks = [u[0] for u in task.uptodate]  # doit keeps (callable, args, kwargs)
    assert [str(c) for c in checks if isinstance(c, MachineIs)] == ["running machine is x86_64"]
    assert "kexec" not in plan(monkeypatch, project.root, "sandbox").builds


def test_guest_run_of_the_chain_needs_nothing_unconfirmed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real guest plan: the Go chain needs the kexec, which needs kernel64 and
    musl-cross-make, both pinned now: a run of any Go link is refused only for sources that
    are not in the (offline) mirror, never for an unconfirmed step."""
    p = plan(monkeypatch, REPO, "guest")
    tasks = {t.name: t for t in p.tasks()}
    producer = {target: t.name for t in tasks.values() for target in t.targets}
    names = set()
    todo = ["go1.4"]
    while todo:  # what `doit go1.4` visits: task_dep, and the tasks making its file_dep
        n = todo.pop()
        if n not in names:
            names.add(n)
            todo += list(tasks[n].task_dep)
            todo += [producer[f] for f in tasks[n].file_dep if f in producer]
    assert {"kexec", "kernel64", "musl-cross-make"} <= names
    problem = p.preflight(tasks, names)
    assert problem and "Nothing was built" in problem
    assert "unconfirmed" not in problem
    assert "gcc-13.3.0.tar.xz (for musl-cross-make): not in mirror" in problem
    assert "kernel-6.6.96.2.tar.gz (for kernel64): not in mirror" in problem


def test_guest_list_marks_exactly_the_unconfirmed_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """`doit list` shows `[unconfirmed]` on every step the preflight would refuse, and on no
    other; the guest plan has none (the kernel config, musl-cross-make and the Azure Linux
    tree are pinned)."""
    p = plan(monkeypatch, REPO, "guest")
    marked = {t.name for t in p.tasks() if "[unconfirmed]" in (t.doc or "")}
    refused = {t.name for t in p.tasks() if (t.meta or {}).get("unconfirmed")}
    assert marked == refused
    assert not marked, f"unconfirmed defaults in the guest plan: {sorted(marked)}"


# --------------------------------------------------------------------------- guest setup steps


def test_guest_setup_steps_are_guest_only_and_wired_as_the_procedure_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p = plan(monkeypatch, REPO, "guest")
    expected = {
        "guest-setup": ("V1", []),
        "ssh-access": ("V3", ["dropbear", "guest-setup", "devpts"]),
        "devpts": ("V1", []),
        "root-home": ("V4", []),
        "lfs-user": ("V42", ["util-linux"]),
        "sudo": ("V43", []),
        "hosts": ("V44", []),
        "kernel64": ("V36", ["musl-cross-make", "libelf"]),
        "musl-cross-make": ("V24", []),
        "kexec": ("V37", ["kernel64"]),
    }
    for name, (step, deps) in expected.items():
        build = p.builds[name]
        assert (build.recipe.step, build.depends) == (step, deps), name
        assert build.recipe.platforms == ("guest",), name
    sandbox = plan(monkeypatch, REPO, "sandbox")
    assert not set(expected) & set(sandbox.builds)
    # live-system actions: post_install of a package, or a session step (redone whenever
    # its check fails: tests/test_guest_sessions.py); the scripts are valid shell
    for name in MY_GUEST_STEPS:
        for phase, text in p.builds[name].recipe.script.items():
            r = subprocess.run(["sh", "-n", "-c", text], capture_output=True, text=True)
            assert r.returncode == 0, (name, phase, r.stderr)
    assert "post_install" in p.builds["lfs-user"].recipe.script
    for name in ("devpts", "ssh-access", "hosts", "root-home"):
        assert p.builds[name].recipe.kind == "session", name
    lfs = p.builds["lfs-user"].recipe.script["post_install"]
    assert "grep -q '^lfs:' /etc/group || groupadd lfs" in lfs
    assert "useradd -s /bin/bash -g lfs -m -k /dev/null lfs" in lfs


def run_install(name: str, tmp_path: Path, **env: str) -> Path:
    """Run the install phase of a file-writing guest step into a scratch DESTDIR."""
    text = tomllib.loads((REPO / "recipes" / f"{name}.toml").read_text())["script"]["install"]
    dest = tmp_path / "stage"
    dest.mkdir(exist_ok=True)
    full = {"PATH": os.environ["PATH"], "DESTDIR": str(dest), **env}
    r = subprocess.run(["sh", "-e", "-c", text], cwd=tmp_path, env=full, capture_output=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return dest


def test_guest_setup_writes_shells_and_the_login_environment(tmp_path: Path) -> None:
    libdir = "/usr/lib/i686-unknown-linux-musl"
    dest = run_install(
        "guest-setup", tmp_path, PREFIX="/usr", LIBDIR=libdir, TARGET="i686-unknown-linux-musl"
    )
    shells = (dest / "etc" / "shells").read_text().split()
    assert {"/bin/bash", "/usr/bin/bash", "/bin/sh"} <= set(shells)
    profile = dest / "etc" / "profile.d" / "azl-bootstrap.sh"
    text = profile.read_text()
    assert f"export LIBDIR={libdir}\n" in text and "export TARGET=i686-unknown-linux-musl\n" in text
    assert "DESTDIR" not in text  # a session's make install goes where it says
    show = f'. "{dest}/etc/profile.d/azl-bootstrap.sh"; echo "$PKG_CONFIG_PATH $MAKEJOBS"'
    r = subprocess.run(
        ["sh", "-c", show],
        capture_output=True,
        text=True,
    )
    assert r.stdout == f"{libdir}/pkgconfig -j{len(os.sched_getaffinity(0))}\n", r.stderr
    assert "/etc/profile.d/*.sh" in (dest / "etc" / "profile").read_text()


def test_dropbear_is_started_in_the_machines_network() -> None:
    """Builds run in an empty network namespace (as root); the daemon is for the machine, so
    ssh-access opts out (``network = true``, tested in test_engine) and starts it whenever
    it is not running (a session step: tests/test_guest_sessions.py runs it)."""
    text = tomllib.loads((REPO / "recipes" / "ssh-access.toml").read_text())
    assert text["network"] is True and text["kind"] == "session"
    assert "dropbear -R" in text["script"]["install"]


# --------------------------------------------------------------------------- slow: go1.23.1

GO_BOOTSTRAP = Path("/usr/lib/go-1.22/bin/go")


@pytest.mark.slow
@pytest.mark.network
def test_go1231_builds_from_source_in_the_sandbox(tmp_path: Path, archive: str) -> None:
    if not GO_BOOTSTRAP.exists():
        pytest.skip(
            f"{GO_BOOTSTRAP} is missing: install bookworm-backports' golang-1.22-go "
            "(tests/run_slow.sh does it)"
        )
    project = go_project(Project(tmp_path / "proj"))
    r = project.doit(timeout=3600)
    assert r.code == 0, r.out + r.err + (project.root / "cache/logs/go1.23.1.log").read_text()
    assert r.packages_ran() == ["go1.23.1"]

    goroot = project.installed("lib/go1.23.1")
    go = project.installed("bin/go")  # the symlink on PATH
    assert go.is_symlink() and os.readlink(go) == "../lib/go1.23.1/bin/go"
    work = tmp_path / "hello"
    work.mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(work),
        "GOCACHE": str(work / "cache"),
        "GOPATH": str(work / "gopath"),
        "GOTOOLCHAIN": "local",
        "GOFLAGS": "-buildvcs=false",
    }
    version = subprocess.run([go, "version"], env=env, capture_output=True, text=True)
    assert re.fullmatch(r"go version go1\.23\.1 linux/\w+\n", version.stdout), version
    goroot_out = subprocess.run([go, "env", "GOROOT"], env=env, capture_output=True, text=True)
    assert Path(goroot_out.stdout.strip()).resolve() == goroot.resolve()

    (work / "go.mod").write_text("module hello\n\ngo 1.23\n")
    (work / "hello.go").write_text(
        textwrap.dedent(
            """\
            package main

            import (
            \t"fmt"
            \t"runtime"
            )

            func main() { fmt.Println("hello from", runtime.GOARCH) }
            """
        )
    )
    r2 = subprocess.run(
        [go, "build", "-o", "hello", "."],
        cwd=work,
        env={**env, "GOARCH": "amd64", "CGO_ENABLED": "0"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r2.returncode == 0, r2.stderr
    elf = (work / "hello").read_bytes()[:20]
    assert elf[:4] == b"\x7fELF" and elf[4] == 2 and elf[18] == 0x3E  # ELF64, x86-64
    if os.uname().machine == "x86_64":
        out = subprocess.run([work / "hello"], capture_output=True, text=True)
        assert out.stdout == "hello from amd64\n"

    # a second run builds nothing
    assert ok(project.doit()).packages_ran() == []


def test_list_marks_an_unconfirmed_step() -> None:
    from tasks.kinds.base import make_task

    marked = make_task("x", None, doc="1.0  a step", meta={"unconfirmed": "1.0: why"})
    assert marked.doc == "1.0  a step  [unconfirmed]"
    assert make_task("y", None, doc="1.0  a step").doc == "1.0  a step"
