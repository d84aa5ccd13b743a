"""kind = "lbimage": live-bootstrap's ``rootfs.py --qemu`` run to a finished image
(``tasks.host.lbimage`` runs it, ``tasks.host.lbinputs`` says what goes in).

Keys: ``commit`` (live-bootstrap, pinned), ``checkout`` (where that checkout is, relative to
the project; default ``cache/live-bootstrap``), ``arch``, ``update_checksums``, ``after_step`` (a
file in ``recipes/<name>/``) and ``dropbear`` (a version of ``recipes/dropbear.toml``). Its
targets are the image and the record of what built it; it is redone only when the image's
inputs change (``tasks.host.lbimage.InputsUnchanged``). Dependents get the record as file_dep
(never the image: hashing a sparse 100 GB file is not a dependency check).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from doit.task import Task

from tasks.host import lbimage
from tasks.host.lbinputs import Layout, parse_spec
from tasks.kinds.base import Plan, make_task, on_listed_platform
from tasks.model.config import Config
from tasks.model.recipe import Build, Checker, Recipe, Version

KEYS = frozenset({"commit", "arch", "update_checksums", "after_step", "dropbear", "checkout"})
# whether a no-op may trust the stat of its files (tasks/engine/noop.py): its inputs are hashed from a checkout
STAT_DETERMINED = False


def parse(c: Checker, data: dict[str, Any], path: Path, name: str) -> dict[str, Any]:
    spec = parse_spec(c, data, path, name)
    return {"version": "0", "versions": {"0": Version("0", ())}, "spec": spec}


def on_platform(recipe: Recipe, platform: str, config: Config) -> bool:
    return on_listed_platform(recipe, platform, config)


def outputs(plan: Plan, build: Build) -> list[str]:
    return [str(Layout(plan.paths).record)]


def _early_only(plan: Plan, build: Build) -> tuple[list[str], dict[str, str]]:
    """lb-image's task_dep, with a dependency on the distfiles step (``lb-mirror``: all of
    live-bootstrap's distfiles) replaced by that step's checkout: rootfs.py needs only the
    early ones before it starts, which lb-image fetches itself (its clear message names any
    that cannot be had); the others are fetched while it runs. And the Debian pool paths of
    that step's recipe."""
    deps: list[str] = []
    debian: dict[str, str] = {}
    for dep in build.depends:
        step = plan.builds.get(dep)
        if step is not None and step.recipe.kind == "distfiles":
            checkout = plan.build_of(step.recipe.spec.checkout)
            deps += [checkout.name] if checkout else []
            debian.update(step.recipe.spec.debian)
        else:
            deps.append(dep)
    return deps, debian


def host_tasks(plan: Plan, build: Build) -> list[str]:
    """In ``doit host``: the image, then the rest of live-bootstrap's distfiles (its
    distfiles step, which the image does not wait for)."""
    return [build.name] + [
        d for d in build.depends if d in plan.builds and plan.builds[d].recipe.kind == "distfiles"
    ]


def tasks(plan: Plan, build: Build) -> list[Task]:
    spec = build.recipe.spec
    lay = Layout(plan.paths, spec.checkout)
    deps, debian = _early_only(plan, build)
    return [
        make_task(
            name=build.name,
            actions=[
                (
                    lbimage.build_image,
                    [plan.paths, plan.config, spec],
                    {"settings": plan.mirror, "debian": debian},
                )
            ],
            file_dep=[str(spec.path), str(spec.after_step)],
            task_dep=deps,
            targets=[str(lay.image), str(lay.record)],
            uptodate=[lbimage.InputsUnchanged(spec, lay)],
            clean=[(lbimage.clean_image, [plan.paths])],
            verbosity=2,
            doc=build.recipe.description,
        )
    ]
