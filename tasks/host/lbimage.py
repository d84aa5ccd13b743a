"""``doit lb-image``: live-bootstrap's ``rootfs.py --qemu`` run to a finished disk image.

The command line is the seed's (procedure.md H4) without ``--interactive``: ``--arch x86 -t
<target> --cores N --update-checksums --mirrors file://<mirror> --qemu --qemu-ram M
--target-size S --qemu-cmd <wrapper>``; cores, RAM and size come from ``doit preflight``
(``cache/host/preflight.json``, overridable in ``[host]`` of the config), the rest from
``recipes/lb-image.toml``. The wrapper (``tasks/host/qemuwrap.py``) runs qemu under TCG when
KVM is unusable and sends the serial console to ``cache/logs/lb-image.log``, whose step names
are printed as they go by (``tasks/host/lbprogress.py``); rootfs.py's own output goes to
``cache/logs/lb-image.rootfs.log``.

Before the run:

- the checkout (``checkout``, default ``cache/live-bootstrap``) must be at the pinned commit (``doit
  live-bootstrap`` makes it);
- rootfs.py builds the image only after it has every distfile of the ``build:`` steps before
  ``improve: get_network`` (its ``Generator.get_packages``; 71 files at 1296c44b): they are
  linked from ``mirror/`` into the checkout's ``distfiles/``, and a missing one stops the task
  before rootfs.py starts, naming each with its URL. The later ones the guest downloads
  itself from ``--mirrors``;
- the after-step ``recipes/lb-image/90-azl-automation.sh`` goes into the checkout's ``steps/after/`` with
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
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed

from tasks.build import supervise
from tasks.build.action import RUNNING, clean_paths, kill_group
from tasks.host import lbprogress, preflight
from tasks.host.lbinputs import (
    Layout,
    Spec,
    image_inputs,
    link_distfiles,
    mirror_urls,
    place_after_step,
    rootfs_args,
    write_wrapper,
)
from tasks.model.config import Config, Paths
from tasks.model.recipe import Source
from tasks.sources import lbsources
from tasks.sources.mirror import MirrorSettings, fetch_source
from tasks.store.fsutil import atomic_write, safe_rmtree

STALL_SECONDS = 3 * 3600  # no serial output for this long: the guest hung (non-interactive
# live-bootstrap has no way out of a failed step but a hang)


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


def _fetch_all(
    sources: list[Source], paths: Paths, settings: MirrorSettings, debian: dict[str, str]
) -> dict[str, str]:
    """Fetch and verify ``sources`` into ``mirror/`` (``tasks.sources.mirror.fetch_source``,
    with the Debian pool paths of ``debian``); file -> why, for those that could not be had."""
    failed = {}
    for src in sources:
        got = fetch_source(replace(src, debian=debian.get(src.file)), paths, settings)
        if isinstance(got, TaskFailed):
            failed[src.file] = str(got).strip().splitlines()[0] if str(got).strip() else "failed"
    return failed


def fetch_later(
    checkout: Path, paths: Paths, settings: MirrorSettings, debian: dict[str, str], out: Any
) -> threading.Thread:
    """Fetch, in the background, the distfiles live-bootstrap downloads itself later in its
    run (from ``--mirrors``: this project's mirror): while it builds, before it needs them."""

    def run() -> None:
        later = lbsources.distfiles(lbsources.read_checkout(checkout), ("build",))
        todo = [e.source for e in later if not (paths.mirror / e.source.file).is_file()]
        failed = _fetch_all(todo, paths, settings, debian)
        msg = f"lb-image: {len(todo) - len(failed)} later distfile(s) fetched into {paths.mirror}"
        if failed:
            msg += f"; {len(failed)} could not be (doit lb-mirror retries them): " + ", ".join(
                sorted(failed)
            )
        print(msg, file=out, flush=True)

    thread = threading.Thread(target=run, name="lb-image later distfiles", daemon=True)
    thread.start()
    return thread


def build_image(
    paths: Paths,
    config: Config,
    spec: Spec,
    out: Any = None,
    poll: float = 2.0,
    settings: MirrorSettings | None = None,
    debian: dict[str, str] | None = None,
) -> TaskFailed | None:
    """The action of ``lb-image``. None when finished; a TaskFailed saying why otherwise.
    With mirror ``settings``, the distfiles rootfs.py needs before it starts are fetched
    here if missing (only those: the later ones are fetched while it runs)."""
    out = out or sys.stdout
    lay = Layout(paths, spec.checkout)
    decisions = preflight.load(paths.project)
    head = _checkout_commit(lay.checkout)
    if head != spec.commit:
        return TaskFailed(
            f"lb-image: {lay.checkout} is at {head or 'nothing'}, not {spec.commit}: run doit live-bootstrap"
        )
    missing = link_distfiles(lay.checkout, paths.mirror)
    why: dict[str, str] = {}
    if missing and settings is not None:
        print(
            f"lb-image: fetching the {len(missing)} distfile(s) rootfs.py needs first",
            file=out,
            flush=True,
        )
        why = _fetch_all(missing, paths, settings, debian or {})
        missing = link_distfiles(lay.checkout, paths.mirror)
    if missing:
        lines = "\n".join(
            f"  {s.file}  sha256 {s.sha256}  from {', '.join(s.urls) or 'no URL (a git snapshot)'}"
            + (f"\n    {why[s.file]}" if s.file in why else "")
            for s in missing
        )
        return TaskFailed(
            f"lb-image: rootfs.py needs {len(missing)} distfile(s) before it builds the image, "
            f"not in {paths.mirror} and not fetched:\n{lines}\n"
            "What to do: put them into mirror/ (or name a mirror that has them in "
            "azl-bootstrap.toml) and run doit lb-image again; see docs/pipeline.md."
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
    print(
        f"lb-image: {' '.join(cmd[1:])}\n  serial console: {lay.serial_log}", file=out, flush=True
    )
    with open(lay.rootfs_log, "wb") as rlog:
        proc = supervise.start(cmd, cwd=lay.checkout, stdout=rlog, stderr=subprocess.STDOUT)
    RUNNING.add(proc)
    if settings is not None:
        fetch_later(lay.checkout, paths, settings, debian or {}, out)
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
        own = "\n".join(lay.rootfs_log.read_text(errors="replace").splitlines()[-10:])
        return TaskFailed(
            f"lb-image: rootfs.py failed (exit {code}) at {f.last}\n  log: {lay.rootfs_log}\n  serial: {lay.serial_log}\n"
            f"--- last lines of rootfs.py's output ---\n{own}\n"
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


# -- up to date? -----------------------------------------------------------------------


class InputsUnchanged:
    """doit uptodate, evaluated when lb-image is due (after preflight ran): the image's inputs
    (``image_inputs``) are those of the last successful run. What is saved is computed after
    the run, which may have made the key. ``doit info lb-image`` names what changed."""

    def __init__(self, spec: Spec, lay: Layout):
        self.spec, self.lay = spec, lay
        self.changed: list[str] | None = None

    def _inputs(self) -> dict[str, Any]:
        pre = self.lay.host / "preflight.json"
        return image_inputs(self.spec, json.loads(pre.read_text()), self.lay)

    def __call__(self, task: Any, values: dict[str, Any]) -> bool:
        task.value_savers.append(lambda: {"lb-image-inputs": self._inputs()})
        if not (self.lay.host / "preflight.json").exists():
            self.changed = ["no preflight yet"]
            return False
        old, now = values.get("lb-image-inputs"), self._inputs()
        if not isinstance(old, dict):
            self.changed = ["never built"]
        else:
            self.changed = [k for k in sorted(set(old) | set(now)) if old.get(k) != now.get(k)]
        return not self.changed

    def __str__(self) -> str:
        if not self.changed:
            return "image inputs"
        return "image inputs changed: " + ", ".join(self.changed)

    __repr__ = __str__
