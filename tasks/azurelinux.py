"""The Azure Linux toolkit stages (procedure §4, A1-A5) as doit tasks.

The data is ``recipes/azurelinux/stages.toml``; this module turns it into:

- ``mirror:<snapshot>``: fetch and verify the tree's git snapshot (only once its sha256 is
  pinned; until then the tree is *unconfirmed* and a run that needs it stops in the
  preflight, before anything is built);
- ``azurelinux`` (A1): unpack the snapshot into the tree directory, make it a git repository
  (so ``git clean -fxd :/`` behaves as in the seed) and apply the fixes, each as a commit.
  Targets: a tracked file of the tree and ``cache/stages/azurelinux.json``, whose content
  names the snapshot and the fixes (the stages depend on it, so a new snapshot reruns them);
- one task per stage (``go-tools``, ``toolchain``, ``iso``): ``make <target> VAR=value...`` in
  ``<tree>/toolkit``. file_dep: the tree's record, the outputs of the stages ``after`` it and
  the manifests of the packages it ``depends`` on (a chain's last link: ``go`` is go1.23);
  every stage also runs after every package (order only). Targets: the stage's output files;
  output files whose names are not fixed (the ISO) are recorded with their digests in
  ``cache/stages/<stage>.json``, the target, and an uptodate check compares them.

Before every attempt of a stage its ``fresh`` paths are removed the safe way: the tree's
``toolkit/scripts/safeunmount.sh`` unmounts what is mounted under them, the attempt is refused
while anything is still mounted under the tree, and the delete never crosses a mount point.
A failed attempt is retried (up to ``max_attempts``) only when its make output matches a
retryable pattern; each attempt logs to ``cache/logs/<stage>.<attempt>.log``. ``doit clean
<stage>`` removes the stage's ``clean`` paths, refused in the same way while anything is
mounted under the tree. The tree task has no clean action: remove the tree by hand.

Stages exist in the guest; ``azurelinux_stages`` in the config switches them on (or off)
anywhere, and ``azurelinux_tree`` moves the tree.
"""

from __future__ import annotations

import glob
import json
import os
import re
import time
import tomllib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from doit.exceptions import InvalidDodoFile, TaskError, TaskFailed
from doit.task import Task

from tasks import checker, lock, manifest
from tasks.build import TAIL_LINES, BuildAction, StepFailed, clean_paths
from tasks.config import Paths
from tasks.fsutil import atomic_write, mounts_under, safe_rmtree
from tasks.mirror import Verified, fetch_source
from tasks.platform import Platform
from tasks.recipe import RecipeError, RecipeErrors, Source, _Checker, expand
from tasks.unpack import unpack

if TYPE_CHECKING:
    from tasks.loader import Project

STAGES_FILE = Path("azurelinux") / "stages.toml"  # under recipes/
TREE_TASK = "azurelinux"
# Bump when the meaning of a stage changes (how it is run): every stage reruns.
STAGES_VERSION = 1
SAFEUNMOUNT = "toolkit/scripts/safeunmount.sh"
MARKER = "azl-bootstrap.json"  # in the tree's .git/: the tree is ours to replace
STAGE_VARIABLES = frozenset({"ROOT", "PREFIX", "LIBDIR", "TARGET", "JOBS", "PLATFORM"}) | {
    "TREE",
    "GO_BIN",
}
# a fixed identity and date: the same snapshot and fixes always give the same commits
GIT_ENV = {
    "GIT_AUTHOR_NAME": "azl-bootstrap",
    "GIT_AUTHOR_EMAIL": "azl-bootstrap@localhost",
    "GIT_AUTHOR_DATE": "@0 +0000",
    "GIT_COMMITTER_NAME": "azl-bootstrap",
    "GIT_COMMITTER_EMAIL": "azl-bootstrap@localhost",
    "GIT_COMMITTER_DATE": "@0 +0000",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


# --------------------------------------------------------------------------- the data


@dataclass(frozen=True)
class Fix:
    """A change to the fresh tree: a patch file, or an empty slot (a documented no-op)."""

    name: str
    step: str
    patch: str  # under recipes/azurelinux/; "" = not known, nothing is applied
    note: str


@dataclass(frozen=True)
class Tree:
    source: Source
    unconfirmed: str | None
    dirs: dict[str, str]  # platform -> directory (relative: to the project)
    target: str  # a file the tree's git repository tracks
    fixes: tuple[Fix, ...]
    step: str
    description: str


@dataclass(frozen=True)
class Stage:
    name: str
    step: str
    description: str
    make_target: str
    make_vars: dict[str, str]
    env: dict[str, str]
    path: tuple[str, ...]
    after: tuple[str, ...]
    depends: tuple[str, ...]
    outputs: tuple[str, ...]
    outputs_glob: str | None
    fresh: tuple[str, ...]
    clean: tuple[str, ...]
    max_attempts: int = 1
    retry_patterns: tuple[str, ...] = ()

    def signature(self) -> dict[str, Any]:
        """What changes the stage's result. Retry, fresh and clean do not: editing them
        does not rerun a five-hour stage."""
        return {
            "make_target": self.make_target,
            "make_vars": dict(self.make_vars),
            "env": dict(sorted(self.env.items())),
            "path": list(self.path),
            "outputs": list(self.outputs),
            "outputs_glob": self.outputs_glob,
        }


@dataclass(frozen=True)
class Stages:
    path: Path
    tree: Tree
    stages: dict[str, Stage]  # in the file's order

    @property
    def files_dir(self) -> Path:
        return self.path.parent


def _rel_paths(c: _Checker, table: dict, key: str, where: str) -> tuple[str, ...]:
    values = c.str_list(table, key, where, check_vars=False)
    for i, v in enumerate(values):
        if not v or v.startswith("/") or ".." in Path(v).parts:
            c.err(f"{where}{key}[{i}]", f"must be a path inside the tree, got {v!r}")
    return tuple(values)


def load_stages(path: Path) -> Stages:
    """Read and validate ``stages.toml``; ``RecipeErrors`` names the file and every bad field."""
    c = _Checker(path, STAGE_VARIABLES)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise RecipeErrors([RecipeError(path, "", f"not valid TOML: {e}")]) from None
    c.keys(data, {"path", "env", "tree", "stages"}, "")
    common_path = c.str_list(data, "path", "", check_vars=False)
    for i, p in enumerate(common_path):
        c.vars(f"path[{i}]", p)
    common_env = c.str_table(data, "env", "")

    raw = c.typed(data, "tree", dict, "", {})
    c.keys(raw, {"step", "description", "target", "dir", "unconfirmed", "source", "fixes"}, "tree.")
    unconfirmed = c.typed(raw, "unconfirmed", str, "tree.", None)
    source = None
    if "source" not in raw:
        c.err("tree.source", "missing: the tree's snapshot")
    else:
        source = c.source(raw["source"], "tree.source", pinned=unconfirmed is None)
    if source is not None and not source.git:
        c.err("tree.source.git", "missing: the tree is a git snapshot")
    target = c.typed(raw, "target", str, "tree.", "toolkit/Makefile")
    dirs = c.typed(raw, "dir", dict, "tree.", {})
    for plat in ("guest", "sandbox"):
        if not isinstance(dirs.get(plat), str) or not dirs[plat]:
            c.err(f"tree.dir.{plat}", "missing: where the tree lives on this platform")
    fixes = []
    for i, fx in enumerate(c.typed(raw, "fixes", list, "tree.", [])):
        where = f"tree.fixes[{i}]."
        if not isinstance(fx, dict):
            c.err(where.rstrip("."), "expected a table")
            continue
        c.keys(fx, {"name", "step", "patch", "note"}, where)
        patch = c.typed(fx, "patch", str, where, "")
        if patch and (patch.startswith("/") or ".." in Path(patch).parts):
            c.err(where + "patch", f"must be a path inside {path.parent}, got {patch!r}")
        elif patch and not (path.parent / patch).is_file():
            c.err(where + "patch", f"file not found: {path.parent / patch}")
        fixes.append(
            Fix(
                c.typed(fx, "name", str, where, f"fix{i}"),
                c.typed(fx, "step", str, where, ""),
                patch,
                c.typed(fx, "note", str, where, ""),
            )
        )

    stages: dict[str, Stage] = {}
    keys = {
        "step", "description", "make_target", "make_vars", "env", "path", "after", "depends",
        "outputs", "outputs_glob", "fresh", "clean", "retry",
    }  # fmt: skip
    for name, st in c.typed(data, "stages", dict, "", {}).items():
        where = f"stages.{name}."
        if not isinstance(st, dict):
            c.err(where.rstrip("."), "expected a table")
            continue
        c.keys(st, keys, where)
        after = tuple(c.str_list(st, "after", where, check_vars=False))
        for i, a in enumerate(after):
            if a not in stages:
                c.err(f"{where}after[{i}]", f"{a!r} is not an earlier stage")
        outputs = _rel_paths(c, st, "outputs", where)
        out_glob = c.typed(st, "outputs_glob", str, where, None)
        if out_glob is not None and (out_glob.startswith("/") or ".." in Path(out_glob).parts):
            c.err(where + "outputs_glob", f"must be a pattern inside the tree, got {out_glob!r}")
        if not outputs and not out_glob:
            c.err(where + "outputs", "missing: a stage needs outputs or outputs_glob")
        make_target = c.typed(st, "make_target", str, where, "")
        if not make_target:
            c.err(where + "make_target", "missing: the toolkit's make target")
        retry = c.typed(st, "retry", dict, where, {})
        c.keys(retry, {"max_attempts", "patterns"}, where + "retry.")
        attempts = c.typed(retry, "max_attempts", int, where + "retry.", 1)
        if attempts < 1:
            c.err(where + "retry.max_attempts", "must be at least 1")
        patterns = c.str_list(retry, "patterns", where + "retry.", check_vars=False)
        for i, p in enumerate(patterns):
            try:
                re.compile(p)
            except re.error as e:
                c.err(f"{where}retry.patterns[{i}]", f"not a regular expression: {e}")
        stage_path = c.str_list(st, "path", where, check_vars=False)
        for i, p in enumerate(stage_path):
            c.vars(f"{where}path[{i}]", p)
        stages[name] = Stage(
            name=name,
            step=c.typed(st, "step", str, where, ""),
            description=c.typed(st, "description", str, where, ""),
            make_target=make_target,
            make_vars=c.str_table(st, "make_vars", where),
            env={**common_env, **c.str_table(st, "env", where)},
            path=tuple(common_path + stage_path),
            after=after,
            depends=tuple(c.str_list(st, "depends", where, check_vars=False)),
            outputs=outputs,
            outputs_glob=out_glob,
            fresh=_rel_paths(c, st, "fresh", where),
            clean=_rel_paths(c, st, "clean", where),
            max_attempts=max(attempts, 1),
            retry_patterns=tuple(patterns),
        )
    if c.errors:
        raise RecipeErrors(c.errors)
    assert source is not None
    tree = Tree(
        source=source,
        unconfirmed=unconfirmed,
        dirs={k: v for k, v in dirs.items() if isinstance(v, str)},
        target=target,
        fixes=tuple(fixes),
        step=c.typed(raw, "step", str, "tree.", ""),
        description=c.typed(raw, "description", str, "tree.", ""),
    )
    return Stages(path, tree, stages)


# --------------------------------------------------------------------------- the actions


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


class _StageRun(BuildAction):
    """A stage's action. It reuses the package builds' supervised, logged command runner
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


class TreeAction(_StageRun):
    """A1: the snapshot, unpacked into a fresh directory, made a git repository, fixed; then
    moved into place and recorded."""

    def __init__(self, paths: Paths, platform: Platform, tree: Path, stages: Stages, record: Path):
        super().__init__(TREE_TASK, paths, platform, tree)
        self.data, self.record = stages.tree, record
        self.files_dir = stages.files_dir

    def __str__(self) -> str:
        return f"Azure Linux tree {self.data.source.file} -> {self.tree}"

    def _unconfirmed(self) -> str | None:
        return self.data.unconfirmed

    def _attempt(self, n: int) -> None:
        tree, src = self.tree.absolute(), self.data.source
        part = tree.with_name(tree.name + ".part")
        if tree.exists() and not (tree / ".git" / MARKER).exists() and any(tree.iterdir()):
            raise StepFailed(
                "unpack",
                "",
                f"{tree} exists and was not made by azl-bootstrap: move it away, or set "
                "azurelinux_tree in azl-bootstrap.toml to another directory",
            )
        self._refuse_mounted(f"replace {tree}")
        self._step("unpack", lambda: [safe_rmtree(part), safe_rmtree(tree)])
        archive = (self.paths.mirror / src.file).resolve()
        self._note(f"unpack {src.file} into {tree} (strip 1)")
        self._step("unpack", lambda: unpack(archive, part, strip_components=1))
        env = {**self.platform.build_env(), **GIT_ENV}
        git = ["git", "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false"]
        self._command("git", [*git, "init", "-q"], part, env)
        self._command("git", [*git, "add", "-A", "-f"], part, env)  # all of it was tracked
        message = f"{src.git} {src.ref} ({src.file})"
        self._command("git", [*git, "commit", "-q", "-m", message], part, env)
        for fix in self.data.fixes:
            if not fix.patch:
                self._note(f"fix {fix.name} ({fix.step}): empty slot, nothing applied: {fix.note}")
                continue
            patch = str((self.files_dir / fix.patch).resolve())
            self._command("patch", ["patch", "-p1", "--forward", "--batch", "-i", patch], part, env)
            self._command("git", [*git, "add", "-A", "-f"], part, env)
            self._command("git", [*git, "commit", "-q", "-m", f"{fix.step} {fix.name}"], part, env)
        doc = {
            "file": src.file,
            "sha256": src.sha256,
            "git": src.git,
            "ref": src.ref,
            "fixes": [[f.name, f.step, f.patch] for f in self.data.fixes],
        }
        atomic_write(part / ".git" / MARKER, json.dumps(doc, indent=1).encode())

        def commit() -> None:
            os.rename(part, tree)
            self.record.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.record, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())

        self._step("record", commit)


class StageAction(_StageRun):
    """One toolkit stage: make, after a safe removal of its ``fresh`` paths; bounded retry."""

    def __init__(
        self,
        stage: Stage,
        paths: Paths,
        platform: Platform,
        tree: Path,
        go_package: str | None,
        record: Path,
    ):
        super().__init__(stage.name, paths, platform, tree)
        self.stage, self.go_package, self.record = stage, go_package, record
        self.max_attempts, self.retry_patterns = stage.max_attempts, stage.retry_patterns

    def __str__(self) -> str:
        return f"stage {self.name} ({self.stage.step}): {self.command_line()}"

    def command(self) -> list[str]:
        return [
            "make",
            self.stage.make_target,
            *(f"{k}={v}" for k, v in self.stage.make_vars.items()),
        ]

    def command_line(self) -> str:
        return " ".join(self.command())

    def stage_environment(self) -> dict[str, str]:
        """The packages' environment, the caller's HOME, the stage's env and PATH entries."""
        variables = {
            **self.platform.variables(),
            "TREE": str(self.tree.absolute()),
            "GO_BIN": go_bin(self.paths, self.platform, self.go_package),
        }
        env = self.platform.build_env()
        if os.environ.get("HOME"):
            env["HOME"] = os.environ["HOME"]
        env.update({k: expand(v, variables) for k, v in self.stage.env.items()})
        extra = [expand(p, variables) for p in self.stage.path]
        env["PATH"] = ":".join([p for p in extra if p] + [env["PATH"]])
        return env

    def _attempt(self, n: int) -> None:
        tree = self.tree.absolute()
        env = self.stage_environment()
        self._note(f"environment: {' '.join(f'{k}={v}' for k, v in sorted(env.items()))}")
        script = tree / SAFEUNMOUNT
        fresh = [tree / p for p in self.stage.fresh if (tree / p).exists()]
        for path in fresh:
            if script.is_file():
                try:
                    self._command("unmount", [str(script), str(path)], tree, env)
                except StepFailed as e:  # the mount table decides, just below
                    self._note(f"{script.name} failed ({e.detail}); checking the mount table")
        self._refuse_mounted(
            f"delete {', '.join(str(p) for p in fresh)}" if fresh else f"build in {tree}"
        )
        for path in fresh:
            self._note(f"remove {path} (fresh for every attempt)")
            self._step("clean", lambda p=path: safe_rmtree(p))
        self._make_from = self._log.tell()
        self._command("make", self.command(), tree / "toolkit", env)
        self._step("outputs", lambda: self._check_outputs(tree))

    def _check_outputs(self, tree: Path) -> None:
        missing = [p for p in self.stage.outputs if not (tree / p).exists()]
        if missing:
            raise RuntimeError(f"make succeeded but did not make {', '.join(missing)}")
        if self.stage.outputs_glob:
            files = sorted(glob.glob(str(tree / self.stage.outputs_glob)))
            if not files:
                raise RuntimeError(f"make succeeded but nothing matches {self.stage.outputs_glob}")
            self._note(f"recording {len(files)} output(s) in {self.record}")
            write_record(self.record, tree, files)


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


def clean_stage(
    paths: Paths, tree: Path, name: str, clean: tuple[str, ...], record: Path, dryrun: bool = False
) -> None:
    """``doit clean <stage>``: remove the stage's outputs, so the next run makes them again;
    refused while anything is mounted under the tree (the toolkit bind-mounts the host's
    /dev under build/toolchain: unmount with its toolkit/scripts/safeunmount.sh)."""
    clean_paths(paths, name, [tree / p for p in clean] + [record], dryrun, mount_root=tree)


# --------------------------------------------------------------------------- the tasks


def _enabled(project: Project) -> bool:
    wanted = project.config.azurelinux_stages
    return project.platform.name == "guest" if wanted is None else wanted


def tree_dir(project: Project, stages: Stages) -> Path:
    """The tree: ``azurelinux_tree`` from the config, else the platform's default; a relative
    path is relative to the project."""
    where = project.config.azurelinux_tree or stages.tree.dirs[project.platform.name]
    return Path(os.path.normpath(project.paths.project / where))


def _package(project: Project, recipe: str) -> str | None:
    """The package a recipe name stands for on this platform (a chain's last link)."""
    if recipe not in project.recipes:
        return None
    names = project.recipes[recipe].package_names(project.platform.name)
    return names[-1] if names and names[-1] in project.builds else None


def stage_tasks(project: Project) -> Iterator[Task]:
    """The tree task, its snapshot's fetch task and one task per stage (nothing where the
    stages are off). Errors in the stages file stop doit before anything runs."""
    path = project.paths.recipes / STAGES_FILE
    if not _enabled(project):
        return
    if not path.exists():
        if project.config.azurelinux_stages:
            msg = "azurelinux_stages is on, but there is no such file"
            raise InvalidDodoFile(f"invalid recipes or config:\n{RecipeError(path, '', msg)}")
        return
    try:
        stages = load_stages(path)
        names = [TREE_TASK, *stages.stages]
        clash = [n for n in names if n in project.builds]
        if clash:
            msg = f"the package(s) {', '.join(clash)} have the names of Azure Linux stages"
            raise RecipeErrors([RecipeError(path, "stages", msg)])
        yield from _tasks(project, stages)
    except (RecipeError, RecipeErrors) as e:
        raise InvalidDodoFile(f"invalid recipes or config:\n{e}") from None


def _tasks(project: Project, stages: Stages) -> Iterator[Task]:
    from tasks.loader import Signature, _task  # the loader imports this module

    paths, platform, tree = project.paths, project.platform, tree_dir(project, stages)
    src, t = stages.tree.source, stages.tree
    snapshot = paths.mirror / src.file
    if not t.unconfirmed:
        for b in project.builds.values():
            if any(s.file == src.file for s in b.version.sources):
                msg = f"{src.file} is also a source of the package {b.name}"
                raise RecipeErrors([RecipeError(stages.path, "tree.source.file", msg)])
        yield _task(
            name=f"mirror:{src.file}",
            subtask_of="mirror",
            actions=[(fetch_source, [src, paths, project.mirror])],
            targets=[str(snapshot)],
            uptodate=[Verified(snapshot, src.sha256)],
            doc=f"fetch and verify {src.file}",
            meta={"source": src, "package": TREE_TASK},
        )
    tree_record = record_path(paths, TREE_TASK)
    git = _package(project, "git")
    yield _task(
        name=TREE_TASK,
        actions=[TreeAction(paths, platform, tree, stages, tree_record)],
        file_dep=[str(snapshot)] + [str(stages.files_dir / f.patch) for f in t.fixes if f.patch],
        targets=[str(tree / t.target), str(tree_record)],
        uptodate=[
            Signature(
                {
                    "engine": STAGES_VERSION,
                    "tree": {
                        "dir": str(tree),
                        "file": src.file,
                        "sha256": src.sha256,
                        "ref": src.ref,
                        "fixes": [[f.name, f.patch] for f in t.fixes],
                    },
                }
            )
        ],
        task_dep=[git] if git else [],  # order only: a rebuilt git does not remake the tree
        doc=f"{t.step}  {t.description}: {src.file} -> {tree}".strip()
        + ("  [unconfirmed]" if t.unconfirmed else ""),
        meta={"unconfirmed": f"{src.file}: {t.unconfirmed}"} if t.unconfirmed else None,
    )
    packages = list(project.order)
    for stage in stages.stages.values():
        file_dep = [str(tree_record)]
        for before in stage.after:
            file_dep += _outputs(stages.stages[before], tree, paths)
        inputs = [p for p in (_package(project, d) for d in stage.depends) if p]
        file_dep += [str(paths.manifest(p)) for p in inputs]
        record = record_path(paths, stage.name)
        uptodate: list[Any] = [
            Signature(
                {
                    "engine": STAGES_VERSION,
                    "platform": platform.signature(),
                    "stage": stage.signature(),
                }
            )
        ]
        if stage.outputs_glob:
            uptodate.append(OutputsRecorded(record, tree))
        go = _package(project, "go")
        yield _task(
            name=stage.name,
            actions=[StageAction(stage, paths, platform, tree, go, record)],
            file_dep=file_dep,
            targets=_outputs(stage, tree, paths),
            uptodate=uptodate,
            clean=[(clean_stage, [paths, tree, stage.name, stage.clean, record])],
            task_dep=[p for p in packages if p not in inputs],  # order only
            doc=f"{stage.step}  {stage.description}: make {stage.make_target}".strip(),
        )


def _outputs(stage: Stage, tree: Path, paths: Paths) -> list[str]:
    """A stage's targets: its output files, and the record of its globbed outputs."""
    out = [str(tree / p) for p in stage.outputs]
    if stage.outputs_glob:
        out.append(str(record_path(paths, stage.name)))
    return out
