"""azl-bootstrap: `doit` builds every package that is out of date, in dependency order.

Thin on purpose: the engine is the `tasks` package, the packages are `recipes/*.toml`.
See README.md for the commands.
"""

import os
import sys
from pathlib import Path

from tasks.build.verify import only_verify, verify_tasks
from tasks.engine.setup import setup

DOIT_CONFIG, PROJECT = setup(Path(os.path.relpath(Path(__file__).resolve().parent)))
if only_verify(sys.argv[1:]):  # every package's verdict, not just the first that differs
    DOIT_CONFIG["continue"] = True


def task_azl():
    """Every package of the recipe set, its source fetches and the group tasks."""
    yield from PROJECT.tasks()


def task_verify():
    """Rebuild each package apart and compare it with its installed manifest (reproducible?)."""
    yield from verify_tasks(PROJECT)
