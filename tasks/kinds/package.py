"""kind = "package" (the default): a package built from its sources by a build system.

Task ``PKG``: file_dep = the recipe's patches and files, its source files in the mirror
and the outputs of its dependencies (a package's **manifest**: task_dep alone would order but
never invalidate; a checkpoint or session step only orders); uptodate = the normalised recipe
signature (a changed flag reruns it; a comment, a URL or a description does not: the recipe
file itself is no file_dep); target = ``cache/manifests/PKG.json``. Because
dependents depend on manifest *content*, a rebuild with byte-identical output stops the
cascade there (early cutoff). ``doit clean PKG`` removes its build tree, stage and manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from doit.task import Task

from tasks.build.action import BuildAction, clean_package
from tasks.kinds.base import (
    ENGINE_VERSION,
    Plan,
    Signature,
    dependency_inputs,
    files_of,
    make_task,
    on_listed_platform,
    unconfirmed_meta,
)
from tasks.model.config import Config
from tasks.model.recipe import PACKAGE_KEYS, Build, Checker, Recipe, package_fields

KEYS = PACKAGE_KEYS
# whether a no-op may trust the stat of its files (tasks/engine/noop.py): file_dep, targets and the recipe signature in the journal
STAT_DETERMINED = True


def parse(c: Checker, data: dict[str, Any], path: Path, name: str) -> dict[str, Any]:
    return package_fields(c, data, path, name)


def on_platform(recipe: Recipe, platform: str, config: Config) -> bool:
    return on_listed_platform(recipe, platform, config)


def outputs(plan: Plan, build: Build) -> list[str]:
    return [str(plan.paths.manifest(build.name))]


def tasks(plan: Plan, build: Build) -> list[Task]:
    recipe, paths = build.recipe, plan.paths
    file_dep = files_of(recipe)
    if not build.version.unconfirmed:
        file_dep += [paths.mirror_file(s.file) for s in build.version.sources]
    dep_files, order_only = dependency_inputs(plan, build)
    signature = {
        "engine": ENGINE_VERSION,
        **{f"platform.{k}": v for k, v in plan.platform.signature().items()},
        **build.signature(),
    }
    version = "" if build.version.version == "0" else build.version.version  # "0": none
    doc = f"{version}  {recipe.description}".strip()
    if build.version.substitute_for:
        doc += f"  [substitute for {build.version.substitute_for}]"
    action = BuildAction(
        build, plan.platform, paths, plan.config.keep_build, isolate_network=plan.isolate
    )
    return [
        make_task(
            name=build.name,
            actions=[action],
            file_dep=file_dep + dep_files,
            targets=outputs(plan, build),
            uptodate=[Signature(signature, recipe.path)],
            clean=[(clean_package, [paths, build.name])],
            task_dep=order_only,
            doc=doc,
            meta=unconfirmed_meta(build),
        )
    ]
