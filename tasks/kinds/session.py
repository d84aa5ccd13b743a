"""kind = "session": a step on the live system that is redone exactly when its effect is absent.

``check`` is a shell command that tests the effect (``mountpoint -q /dev/pts``; a process
listening on port 22): the step is up to date exactly while it exits 0, so a reboot or a kexec
that undid the effect makes the next run redo it. There is no stamp and no target: nothing
is remembered between runs but what ``check`` sees. Its ``[script]`` phases run on the live
system (no stage, no manifest), and after them ``check`` must succeed, else the step failed.
Dependents are ordered after it (task_dep) but never invalidated by it.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doit.task import Task

from tasks.build.action import BuildAction, StepFailed
from tasks.kinds.base import Plan, make_task, on_listed_platform
from tasks.kinds.checkpoint import SCRIPT_KEYS, script_fields
from tasks.model.config import Config
from tasks.model.recipe import Build, Checker, Recipe
from tasks.store import uptodate

KEYS = SCRIPT_KEYS | {"check"}
# whether a no-op may trust the stat of its files (tasks/engine/noop.py): its check command decides (a mount, a daemon)
STAT_DETERMINED = False
CHECK_TIMEOUT = 60  # seconds; a check that hangs counts as absent


@dataclass(frozen=True)
class Session:
    check: str  # shell; exit 0 = the effect is present


def parse(c: Checker, data: dict[str, Any], path: Path, name: str) -> dict[str, Any]:
    fields = script_fields(c, data, path, name)
    check = c.typed(data, "check", str, "", "")
    if not check.strip():
        c.err("check", "missing: a shell command that succeeds exactly when the effect is there")
    return {**fields, "spec": Session(check)}


def on_platform(recipe: Recipe, platform: str, config: Config) -> bool:
    return on_listed_platform(recipe, platform, config)


def outputs(plan: Plan, build: Build) -> list[str]:
    return []


def effect_present(check: str, env: dict[str, str]) -> bool:
    """Whether ``check`` exits 0 (in the build environment, within ``CHECK_TIMEOUT``)."""
    try:
        done = subprocess.run(
            ["sh", "-c", check],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=CHECK_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


class EffectPresent:
    """uptodate: the recipe's ``check`` succeeds now."""

    __signature__ = uptodate.SIGNATURE  # doit's inspect.signature, once

    def __init__(self, check: str, env: dict[str, str]):
        self.check, self.env = check, env

    def __call__(self, task: Task, values: dict[str, Any]) -> bool:
        return effect_present(self.check, self.env)

    def __str__(self) -> str:
        return f"check succeeds: {self.check}"

    __repr__ = __str__


class SessionAction(BuildAction):
    """The script phases on the live system, then the check (logged, like every step)."""

    def _run(self, build_dir: Path, stage: Path) -> None:
        super()._run(build_dir, stage)
        check = self.build.recipe.spec.check
        env = self.environment(self.variables())
        self._note(f"check: {check}")
        if not effect_present(check, env):
            raise StepFailed("check", check, "the step ran, but its check still fails")


def tasks(plan: Plan, build: Build) -> list[Task]:
    check = build.recipe.spec.check
    action = SessionAction(
        build, plan.platform, plan.paths, checkpoint=True, isolate_network=plan.isolate
    )
    return [
        make_task(
            name=build.name,
            actions=[action],
            uptodate=[EffectPresent(check, plan.platform.build_env())],
            task_dep=list(build.depends),
            doc=f"{build.recipe.description}  [redone while `{check}` fails]".strip(),
        )
    ]
