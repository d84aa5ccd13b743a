"""kind = "guest": the host step that runs the guest plan inside the VM (``tasks.guest.drive``).

One recipe of this kind (``recipes/guest.toml``, ``platforms = ["host"]``) makes, on the host:

- ``guest``: boot the VM, push the project, its mirror and the wheelhouse, install the
  engine's dependencies offline if the guest lacks them, run the guest's ``doit`` (its
  default task: the whole guest plan), follow it across the kexec, power the VM off;
- one task per guest-only step, named as in the guest (``toolchain``, ``iso``, ``kexec``,
  ``go-tools``, ...): the same, running ``doit <that name>`` in the guest. So ``doit toolchain``
  on the host builds the toolchain in the guest. Steps that also exist on the host's plan
  (the sandbox's ``grep``) keep their host meaning;
- ``vm``: boot the VM, print the ssh command that logs in, keep it up until Ctrl-C.

The doit options given on the host that mean the same in the guest (``-n``, ``-P``, ``-v``,
``-c``) are passed on. None of these is ever up to date: the guest's own state decides what is
left to do there. The guest's output is shown live and kept in ``cache/logs/guest.log``.
Settings: ``[vm]`` of ``azl-bootstrap.toml`` (``tasks.guest.drive.GuestSettings``); cores, RAM
and KVM default to what ``doit preflight`` chose; the image and keys are ``doit lb-image``'s.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed
from doit.task import Task

from tasks.guest.inputs import Reads, mirror_files, plan_reads, snapshot_path
from tasks.kinds.base import Plan, make_task, on_listed_platform
from tasks.model.config import CONFIG_NAME, Config
from tasks.model.recipe import Build, Checker, Recipe, Version

KEYS: frozenset[str] = frozenset()
# whether a no-op may trust the stat of its files (tasks/engine/noop.py): always runs (the VM's state decides)
STAT_DETERMINED = False
HOLD = "vm"
# doit run options passed on to the guest's doit, and whether each takes a value
FORWARD = {"-n": True, "--process": True, "-P": True, "--parallel-type": True}
FORWARD |= {"-v": True, "--verbosity": True, "-c": False, "--continue": False}


def parse(c: Checker, data: dict[str, Any], path: Path, name: str) -> dict[str, Any]:
    return {"version": "0", "versions": {"0": Version("0", ())}, "spec": None}


def on_platform(recipe: Recipe, platform: str, config: Config) -> bool:
    return on_listed_platform(recipe, platform, config)


def outputs(plan: Plan, build: Build) -> list[str]:
    return []


def forwarded_options(argv: list[str]) -> list[str]:
    """The options of a ``doit`` command line that the guest's doit gets too."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        opt, _, value = argv[i].partition("=")
        if opt in FORWARD:
            out.append(argv[i])
            if FORWARD[opt] and not value and i + 1 < len(argv):
                out.append(argv[i + 1])
                i += 1
        elif FORWARD.get(argv[i][:2]) and len(argv[i]) > 2 and not argv[i].startswith("--"):
            out.append(argv[i])  # -n2
        i += 1
    return out


def guest_only(plan: Plan) -> list[str]:
    """Recipes of the guest that are not steps of this machine's plan."""
    from tasks.kinds import KINDS  # at call time: the registry imports this module

    return sorted(
        name
        for name, recipe in plan.recipes.items()
        if plan.build_of(name) is None
        and KINDS[recipe.kind].on_platform(recipe, "guest", plan.config)
    )


def guest_reads(plan: Plan) -> Reads | None:
    """What the guest's plan reads (``tasks.guest.inputs``), computed from its tasks; None if
    the guest plan cannot be read here (the guest's own doit will say what is wrong)."""
    try:
        guest = plan.for_platform("guest")
        return plan_reads(guest.tasks(), plan.paths.project)
    except Exception:  # noqa: BLE001
        return None


def guest_mirror_files(plan: Plan) -> set[str] | None:
    """The files of mirror/ that ``doit guest`` pushes: all that the guest's plan reads (its
    sources, the tree's bundle or snapshot, the Go module cache, ...), not the host's
    (live-bootstrap's distfiles are in its image already); None: the whole mirror."""
    reads = guest_reads(plan)
    return None if reads is None else mirror_files(reads, plan.paths.mirror)


def _failed_steps(lines: list[str]) -> list[str]:
    """The guest steps a guest doit's output says failed (``FAILED x`` / ``#### x``)."""
    found: list[str] = []
    for line in lines:
        for prefix in ("FAILED ", "#### "):
            if line.startswith(prefix) and line[len(prefix) :].strip() not in found:
                found.append(line[len(prefix) :].strip())
    return found


def _copy_back(plan: Plan, names: list[str] | None, dest: str, python: str) -> Any:
    """For ``doit iso`` (a guest stage with files named by a glob): copy them to out/."""
    from tasks.kinds.stage import tree_of

    if not names or len(names) != 1:
        return None
    guest = plan.for_platform("guest")
    build = guest.build_of(names[0])
    if build is None or build.recipe.kind != "stage" or not build.recipe.spec.outputs_glob:
        return None
    tree = str(tree_of(guest, build))
    record = f"{dest}/cache/stages/{build.name}.json"
    out_dir = plan.paths.project.resolve() / "out"

    def copy(link: Any, say: Any) -> None:
        from tasks.guest.copyout import copy_outputs

        copy_outputs(link, record, tree, out_dir, say, python)

    return copy


def _run(plan: Plan, names: list[str] | None) -> TaskFailed | None:
    """Boot, push, run ``doit NAMES`` in the guest (None: push only), power off; a failure
    names the step, its log and what to do next."""
    project = plan.paths.project.resolve()
    from tasks.guest.drive import drive, vm_settings, with_preflight
    from tasks.guest.link import LinkError
    from tasks.guest.vm import VMError
    from tasks.guest.wheelhouse import WheelhouseError
    from tasks.model.config import load_config

    table = load_config(project).vm
    settings = with_preflight(project, vm_settings(table, project / CONFIG_NAME), table)
    args = None if names is None else forwarded_options(sys.argv[1:]) + names
    step = PUSH if names is None else (" ".join(names) or "guest")
    log_path = project / "cache" / "logs" / "guest.log"
    console = project / "cache" / "logs" / "vm.console.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    seen: list[str] = []
    again = (
        f"What to do: fix the cause, then run doit {step} again (it goes on from the guest's "
        "state: nothing finished is redone); doit status shows where the pipeline is."
    )
    with open(log_path, "a") as log:

        def out(line: str) -> None:
            print(line, file=sys.__stdout__, flush=True)  # live, past doit's capture
            log.write(line + "\n")
            log.flush()
            seen.append(line)

        out(f"azl: guest doit {'(push only)' if args is None else ' '.join(args) or '(all)'}")
        copy = _copy_back(plan, names, settings.dest, settings.python)
        try:
            code = drive(
                project, settings, args, out, mirror_files=guest_mirror_files(plan),
                after=(lambda link: copy(link, out)) if copy else None,
            )  # fmt: skip
        except (LinkError, VMError, WheelhouseError, RuntimeError) as e:
            return TaskFailed(
                f"{step}: {e}\n  log: {log_path}\n  the VM's console: {console}\n{again}"
            )
    if code:
        failed = _failed_steps(seen)
        where = f" at {', '.join(failed)}" if failed else ""
        logs = "".join(f"\n  the guest's log of {f}: {settings.dest}/cache/logs/{f}.log (doit vm, then log in)"
                       for f in failed)  # fmt: skip
        return TaskFailed(
            f"{step}: the guest's doit {' '.join(args or [])} exited {code}{where}\n"
            f"  log: {log_path}{logs}\n{again}"
        )
    return None


def _hold(project: Path) -> TaskFailed | None:
    project = project.resolve()
    from tasks.guest.drive import hold, vm_settings, with_preflight
    from tasks.guest.vm import VMError
    from tasks.model.config import load_config

    table = load_config(project).vm
    settings = with_preflight(project, vm_settings(table, project / CONFIG_NAME), table)
    try:
        hold(project, settings, out=lambda line: print(line, file=sys.__stdout__, flush=True))
    except VMError as e:
        return TaskFailed(str(e))
    return None


INPUTS = "guest-inputs"  # the group: everything the guest plan reads, on the host
PUSH = "push"  # boot, push, install, power off: a guest ready to build (doit host ends here)


def host_tasks(plan: Plan, build: Build) -> list[str]:
    """What stands for this step in ``doit host`` (tasks/engine/plan.py): a guest ready to
    build, not the whole guest plan."""
    return [PUSH]


def _snapshot(pin: Any, mirror: Path, sources: list[Path], network: bool, work: Path) -> Any:
    from tasks.guest.inputs import make_tree_snapshot
    from tasks.sources.gitpin import PinError

    try:
        origin = make_tree_snapshot(pin, mirror, sources, network, work)
    except (PinError, OSError) as e:
        return TaskFailed(
            f"guest-inputs: the tree {pin.url} at {pin.commit} for the guest: {e}\n"
            "What to do: put a bundle or bare repository of it into mirror/ (or a directory "
            "named by AZL_GIT_MIRRORS) and run doit again."
        )
    print(f"guest-inputs: {snapshot_path(pin, mirror).name} from {origin}")
    return None


def _go_modules(pin: Any, mirror: Path, module: str, work: Path) -> Any:
    import os

    from tasks.guest.inputs import module_files
    from tasks.sources import gomodules
    from tasks.sources.gitpin import PinError

    cache = mirror / gomodules.DEFAULT_DIR
    try:
        where = module_files(pin, mirror, module, work)
        if gomodules.problem(where, cache) is None:
            return None
        n = gomodules.download(os.environ.get("GO", "go"), where, cache)
    except (PinError, gomodules.DownloadError, OSError) as e:
        return TaskFailed(
            f"guest-inputs: the Go modules of {module} for the guest (into {cache}): {e}\n"
            "What to do: run it where the Go module proxy is reachable with a go >= the "
            "go.mod's (GO=/path/to/go doit guest-inputs), then copy mirror/ here."
        )
    print(f"guest-inputs: {n} Go module(s) of {module} in {cache}")
    return None


def _modules_ready(pin: Any, mirror: Path, module: str, work: Path) -> bool:
    from tasks.sources import gomodules

    where = work / pin.commit / module
    return (where / "go.mod").is_file() and gomodules.problem(
        where, mirror / gomodules.DEFAULT_DIR
    ) is None


def input_tasks(plan: Plan, guest: Plan) -> tuple[list[Task], dict[str, list[str]]]:
    """The host's tasks that fetch and verify what the guest plan reads (its sources, its
    tree's snapshot, its Go module cache), and for each guest task the names of those its
    run needs (its closure's inputs)."""
    from tasks.guest.inputs import pin_entries
    from tasks.kinds.git import git_mirrors
    from tasks.sources.gitpin import local_sources
    from tasks.sources.mirror import Verified, fetch_source

    mirror, work = plan.paths.mirror, plan.paths.cache / "host"
    made: list[Task] = []
    by_file: dict[str, str] = {}
    for file, (src, _owner) in sorted(guest.sources.items()):
        if file in plan.sources and plan.sources[file][0].sha256 == src.sha256:
            by_file[file] = f"mirror:{file}"  # the host's plan fetches it already
            continue
        by_file[file] = f"{INPUTS}:{file}"
        target = plan.paths.mirror_file(file)
        made.append(
            make_task(
                name=by_file[file],
                subtask_of=INPUTS,
                actions=[(fetch_source, [src, plan.paths, plan.mirror])],
                targets=[target],
                uptodate=[Verified(target, src.sha256)],
                doc=f"fetch and verify {file} for the guest",
            )
        )
    by_pin: dict[str, str] = {}
    by_dir: dict[str, str] = {}
    network = not plan.mirror.offline
    for name in guest.order:
        b = guest.builds[name]
        pin = getattr(b.recipe.spec, "pin", None) if b.recipe.kind == "tree" else None
        if pin is not None:
            by_pin[name] = f"{INPUTS}:{name}"
            sources = local_sources(pin.url, [d for d in git_mirrors(plan) if d != mirror])
            made.append(
                make_task(
                    name=by_pin[name],
                    subtask_of=INPUTS,
                    actions=[(_snapshot, [pin, mirror, sources, network, work / "git"])],
                    uptodate=[lambda pin=pin: bool(pin_entries(pin, mirror))],
                    doc=f"the tree {name} at {pin.commit[:12]} as a snapshot in mirror/ for the guest",
                )
            )
        module = getattr(b.recipe.spec, "go_modules", "") if b.recipe.kind == "stage" else ""
        trees = [guest.builds[d] for d in b.depends if guest.builds[d].recipe.kind == "tree"]
        tree_pin = trees[0].recipe.spec.pin if len(trees) == 1 else None
        if module and tree_pin is not None and "go-modules" not in by_dir:
            by_dir["go-modules"] = f"{INPUTS}:go-modules"
            args = [tree_pin, mirror, module, work / "go-modules"]
            made.append(
                make_task(
                    name=by_dir["go-modules"],
                    subtask_of=INPUTS,
                    actions=[(_go_modules, args)],
                    uptodate=[lambda args=args: _modules_ready(*args)],
                    task_dep=[by_pin[trees[0].name]] if trees[0].name in by_pin else [],
                    doc=f"the Go modules of {module} in mirror/go-modules for the guest",
                )
            )
    # each guest task's needs: the inputs its closure reads
    guest_tasks = {t.name: t for t in guest.tasks()}
    producer = {str(t): task.name for task in guest_tasks.values() for t in task.targets}
    needs: dict[str, list[str]] = {}
    for top in guest_tasks:
        seen, todo = set(), [top]
        while todo:
            n = todo.pop()
            if n in seen or n not in guest_tasks:
                continue
            seen.add(n)
            t = guest_tasks[n]
            todo += list(t.task_dep) + [producer[str(f)] for f in t.file_dep if str(f) in producer]
        reads = plan_reads([guest_tasks[n] for n in seen], plan.paths.project)
        names = [by_file[f] for f in sorted(reads.mirror) if f in by_file]
        names += [by_pin[t] for t in sorted(reads.pins) if t in by_pin]
        names += [by_dir[d] for d in sorted(reads.mirror_dirs) if d in by_dir]
        needs[top] = names
    made.append(
        make_task(
            name=INPUTS,
            actions=None,
            task_dep=[t.name for t in made]
            + sorted({n for n in by_file.values() if n.startswith("mirror:")}),
            has_subtask=True,
            uptodate=[True],
            doc="fetch and verify on the host everything the guest plan reads (sources, the tree, Go modules)",
        )
    )
    return made, needs


def tasks(plan: Plan, build: Build) -> list[Task]:
    from tasks.guest.drive import vm_settings

    project = plan.paths.project
    vm_settings(plan.config.vm, project / CONFIG_NAME)  # a mistake stops doit before any task
    always = [lambda: False]  # the guest's state decides
    try:
        guest: Plan | None = plan.for_platform("guest")
    except Exception:  # noqa: BLE001 - the guest's own doit says what is wrong
        guest = None
    made, needs = input_tasks(plan, guest) if guest is not None else ([], {})
    inputs = [INPUTS] if guest is not None else []
    made += [
        make_task(
            name=build.name,
            actions=[(_run, [plan, []])],
            uptodate=always,
            task_dep=list(build.depends) + inputs,
            doc="run the whole guest plan in the VM (boot, push, doit, power off)",
        ),
        make_task(
            name=PUSH,
            actions=[(_run, [plan, None])],
            uptodate=always,
            task_dep=list(build.depends) + inputs,
            doc="a guest ready to build: boot the VM, push the project and its inputs, install the engine, power off",
        ),
        make_task(
            name=HOLD,
            actions=[(_hold, [project])],
            uptodate=always,
            task_dep=list(build.depends),
            doc="boot the guest VM and keep it up until Ctrl-C (prints the ssh command)",
        ),
    ]
    for name in guest_only(plan):
        recipe = plan.recipes[name]
        made.append(
            make_task(
                name=name,
                actions=[(_run, [plan, [name]])],
                uptodate=always,
                task_dep=list(build.depends) + needs.get(name, []),
                doc=f"in the guest VM: {recipe.description}".strip(),
            )
        )
    return made
