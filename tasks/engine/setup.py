"""What ``dodo.py`` calls: the plan loaded once, doit's configuration, and the signals.

SIGINT and SIGTERM stop every running build (each in its own process group) and unwind
like Ctrl-C; finished tasks are saved, and the user reads one line, not a traceback.
"""

from __future__ import annotations

import gc
import signal
import sys
from pathlib import Path
from typing import Any

from doit.exceptions import InvalidDodoFile

from tasks.engine.plan import Project
from tasks.engine.report import make_reporter
from tasks.model.platform import PlatformError
from tasks.model.recipe import RecipeError, RecipeErrors
from tasks.store import checker


def _stop(signum: int, frame: Any) -> None:
    """SIGINT/SIGTERM: stop every running build (they run in their own process groups, and
    under ``-n N`` in worker threads), then unwind like Ctrl-C; finished tasks are saved."""
    build = sys.modules.get("tasks.build.action")  # not imported: no build ever started
    if build is not None:
        build.stop_all_builds()
    raise KeyboardInterrupt(f"signal {signum}")


def _interrupted(typ: type, value: BaseException, tb: Any, _default: Any = sys.excepthook) -> None:
    """Ctrl-C or SIGTERM: one line instead of a traceback."""
    if issubclass(typ, KeyboardInterrupt):
        sys.stderr.write(
            "\nazl-bootstrap: interrupted; every finished task is saved, run doit again to go on\n"
        )
    else:
        _default(typ, value, tb)


def setup(project: Path) -> tuple[dict[str, Any], Project]:
    """Load the project at ``project`` and return ``(DOIT_CONFIG, Project)``.

    Recipe and config errors become ``InvalidDodoFile``: doit prints every one of them
    (file and field) and exits 3 before anything is written."""
    # Loading makes tens of thousands of long-lived objects (recipes, the journal, the
    # tasks); the cyclic GC would scan them over and over (a third of a no-op's CPU). It is
    # off from here until doit has every task (``Project.tasks`` ends), which then become
    # permanent (``gc.freeze``): the run's collections only scan what the run makes.
    gc.disable()
    try:
        proj = Project(project)
    except (RecipeError, RecipeErrors) as e:
        gc.enable()
        raise InvalidDodoFile(f"invalid recipes or config:\n{e}") from None
    except PlatformError as e:
        gc.enable()
        raise InvalidDodoFile(str(e)) from None
    except BaseException:
        gc.enable()
        raise
    proj.collect_after_load = True
    checker.use_cache(proj.paths.state / "digests.json")
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # not when imported by a test run
        signal.signal(signal.SIGTERM, _stop)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _stop)
        sys.excepthook = _interrupted
    config = {
        "default_tasks": ["all"],
        "backend": "azl",
        "dep_file": str(proj.paths.state),
        "check_file_uptodate": checker.XXH3Checker,
        "reporter": make_reporter(proj.paths.state, proj.preflight),
        "par_type": "thread",
    }
    return config, proj
