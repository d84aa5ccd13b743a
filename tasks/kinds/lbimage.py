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


def tasks(plan: Plan, build: Build) -> list[Task]:
    spec = build.recipe.spec
    lay = Layout(plan.paths, spec.checkout)
    return [
        make_task(
            name=build.name,
            actions=[(lbimage.build_image, [plan.paths, plan.config, spec])],
            file_dep=[str(spec.path), str(spec.after_step)],
            task_dep=list(build.depends),
            targets=[str(lay.image), str(lay.record)],
            uptodate=[lbimage.InputsUnchanged(spec, lay)],
            clean=[(lbimage.clean_image, [plan.paths])],
            verbosity=2,
            doc=build.recipe.description,
        )
    ]
