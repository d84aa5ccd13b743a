"""kind = "stage": a make target of the Azure Linux toolkit (procedure A2-A5).

``make <make_target> NAME=value...`` (``make_vars``) runs in ``<tree>/toolkit``, where the tree
is the ``tree`` recipe among its ``depends``. file_dep: the outputs of its dependencies (the
tree's record, an earlier stage's outputs, a package's manifest: ``go`` is its chain's last
link); every stage also runs after every package (order only). Targets: ``outputs`` (paths
in the tree); files whose names are not fixed (the ISO, ``outputs_glob``) are recorded with
their digests in ``cache/stages/<name>.json``, the target, and an uptodate check compares
them. ``env`` and ``path`` (prepended to PATH) may use the platform's variables and
``${TREE}``, ``${GO_BIN}`` (the directory of ``go`` in the go package's manifest; empty
where the plan has no go package) and ``${GO_MODULES}`` (``mirror/go-modules``). make's
environment is that and nothing else: PATH (``path``, then live-bootstrap's login PATH,
``LOGIN_PATH``), HOME, ``env`` (see ``LOGIN_PATH``'s comment: no package-build variable),
and ``MAKEFLAGS`` with the run's jobserver: make holds one of the run's job tokens and runs
more jobs only with tokens from the pool (``tasks.build.jobserver``; the toolkit documents
``make -jN``), so a stage and the package builds beside it never exceed the job budget.
``go_modules = "<module dir>"``: before make, the mirror's Go module cache must serve that
module offline (tasks/sources/gomodules.py); then GOPROXY=file://..., GOSUMDB=off, GOFLAGS=-mod=mod
are added; offline without it the attempt stops before make, saying what is missing.
``toolkit_sources = { recipe = "<kind toolkitsources recipe>", sets = [...] }``: the toolkit's
own downloads come from the mirror (tasks/kinds/toolkitsources.py). Before anything else the
attempt checks that every file of those ``sets`` is there, and stops naming each missing one
with its URLs; while make runs, the listed files are served on 127.0.0.1
(tasks/toolkit/sourceserver.py) and make gets ``SOURCE_URL=<that URL>`` on its command line.

Before every attempt its ``fresh`` paths are removed the safe way: the tree's
``toolkit/scripts/safeunmount.sh`` unmounts what is mounted under them, the attempt is refused
while anything is still mounted under the tree, and the delete never crosses a mount point.
A failed attempt is retried (``retry.max_attempts``) only when its make output matches a
retryable pattern (``retry.patterns``). ``keep``: paths inside ``fresh`` and ``clean`` that
both leave alone (an earlier stage's output: the final toolchain keeps the raw one); each
attempt logs to
``cache/logs/<name>.<attempt>.log``. ``doit clean <name>`` removes its ``clean`` paths and its
record, refused in the same way while anything is mounted under the tree. Like the tree,
stages exist in the guest unless the config's ``azurelinux_stages`` says otherwise.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doit.task import Task

from tasks.build import jobserver
from tasks.build.action import StepFailed, clean_paths, say_removed
from tasks.kinds import toolkitsources
from tasks.kinds import tree as tree_kind
from tasks.kinds.base import Plan, Signature, dependency_inputs, make_task
from tasks.model.config import Config, Paths
from tasks.model.platform import Platform
from tasks.model.recipe import (
    VARIABLES,
    Build,
    Checker,
    Recipe,
    RecipeError,
    Version,
    expand,
    rel_paths,
)
from tasks.sources import gomodules
from tasks.sources.toolkitlist import SETS
from tasks.store import inputs
from tasks.store.fsutil import safe_rmtree
from tasks.toolkit import sourceserver
from tasks.toolkit.action import (
    SAFEUNMOUNT,
    STAGES_VERSION,
    AttemptAction,
    OutputsRecorded,
    go_bin,
    record_path,
    toolkit_on_platform,
    write_record,
)

KEYS = frozenset({
    "make_target", "make_vars", "env", "path", "outputs", "outputs_glob", "fresh", "clean",
    "keep", "retry", "go_modules", "toolkit_sources",
})  # fmt: skip
# whether a no-op may trust the stat of its files (tasks/engine/noop.py): its outputs are a glob over the tree
STAT_DETERMINED = False
# The seed ran the toolkit from live-bootstrap's console shell, which /init starts as
# `env - PATH=${PREFIX}/bin PS1="\w # " setsid openvt -fec1 -- bash -i`
# (steps/improve/make_bootable.sh @1296c44b): none of the package builds' variables
# (PKG_CONFIG_PATH of the i686 libdir, PREFIX, LIBDIR, TARGET, ROOT, SOURCE_DATE_EPOCH, ...)
# is exported there. A stage's make gets that PATH (with root's sbin directories; in the
# sandbox its root's bin and sbin first), HOME, and the stage's own env and path: nothing else.
LOGIN_PATH = ("/usr/bin", "/usr/sbin", "/bin", "/sbin")
STAGE_VARIABLES = frozenset({"ROOT", "PREFIX", "LIBDIR", "TARGET", "JOBS", "PLATFORM"}) | {
    "TREE",
    "GO_BIN",
    "GO_MODULES",
}
_NO_SOURCES = Version("0", ())


@dataclass(frozen=True)
class Stage:
    name: str
    step: str
    make_target: str
    make_vars: dict[str, str]
    env: dict[str, str]
    path: tuple[str, ...]
    outputs: tuple[str, ...]
    outputs_glob: str | None
    fresh: tuple[str, ...]
    clean: tuple[str, ...]
    keep: tuple[str, ...] = ()  # inside fresh/clean paths: survive them (an earlier stage's)
    go_modules: str = ""  # a Go module directory of the tree, built offline from GO_MODULES
    max_attempts: int = 1
    retry_patterns: tuple[str, ...] = ()
    sources_from: str = ""  # a kind "toolkitsources" recipe: its files are SOURCE_URL
    source_sets: tuple[str, ...] = ()  # the lists of it that must be there before make

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
            "go_modules": self.go_modules,
        } | (
            {"toolkit_sources": [self.sources_from, list(self.source_sets)]}
            if self.sources_from
            else {}
        )


def parse(c: Checker, data: dict[str, Any], path: Path, name: str) -> dict[str, Any]:
    c.variables = STAGE_VARIABLES
    try:
        outputs = tuple(rel_paths(c, data, "outputs", "", "the tree"))
        out_glob = c.typed(data, "outputs_glob", str, "", None)
        if out_glob is not None and (out_glob.startswith("/") or ".." in Path(out_glob).parts):
            c.err("outputs_glob", f"must be a pattern inside the tree, got {out_glob!r}")
        if not outputs and not out_glob:
            c.err("outputs", "missing: a stage needs outputs or outputs_glob")
        make_target = c.typed(data, "make_target", str, "", "")
        if not make_target:
            c.err("make_target", "missing: the toolkit's make target")
        retry = c.typed(data, "retry", dict, "", {})
        c.keys(retry, {"max_attempts", "patterns"}, "retry.")
        attempts = c.typed(retry, "max_attempts", int, "retry.", 1)
        if attempts < 1:
            c.err("retry.max_attempts", "must be at least 1")
        patterns = c.str_list(retry, "patterns", "retry.", check_vars=False)
        for i, p in enumerate(patterns):
            try:
                re.compile(p)
            except re.error as e:
                c.err(f"retry.patterns[{i}]", f"not a regular expression: {e}")
        keep = tuple(rel_paths(c, data, "keep", "", "the tree"))
        removed = [*c.str_list(data, "fresh", "", check_vars=False),
                   *c.str_list(data, "clean", "", check_vars=False)]  # fmt: skip
        for i, k in enumerate(keep):
            if not any(Path(r) in Path(k).parents for r in removed):
                c.err(f"keep[{i}]", f"{k!r} is inside no fresh or clean path: nothing to keep")
        served = c.typed(data, "toolkit_sources", dict, "", {})
        c.keys(served, {"recipe", "sets"}, "toolkit_sources.")
        sources_from = c.typed(served, "recipe", str, "toolkit_sources.", "")
        source_sets = c.str_list(served, "sets", "toolkit_sources.", check_vars=False)
        if served and not sources_from:
            c.err("toolkit_sources.recipe", 'missing: the kind = "toolkitsources" recipe')
        if sources_from and not source_sets:
            c.err("toolkit_sources.sets", f"missing: which of {', '.join(SETS)} make needs")
        for i, known in enumerate(source_sets):
            if known not in SETS:
                c.err(f"toolkit_sources.sets[{i}]", f"unknown {known!r} (known: {', '.join(SETS)})")
        go_modules = c.typed(data, "go_modules", str, "", "")
        if go_modules and (go_modules.startswith("/") or ".." in Path(go_modules).parts):
            c.err("go_modules", f"must be a directory inside the tree, got {go_modules!r}")
        stage = Stage(
            name=name,
            step=c.typed(data, "step", str, "", ""),
            make_target=make_target,
            make_vars=c.str_table(data, "make_vars", ""),
            env=c.str_table(data, "env", ""),
            path=tuple(c.str_list(data, "path", "")),
            outputs=outputs,
            outputs_glob=out_glob,
            fresh=tuple(rel_paths(c, data, "fresh", "", "the tree")),
            clean=tuple(rel_paths(c, data, "clean", "", "the tree")),
            keep=keep,
            go_modules=go_modules,
            max_attempts=max(attempts, 1),
            retry_patterns=tuple(patterns),
            sources_from=sources_from,
            source_sets=tuple(source_sets),
        )
    finally:
        c.variables = VARIABLES
    # no sources and no shell phases: one implicit version "0"
    return {"version": "0", "versions": {"0": _NO_SOURCES}, "spec": stage}


def on_platform(recipe: Recipe, platform: str, config: Config) -> bool:
    return toolkit_on_platform(recipe, platform, config)


def _outputs(stage: Stage, tree: Path, paths: Paths) -> list[str]:
    out = [str(tree / p) for p in stage.outputs]
    if stage.outputs_glob:
        out.append(str(record_path(paths, stage.name)))
    return out


def tree_of(plan: Plan, build: Build) -> Path:
    """The directory of the tree recipe among the stage's dependencies."""
    trees = [plan.builds[d] for d in build.depends if plan.builds[d].recipe.kind == "tree"]
    if len(trees) != 1:
        raise RecipeError(
            build.recipe.path,
            "depends",
            f"a stage depends on exactly one tree recipe (the tree its make runs in), "
            f"found {len(trees)}",
        )
    return tree_kind.directory(plan, trees[0])


def outputs(plan: Plan, build: Build) -> list[str]:
    """A stage's outputs: its output files, and the record of its globbed outputs."""
    return _outputs(build.recipe.spec, tree_of(plan, build), plan.paths)


class StageAction(AttemptAction):
    """One toolkit stage: make, after a safe removal of its ``fresh`` paths; bounded retry."""

    def __init__(
        self,
        stage: Stage,
        paths: Paths,
        platform: Platform,
        tree: Path,
        go_package: str | None,
        record: Path,
        offline: bool = False,
        served: tuple[Path, Path] | None = None,
    ):
        super().__init__(stage.name, paths, platform, tree)
        self.stage, self.go_package, self.record = stage, go_package, record
        self.offline = offline
        self.served = served  # the toolkitsources record and the directory it laid out
        self._go_env: dict[str, str] = {}
        self._make_vars: dict[str, str] = {}  # SOURCE_URL, while the sources are served
        self.max_attempts, self.retry_patterns = stage.max_attempts, stage.retry_patterns

    def __str__(self) -> str:
        return f"stage {self.name} ({self.stage.step}): {self.command_line()}"

    def command(self) -> list[str]:
        return [
            "make",
            self.stage.make_target,
            *(f"{k}={v}" for k, v in {**self.stage.make_vars, **self._make_vars}.items()),
        ]

    def command_line(self) -> str:
        return " ".join(self.command())

    def stage_environment(self) -> dict[str, str]:
        """The seed's login environment (``LOGIN_PATH``), HOME, the stage's env and path."""
        variables = {
            **self.platform.variables(),
            "TREE": str(self.tree.absolute()),
            # only a stage that uses ${GO_BIN} reads the go package's manifest (its Go)
            "GO_BIN": go_bin(self.paths, self.platform, self.go_package) if self._uses_go() else "",
            "GO_MODULES": str(go_modules_dir(self.paths)),
        }
        dirs = [expand(p, variables) for p in self.stage.path]
        if self.platform.root != "/":  # the sandbox: its own programs before the machine's
            dirs += [f"{self.platform.prefix}/bin", f"{self.platform.prefix}/sbin"]
        dirs += LOGIN_PATH
        env = {"PATH": ":".join(dict.fromkeys(d for d in dirs if d)), "HOME": home()}
        env.update({k: expand(v, variables) for k, v in self.stage.env.items()})
        env.update(self._go_env)
        return env

    def _uses_go(self) -> bool:
        return any("GO_BIN" in t for t in (*self.stage.path, *self.stage.env.values()))

    def _attempt(self, n: int) -> None:
        tree = self.tree.absolute()
        listed = self._toolkit_sources() if self.served else None
        if self.stage.go_modules:
            self._step("go modules", lambda: self._go_modules(tree))
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
        kept = [tree / p for p in self.stage.keep]
        for path in without_kept(fresh, kept):
            self._note(f"remove {path} (fresh for every attempt)")
            self._step("clean", lambda p=path: safe_rmtree(p))
        for path in kept:
            if path.exists():
                self._note(f"keep {path}")
        self._make_from = self._log.tell()
        # make joins the run's job budget like a package's make (tasks.build.jobserver): one token
        # held, more taken from the pipe for parallel jobs (the toolkit documents `make -jN`)
        with jobserver.slots(self.platform.jobs, True) as (_, jobs, js):
            self._pass_fds = js.fds
            try:
                make_env = {**env, "MAKEFLAGS": jobs["MAKEFLAGS"]}
                with contextlib.ExitStack() as stack:
                    if listed is not None:
                        stack.enter_context(self._serving(listed))
                    self._command("make", self.command(), tree / "toolkit", make_env)
            finally:
                self._pass_fds = ()
        self._step("outputs", lambda: self._check_outputs(tree))

    def _toolkit_sources(self) -> set[str]:
        """Before anything: every file of the stage's ``sets`` is in the laid-out mirror
        directory, or the attempt stops here naming each missing file and its URLs."""
        assert self.served
        record, served = self.served
        try:
            files = toolkitsources.read_record(record)["files"]
        except (OSError, ValueError, KeyError) as e:
            raise StepFailed(
                "sources", "", f"no list of the toolkit's sources ({e}): run doit "
                f"{self.stage.sources_from} first; make not started",
            ) from None  # fmt: skip
        wanted = set(self.stage.source_sets)
        missing = [
            f"  {name} ({e['where']}): can be fetched from "
            + ", ".join(
                [*e["urls"], *([f"Debian's pool/{e['debian']}"] if e.get("debian") else [])]
            )
            for name, e in sorted(files.items())
            if wanted & set(e["sets"]) and not (served / name).is_file()
        ]
        if missing:
            raise StepFailed(
                "sources", "",
                f"{len(missing)} of the toolkit's sources ({', '.join(sorted(wanted))}) are not "
                f"in the mirror (not in {served}); make not started:\n" + "\n".join(missing)
                + f"\nFetch them where there is network (doit {self.stage.sources_from}) and "
                "bring mirror/ here.",
            )  # fmt: skip
        self._note(
            f"{sum(bool(wanted & set(e['sets'])) for e in files.values())} toolkit sources "
            f"({', '.join(sorted(wanted))}) are in {served}"
        )
        return set(files)

    @contextlib.contextmanager
    def _serving(self, files: set[str]) -> Iterator[None]:
        """The mirror as the toolkit's source server while make runs (``SOURCE_URL``)."""
        assert self.served
        with sourceserver.serve(self.served[1], files) as srv:
            self._make_vars = {"SOURCE_URL": srv.url}
            self._note(f"the toolkit's SOURCE_URL is {srv.url}: the mirror, served from here")
            try:
                yield
            finally:
                self._make_vars = {}
                with srv.lock:
                    sent, refused = len(srv.sent), list(srv.refused)
                self._note(f"served {sent} toolkit source download(s) from the mirror")
                for line in refused:
                    self._note(f"the toolkit asked for {line}: not served")

    def _go_modules(self, tree: Path) -> None:
        """Before make: the Go modules come from the mirror's module cache (offline, read
        only) when it holds them; offline without them the stage stops here, saying so."""
        cache = go_modules_dir(self.paths)
        why = gomodules.problem(tree / self.stage.go_modules, cache)
        if why is None:
            self._note(f"Go modules from {cache} (read only, offline)")
            self._go_env = gomodules.offline_env(cache)
        elif self.offline:
            raise RuntimeError(f"the Go modules are not here and the run is offline: {why}")
        else:
            self._note(f"Go modules from the network (the module proxy): {why}")

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


def home() -> str:
    """HOME for a stage (Go's caches): the caller's, else the running user's from passwd
    (live-bootstrap's console shell has none)."""
    return inputs.env("HOME") or pwd.getpwuid(os.getuid()).pw_dir


def go_modules_dir(paths: Paths) -> Path:
    """The Go module cache that travels with the mirror (tasks/sources/gomodules.py)."""
    return (paths.mirror / gomodules.DEFAULT_DIR).absolute()


def without_kept(paths: list[Path], keep: list[Path]) -> list[Path]:
    """``paths`` to remove, with every directory that holds a kept path replaced by its other
    entries (recursively): removing the result leaves the kept paths and their parents."""
    out: list[Path] = []
    for path in paths:
        if path in keep:
            continue
        if not any(path in k.parents for k in keep) or not path.is_dir() or path.is_symlink():
            out.append(path)
            continue
        out += without_kept(sorted(path.iterdir()), keep)
    return out


def clean_stage(
    paths: Paths,
    tree: Path,
    name: str,
    clean: tuple[str, ...],
    record: Path,
    dryrun: bool = False,
    keep: tuple[str, ...] = (),
) -> None:
    """``doit clean <stage>``: remove the stage's outputs (not its ``keep`` paths, an earlier
    stage's), so the next run makes them again; refused while anything is mounted under the
    tree (the toolkit bind-mounts the host's /dev under build/toolchain: unmount with its
    toolkit/scripts/safeunmount.sh)."""
    targets = without_kept([tree / p for p in clean], [tree / p for p in keep])
    removed = clean_paths(paths, name, targets + [record], dryrun, mount_root=tree)
    if not dryrun:
        say_removed(paths, name, removed, "it was not made", "; the next run makes them again")


def tasks(plan: Plan, build: Build) -> list[Task]:
    stage, paths, platform = build.recipe.spec, plan.paths, plan.platform
    tree = tree_of(plan, build)
    file_dep, order_only = dependency_inputs(plan, build)
    record = record_path(paths, stage.name)
    uptodate: list[Any] = [
        Signature(
            {"engine": STAGES_VERSION, "platform": platform.signature(), "stage": stage.signature()}
        )
    ]
    if stage.outputs_glob:
        uptodate.append(OutputsRecorded(record, tree))
    go = plan.build_of("go")
    packages = [n for n in plan.order if plan.builds[n].recipe.kind == "package"]
    served = None
    if stage.sources_from:
        source = plan.recipes.get(stage.sources_from)
        step = plan.build_of(stage.sources_from)
        if source is None or source.kind != "toolkitsources" or step is None:
            raise RecipeError(
                build.recipe.path,
                "toolkit_sources.recipe",
                f'{stage.sources_from!r} is no kind = "toolkitsources" step of this plan',
            )
        served = (toolkitsources.record_path(paths, step.name), toolkitsources.served_dir(paths))
        if step.name not in order_only and step.name not in build.depends:
            order_only.append(step.name)
    return [
        make_task(
            name=build.name,
            actions=[
                StageAction(
                    stage,
                    paths,
                    platform,
                    tree,
                    go.name if go else None,
                    record,
                    offline=plan.mirror.offline,
                    served=served,
                )
            ],
            file_dep=file_dep,
            targets=_outputs(stage, tree, paths),
            uptodate=uptodate,
            clean=[
                (clean_stage, [paths, tree, stage.name, stage.clean, record], {"keep": stage.keep})
            ],
            # order only: every package before every stage
            task_dep=order_only + [p for p in packages if p not in build.depends],
            doc=f"{stage.step}  {build.recipe.description}: make {stage.make_target}".strip(),
            # what it reads from the mirror besides files (tasks.guest.inputs: pushed to the guest)
            meta={"mirror_dirs": [gomodules.DEFAULT_DIR]} if stage.go_modules else None,
        )
    ]
