"""What the toolkit kinds (``tree``, ``stage``) share: the Azure Linux tree's layout, the
records they write, and ``AttemptAction``, a supervised, logged action with bounded attempts.

``cache/stages/<name>.json`` is what a toolkit task records: the tree's identity (the
snapshot and the fixes), or the digests of a stage's globbed outputs (the ISO), which
``OutputsRecorded`` compares. Each attempt logs to ``cache/logs/<name>.<attempt>.log``; the
previous run's logs are kept as ``.log.1``.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from doit.exceptions import TaskError, TaskFailed
from doit.task import Task

from tasks.build import manifest
from tasks.build.action import TAIL_LINES, BuildAction, StepFailed
from tasks.model.config import Config, Paths
from tasks.model.platform import Platform
from tasks.model.recipe import Recipe
from tasks.store import checker, lock, uptodate
from tasks.store.fsutil import atomic_write, mounts_under

SAFEUNMOUNT = "toolkit/scripts/safeunmount.sh"
MARKER = "azl-bootstrap.json"  # in the tree's .git/: the tree is ours to replace
# Bump when the meaning of a toolkit step changes (how it is run): every one reruns.
STAGES_VERSION = 1


@dataclass(frozen=True)
class Fix:
    """A change to the fresh tree: a patch file, or an empty slot (a documented no-op)."""

    name: str
    step: str
    patch: str  # under recipes/<tree>/; "" = not known, nothing is applied
    note: str


@dataclass(frozen=True)
class Tree:
    """A tree recipe's own data (kind "tree"): a git commit pin, or a snapshot that is the
    version's one source."""

    dirs: dict[str, str]  # platform -> directory (relative: to the project)
    target: str  # a file the tree's git repository tracks
    fixes: tuple[Fix, ...]
    pin: Any = None  # tasks.sources.gitpin.Pin: the commit (and tree id) the tree is checked out at


def toolkit_on_platform(recipe: Recipe, platform: str, config: Config) -> bool:
    """The tree and the stages exist where ``platforms`` says (the guest), unless the
    config's ``azurelinux_stages`` switches them on (or off) everywhere."""
    wanted = config.azurelinux_stages
    return platform in recipe.platforms if wanted is None else wanted


def tree_dir(project: Path, config: Config, platform: Platform, tree: Tree) -> Path:
    """The tree: ``azurelinux_tree`` from the config, else the platform's default; a relative
    path is relative to the project."""
    where = config.azurelinux_tree or tree.dirs[platform.name]
    return Path(os.path.normpath(project / where))


def record_path(paths: Paths, name: str) -> Path:
    """What a stage task records (the tree's identity; the digests of globbed outputs)."""
    return paths.cache / "stages" / f"{name}.json"


def go_bin(paths: Paths, platform: Platform, package: str | None) -> str:
    """The directory of ``go`` installed by ``package`` (from its manifest), "" if none."""
    if package is None:
        return ""
    files = manifest.read(paths.manifest(package))
    # the GOROOT's own bin/go (a file) before a symlink to it on PATH, then the shallowest
    found = sorted(
        (e.get("type") != "file", rel.count("/"), rel)
        for rel, e in files.items()
        if (rel == "bin/go" or rel.endswith("/bin/go")) and e.get("type") in ("file", "link")
    )
    if not found:
        raise RuntimeError(f"no bin/go in {paths.manifest(package)} (package {package})")
    return str((Path(platform.root) / found[0][2]).parent)


class AttemptAction(BuildAction):
    """A toolkit step's action (the tree, a stage). It reuses the package builds' supervised, logged command runner
    (``BuildAction._command``, ``_note``, ``_write``, ``_step``); there is no recipe build,
    so ``BuildAction.__init__`` and its build steps are not used. Subclasses implement
    ``_attempt``; ``execute`` runs up to ``max_attempts`` of them, one log each."""

    name: str
    max_attempts: int = 1
    retry_patterns: tuple[str, ...] = ()
    # Never network-isolated: the toolkit itself fetches Go modules (go-tools' `go get`)
    # and the toolchain's sources (bypass_container.sh's wget).
    isolate_network = False
    checkpoint = False

    def __init__(self, name: str, paths: Paths, platform: Platform, tree: Path):
        self.name, self.paths, self.platform, self.tree = name, paths, platform, tree
        self.task = None
        self.out = self.err = self.result = None
        self.values: dict[str, Any] = {}

    def _attempt(self, n: int) -> None:
        raise NotImplementedError

    def _unconfirmed(self) -> str | None:
        return None

    def log_path(self, n: int) -> Path:
        return self.paths.logs.resolve() / f"{self.name}.{n}.log"

    def _rotate_logs(self) -> None:
        """The previous run's attempt logs become ``<stage>.<n>.log.1``."""
        logs = self.paths.logs
        logs.mkdir(parents=True, exist_ok=True)
        pattern = re.compile(rf"{re.escape(self.name)}\.\d+\.log")
        old = sorted(p for p in logs.iterdir() if pattern.fullmatch(p.name))
        for p in logs.iterdir():
            if p.name.endswith(".1") and pattern.fullmatch(p.name[:-2]):
                p.unlink()
        for p in old:
            os.replace(p, p.with_name(p.name + ".1"))

    def execute(
        self, out: IO[str] | None = None, err: IO[str] | None = None
    ) -> TaskFailed | TaskError | None:
        why = self._unconfirmed()
        if why:  # the run's preflight stops this earlier
            return TaskError(f"{self.name}: unconfirmed, never built: {why}")
        lock.acquire(self.paths.state)
        self._rotate_logs()
        self._tee = out
        started = time.monotonic()
        history: list[str] = []
        for n in range(1, self.max_attempts + 1):
            log_path = self.log_path(n)
            with open(log_path, "w", buffering=1) as log:
                self._log = log
                self._make_from: int | None = None
                try:
                    self._note(
                        f"azl-bootstrap: {self} at {time.strftime('%Y-%m-%d %H:%M:%S')}, "
                        f"attempt {n} of {self.max_attempts}"
                    )
                    self._attempt(n)
                    self._note("done")
                    # kept with the task's state: `doit status` and the bar's estimate
                    self.values["seconds"] = round(time.monotonic() - started, 1)
                    return None
                except StepFailed as e:
                    self._note(f"{e.step} failed: {e.detail}")
                    failure = e
                except Exception as e:  # noqa: BLE001 - reported to the user with the log
                    self._write(f"{type(e).__name__}: {e}\n")
                    failure = StepFailed("stage", "", f"{type(e).__name__}: {e}")
                log.flush()
            matched = self._retryable(log_path, failure)
            rel = os.path.relpath(log_path)
            if matched and n < self.max_attempts:
                history.append(f"{rel} (retried: the make output matches {matched!r})")
                continue
            history.append(rel)
            if n == self.max_attempts and matched:
                note = f"\n  no attempt left ({self.max_attempts} allowed)"
            elif failure.step == "make" and self.retry_patterns:
                shown = ", ".join(repr(p) for p in self.retry_patterns)
                note = f"\n  not retried: the make output matches no retryable pattern ({shown})"
            else:
                note = ""
            return self._stage_failure(failure, n, history, log_path, note)
        raise AssertionError("unreachable")

    def _retryable(self, log_path: Path, failure: StepFailed) -> str | None:
        """The first retryable pattern found in this attempt's make output, if make failed."""
        if failure.step != "make" or self._make_from is None:
            return None
        with open(log_path, "rb") as f:
            f.seek(self._make_from)
            text = f.read().decode("utf-8", "replace")
        return next((p for p in self.retry_patterns if re.search(p, text)), None)

    def _stage_failure(
        self, e: StepFailed, n: int, history: list[str], log_path: Path, note: str
    ) -> TaskFailed:
        with open(log_path, errors="replace") as f:
            tail = "".join(deque(f, maxlen=TAIL_LINES))
        cmd = f"\n  command: {e.command}" if e.command else ""
        attempts = f" on attempt {n} of {self.max_attempts}" if self.max_attempts > 1 else ""
        return TaskFailed(
            f"{self.name}: {e.step} failed ({e.detail}){attempts}{cmd}{note}\n"
            f"  log{'s' if len(history) > 1 else ''}: {', '.join(history)}\n"
            f"--- last {TAIL_LINES} lines of {os.path.relpath(log_path)} ---\n{tail}"
        )

    def _refuse_mounted(self, doing: str) -> None:
        """Stop (a StepFailed naming the mounts) while anything is mounted under the tree."""
        mounted = mounts_under(self.tree)
        if mounted:
            raise StepFailed(
                "clean",
                "",
                f"refusing to {doing}: still mounted under the tree {self.tree}: "
                f"{', '.join(mounted)} (unmount them, e.g. with "
                f"{self.tree / SAFEUNMOUNT} {self.tree / 'build'}, then run again)",
            )


def write_record(record: Path, tree: Path, files: list[str]) -> None:
    """``cache/stages/<stage>.json``: each globbed output with its size and xxh3 digest."""
    doc = {
        os.path.relpath(f, tree): {"size": os.path.getsize(f), "xxh3": checker.file_digest(f)}
        for f in files
    }
    record.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(record, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())


class OutputsRecorded:
    """uptodate: every output recorded in the stage's record still has its digest (stat-key
    cached, so an unchanged multi-GB ISO is not read again)."""

    __signature__ = uptodate.SIGNATURE  # doit's inspect.signature, once

    def __init__(self, record: Path, tree: Path):
        self.record, self.tree = record, tree

    def __call__(self, task: Task, values: dict[str, Any]) -> bool:
        try:
            doc = json.loads(self.record.read_text())
            return bool(doc) and all(
                checker.file_digest(str(self.tree / rel)) == e["xxh3"] for rel, e in doc.items()
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return False

    def __str__(self) -> str:
        return f"outputs recorded in {self.record} unchanged"

    __repr__ = __str__
