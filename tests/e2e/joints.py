"""The end-to-end rehearsal's joints, each timed: what ``tests/test_e2e.py`` asserts and
``python -m bench e2e`` prints. It drives a copy of the project (``cache/e2e/project``, whose
``cache/`` and ``mirror/`` are kept between runs) from the host through the code a user's run
takes after ``lb-image``: ``doit vm`` (tasks/kinds/guest.py), and ``tasks.guest.drive``'s
``booted`` / ``prepare`` / ``GuestRun`` (what ``doit guest`` and ``doit <guest step>`` run),
against the stand-in image of ``tests/e2e/standin.py``.

The guest builds are chosen small, from the guest plan and with sources this machine can
fetch (Debian's pool): ``bzip2`` (plain make) and ``lua`` (plain make); the guest setup steps
are ``guest-setup``, ``devpts``, ``hosts`` and ``root-home``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tasks.guest.drive import GuestSettings, booted, prepare, vm_settings
from tasks.guest.inputs import make_tree_snapshot
from tasks.guest.link import Endpoint
from tasks.guest.run import GUEST_STATE, GuestRun, save_guest_state
from tasks.model.config import CONFIG_NAME
from tasks.sources.download import fetch
from tasks.sources.gitpin import GIT_ENV, Pin, git
from tests.e2e.standin import StandIn, e2e_dir, make_standin
from tests.rehearsal32.go import PROGRAM as GO_PROGRAM
from tests.rehearsal32.go import stage_env

REPO = Path(__file__).resolve().parents[2]
SETUP_STEPS = ["guest-setup", "devpts", "hosts", "root-home"]
SESSION_STEPS = ["devpts", "hosts", "root-home"]
PACKAGES = ["bzip2", "lua"]
SHARED_TREE = REPO.parent / "shared" / "azurelinux"
TREE_PARTS = ("toolkit-6a8b54d4.tar.gz", "specs-6a8b54d4.tar.gz")
STAGE = "e2e-toolkit-stage"
# STAND-IN stage: the toolkit's real Makefile (every scripts/*.mk it includes is read, the
# tool directories made) for its `get-version` target, which needs no Go and no network; the
# real stages need the go1.23 chain and hours (docs/e2e.md)
STAGE_RECIPE = """\
kind = "stage"
step = "A2"
description = "STAND-IN (tests/e2e): the toolkit's get-version target on the pushed tree"
platforms = ["guest"]
depends = ["azurelinux"]
make_target = "get-version"
outputs = ["toolkit/out/tools"]
fresh = ["toolkit/out"]
"""


@dataclass
class Joints:
    """Seconds (and counts) of each joint, in the order they ran."""

    times: dict[str, float] = field(default_factory=dict)
    facts: dict[str, object] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)  # `doit status` at its moments
    lines: list[str] = field(default_factory=list)  # the host's guest output, all of it
    # (task, when its ".  task" line came): a guest task's time is until the next one, or
    # the end of its run ("", when the run ended)
    starts: list[tuple[str, float]] = field(default_factory=list)

    def task_seconds(self) -> dict[str, float]:
        """Each guest task that ran, with its time (from the host's view of the log)."""
        out: dict[str, float] = {}
        for (name, t), (_, nxt) in zip(self.starts, self.starts[1:], strict=False):
            if name:
                out[name if name not in out else f"{name} (again)"] = nxt - t
        return out

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        t = time.monotonic()
        print(f"e2e: {name} ...", flush=True)
        yield
        self.times[name] = time.monotonic() - t
        print(f"e2e: {name}: {self.times[name]:.1f} s", flush=True)

    def table(self) -> str:
        rows = [f"  {k:<34} {v:8.1f} s" for k, v in self.times.items()]
        rows += [f"  guest task {k:<23} {v:8.1f} s" for k, v in self.task_seconds().items()]
        rows += [f"  {k:<34} {v}" for k, v in self.facts.items()]
        for moment, text in self.status.items():
            rows += [f"doit status, {moment}:", *(f"  {ln}" for ln in text.splitlines())]
        return "\n".join(rows)


def project_copy(dst: Path) -> Path:
    """The project's tracked files copied over ``dst`` (its cache/ and mirror/ stay)."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    for rel in filter(None, files):
        src = REPO / rel.decode()
        if src.is_file():
            (dst / rel.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel.decode())
    return dst


def fetch_sources(project: Path, archive: str, names: list[str]) -> None:
    """Into the project's mirror, from Debian's pool: each recipe's guest-version sources
    (and the after-step's dropbear); the project's own code checks them later."""
    (project / "mirror").mkdir(exist_ok=True)
    wanted = []
    for name in names:
        recipe = tomllib.loads((project / "recipes" / f"{name}.toml").read_text())
        version = recipe.get("platform", {}).get("guest", {}).get("version", recipe["version"])
        if name == "dropbear":
            version = tomllib.loads((project / "recipes/lb-image.toml").read_text())["dropbear"]
        wanted += recipe["versions"][version]["sources"]
    for src in wanted:
        dest = project / "mirror" / src["file"]
        if not dest.exists():
            fetch([f"{archive}/pool/{src['debian']}"], dest, src["sha256"], progress=False)


def write_config(project: Path, standin: StandIn) -> GuestSettings:
    """``[vm]`` of the project's config: the stand-in image, booted directly."""
    table = {
        "image": str(standin.image),
        "kernel": str(standin.kernel),
        "initrd": str(standin.initrd),
        "append": standin.append,
        "size": standin.size,
        "cores": 2,
        "memory_mb": 3072,
        "kvm": False,
        "boot_timeout": 900,
    }
    lines = ["[vm]"] + [f"{k} = {tomllib_value(v)}" for k, v in table.items()]
    (project / CONFIG_NAME).write_text("\n".join(lines) + "\n")
    return vm_settings(table, project / CONFIG_NAME)


def tomllib_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


class Rehearsal:
    """One run of every joint; ``run()`` returns the timings (see the module docstring)."""

    def __init__(self, checkout: Path, archive: str, reuse_image: bool = False):
        self.checkout, self.archive, self.reuse_image = checkout, archive, reuse_image
        self.work = e2e_dir(REPO)
        self.project = self.work / "project"
        self.j = Joints()
        self.settings: GuestSettings | None = None
        self.reconnects = 0
        self.power_cut_at = self.cut_at = 0.0
        self.pin: Pin | None = None

    def out(self, line: str, guest: bool = True) -> None:
        if guest and line.startswith(".  "):  # the host's `.  vm` is no guest task
            self.j.starts.append((line[3:].strip(), time.monotonic()))
        self.j.lines.append(line)
        print(f"  | {line}", flush=True)

    # -- joints ------------------------------------------------------------------------

    def image(self) -> StandIn:
        self.project.mkdir(parents=True, exist_ok=True)
        project_copy(self.project)
        fetch_sources(self.project, self.archive, ["dropbear", *PACKAGES])
        record = self.work / "standin.json"
        if self.reuse_image and record.exists():
            standin = StandIn(**json.loads(record.read_text()))
            standin.image, standin.kernel, standin.initrd = (
                Path(standin.image),
                Path(standin.kernel),
                Path(standin.initrd),
            )
            print("e2e: reusing the stand-in image of the last run (--reuse-image)", flush=True)
        else:
            record.unlink(missing_ok=True)
            with self.j.timed("image"):
                standin = make_standin(self.work, self.project, self.checkout, self.archive)
            for k, v in standin.seconds.items():
                self.j.facts[f"image: {k} s"] = round(v, 1)
            record.write_text(json.dumps(dataclasses.asdict(standin), default=str))
        # the VM boots a copy: the made image stays as it was, for --reuse-image
        guest = self.work / "guest.img"
        guest.unlink(missing_ok=True)
        subprocess.run(["cp", "--sparse=always", str(standin.image), str(guest)], check=True)
        standin.image = guest
        self.settings = write_config(self.project, standin)
        return standin

    def doit_vm(self) -> None:
        """``doit -s vm`` (``-s``: not lb-image first, the stand-in is the image): boots,
        prints how to log in; Ctrl-C powers the guest off."""
        cmd = [sys.executable, "-m", "doit", "-s", "vm"]
        t = time.monotonic()
        # Ctrl-C's default action: a run started as a background job ignores SIGINT, and
        # its children inherit that (`python -m bench e2e &` left doit vm deaf to it)
        proc = subprocess.Popen(
            cmd, cwd=self.project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip
        try:
            self._hold(proc, t)
        finally:
            if proc.poll() is None:  # a failed check: doit's end stops its VM's supervisor
                proc.kill()
                proc.wait()

    def _hold(self, proc: subprocess.Popen, t: float) -> None:
        assert proc.stdout is not None
        login = None
        for line in proc.stdout:
            self.out(line.rstrip(), guest=False)
            if line.strip().startswith("ssh ") or "log in with" in line:
                login = line
            if line.strip().startswith("ssh "):
                break
        self.j.times["doit vm: boot to SSH"] = time.monotonic() - t
        if login is None:
            proc.wait()
            raise AssertionError(f"doit vm printed no ssh command (exit {proc.returncode})")
        t = time.monotonic()
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=180)[0]
        for line in rest.splitlines():
            self.out(line, guest=False)
        self.j.times["doit vm: Ctrl-C to powered off"] = time.monotonic() - t
        self.j.facts["doit vm exit"] = proc.returncode

    def first_session(self) -> None:
        """Boot, push, wheelhouse, the setup steps and bzip2 (the follower's ssh killed
        while it builds: the host must follow the same run again), then lua with a power
        cut (qemu killed) while it builds."""
        assert self.settings is not None
        s = self.settings
        cut = {"ssh": False, "power": False}

        def out(line: str) -> None:
            self.out(line)
            if line.startswith(".  bzip2") and not cut["ssh"]:
                cut["ssh"] = True
                threading.Timer(5, self._cut_ssh).start()
                during.start()
            if line.startswith(".  lua") and not cut["power"]:
                cut["power"] = True
                threading.Timer(30, self._power_cut).start()

        moment = "while bzip2 builds in the guest"
        during = threading.Timer(20, self._status_quietly, (moment,))
        t = time.monotonic()
        with booted(self.project, s) as (link, alive):
            self.j.times["boot to SSH"] = time.monotonic() - t
            with self.j.timed("push and wheelhouse"):
                prepare(self.project, link, s, out, mirror_files=None)
            pushes = [ln for ln in self.j.lines if ln.startswith("azl: pushed")]
            self.j.facts["push"] = pushes
            pushed = sum(float(ln.rsplit(" in ", 1)[1].split()[0]) for ln in pushes)
            self.j.times["  of which the pushes"] = pushed
            self.j.times["  of which the wheelhouse install"] = (
                self.j.times["push and wheelhouse"] - pushed
            )
            with self.j.timed("setup steps and bzip2 (ssh cut)"):
                rc = self._guest(link, [*SETUP_STEPS, "bzip2"], alive, out)
            assert rc == 0, f"the guest doit of the setup steps and bzip2 exited {rc}"
            assert cut["ssh"] and self.reconnects, "the ssh cut did not happen"
            during.join()
            seen = self.j.status.get(moment, "")
            assert re.search(r"guest packages +running.*now bzip2", seen), seen or "no status"
            assert "VM up, read over the link" in seen, seen
            t = time.monotonic()
            rc = self._guest(link, ["lua"], alive, out)
            assert cut["power"], f"lua finished (exit {rc}) before the power cut"
            assert rc != 0, "the guest doit of lua succeeded through a power cut"
        self.cut_at = self.power_cut_at

    def _guest(
        self, link: Endpoint, args: list[str], alive: Callable[[], str | None],
        out: Callable[[str], None],
    ) -> int:  # fmt: skip
        assert self.settings is not None
        run = GuestRun(
            link, self.settings.dest, args, out, python=self.settings.python,
            setup=self.settings.setup, reconnect_timeout=self.settings.boot_timeout, alive=alive,
            console=self.project / "cache" / "logs" / "vm.console.log",  # as drive() passes it
        )  # fmt: skip
        rc = run.drive()
        self.j.starts.append(("", time.monotonic()))
        self.reconnects += run.reconnects
        return rc

    def _status_quietly(self, moment: str) -> None:
        """``doit status`` from a timer thread: what it printed is checked by the caller."""
        try:
            self.doit_status(moment)
        except Exception as e:  # noqa: BLE001
            self.j.status[moment] = f"doit status failed: {e}"

    def _cut_ssh(self) -> None:
        p = follower_ssh(os.getpid())
        if p is not None:
            print(f"e2e: cutting the SSH connection (killing ssh {p.pid})", flush=True)
            p.kill()
            self.j.facts["ssh cut"] = "killed the follower's ssh"

    def _power_cut(self) -> None:
        q = qemu_of(os.getpid())
        if q is not None:
            print(f"e2e: power cut (killing qemu {q.pid})", flush=True)
            self.power_cut_at = time.monotonic()
            q.kill()

    def second_session(self) -> None:
        """After the power cut: boot again, rerun bzip2 and lua (bzip2 must not be rebuilt),
        kexec into the stand-in 64-bit kernel, redo the session steps, run the checks after
        the kexec, power off cleanly."""
        assert self.settings is not None
        s = self.settings
        t = time.monotonic()
        mark = len(self.j.lines)
        with booted(self.project, s) as (link, alive):
            self.j.times["boot to SSH (after the power cut)"] = time.monotonic() - t
            prepare(self.project, link, s, self.out, mirror_files=None)
            rc = self._guest(link, list(PACKAGES), alive, self.out)
            assert rc == 0, f"the guest doit of {PACKAGES} after the power cut exited {rc}"
            self.j.times["power cut to resumed (lua built)"] = time.monotonic() - self.cut_at
            after = self.j.lines[mark:]
            assert "-- bzip2" in [ln.rstrip() for ln in after], "bzip2 was not up to date"
            assert not any(ln.startswith(".  bzip2") for ln in after), "bzip2 was rebuilt"
            assert any(ln.startswith(".  lua") for ln in after), "lua was not built"
            with self.j.timed("kexec to SSH"):
                rc = self._guest(link, ["-s", "kexec"], alive, self.out)
            assert rc == 0, f"the guest doit -s kexec exited {rc}"
            machine = link.run("uname -m").stdout.decode().strip()
            assert machine == "x86_64", f"after the kexec the kernel says {machine}"
            with self.j.timed("session steps again"):
                rc = self._guest(link, list(SESSION_STEPS), alive, self.out)
            assert rc == 0, f"the session steps after the kexec exited {rc}"
            with self.j.timed("after the kexec: 32-bit program, unshare --net"):
                self.after_kexec(link)
            with self.j.timed("after the kexec: Statfs Go proof"):
                self.statfs_proof(link)
            with self.j.timed("after the kexec: the tree and a toolkit stage"):
                assert self.pin is not None
                self.toolkit_stage(link, alive, self.pin)
            # the kexec is a checkpoint: asked again, it is up to date (no second kexec)
            mark = len(self.j.lines)
            rc = self._guest(link, ["-s", "kexec"], alive, self.out)
            again = [ln.rstrip() for ln in self.j.lines[mark:]]
            assert rc == 0 and "-- kexec" in again, "the kexec was not up to date"
            # as drive() does before the power-off: `doit status` reads it while the VM is down
            save_guest_state(link, s.dest, s.python, self.project / "cache/host" / GUEST_STATE)
            t = time.monotonic()
        self.j.times["clean power-off"] = time.monotonic() - t

    def after_kexec(self, link: Endpoint) -> None:
        checks = {
            "32-bit program": "getconf LONG_BIT; od -An -tx1 -j4 -N1 /usr/bin/bash",
            "unshare --net": "unshare --net ip -o link",
        }
        for name, cmd in checks.items():
            r = link.run(cmd, timeout=120)
            text = (r.stdout + r.stderr).decode(errors="replace").strip()
            self.out(f"[{name}] {text}")
            assert r.returncode == 0, f"{name}: {cmd} exited {r.returncode}: {text}"
            self.j.facts[name] = " ".join(text.split())
        assert self.j.facts["32-bit program"] == "32 01", self.j.facts["32-bit program"]
        assert "eth0" not in str(self.j.facts["unshare --net"])

    def statfs_proof(self, link: Endpoint) -> None:
        """The Statfs program of the 32-bit rehearsal (the toolkit's imagecustomizer.go:888),
        built in the guest with Debian's i386 Go (STAND-IN for the guest's Go chain): with
        the go-tools stage's ``[env]`` it builds and runs (amd64, on the 64-bit kernel);
        without it the compiler stops with the seed's type mismatch."""
        env = " ".join(f"{k}={v}" for k, v in stage_env(self.project).items())
        base = "export HOME=/root GOCACHE=/root/.cache/go-build; cd /root/statfs"
        setup = link.run(
            "mkdir -p /root/statfs && cat > /root/statfs/main.go && "
            "printf 'module statfs\\n\\ngo 1.19\\n' > /root/statfs/go.mod",
            input=GO_PROGRAM.encode(),
        )
        assert setup.returncode == 0, setup.stderr.decode()
        r = link.run(
            f"{base} && env {env} go build -o statfs-stage . && ./statfs-stage", timeout=1800
        )
        text = (r.stdout + r.stderr).decode(errors="replace").strip()
        self.out(f"[statfs, go-tools env {env}] {text}")
        assert r.returncode == 0 and "GOARCH=amd64" in text, text
        self.j.facts["statfs (stage env)"] = text
        r = link.run(f"{base} && go build -o statfs-default .", timeout=1800)
        text = (r.stdout + r.stderr).decode(errors="replace").strip()
        self.out(f"[statfs, Go's defaults] {text}")
        assert r.returncode != 0 and "mismatched types int32 and int64" in text, text
        self.j.facts["statfs (defaults)"] = text.splitlines()[-1]

    def doit_status(self, moment: str) -> str:
        """``doit status`` on the host, as a user types it (kept for the report)."""
        r = subprocess.run(
            [sys.executable, "-m", "doit", "status"], cwd=self.project, capture_output=True,
            text=True, timeout=600,
        )  # fmt: skip
        text = (r.stdout + r.stderr).strip()
        assert r.returncode == 0, f"doit status ({moment}) exited {r.returncode}:\n{text}"
        self.j.status[moment] = text
        print(f"e2e: doit status, {moment}:\n{text}", flush=True)
        return text

    def standin_tree(self) -> Pin:
        """STAND-IN for the Azure Linux tree: the pinned commit's ``toolkit/`` and four SPECS
        (``../shared/azurelinux``: exact ``git archive`` output of them) as the one commit of a
        stand-in repository. The project copy's ``recipes/azurelinux.toml`` is pinned to that
        commit and its tree id, the stand-in stage's recipe is added beside it, and the host
        makes the guest's snapshot with its own code (``make_tree_snapshot``, what ``doit
        guest-inputs`` runs) into the mirror that ``doit guest`` pushes."""
        work = self.work / "tree"
        repo = work / "azurelinux"
        if not (repo / ".git").is_dir():
            shutil.rmtree(work, ignore_errors=True)
            repo.mkdir(parents=True)
            for part in TREE_PARTS:
                subprocess.run(
                    ["tar", "-xzf", str(SHARED_TREE / part), "--strip-components=1", "-C",
                     str(repo)], check=True,
                )  # fmt: skip
            git("init", "--quiet", repo)
            git("-C", repo, "add", "-A", "-f")  # every file, whatever its .gitignore says
            dated = {**GIT_ENV, "GIT_AUTHOR_DATE": "@0 +0000", "GIT_COMMITTER_DATE": "@0 +0000"}
            git("-C", repo, "commit", "--quiet", "-m", "STAND-IN: toolkit/ and four SPECS",
                env=dated)  # fmt: skip  # the same commit id every time
        commit = git("-C", repo, "rev-parse", "HEAD")
        tree = git("-C", repo, "rev-parse", "HEAD^{tree}")
        recipe = self.project / "recipes" / "azurelinux.toml"
        text = re.sub(r'^commit = ".*"$', f'commit = "{commit}"', recipe.read_text(), flags=re.M)
        text = re.sub(r'^tree = ".*"$', f'tree = "{tree}"', text, flags=re.M)
        recipe.write_text(text)
        (self.project / "recipes" / f"{STAGE}.toml").write_text(STAGE_RECIPE)
        url = tomllib.loads(text)["url"]
        pin = Pin(url=url, commit=commit, tree=tree)
        with self.j.timed("tree snapshot on the host"):
            origin = make_tree_snapshot(
                pin, self.project / "mirror", [repo / ".git"], False, work / "git"
            )
        print(f"e2e: the stand-in tree {commit} (tree {tree}): {origin}", flush=True)
        self.j.facts["stand-in tree"] = f"commit {commit[:12]}, tree {tree[:12]}"
        return pin

    def toolkit_stage(self, link: Endpoint, alive: Callable[[], str | None], pin: Pin) -> None:
        """In the guest: the tree checked out from the pushed snapshot (its tree id re-created
        and checked there), then the stand-in stage in it."""
        assert self.settings is not None
        # -s: not the stage's order-only dependencies (every package of the guest plan)
        for step in ("azurelinux", STAGE):
            rc = self._guest(link, ["-s", step], alive, self.out)
            assert rc == 0, f"the guest doit -s {step} exited {rc}"
        dest = self.settings.dest
        record = link.run(f"cat {dest}/cache/stages/azurelinux.json").stdout.decode()
        assert pin.tree in record and pin.commit in record, f"the tree's record: {record}"
        log = link.run(f"cat {dest}/cache/logs/{STAGE}.1.log").stdout.decode(errors="replace")
        version = re.search(r"^3\.0\.\d+", log, re.M)
        assert version, f"the stage printed no version; its log:\n{log[-2000:]}"
        self.j.facts["toolkit stage"] = f"get-version -> {version.group(0)}"

    def run(self) -> Joints:
        self.image()
        self.pin = self.standin_tree()
        self.doit_status("before the first boot")
        self.doit_vm()
        self.first_session()
        self.second_session()
        end = self.doit_status("after the power-off")
        for phase in ("kexec", "azurelinux", STAGE):
            assert re.search(rf"^  {phase} +done", end, re.M), f"{phase} not done:\n{end}"
        assert " running" not in end, end
        return self.j


def qemu_of(pid: int) -> psutil.Process | None:
    """The qemu under this process (the VM's supervisor's child)."""
    for p in psutil.Process(pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if p.name().startswith("qemu-system"):
                return p
    return None


def follower_ssh(pid: int) -> psutil.Process | None:
    """The ssh that follows the guest doit's log (``tasks.guest.run``'s ``follow``)."""
    for p in psutil.Process(pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if p.name() == "ssh" and "follow" in " ".join(p.cmdline()):
                return p
    return None
