"""doit's ``run``, ``clean``, ``forget`` and ``info`` with this project's messages.

Registered as doit command plugins (``pyproject.toml``: the ``doit.COMMAND`` entry points
and ``[tool.doit.plugins.command]``), they replace the built-in ones of the same name:

- ``clean`` and ``forget`` take the project lock before they print or change anything: under
  another doit's lock they refuse with one line, having said nothing else; ``clean`` prints
  no "executing 'Python: function ...'" line, only what each clean action says it removed;
- ``info`` of a name that is no task says so (with close names) instead of a traceback;
- ``run`` (also ``doit`` alone) replays a no-op from its stamp without loading ``dodo.py``
  when nothing that decided the last all-up-to-date run changed (``tasks/engine/noop.py``), and
  records the stamp after such a run; ``clean`` and ``forget`` delete it.
"""

from __future__ import annotations

import difflib
import inspect
import os
import sys
import time
from pathlib import Path
from typing import Any

from doit.action import PythonAction
from doit.cmd_clean import Clean as DoitClean
from doit.cmd_forget import Forget as DoitForget
from doit.cmd_info import Info as DoitInfo
from doit.cmd_run import Run as DoitRun
from doit.exceptions import BaseFail, InvalidCommand
from doit.task import clean_targets

from tasks.engine import noop, report
from tasks.store import inputs, lock


def _take_lock(command: str, state_dir: str) -> None:
    try:
        lock.acquire(Path(state_dir))
    except lock.LockedError as e:
        raise InvalidCommand(f"doit {command}: {e}. Nothing was changed.") from None


def unknown_task(name: str, known: list[str]) -> InvalidCommand:
    """The error for a name that is no task, naming the closest ones."""
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return InvalidCommand(f"no package or task named {name!r}{hint}; `doit list` shows them all")


def _check_names(names: list[str] | None, tasks: list[Any]) -> None:
    known = [t.name for t in tasks]
    for name in names or ():
        if "*" not in name and name not in known:
            raise unknown_task(name, known)


class Clean(DoitClean):
    """``doit clean``: lock first, then each clean action quietly (they say what they did)."""

    def _execute(  # doit passes the options by these names
        self,
        dryrun: bool,
        cleandep: bool,
        cleanall: bool,
        cleanforget: bool,
        pos_args: list[str] | None = None,
    ) -> Any:
        _check_names(pos_args, self.task_list)
        if not dryrun:
            _take_lock("clean", self.dep_manager.name)
            noop.discard(os.path.join(self.dep_manager.name, noop.NAME))
        return super()._execute(dryrun, cleandep, cleanall, cleanforget, pos_args=pos_args)

    def clean_tasks(self, tasks: list[Any], dryrun: bool, cleanforget: bool) -> None:
        cleaned: set[str] = set()
        for task in tasks:
            if task.name in cleaned:
                continue
            cleaned.add(task.name)
            _clean_quietly(task, dryrun, self.outstream)
            if cleanforget and not dryrun:
                self.dep_manager.remove(task.name)
        self.dep_manager.close()


def _clean_quietly(task: Any, dryrun: bool, out: Any) -> None:
    """doit's ``Task.clean`` without its "executing ..." line."""
    task.init_options()
    if task._remove_targets is True:
        clean_targets(task, dryrun)
        return
    for action in task.clean_actions:
        on_dryrun = isinstance(action, PythonAction) and (
            "dryrun" in inspect.signature(action.py_callable).parameters
        )
        if on_dryrun:
            action.kwargs["dryrun"] = dryrun
        if not dryrun or on_dryrun:
            result = action.execute(out=out)
            if isinstance(result, BaseFail):
                raise InvalidCommand(f"doit clean {task.name}: {result.get_msg().strip()}")


class Forget(DoitForget):
    """``doit forget``: lock first, so a refusal prints nothing but itself."""

    def _execute(self, forget_sub: bool, forget_disable_default: bool, forget_all: bool) -> Any:
        _check_names(None if forget_all else self.sel_tasks, self.task_list)
        _take_lock("forget", self.dep_manager.name)
        noop.discard(os.path.join(self.dep_manager.name, noop.NAME))
        return super()._execute(forget_sub, forget_disable_default, forget_all)


class Info(DoitInfo):
    """``doit info NAME``: a clear message for a name that is no task."""

    def _execute(self, pos_args: list[str], hide_status: bool = False) -> Any:
        if len(pos_args) == 1:
            _check_names(pos_args, self.task_list)
        return super()._execute(pos_args, hide_status=hide_status)


class Run(DoitRun):
    """``doit`` / ``doit run``: a no-op replayed from its stamp, else doit's run (then a
    stamp if it was a no-op that files alone decided)."""

    def execute(self, params: Any, args: list[str]) -> Any:
        eligible = (
            params.get("cwdPath") is None
            and not params.get("seek_file")
            and params.get("outfile") is sys.stdout
            and not params.get("always")
            and params.get("reporter") == "console"  # the default: dodo.py's reporter
        )
        if not eligible:
            return super().execute(params, args)
        # absolute: doit changes into the directory of dodo.py before loading it
        dodo = os.path.abspath(params.get("dodoFile") or "dodo.py")
        project = os.path.dirname(dodo)
        state = noop.state_dir(project)
        stamp = os.path.join(state, noop.NAME)
        key = noop.make_key(args, params)
        if os.path.exists(stamp):
            try:
                lock.acquire(Path(state))  # as the run would: a busy project is no no-op
            except lock.LockedError:
                pass  # the real run says so
            else:
                if noop.replay(stamp, key, sys.stdout, sys.stderr):
                    return 0
            noop.discard(stamp)
        started = time.time_ns()
        report.LAST = None  # set by this run's reporter
        inputs.begin()  # from here on, every input of the plan is registered where it is read
        inputs.file(dodo)
        for config in ("pyproject.toml", "doit.cfg"):  # doit's own, read from where it started
            inputs.file(os.path.abspath(config))
        result = super().execute(params, args)
        if result == 0:
            _record(self, stamp, key, started, project, dodo)
        return result


def _record(cmd: Run, stamp: str, key: str, started: int, project: str, dodo: str) -> None:
    """The stamp of a run that executed nothing and that files alone decided."""
    from tasks.store import state

    rep = report.LAST
    control = getattr(cmd, "control", None)
    if rep is None or control is None or rep.executed or rep.failures or rep.runtime_errors:
        return
    if state.damaged_reads():
        return
    tasks = control.tasks
    files: set[str] = set()
    for name in report.visited(tasks, control.selected_tasks):
        t = tasks[name]
        if t.actions and not getattr(t, "stat_determined", False):
            return  # its check is more than files: every run must make it
        files.update(map(str, t.file_dep))
        files.update(map(str, t.targets))
    # doit's check reads each visited task's file_dep and targets (relative to dodo.py's
    # directory, the current one); the plan's own reads were registered where they happened
    noop.record(stamp, key, inputs.snapshot(), files, started, "".join(rep.said), rep.bar_summary())
