"""The kinds of recipe: every step of the DAG is a recipe in ``recipes/``, and its ``kind``
(default ``"package"``) names the module here that turns it into doit tasks.

========== ================================================================================
kind       what
========== ================================================================================
package    a package built from its sources (``build_system``): the manifest is its output
checkpoint done while the running machine is ``running_machine`` (the kexec)
session    redone exactly while its ``check`` command fails (a mount, a running daemon)
tree       the Azure Linux tree: a git snapshot made a git repository, with fixes
stage      a make target of the Azure Linux toolkit: safe unmount, bounded retry
git        a pinned git checkout (commit and tree ids, submodules at their recorded commits)
distfiles  live-bootstrap's distfiles through the mirror, laid out where rootfs.py reads them
========== ================================================================================

Adding a kind is one new module in this package and one line in ``KINDS`` below. A kind
module must provide exactly these (see ``package.py`` for the simplest):

``KEYS: frozenset[str]``
    The top-level keys it allows beyond ``tasks.recipe.COMMON_KEYS`` (name, kind,
    description, step, depends, platforms). Any other key is an error with a did-you-mean.

``parse(c: Checker, data: dict[str, Any], path: Path, name: str) -> dict[str, Any]``
    Validate its keys of the TOML table ``data`` (recipe file ``path``, recipe ``name``),
    reporting every problem with ``c.err(field, message)`` and the typed getters of
    ``tasks.recipe.Checker`` (they name file and field), and return the ``Recipe`` fields it
    sets: ``version`` and ``versions`` at least (``tasks.recipe.package_fields`` parses the
    package keys; a kind without sources returns one empty version), and its own validated
    data as ``spec``. Never raise for bad input, never touch the disk beyond reading.

``on_platform(recipe: Recipe, platform: str, config: Config) -> bool``
    Whether the recipe is a step of ``platform`` (``"sandbox"``, ``"guest"``, ``"host"``).
    Usually ``tasks.kinds.base.on_listed_platform`` (its ``platforms`` list it).

``tasks(plan: Plan, build: Build) -> list[Task]``
    The doit tasks of one build (make them with ``tasks.kinds.base.make_task``): the first
    is named ``build.name``; its action, file_dep (``base.dependency_inputs`` gives the
    dependencies' outputs), targets, uptodate checks, clean rule and ``meta``
    (``base.unconfirmed_meta`` makes the preflight stop a run that needs an unconfirmed
    step). Raise ``RecipeError`` for a mistake only visible in the plan (names file, field).
    Sources in ``build.version.sources`` are fetched by the loader's ``mirror:<file>`` tasks.

``outputs(plan: Plan, build: Build) -> list[str]``
    The files a dependent gets as file_dep (a package's manifest, a stage's outputs): a
    change of their content reruns the dependents. ``[]``: dependents are only ordered
    after it (task_dep), never invalidated (a checkpoint, a session step).

Optional: ``sources(plan: Plan, build: Build) -> tuple[Source, ...]``
    The build's mirror files when the recipe cannot list them (live-bootstrap's distfiles,
    read from its pinned commit); default ``build.version.sources``.

A kind module imports ``tasks.kinds.base``, ``tasks.recipe`` and engine helpers, never the
loader (``tests/test_kinds.py`` imports each one alone in a fresh interpreter).
"""

from __future__ import annotations

from types import ModuleType

from tasks.kinds import checkpoint, distfiles, git, package, session, stage, tree

KINDS: dict[str, ModuleType] = {
    "package": package,
    "checkpoint": checkpoint,
    "session": session,
    "tree": tree,
    "stage": stage,
    "git": git,
    "distfiles": distfiles,
}
DEFAULT = "package"
