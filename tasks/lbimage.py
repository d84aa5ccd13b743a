"""``doit lb-image``: live-bootstrap's ``rootfs.py --qemu`` run to a finished disk image.

The command line is the seed's (procedure.md H4) without ``--interactive``: ``--arch x86 -t
<target> --cores N --update-checksums --mirrors file://<mirror> --qemu --qemu-ram M
--target-size S --qemu-cmd <wrapper>``; cores, RAM and size come from ``doit preflight``
(``cache/host/preflight.json``, overridable in ``[host]`` of the config), the rest from
``recipes/host/lb-image.toml``. The wrapper (``tasks/qemuwrap.py``) runs qemu under TCG when
KVM is unusable and sends the serial console to ``cache/logs/lb-image.log``, whose step names
are printed as they go by (``tasks/lbprogress.py``); rootfs.py's own output goes to
``cache/logs/lb-image.rootfs.log``.

Before the run:

- the checkout ``cache/host/live-bootstrap`` must be at the pinned commit (``doit
  live-bootstrap`` makes it);
- rootfs.py builds the image only after it has every distfile of the ``build:`` steps before
  ``improve: get_network`` (its ``Generator.get_packages``; 71 files at 1296c44b): they are
  linked from ``mirror/`` into the checkout's ``distfiles/``, and a missing one stops the task
  before rootfs.py starts, naming each with its URL. The later ones the guest downloads
  itself from ``--mirrors``;
- the after-step ``recipes/host/lb-after/`` goes into the checkout's ``steps/after/`` with
  ``azl/`` (the dropbear tarball of ``recipes/dropbear.toml``, its sha256, and the public key
  of ``cache/host/ssh/id_ed25519``, made here if missing);
- the old target directory is removed: live-bootstrap cannot resume, and rootfs.py refuses
  an existing ``init/`` (distfiles and the mirror are kept).

The run is finished only when rootfs.py exits 0 **and** the serial log has the after-step's
``AZL-AFTER: done`` (qemu also exits 0 when it is killed). Then the guest's host key (printed
by the after-step) goes to ``cache/host/ssh/host_key.pub`` and the record
``cache/host/lb-image.json`` is written. ``cache/host/lb-image.state.json`` always says where
the last run is: ``running``, ``stopped`` (killed, interrupted, or qemu gone before the end),
``failed`` or ``finished``.

The image is rebuilt only when what built it changes: the pinned commit, arch, checksum
mode, image size, after-step, dropbear tarball and authorised key (not cores, RAM or the
accelerator). ``doit clean lb-image`` removes the target directory and the record, never the
mirror, and refuses while a process has the image open, a loop device is backed by it or
anything is mounted under the target.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed

from tasks import lbprogress, preflight
from tasks.build import RUNNING, clean_paths, kill_group
from tasks.config import Config, Paths
from tasks.download import sha256_file
from tasks.fsutil import atomic_write, safe_rmtree
from tasks.recipe import RecipeError

HERE = Path(__file__).resolve().parent
STALL_SECONDS = 3 * 3600  # no serial output for this long: the guest hung (non-interactive
# live-bootstrap has no way out of a failed step but a hang)


@dataclass(frozen=True)
class Spec:
    """``recipes/host/lb-image.toml``."""

    path: Path
    commit: str
    arch: str
    update_checksums: bool
    after_step: Path
    dropbear_file: str
    dropbear_sha256: str


def load_spec(recipes: Path) -> Spec:
    path = recipes / "host" / "lb-image.toml"
    with open(path, "rb") as f:
        d = tomllib.load(f)
    for key, typ in (
        ("commit", str),
        ("arch", str),
        ("update_checksums", bool),
        ("after_step", str),
        ("dropbear", str),
    ):
        if not isinstance(d.get(key), typ):
            raise RecipeError(path, key, f"missing or not a {typ.__name__}")
    after = path.parent / d["after_step"]
    if not after.is_file():
        raise RecipeError(path, "after_step", f"{after} does not exist")
    with open(recipes / "dropbear.toml", "rb") as f:
        versions = tomllib.load(f).get("versions", {})
    if d["dropbear"] not in versions:
        raise RecipeError(
            path, "dropbear", f"{d['dropbear']!r} is not a version of recipes/dropbear.toml"
        )
    src = versions[d["dropbear"]]["sources"][0]
    return Spec(
        path, d["commit"], d["arch"], d["update_checksums"], after, src["file"], src["sha256"]
    )


@dataclass(frozen=True)
class Layout:
    """Where the host half keeps things, under ``cache/host`` and ``cache/logs``."""

    paths: Paths

    @property
    def host(self) -> Path:
        return self.paths.cache / "host"

    @property
    def checkout(self) -> Path:
        return self.host / "live-bootstrap"

    @property
    def target(self) -> Path:
        return self.host / "lb-target"

    @property
    def image(self) -> Path:
        return self.target / "init.img"

    @property
    def record(self) -> Path:
        return self.host / "lb-image.json"

    @property
    def state(self) -> Path:
        return self.host / "lb-image.state.json"

    @property
    def ssh(self) -> Path:
        return self.host / "ssh"

    @property
    def qemu(self) -> Path:
        return self.host / "qemu"

    @property
    def serial_log(self) -> Path:
        return self.paths.logs / "lb-image.log"

    @property
    def rootfs_log(self) -> Path:
        return self.paths.logs / "lb-image.rootfs.log"


# -- the command line --------------------------------------------------------------------


def mirror_urls(paths: Paths, config: Config) -> list[str]:
    """``file://`` of the project mirror, then the config's mirrors (directories as file://)."""
    urls = [f"file://{paths.mirror.resolve()}"]
    for m in config.mirrors:
        if "://" not in m:
            urls.append(f"file://{Path(m).resolve()}")
        elif not m.startswith("file://") or m[7:].startswith("/"):
            urls.append(m)
    return urls


def rootfs_args(
    spec: Spec, decisions: dict[str, Any], lay: Layout, mirrors: list[str]
) -> list[str]:
    """rootfs.py's arguments: the seed's flags, sizes from preflight, never ``--interactive``."""
    sizes = decisions["sizes"]
    args = [
        "--arch",
        spec.arch,
        "-t",
        str(lay.target.resolve()),
        "--cores",
        str(sizes["qemu_cores"]),
    ]
    if spec.update_checksums:
        args.append("--update-checksums")
    args += ["--mirrors", *mirrors, "--qemu", "--qemu-ram", str(sizes["qemu_ram_mib"])]
    args += [
        "--target-size",
        sizes["image_size"],
        "--qemu-cmd",
        str((lay.qemu / "qemu-wrapper").resolve()),
    ]
    return args


def image_inputs(spec: Spec, decisions: dict[str, Any], lay: Layout) -> dict[str, Any]:
    """What the image is made of; a change rebuilds it (cores, RAM, accel do not)."""
    key = lay.ssh / "id_ed25519.pub"
    return {
        "commit": spec.commit,
        "arch": spec.arch,
        "update_checksums": spec.update_checksums,
        "image_size": decisions["sizes"]["image_size"],
        "after_step": sha256_file(spec.after_step),
        "dropbear": spec.dropbear_sha256,
        "authorized_key": key.read_text().strip() if key.exists() else None,
    }


def write_wrapper(lay: Layout, decisions: dict[str, Any]) -> Path:
    """``cache/host/qemu/qemu-wrapper``: runs ``tasks/qemuwrap.py`` with this run's settings."""
    lay.qemu.mkdir(parents=True, exist_ok=True)
    qemu = decisions["tools"]["qemu-system-x86_64"]
    settings = {
        "qemu": qemu,
        "accel": decisions["accel"],
        "serial": str(lay.serial_log.resolve()),
        "pidfile": str((lay.qemu / "qemu.pid").resolve()),
    }
    atomic_write(lay.qemu / "settings.json", json.dumps(settings, indent=1).encode())
    wrapper = lay.qemu / "qemu-wrapper"
    script = (
        "#!/bin/sh\n# made by tasks/lbimage.py: rootfs.py's --qemu-cmd\n"
        f"exec {shlex.quote(sys.executable)} {shlex.quote(str(HERE / 'qemuwrap.py'))} "
        f'{shlex.quote(str((lay.qemu / "settings.json").resolve()))} "$@"\n'
    )
    atomic_write(wrapper, script.encode())
    wrapper.chmod(0o755)
    return wrapper


# -- what rootfs.py needs up front -------------------------------------------------------


def upfront_distfiles(checkout: Path) -> list[tuple[str, str, str]]:
    """(file, sha256, url) that rootfs.py fetches before it builds the image, as its
    ``Generator.get_source_manifest(pre_network=True)`` reads them at 1296c44b."""
    steps = checkout / "steps"
    seen: dict[str, tuple[str, str, str]] = {}
    for line in (steps / "manifest").read_text().splitlines():
        s = line.strip()
        if s.startswith("improve: ") and "network" in s:
            break
        if not s.startswith("build: "):
            continue
        sources = steps / s.split(" ")[1].split("#")[0].strip() / "sources"
        if not sources.exists():
            continue
        for src in sources.read_text().splitlines():
            f = src.strip().split(" ")
            if not f[0]:
                continue
            if f[0].startswith("git://"):
                f = f[1:]
            name = f[2] if len(f) > 2 else os.path.basename(f[0])
            seen.setdefault(name, (name, f[1], f[0]))
    return list(seen.values())


def link_distfiles(checkout: Path, mirror: Path) -> list[tuple[str, str, str]]:
    """Link each up-front distfile from the mirror into ``<checkout>/distfiles``; the missing."""
    dist = checkout / "distfiles"
    dist.mkdir(exist_ok=True)
    missing = []
    for name, sha, url in upfront_distfiles(checkout):
        have = dist / name
        if have.exists():
            continue
        if (mirror / name).is_file():
            with contextlib.suppress(FileNotFoundError):
                have.unlink()  # a dangling link
            have.symlink_to((mirror / name).resolve())
        else:
            missing.append((name, sha, url))
    return missing


# -- the after-step ----------------------------------------------------------------------


def ensure_key(lay: Layout) -> Path:
    """The host's login key for the guest, ``cache/host/ssh/id_ed25519``; made once."""
    key = lay.ssh / "id_ed25519"
    if not key.exists():
        lay.ssh.mkdir(parents=True, exist_ok=True)
        lay.ssh.chmod(0o700)
        subprocess.run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "azl-bootstrap host",
                "-f",
                str(key),
            ],
            check=True,
            capture_output=True,
        )
    return key


def place_after_step(spec: Spec, lay: Layout) -> Path:
    """Put the after-step and ``azl/`` into ``<checkout>/steps/after``; return the script."""
    after = lay.checkout / "steps" / "after"
    safe_rmtree(after / "azl")
    (after / "azl").mkdir(parents=True)
    tarball = lay.paths.mirror / spec.dropbear_file
    if not tarball.is_file() or sha256_file(tarball) != spec.dropbear_sha256:
        raise TaskFailed(
            f"lb-image: {tarball} missing or not sha256 {spec.dropbear_sha256}: run doit mirror"
        )
    os.link(tarball, after / "azl" / spec.dropbear_file)
    (after / "azl" / "dropbear.sha256").write_text(
        f"{spec.dropbear_sha256}  {spec.dropbear_file}\n"
    )
    pub = ensure_key(lay).with_suffix(".pub")
    (after / "azl" / "authorized_keys").write_text(pub.read_text())
    script = after / spec.after_step.name
    script.write_bytes(spec.after_step.read_bytes())
    script.chmod(0o755)
    return script


# -- in use? -----------------------------------------------------------------------------


def users_of(
    image: Path, proc: Path = Path("/proc"), sys_block: Path = Path("/sys/block")
) -> list[str]:
    """Who holds ``image``: processes with it open (``pid (comm)``) and loop devices."""
    real = os.path.realpath(image)
    found = []
    for pid_dir in proc.glob("[0-9]*"):
        with contextlib.suppress(OSError):
            for fd in (pid_dir / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == real:
                        comm = (pid_dir / "comm").read_text().strip()
                        found.append(f"process {pid_dir.name} ({comm})")
                        break
    for backing in sys_block.glob("loop*/loop/backing_file"):
        with contextlib.suppress(OSError):
            if backing.read_text().strip() == real:
                found.append(f"loop device /dev/{backing.parent.parent.name}")
    return found


def clean_image(paths: Paths, dryrun: bool = False) -> None:
    """``doit clean lb-image``: the target directory, the record and the state; never the
    mirror or the checkout's distfiles. Refused while the image is in use."""
    lay = Layout(paths)
    users = users_of(lay.image) if lay.image.exists() else []
    if users and not dryrun:
        raise SystemExit(
            f"doit clean lb-image: refusing: {lay.image} is in use by {', '.join(users)}. Nothing was deleted."
        )
    clean_paths(
        paths, "lb-image", [lay.target, lay.record, lay.state], dryrun, mount_root=lay.target
    )


# -- the run -----------------------------------------------------------------------------


def _state(lay: Layout, state: str, **extra: Any) -> None:
    lay.host.mkdir(parents=True, exist_ok=True)
    atomic_write(
        lay.state,
        json.dumps({"state": state, "time": int(time.time()), **extra}, indent=1).encode(),
    )


def read_state(paths: Paths) -> dict[str, Any]:
    """The last run's state (``{}`` before the first). A ``running`` whose supervisor is gone
    (its doit was killed with SIGKILL, which takes qemu with it) reads as ``stopped``."""
    try:
        state = json.loads(Layout(paths).state.read_text())
    except FileNotFoundError:
        return {}
    if state.get("state") == "running" and not Path(f"/proc/{state.get('pid')}").exists():
        state.update(state="stopped", why="the doit that ran it is gone")
    return state


def _checkout_commit(checkout: Path) -> str | None:
    r = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    return r.stdout.strip() if r.returncode == 0 else None


def build_image(
    paths: Paths, config: Config, out: Any = sys.stdout, poll: float = 2.0
) -> TaskFailed | None:
    """The action of ``lb-image``. None when finished; a TaskFailed saying why otherwise."""
    lay = Layout(paths)
    spec = load_spec(paths.recipes)
    decisions = preflight.load(paths.project)
    head = _checkout_commit(lay.checkout)
    if head != spec.commit:
        return TaskFailed(
            f"lb-image: {lay.checkout} is at {head or 'nothing'}, not {spec.commit}: run doit live-bootstrap"
        )
    missing = link_distfiles(lay.checkout, paths.mirror)
    if missing:
        lines = "\n".join(f"  {n}  sha256 {s}  from {u}" for n, s, u in missing)
        return TaskFailed(
            f"lb-image: rootfs.py needs {len(missing)} distfile(s) before it builds the image, "
            f"not in {paths.mirror} (run doit lb-mirror):\n{lines}"
        )
    users = users_of(lay.image) if lay.image.exists() else []
    if users:
        return TaskFailed(f"lb-image: {lay.image} is in use by {', '.join(users)}; not restarting")
    safe_rmtree(lay.target)  # live-bootstrap cannot resume; rootfs.py refuses an old init/
    with contextlib.suppress(FileNotFoundError):
        lay.record.unlink()
    place_after_step(spec, lay)
    write_wrapper(lay, decisions)
    paths.logs.mkdir(parents=True, exist_ok=True)
    for log in (lay.serial_log, lay.rootfs_log):
        if log.exists():
            os.replace(log, log.with_name(log.name + ".1"))
    lay.serial_log.touch()
    cmd = [
        sys.executable,
        "rootfs.py",
        *rootfs_args(spec, decisions, lay, mirror_urls(paths, config)),
    ]
    env = dict(os.environ, PYTHONPATH=str(HERE.parent))
    print(
        f"lb-image: {' '.join(cmd[1:])}\n  serial console: {lay.serial_log}", file=out, flush=True
    )
    with open(lay.rootfs_log, "wb") as rlog:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tasks.supervise", *cmd],
            cwd=lay.checkout,
            stdin=subprocess.PIPE,
            stdout=rlog,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    RUNNING.add(proc)
    follower = lbprogress.Follower(str(lay.serial_log))
    started = time.monotonic()
    _state(lay, "running", pid=proc.pid, step=None)
    try:
        last_growth, size = time.monotonic(), 0
        while proc.poll() is None:
            time.sleep(poll)
            for step in follower.poll():
                print(
                    f"lb-image: {step}  [{_hms(time.monotonic() - started)}]", file=out, flush=True
                )
                _state(lay, "running", pid=proc.pid, step=step)
            if follower.offset != size:
                last_growth, size = time.monotonic(), follower.offset
            elif time.monotonic() - last_growth > STALL_SECONDS:
                kill_group(proc)
                _state(lay, "stopped", step=follower.last, why="no serial output for 3 h")
                return TaskFailed(
                    f"lb-image: stopped: the guest printed nothing for 3 h at {follower.last}; log: {lay.serial_log}"
                )
    except BaseException:  # doit's SIGINT/SIGTERM handler, or Ctrl-C
        kill_group(proc)
        _state(lay, "stopped", step=follower.last, why="interrupted")
        print(
            f"lb-image: stopped at {follower.last}; distfiles kept; the next run starts over",
            file=out,
            flush=True,
        )
        raise
    finally:
        RUNNING.discard(proc)
        with contextlib.suppress(OSError):
            proc.stdin.close()  # type: ignore[union-attr]
    follower.poll()
    return _outcome(
        lay, spec, decisions, proc.returncode, follower, time.monotonic() - started, out
    )


def _hms(secs: float) -> str:
    s = int(secs)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _outcome(
    lay: Layout,
    spec: Spec,
    decisions: dict[str, Any],
    code: int,
    f: lbprogress.Follower,
    secs: float,
    out: Any,
) -> TaskFailed | None:
    text = lay.serial_log.read_text(errors="replace")
    tail = "\n".join(text.splitlines()[-20:])
    if code != 0:
        _state(lay, "failed", step=f.last, code=code)
        return TaskFailed(
            f"lb-image: rootfs.py failed (exit {code}) at {f.last}\n  log: {lay.rootfs_log}\n  serial: {lay.serial_log}\n"
            f"--- last lines of the serial log ---\n{tail}"
        )
    if lbprogress.FAILED_MARKER in text:
        _state(lay, "failed", step="azl-after")
        bad = next(ln for ln in text.splitlines() if lbprogress.FAILED_MARKER in ln)
        return TaskFailed(
            f"lb-image: the after-step failed: {bad.strip()}\n  serial: {lay.serial_log}"
        )
    if lbprogress.DONE_MARKER not in text:
        _state(lay, "stopped", step=f.last, why="qemu exited before live-bootstrap finished")
        return TaskFailed(
            f"lb-image: stopped: qemu exited at {f.last} before live-bootstrap powered off "
            f"(killed?); distfiles kept; the next run starts over\n  serial: {lay.serial_log}"
        )
    keys = [
        ln.split(lbprogress.HOSTKEY_PREFIX, 1)[1].strip()
        for ln in text.splitlines()
        if lbprogress.HOSTKEY_PREFIX in ln
    ]
    if keys:  # the guest's host key, for the known_hosts of whoever logs in next
        atomic_write(lay.ssh / "host_key.pub", (keys[-1] + "\n").encode())
    record = {
        "inputs": image_inputs(spec, decisions, lay),
        "image": str(lay.image),
        "image_bytes": lay.image.stat().st_size,
        "accel": decisions["accel"],
        "seconds": round(secs),
        "host_key": keys[-1] if keys else None,
    }
    atomic_write(lay.record, json.dumps(record, indent=1).encode())
    _state(lay, "finished", seconds=round(secs))
    print(f"lb-image: finished in {_hms(secs)}: {lay.image}", file=out, flush=True)
    return None


# -- doit tasks --------------------------------------------------------------------------


def _preflight_action(paths: Paths, config: Config) -> TaskFailed | None:
    facts, text = preflight.run(paths.project, config.host, image=Layout(paths).image)
    print(text)
    return (
        None
        if facts.ok
        else TaskFailed("preflight: the run cannot succeed on this machine (see above)")
    )


def _inputs_unchanged(task: Any, values: dict[str, Any], spec: Spec, lay: Layout) -> bool:
    """doit uptodate, evaluated when lb-image is due (after preflight ran): the image's
    inputs (``image_inputs``) are those of the last successful run. What is saved is
    computed after the run, which may have made the key."""
    pre = lay.host / "preflight.json"

    def inputs() -> str:
        return json.dumps(image_inputs(spec, json.loads(pre.read_text()), lay), sort_keys=True)

    task.value_savers.append(lambda: {"lb-image-inputs": inputs()})
    return pre.exists() and values.get("lb-image-inputs") == inputs()


def tasks(paths: Paths, config: Config) -> Iterator[dict[str, Any]]:
    """``preflight`` and ``lb-image`` as doit task dicts (none in a project without
    ``recipes/host``, such as the tests' throw-away projects)."""
    if not (paths.recipes / "host" / "lb-image.toml").exists():
        return
    lay = Layout(paths)
    yield {
        "basename": "preflight",
        "doc": "what this machine has against what the live-bootstrap run needs",
        "actions": [(_preflight_action, [paths, config])],
        "targets": [str(paths.cache / "host" / "preflight.json")],
        "uptodate": [False],
        "verbosity": 2,
    }
    spec = load_spec(paths.recipes)
    yield {
        "basename": "lb-image",
        "doc": "live-bootstrap's rootfs.py --qemu to a finished image (hours; TCG: days)",
        "actions": [(build_image, [paths, config])],
        "task_dep": ["preflight"],
        "file_dep": [str(spec.path), str(spec.after_step)],
        "targets": [str(lay.image), str(lay.record)],
        "uptodate": [(_inputs_unchanged, [spec, lay])],
        "clean": [(clean_image, [paths])],
        "verbosity": 2,
    }
