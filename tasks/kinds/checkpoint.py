"""kind = "checkpoint": a step whose result is the state of the running machine, not files.

``running_machine = "x86_64"``: the kexec into the 64-bit kernel is done exactly while
``uname -m`` says x86_64 (``AZL_MACHINE`` overrides the reading, so tests inject it instead of
kexec-ing the test machine). Its ``[script]`` phases run on the live system (no stage, no
manifest). It has no file_dep and no target: after the kexec ends this doit, the next run
finds it done; after a reboot into the old kernel it runs again. Dependents are ordered
after it (task_dep) but never invalidated by it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doit.task import Task

from tasks.build.action import BuildAction
from tasks.kinds.base import Plan, make_task, on_listed_platform
from tasks.model.config import Config
from tasks.model.recipe import PACKAGE_KEYS, Build, Checker, Recipe, package_fields
from tasks.store import inputs, uptodate

# a script step: its versions (if any), script phases, files and environment
SCRIPT_KEYS = PACKAGE_KEYS - {
    "configure_args", "make_args", "install_args", "patches", "patch_strip",
    "chain",
}  # fmt: skip
KEYS = SCRIPT_KEYS | {"running_machine"}
# whether a no-op may trust the stat of its files (tasks/engine/noop.py): the running kernel decides (uname), not a file
STAT_DETERMINED = False


@dataclass(frozen=True)
class Checkpoint:
    machine: str  # done while `uname -m` says this


def script_fields(c: Checker, data: dict[str, Any], path: Path, name: str) -> dict[str, Any]:
    """The package keys of a step on the live system: ``build_system`` may only be
    ``script`` (its default)."""
    build_system = c.typed(data, "build_system", str, "", "script")
    if build_system != "script":
        c.err("build_system", f"{build_system!r}: this kind of step runs `script` phases only")
    return package_fields(c, data, path, name, build_system="script")


def parse(c: Checker, data: dict[str, Any], path: Path, name: str) -> dict[str, Any]:
    fields = script_fields(c, data, path, name)
    machine = c.typed(data, "running_machine", str, "", "")
    if not machine:
        c.err("running_machine", "missing: the `uname -m` that says the step is done")
    return {**fields, "spec": Checkpoint(machine)}


def on_platform(recipe: Recipe, platform: str, config: Config) -> bool:
    return on_listed_platform(recipe, platform, config)


def outputs(plan: Plan, build: Build) -> list[str]:
    return []  # nothing to depend on but the machine's state: dependents only order


class MachineIs:
    """uptodate: the running kernel's machine (``uname -m``; ``AZL_MACHINE`` overrides it)."""

    __signature__ = uptodate.SIGNATURE  # doit's inspect.signature, once

    def __init__(self, machine: str):
        self.machine = machine

    def __call__(self, task: Task, values: dict[str, Any]) -> bool:
        return (inputs.env("AZL_MACHINE") or os.uname().machine) == self.machine

    def __str__(self) -> str:
        return f"running machine is {self.machine}"

    __repr__ = __str__


def tasks(plan: Plan, build: Build) -> list[Task]:
    machine = build.recipe.spec.machine
    return [
        make_task(
            name=build.name,
            actions=[BuildAction(build, plan.platform, plan.paths, checkpoint=True)],
            uptodate=[MachineIs(machine)],
            task_dep=list(build.depends),
            doc=f"{build.recipe.description}  [done while the machine is {machine}]".strip(),
        )
    ]
