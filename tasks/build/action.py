"""The build of one package, as one doit action.

Steps (one vocabulary for logs, errors and the code): **unpack** the verified sources into a
fresh build tree, **patch**, then the template's phases (**prepare**, **configure**,
**compile**, **install** into the stage with DESTDIR, **post_install**), then **manifest** the
stage and **merge** it into ROOT. The manifest is written last: it is the task's target and
its commit point, so a build killed at any step simply runs again.

All output goes to ``cache/logs/<pkg>.log`` (the previous log is kept as ``<pkg>.log.1``);
with ``doit -v 2`` it is streamed to the terminal too. A failure names the package, the step,
the command, the log and shows the log's last lines.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections import deque
from pathlib import Path
from typing import IO, Any

from doit.action import BaseAction
from doit.exceptions import TaskError, TaskFailed

from tasks.build import adopt, faultpoint, jobserver, manifest, supervise
from tasks.build import systems as buildsys
from tasks.model.config import Paths
from tasks.model.platform import Platform
from tasks.model.recipe import Build, expand
from tasks.store import lock
from tasks.store.fsutil import MountedError, mounts_under, safe_rmtree

TAIL_LINES = 20
RUNNING: set[subprocess.Popen] = set()  # build commands running now, in any thread


class StepFailed(Exception):
    def __init__(self, step: str, command: str, detail: str):
        self.step, self.command, self.detail = step, command, detail
        super().__init__(f"{step} failed: {detail}")


class BuildAction(BaseAction):
    """Build ``build`` for ``platform`` (a picklable action: it runs under ``-P process`` too)."""

    # while the build holds its job slots (tasks.build.jobserver): JOBS and MAKEFLAGS for its
    # commands, and the jobserver's pipe they inherit (class defaults: subclasses that run
    # commands without slots, like the toolkit's stages, pass nothing)
    _jobs: dict[str, str] = {}  # noqa: RUF012 - replaced, never mutated
    _pass_fds: tuple[int, ...] = ()
    _js: jobserver.JobServer | None = None

    def __init__(
        self,
        build: Build,
        platform: Platform,
        paths: Paths,
        keep_build: bool = False,
        checkpoint: bool = False,
        isolate_network: bool = False,
    ):
        self.build, self.platform, self.paths, self.keep_build = build, platform, paths, keep_build
        self.checkpoint = checkpoint  # acts on the running system: no stage, no manifest
        self.isolate_network = isolate_network  # no network in the build (tasks.build.supervise)
        self.task = None
        self.out = self.err = self.result = None
        self.values: dict[str, Any] = {}

    def __str__(self) -> str:
        return f"build {self.build.name} {self.build.version.version} ({self.platform.name})"

    # ------------------------------------------------------------------ paths and variables

    def _dirs(self) -> tuple[Path, Path, Path]:
        name = self.build.name
        return (
            self.paths.build_dir(name).resolve(),
            self.paths.stage_dir(name).resolve(),
            self.paths.log(name).resolve(),
        )

    def variables(self) -> dict[str, str]:
        build_dir, stage, _ = self._dirs()
        return {
            **self.platform.variables(),
            "PKG": self.build.name,
            "VERSION": self.build.version.version,
            "PREV": self.build.prev or "",
            "FILESDIR": str(self.build.recipe.files_dir.resolve()),
            "BUILDDIR": str(build_dir),
            "SRCDIR": str(build_dir / "src"),
            "DESTDIR": str(stage),
            **({"JOBS": self._jobs["JOBS"]} if self._jobs else {}),
        }

    def environment(self, variables: dict[str, str]) -> dict[str, str]:
        env = self.platform.build_env()
        env.update(
            {
                k: variables[k]
                for k in ("PKG", "VERSION", "PREV", "FILESDIR", "BUILDDIR", "SRCDIR", "DESTDIR")
            }
        )
        env["HOME"] = variables["BUILDDIR"]
        env.update(self._jobs)
        if self.isolate_network and not self.build.recipe.network:
            env["AZL_NO_NETWORK"] = "1"
        env.update({k: expand(v, variables) for k, v in self.build.env.items()})
        return env

    # ------------------------------------------------------------------ the action

    def execute(
        self, out: IO[str] | None = None, err: IO[str] | None = None
    ) -> TaskFailed | TaskError | None:
        if self.build.version.unconfirmed:  # the run's preflight stops this earlier
            return TaskError(
                f"{self.build.name}: unconfirmed, never built: {self.build.version.unconfirmed}"
            )
        lock.acquire(self.paths.state)
        build_dir, stage, log_path = self._dirs()
        if not self.checkpoint and adopt.adoptable(self.build, self.platform, self.paths):
            with open(log_path, "a") as log:
                log.write(
                    f"azl-bootstrap: {time.strftime('%Y-%m-%d %H:%M:%S')} the build above had "
                    "finished (manifest and ROOT complete, same inputs) but its state was "
                    "never saved: adopted, not rebuilt\n"
                )
            return None
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if log_path.exists():
            os.replace(log_path, log_path.with_name(log_path.name + ".1"))
        with open(log_path, "w", buffering=1) as log:
            self._log = log
            self._tee = out
            try:
                with self._job_slots():
                    self._run(build_dir, stage)
            except StepFailed as e:
                return self._failure(e, log_path)
            except Exception as e:  # noqa: BLE001 - reported to the user with the log
                return self._failure(StepFailed("build", "", f"{type(e).__name__}: {e}"), log_path)
        return None

    def _run(self, build_dir: Path, stage: Path) -> None:
        started = time.monotonic()
        b, variables = self.build, self.variables()
        env = self.environment(variables)
        src = build_dir / "src"
        self._note(f"azl-bootstrap: {self} at {time.strftime('%Y-%m-%d %H:%M:%S')}")
        if b.version.substitute_for:
            self._note(f"NOTE: {b.name} {b.version.version} is a substitute: {b.version.note}")
        for tree in (build_dir, stage):
            safe_rmtree(tree)
        src.mkdir(parents=True)
        stage.mkdir(parents=True)

        self._step("unpack", lambda: self._unpack(build_dir, src))
        faultpoint.reached("unpacked", b.name)
        for patch in b.recipe.patch_paths():
            cmd = [
                "patch",
                f"-p{b.recipe.patch_strip}",
                "--forward",
                "--batch",
                "-i",
                str(patch.resolve()),
            ]
            self._command("patch", cmd, src, env)
        marked = dict(buildsys.phases(b, {**variables, "JOBS": JOBS_MARK}))
        for phase, commands in buildsys.phases(b, variables):
            if not _uses_jobs(marked[phase]):  # make templates: make joins via MAKEFLAGS
                for cmd in commands:
                    self._command(phase, cmd, src, env)
                continue
            with self._share() as jobs:  # this phase runs ${JOBS} jobs: its share of them
                shared = {**variables, "JOBS": jobs}
                for cmd in dict(buildsys.phases(b, shared))[phase]:
                    self._command(phase, cmd, src, {**env, "JOBS": jobs})

        def record() -> None:
            entries = manifest.scan_stage(stage, self.platform.root)
            installed = self.paths.installed(b.name)
            old = manifest.read(installed)
            self._note(f"merging {len(entries)} entries into {self.platform.root}")
            manifest.merge(stage, self.platform.root, entries, old)
            faultpoint.reached("merged", b.name)
            key = adopt.inputs_key(b, self.platform, self.paths)
            manifest.write(installed, b.name, b.version.version, entries, inputs=key)
            manifest.write(self.paths.manifest(b.name), b.name, b.version.version, entries)
            faultpoint.reached("manifest-written", b.name)

        if not self.checkpoint:
            self._step("manifest", record)
        if not self.keep_build:
            safe_rmtree(build_dir)
        self._note("done")
        # stored with the task's state: the next run starts long packages first
        self.values["seconds"] = round(time.monotonic() - started, 1)

    @contextlib.contextmanager
    def _job_slots(self):  # noqa: ANN202
        """Hold one token of the run's job budget for the whole build (``tasks.build.jobserver``):
        a template's make takes more from the pool itself; a phase that runs ``${JOBS}``
        jobs (ninja, cmake, a ``[script]`` phase naming ``JOBS``) takes its share around
        that phase (``_share``), not across the serial phases (configure, install), where
        it would keep the tokens from the builds beside it."""
        with jobserver.slots(self.platform.jobs, True) as (_, env, js):
            self._jobs, self._pass_fds, self._js = env, js.fds, js
            try:
                yield
            finally:
                self._jobs, self._pass_fds, self._js = {}, (), None

    @contextlib.contextmanager
    def _share(self):  # noqa: ANN202
        """The build's token and the ones free now (up to the budget), as ``JOBS``."""
        extra = self._js.try_acquire(self._js.budget - 1)
        try:
            yield str(1 + extra)
        finally:
            self._js.release(extra)

    def _unpack(self, build_dir: Path, src: Path) -> None:
        from tasks.build.unpack import unpack  # tarfile & co.: not for a run that builds nothing

        for source in self.build.version.sources:
            path = (self.paths.mirror / source.file).resolve()
            if source.unpack:
                self._note(f"unpack {source.file} (strip {source.strip_components})")
                unpack(path, src, strip_components=source.strip_components)
            else:
                self._note(f"copy {source.file}")
                shutil.copyfile(path, build_dir / source.file)

    # ------------------------------------------------------------------ running and logging

    def _note(self, text: str) -> None:
        self._write(f"==> {text}\n")

    def _write(self, text: str) -> None:
        self._log.write(text)
        if self._tee is not None:
            self._tee.write(text)

    def _step(self, step: str, fn) -> None:  # noqa: ANN001
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - becomes a StepFailed naming the step
            self._write(f"{step} failed: {type(e).__name__}: {e}\n")
            raise StepFailed(step, "", f"{type(e).__name__}: {e}") from e

    def _command(self, step: str, cmd: buildsys.Command, cwd: Path, env: dict[str, str]) -> None:
        shown = cmd if isinstance(cmd, str) else shlex.join(cmd)
        argv = ["sh", "-e", "-c", cmd] if isinstance(cmd, str) else cmd
        self._note(f"{step}: {shown}")
        t0 = time.monotonic()
        # The supervisor leads a new process group and kills it if doit dies (even by
        # SIGKILL: it watches a pipe whose other end only doit holds).
        lifeline_r, lifeline_w = os.pipe()
        try:
            proc = supervise.start(
                argv, cwd=cwd, stdin=lifeline_r, env=env, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, pass_fds=self._pass_fds,
            )  # fmt: skip
        except OSError as e:
            os.close(lifeline_w)
            raise StepFailed(step, shown, f"cannot start: {e.strerror}") from e
        finally:
            os.close(lifeline_r)
        RUNNING.add(proc)
        try:
            assert proc.stdout is not None
            for line in iter(proc.stdout.readline, b""):
                self._write(line.decode("utf-8", "replace"))
            code = proc.wait()
        except BaseException:  # Ctrl-C / SIGTERM in this thread: stop the build's group
            kill_group(proc)
            raise
        finally:
            RUNNING.discard(proc)
            os.close(lifeline_w)
        self._write(f"==> {step}: exit {code} after {time.monotonic() - t0:.1f}s\n")
        if code != 0:
            why = f"exit {code}" if code > 0 else f"killed by signal {-code}"
            raise StepFailed(step, shown, why)

    def _failure(self, e: StepFailed, log_path: Path) -> TaskFailed:
        self._log.flush()
        with open(log_path, errors="replace") as f:
            tail = "".join(deque(f, maxlen=TAIL_LINES))
        cmd = f"\n  command: {e.command}" if e.command else ""
        return TaskFailed(
            f"{self.build.name}: {e.step} failed ({e.detail}){cmd}\n"
            f"  log: {os.path.relpath(log_path)}\n"
            f"--- last {TAIL_LINES} lines of the log ---\n{tail}"
        )


def kill_group(proc: subprocess.Popen) -> None:
    """Stop a build command's whole process group: SIGTERM, then SIGKILL after 10 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, PermissionError):
        pass
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


JOBS_MARK = "@JOBS@"  # ${JOBS} in a template's command: the phase runs parallel jobs


def _uses_jobs(commands: list[buildsys.Command]) -> bool:
    """Whether a phase's commands run ``${JOBS}`` jobs: a template's (expanded with
    ``JOBS_MARK``) or a ``[script]`` phase that names ``JOBS`` (the shell expands it)."""
    return any(
        "JOBS" in cmd if isinstance(cmd, str) else any(JOBS_MARK in a for a in cmd)
        for cmd in commands
    )


def stop_all_builds() -> None:
    """Stop every running build command (called from the main thread's SIGINT/SIGTERM
    handler: under ``doit -n N`` the builds wait in worker threads that never see it)."""
    jobserver.STOP.set()  # builds waiting for a job slot give up
    for proc in list(RUNNING):
        kill_group(proc)


def clean_paths(
    paths: Paths,
    name: str,
    targets: list[Path],
    dryrun: bool = False,
    mount_root: Path | None = None,
) -> list[Path]:
    """What every ``doit clean`` does: under ``--dry-run`` print the targets; else take the
    project lock and delete them, never across a mount point; return those that existed.
    Refused with one line and a non-zero exit (doit itself would print a traceback and exit
    0) while another doit works in the project or, with ``mount_root``, while anything is
    mounted under it."""
    if dryrun:
        for t in targets:
            print(f"would remove {t}")
        return []
    try:
        lock.acquire(paths.state)
        mounted = mounts_under(mount_root) if mount_root else []
        if mounted:
            raise MountedError(
                f"refusing to clean: mounted under {mount_root}: {', '.join(mounted)}. "
                "Nothing was deleted; "
                "unmount them, then run again."
            )
        removed = [t for t in targets if os.path.lexists(t)]
        for t in targets:
            safe_rmtree(t)
    except (lock.LockedError, MountedError) as e:
        raise SystemExit(f"doit clean {name}: {e}") from None
    return removed


def clean_package(paths: Paths, name: str, dryrun: bool = False) -> None:
    """``doit clean PKG``: remove the build tree, the stage and the manifest (never the
    mirror), so the next run rebuilds the package. Files it merged into ROOT stay until
    that rebuild replaces them (``cache/installed/PKG.json`` remembers them). Says so."""
    targets = [paths.build_dir(name), paths.stage_dir(name), paths.manifest(name)]
    removed = clean_paths(paths, name, targets, dryrun)
    if dryrun:
        return
    say_removed(paths, name, removed, "it was not built")
    if paths.installed(name).exists():
        print(
            f"  the files {name} installed stay in the root until its next build replaces "
            f"them ({_shown(paths.installed(name), paths)} lists them); the next doit rebuilds it"
        )


def say_removed(paths: Paths, name: str, removed: list[Path], none: str, then: str = "") -> None:
    """What every ``doit clean`` prints: ``NAME: removed A, B`` (paths relative to the
    project), or ``NAME: removed nothing (none)``; ``then`` follows a removal."""
    if not removed:
        print(f"{name}: removed nothing ({none})")
        return
    print(f"{name}: removed {', '.join(_shown(p, paths) for p in removed)}{then}")


def _shown(path: Path, paths: Paths) -> str:
    """``path`` relative to the project when it is inside it."""
    try:
        return str(Path(path).relative_to(paths.project))
    except ValueError:
        return str(path)
