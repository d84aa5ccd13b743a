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

from tasks.kinds.base import Plan, make_task, on_listed_platform
from tasks.model.config import CONFIG_NAME, Config
from tasks.model.recipe import Build, Checker, Recipe, Version
from tasks.sources import gomodules

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


def guest_mirror_files(plan: Plan) -> set[str] | None:
    """The mirror files the guest's plan needs (not the host's: live-bootstrap's distfiles
    are in its image already), with the Go module cache the go-tools stage builds from
    offline (tasks/sources/gomodules.py); None if the guest plan cannot be read here."""
    try:
        sources = set(plan.for_platform("guest").sources)
    except Exception:  # noqa: BLE001 - the guest's own doit will say what is wrong
        return None
    return sources | {"SHA256SUMS"} | gomodules.mirror_files(plan.paths.mirror)


def _run(plan: Plan, names: list[str]) -> TaskFailed | None:
    project = plan.paths.project.resolve()
    from tasks.guest.drive import drive, vm_settings, with_preflight
    from tasks.guest.link import LinkError
    from tasks.guest.vm import VMError
    from tasks.guest.wheelhouse import WheelhouseError
    from tasks.model.config import load_config

    table = load_config(project).vm
    settings = with_preflight(project, vm_settings(table, project / CONFIG_NAME), table)
    args = forwarded_options(sys.argv[1:]) + names
    log_path = project / "cache" / "logs" / "guest.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:

        def out(line: str) -> None:
            print(line, file=sys.__stdout__, flush=True)  # live, past doit's capture
            log.write(line + "\n")
            log.flush()

        out(f"azl: guest doit {' '.join(args) or '(all)'}")
        try:
            code = drive(project, settings, args, out, mirror_files=guest_mirror_files(plan))
        except (LinkError, VMError, WheelhouseError, RuntimeError) as e:
            return TaskFailed(str(e))
    if code:
        return TaskFailed(f"the guest's doit {' '.join(args)} exited {code}; see {log_path}")
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


def tasks(plan: Plan, build: Build) -> list[Task]:
    from tasks.guest.drive import vm_settings

    project = plan.paths.project
    vm_settings(plan.config.vm, project / CONFIG_NAME)  # a mistake stops doit before any task
    always = [lambda: False]  # the guest's state decides
    made = [
        make_task(
            name=build.name,
            actions=[(_run, [plan, []])],
            uptodate=always,
            task_dep=list(build.depends),
            doc="run the whole guest plan in the VM (boot, push, doit, power off)",
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
                task_dep=list(build.depends),
                doc=f"in the guest VM: {recipe.description}".strip(),
            )
        )
    return made
