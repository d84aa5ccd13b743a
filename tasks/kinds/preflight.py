"""kind = "preflight": what this machine has against what the run needs (``tasks.host.preflight``).

``[tools.<command>]`` tables list the host tools (``why``, ``required``, the package on
``debian``, ``fedora`` and ``arch``; ``module`` for a Python module). The task always runs
(``uptodate`` false: the machine may have changed), prints the report and fails when the run
cannot succeed; its target ``cache/host/preflight.json`` holds the decisions (sizes,
accelerator, tool paths) and is written only when they change and the run can succeed.

Its outputs for dependents are ``[]`` (order only): ``lb-image`` depends on the one decision
that shapes the image (its size) through its own inputs check, since a whole-file dependency
would rebuild an image of many hours because the machine has more RAM today.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed
from doit.task import Task

from tasks.host import preflight
from tasks.host.lbinputs import Layout
from tasks.kinds.base import Plan, make_task, on_listed_platform
from tasks.model.config import Config, Paths
from tasks.model.recipe import Build, Checker, Recipe, Version

KEYS = frozenset({"tools"})
# whether a no-op may trust the stat of its files (tasks/engine/noop.py): always runs (the machine may have changed)
STAT_DETERMINED = False


@dataclass(frozen=True)
class Preflight:
    tools: dict[str, dict[str, Any]]


def parse(c: Checker, data: dict[str, Any], path: Path, name: str) -> dict[str, Any]:
    tools = preflight.check_tools(c, data)
    return {"version": "0", "versions": {"0": Version("0", ())}, "spec": Preflight(tools)}


def on_platform(recipe: Recipe, platform: str, config: Config) -> bool:
    return on_listed_platform(recipe, platform, config)


def outputs(plan: Plan, build: Build) -> list[str]:
    return []


def run(paths: Paths, config: Config, tools: dict[str, dict[str, Any]]) -> TaskFailed | None:
    """The action: measure, probe, decide, print; fail if the run cannot succeed."""
    facts, text = preflight.run(paths.project, config.host, tools, image=Layout(paths).image)
    print(text)
    return None if facts.ok else TaskFailed("preflight: the run cannot succeed on this machine")


def tasks(plan: Plan, build: Build) -> list[Task]:
    return [
        make_task(
            name=build.name,
            actions=[(run, [plan.paths, plan.config, build.recipe.spec.tools])],
            targets=[str(plan.paths.cache / "host" / "preflight.json")],
            uptodate=[False],
            task_dep=list(build.depends),
            verbosity=2,
            doc=build.recipe.description,
        )
    ]
