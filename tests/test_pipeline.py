"""The host pipeline's joints (issue 16), through ``doit`` as the user types it: lb-image
waits for the distfiles rootfs.py needs first and only those, and says which are missing
without ``-s``; ``doit host`` and ``doit iso`` run the steps in the pipeline's order."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.sources import gitpin
from tests.conftest import REPO, shared_git

HOST_RECIPES = ("preflight", "live-bootstrap", "lb-mirror", "lb-image", "dropbear", "guest")


def git_mirrors() -> str:
    """AZL_GIT_MIRRORS for live-bootstrap's pinned checkout: the bundles of ../shared/git."""
    return str(shared_git("live-bootstrap"))


def host_project(root: Path, config: str = "") -> Path:
    """The repository's host recipes (and the guest's, for ``doit iso``), dodo.py, a mirror."""
    (root / "recipes").mkdir(parents=True)
    for name in HOST_RECIPES:
        shutil.copy(REPO / "recipes" / f"{name}.toml", root / "recipes")
    shutil.copytree(REPO / "recipes" / "lb-image", root / "recipes" / "lb-image")
    shutil.copy(REPO / "dodo.py", root)
    (root / "mirror").mkdir()
    (root / "azl-bootstrap.toml").write_text('platform = "sandbox"\n' + config)
    return root


def doit(root: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, AZL_GIT_MIRRORS=git_mirrors())
    return subprocess.run(
        [sys.executable, "-m", "doit", *args], cwd=root, capture_output=True, text=True,
        env=env, timeout=timeout,
    )  # fmt: skip


def task_deps(info: str) -> list[str]:
    """What a step runs after, or a group's steps, in order, as ``doit info`` lists them."""
    m = re.search(r"^(?:its steps|runs after):\n((?:  - \S+\n)+)", info, re.M)
    assert m, info
    return re.findall(r"^  - (\S+)", m.group(1), re.M)


def test_host_and_iso_run_the_pipeline_in_order(tmp_path: Path) -> None:
    """``doit host``: preflight, the checkout, the image (which does not wait for all of
    live-bootstrap's distfiles), the rest of them, then a guest ready to build (push, after
    the guest's inputs). ``doit iso``: the image, the guest's inputs, then the guest."""
    root = host_project(tmp_path / "p")
    shutil.rmtree(root / "recipes")
    shutil.copytree(REPO / "recipes", root / "recipes")  # the guest plan's too
    r = doit(root, "info", "host")
    assert r.returncode == 0, r.stderr
    deps = task_deps(r.stdout)
    assert sorted(deps[:2]) == ["live-bootstrap", "preflight"], r.stdout
    assert deps[2:] == ["lb-image", "lb-mirror", "push", "toolkit-sources"], r.stdout
    r = doit(root, "info", "lb-image")
    deps = task_deps(r.stdout)
    assert deps == ["preflight", "live-bootstrap"], r.stdout  # not lb-mirror: all 248
    r = doit(root, "info", "push")
    deps = task_deps(r.stdout)
    assert deps[:2] == ["lb-image", "guest-inputs"], r.stdout
    r = doit(root, "info", "iso")
    deps = task_deps(r.stdout)
    assert deps[0] == "lb-image" and "guest-inputs:azurelinux" in deps, r.stdout
    assert "guest-inputs:go-modules" in deps and "guest-inputs:gcc-13.3.0.tar.xz" in deps


@pytest.mark.skipif(not git_mirrors(), reason="no local mirror of live-bootstrap (../shared/git)")
def test_lb_image_fetches_only_its_early_distfiles_and_names_the_missing(tmp_path: Path) -> None:
    """Offline, with none of live-bootstrap's distfiles at hand: ``doit lb-image`` makes the
    checkout, fetches none of the later distfiles (lb-mirror does not run), and its own
    message, naming every file rootfs.py needs first, shows without ``-s``."""
    root = host_project(tmp_path / "p", "offline = true\n")
    r = doit(root, "lb-image")
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    m = re.search(r"lb-image: rootfs.py needs (\d+) distfile\(s\) before it builds the image", out)
    assert m, out
    assert int(m.group(1)) == 71  # rootfs.py's up-front files at the pinned commit
    assert "mes-0.27.tar.gz  sha256" in out and "What to do:" in out
    assert "lb-mirror" not in re.findall(r"^\.  (\S+)", r.stdout, re.M)
    assert not any(re.match(r"^\.  mirror:", line) for line in r.stdout.splitlines())
    assert not (root / "cache" / "host" / "lb-target").exists()  # rootfs.py never ran


def test_the_kexec_writes_to_the_console_the_host_reads(tmp_path: Path) -> None:
    """The kexec keeps the seed's line and adds console=ttyS0; the VM has no display and
    its serial port is the host's console log; while the guest is away (the kexec), the
    host's ``doit`` passes the new console lines on as they come."""
    import tomllib

    from tasks.guest.run import GuestRun
    from tasks.guest.vm import VMSpec, qemu_command

    line = tomllib.loads((REPO / "recipes" / "kexec.toml").read_text())["script"]["install"]
    seed = "root=/dev/sda1 rootwait rw init=/init consoleblank=0"
    assert f"--command-line='{seed} console=ttyS0'" in line
    spec = VMSpec(tmp_path / "img", tmp_path / "logs", tmp_path, tmp_path / "k", tmp_path / "h")
    cmd = qemu_command(spec, 2222)
    assert cmd[cmd.index("-serial") + 1] == f"file:{spec.console_log}"
    assert cmd[cmd.index("-display") + 1] == "none"

    console = tmp_path / "vm.console.log"
    console.write_text("32-bit boot, before the run started\n")
    boot = ["Linux version 6.6.96.2 (x86_64)", "Run /init as init process", "dropbear up"]

    class Link:  # the guest answers SSH again after three polls, the console growing meanwhile
        def wait_up(self, timeout: float, alive=lambda: None, poll: float = 0.5) -> float:
            for text in boot:
                with open(console, "a") as f:
                    f.write(text + "\n")
                assert alive() is None
            return 1.0

    said: list[str] = []
    run = GuestRun(Link(), "/root/azl", ["iso"], said.append, console=console)  # type: ignore[arg-type]
    assert run._reconnect()
    shown = [s.removeprefix("azl: console: ") for s in said if s.startswith("azl: console: ")]
    assert shown == boot  # every new line, none from before the run


def test_the_iso_is_copied_out_with_its_sha256(tmp_path: Path) -> None:
    """The guest's stage record names the ISO (relative to the tree); it is streamed over
    the link (here the local ``sh -c`` stand-in of test_closure), checked against the
    guest's sha256, and lands in out/ with a ``sha256sum -c`` file beside it."""
    from tasks.guest.copyout import copy_outputs
    from tasks.toolkit.action import write_record
    from tests.test_closure import LocalLink

    tree = tmp_path / "guest" / "azurelinux"
    iso = tree / "out" / "images" / "full" / "azurelinux-3.0.x86_64.iso"
    iso.parent.mkdir(parents=True)
    iso.write_bytes(os.urandom(3 << 20))  # a stand-in ISO
    record = tmp_path / "guest" / "azl" / "cache" / "stages" / "iso.json"
    write_record(record, tree, [str(iso)])
    out, said = tmp_path / "host" / "out", []
    got = copy_outputs(LocalLink(), str(record), str(tree), out, said.append, sys.executable)  # type: ignore[arg-type]
    assert got == [out / iso.name]
    assert (out / iso.name).read_bytes() == iso.read_bytes()
    check = subprocess.run(["sha256sum", "-c", f"{iso.name}.sha256"], cwd=out, capture_output=True)
    assert check.returncode == 0, check.stdout
    assert not list(out.glob("*.part"))
    copy_outputs(LocalLink(), str(record), str(tree), out, said.append, sys.executable)  # type: ignore[arg-type]
    assert "is already the guest's" in said[-1]


def test_the_tree_travels_as_a_content_pinned_snapshot(tmp_path: Path) -> None:
    """guest-inputs makes ``mirror/<name>-<commit>.tar.gz`` from a local repository that has
    the pinned commit (a stand-in for the Azure Linux tree, with a Go module); the guest
    checks it out offline from that snapshot alone, its tree id re-created and checked; the
    Go module files are read from it byte for byte (go.sum's sha256 is what the guest's
    stage compares)."""
    from tasks.guest.inputs import make_tree_snapshot, module_files, pin_entries, snapshot_path

    work = tmp_path / "azurelinux"
    (work / "toolkit" / "tools").mkdir(parents=True)
    (work / "toolkit" / "tools" / "go.mod").write_text("module example.com/tools\n\ngo 1.23\n")
    (work / "toolkit" / "tools" / "go.sum").write_bytes(b"example.com/x v1.0.0 h1:abc=\r\n")
    (work / "toolkit" / "Makefile").write_text("all:\n")
    env = {**os.environ, **gitpin.GIT_ENV}

    def g(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=work, env=env, check=True,
                              capture_output=True, text=True).stdout.strip()  # fmt: skip

    g("init", "-q")
    g("add", "-A")
    g("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "stand-in tree")
    commit, tree = g("rev-parse", "HEAD"), g("rev-parse", "HEAD^{tree}")
    bare = tmp_path / "git-mirror" / "azurelinux.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True, env=env)
    pin = gitpin.Pin("https://github.com/microsoft/azurelinux", commit, tree)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    assert not pin_entries(pin, mirror)

    origin = make_tree_snapshot(pin, mirror, [bare], network=False, work=tmp_path / "cache")
    assert origin == str(bare)
    assert pin_entries(pin, mirror) == [snapshot_path(pin, mirror)]
    assert snapshot_path(pin, mirror).name == f"azurelinux-{commit}.tar.gz"
    # what the guest does with it: an offline checkout from mirror/ alone, tree id checked
    done = gitpin.checkout(pin, tmp_path / "guest-tree", mirrors=[mirror], network=False)
    assert done["tree"] == tree
    got = module_files(pin, mirror, "toolkit/tools", tmp_path / "host" / "go-modules")
    assert (got / "go.sum").read_bytes() == b"example.com/x v1.0.0 h1:abc=\r\n"
    assert make_tree_snapshot(pin, mirror, [], network=False, work=tmp_path / "c2") == (
        "already in the mirror"
    )
