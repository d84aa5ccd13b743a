"""The kinds of recipe: every step of the DAG is a recipe in ``recipes/``, and its ``kind``
(default ``"package"``) names the module here that turns it into doit tasks.

============== ============================================================================
kind           what
============== ============================================================================
package        a package built from its sources (``build_system``): the manifest is its output
checkpoint     done while the running machine is ``running_machine`` (the kexec)
session        redone exactly while its ``check`` command fails (a mount, a running daemon)
tree           the Azure Linux tree: a git snapshot made a git repository, with fixes
stage          a make target of the Azure Linux toolkit: safe unmount, bounded retry
git            a pinned git checkout (commit and tree ids, submodules at their recorded commits)
distfiles      live-bootstrap's distfiles through the mirror, laid out where rootfs.py reads them
preflight      the host's figures, KVM and tools against what the run needs; the sizes it picks
lbimage        live-bootstrap's rootfs.py --qemu to a finished image (the host half)
guest          (host) the guest plan run in the VM over SSH; ``doit vm``; guest-only step names
toolkitsources the toolkit's own downloads (the pinned tree's lists) through the mirror
============== ============================================================================

Adding a kind is one new module in this package and its name in ``NAMES`` below. ``KINDS``
maps each name to its module, imported on first use: a run imports only the kinds its recipe
set uses (importing ``tasks.kinds`` itself imports none). A kind
module must provide exactly these (see ``package.py`` for the simplest):

``KEYS: frozenset[str]``
    The top-level keys it allows beyond ``tasks.model.recipe.COMMON_KEYS`` (name, kind,
    description, step, depends, platforms). Any other key is an error with a did-you-mean.

``parse(c: Checker, data: dict[str, Any], path: Path, name: str) -> dict[str, Any]``
    Validate its keys of the TOML table ``data`` (recipe file ``path``, recipe ``name``),
    reporting every problem with ``c.err(field, message)`` and the typed getters of
    ``tasks.model.recipe.Checker`` (they name file and field), and return the ``Recipe`` fields it
    sets: ``version`` and ``versions`` at least (``tasks.model.recipe.package_fields`` parses the
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

``STAT_DETERMINED: bool``
    Whether its tasks decide up-to-dateness from their files alone (file_dep, targets,
    records in the journal, the recipes): then a no-op may be replayed from a stamp of their
    stat keys (``tasks/engine/noop.py``). False (the default when absent) for a check that runs a
    command, reads the running machine or globs a tree; a run visiting such a task writes
    no stamp.

Optional: ``sources(plan: Plan, build: Build) -> tuple[Source, ...]``
    The build's mirror files when the recipe cannot list them (live-bootstrap's distfiles,
    read from its pinned commit); default ``build.version.sources``.

A kind module imports ``tasks.kinds.base``, ``tasks.model.recipe`` and engine helpers, never the
loader (``tests/test_kinds.py`` imports each one alone in a fresh interpreter).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from types import ModuleType

NAMES = (
    "package",
    "checkpoint",
    "session",
    "tree",
    "stage",
    "git",
    "distfiles",
    "preflight",
    "lbimage",
    "guest",
    "toolkitsources",
)
DEFAULT = "package"


class _Kinds(Mapping[str, ModuleType]):
    """Kind name -> its module ``tasks.kinds.<name>``, imported on first lookup."""

    def __init__(self) -> None:
        self._loaded: dict[str, ModuleType] = {}

    def __getitem__(self, name: str) -> ModuleType:
        module = self._loaded.get(name)
        if module is None:
            if name not in NAMES:
                raise KeyError(name)
            module = self._loaded[name] = importlib.import_module(f"{__name__}.{name}")
        return module

    def __iter__(self) -> Iterator[str]:
        return iter(NAMES)

    def __len__(self) -> int:
        return len(NAMES)

    def __contains__(self, name: object) -> bool:
        return name in NAMES


KINDS: Mapping[str, ModuleType] = _Kinds()
