"""doit's commands with this project's messages.

Registered as doit command plugins (``pyproject.toml``: the ``doit.COMMAND`` entry points
and ``[tool.doit.plugins.command]``), they replace the built-in ones of the same name. Every
one of them (``_Plain``) answers a mistake on the command line in one or two lines instead of
doit's dump of its option objects, prints its usage for ``-h``/``--help`` and ends quietly
when its reader goes away (``doit list | head``). Besides:

- ``clean`` and ``forget`` take the project lock before they print or change anything: under
  another doit's lock they refuse with one line, having said nothing else; ``clean`` prints
  no "executing 'Python: function ...'" line, only what each step's clean removed, or that
  there was nothing;
- ``info`` says whether a step would run and why, in words (``tasks/engine/explain.py``),
  exit 0; a name that is no task is said so (with close names) instead of a traceback;
- ``list`` groups the steps by platform and phase in pipeline order; its ``--status`` and
  ``info`` never call a group up to date while one of its steps would run;
- ``help STEP`` says what the step is and which commands act on it;
- ``run`` (also ``doit`` alone) refuses ``-n`` below 1 and ``-h`` prints help; it replays a
  no-op from its stamp without loading ``dodo.py`` when nothing that decided the last
  all-up-to-date run changed (``tasks/engine/noop.py``), and records the stamp after such a
  run; ``clean`` and ``forget`` delete it;
- ``status`` (new): where the pipeline to an ISO stands (``tasks.engine.status``);
- ``dumpdb`` and ``strace``, which cannot work with this project (its state backend,
  ``tasks/store/state.py``, is no dbm file; its steps are Python actions), say so.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import io
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from doit import cmd_run
from doit.action import PythonAction
from doit.cmd_base import Command
from doit.cmd_clean import Clean as DoitClean
from doit.cmd_completion import TabCompletion as DoitTabCompletion
from doit.cmd_dumpdb import DumpDB as DoitDumpDB
from doit.cmd_forget import Forget as DoitForget
from doit.cmd_help import Help as DoitHelp
from doit.cmd_ignore import Ignore as DoitIgnore
from doit.cmd_info import Info as DoitInfo
from doit.cmd_list import List as DoitList
from doit.cmd_resetdep import ResetDep as DoitResetDep
from doit.cmd_run import Run as DoitRun
from doit.cmd_strace import Strace as DoitStrace
from doit.cmdparse import CmdParseError
from doit.control import TaskControl
from doit.exceptions import BaseFail, InvalidCommand

from tasks.engine import noop, report
from tasks.engine.explain import RUN, Statuses, is_group, parts
from tasks.model.recipe import step_rank
from tasks.store import inputs, lock

HELP = ("-h", "--help")


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


_PARSE = re.compile(r"Error parsing (\w+): (.*?) \(parsing options: .*\)\. Got: .*", re.S)


def parse_error(err: CmdParseError, command: str, explicit: bool) -> InvalidCommand:
    """doit's option error (which prints every option object it knows) in one line."""
    m = _PARSE.fullmatch(str(err))
    if not m:
        return InvalidCommand(f"doit {command}: {err}")
    what, why = m.groups()
    if what == "Task":  # an option after a task name
        return InvalidCommand(
            f"doit: {why} after the task names: options go before them "
            "(`doit help <step>` says what a step is, `doit help run` lists a run's options)"
        )
    prefix = f"doit {command}" if explicit else "doit"
    return InvalidCommand(
        f"{prefix}: {why}; `doit help {command}` lists its options, `doit help` the commands"
    )


def _quiet_pipe() -> int:
    """The reader went away (``doit list | head``): no traceback, and nothing more is
    written (stdout now goes to /dev/null, so Python's final flush cannot fail either)."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0


class _Plain:
    """What every command shares: one-line option errors, ``-h``/``--help``, a closed pipe."""

    name: str
    explicit = True  # typed on the command line (``doit`` alone is ``run``)

    def __init__(self, *args: Any, cmds: Any = None, **kwargs: Any):
        self.all_cmds = cmds
        super().__init__(*args, cmds=cmds, **kwargs)  # type: ignore[call-arg]

    def parse_execute(self, in_args: list[str]) -> Any:
        try:
            if any(a in HELP for a in in_args):
                return self.show_help(in_args)
            return super().parse_execute(in_args)  # type: ignore[misc]
        except CmdParseError as e:
            raise parse_error(e, self.name, self.explicit) from None
        except BrokenPipeError:
            return _quiet_pipe()

    def show_help(self, in_args: list[str]) -> int:
        print(self.help())  # type: ignore[attr-defined]
        return 0

    def help_command(self) -> Help:
        return Help(
            task_loader=self.loader,  # type: ignore[attr-defined]
            config=self.config,  # type: ignore[attr-defined]
            bin_name=self.bin_name,  # type: ignore[attr-defined]
            cmds=self.all_cmds,
            opt_vals=self.opt_vals,  # type: ignore[attr-defined]
        )


class Clean(_Plain, DoitClean):
    """``doit clean``: lock first, then each clean action quietly; every step named says
    what it removed or that there was nothing; a clean of everything names only what it
    removed."""

    def _execute(  # doit passes the options by these names
        self,
        dryrun: bool,
        cleandep: bool,
        cleanall: bool,
        cleanforget: bool,
        pos_args: list[str] | None = None,
    ) -> Any:
        _check_names(pos_args, self.task_list)
        self.named = set(self._expand(pos_args or []))
        if not dryrun:
            _take_lock("clean", self.dep_manager.name)
            noop.discard(os.path.join(self.dep_manager.name, noop.NAME))
        return super()._execute(dryrun, cleandep, cleanall, cleanforget, pos_args=pos_args)

    def clean_tasks(self, tasks: list[Any], dryrun: bool, cleanforget: bool) -> None:
        cleaned: set[str] = set()
        by_name = {t.name: t for t in self.task_list}
        said = False
        for task in tasks:
            if task.name in cleaned:
                continue
            cleaned.add(task.name)
            text = _clean_quietly(task, dryrun)
            if task.name in self.named:
                text = text or _nothing_to_clean(task, by_name)
            elif "removed nothing" in text:
                text = ""  # one of many: only what was removed is worth a line
            self.outstream.write(text)
            said = said or bool(text)
            if cleanforget and not dryrun:
                self.dep_manager.remove(task.name)
        if not said:
            self.outstream.write("doit clean: nothing to remove\n")
        self.dep_manager.close()


def _nothing_to_clean(task: Any, tasks: dict[str, Any]) -> str:
    if is_group(task):
        steps = parts(task, tasks)
        shown = ", ".join(steps[:8]) + (", ..." if len(steps) > 8 else "")
        return (
            f"{task.name}: a group of {len(steps)} steps ({shown}); it removes nothing itself: "
            f"`doit clean -c {task.name}` cleans its steps, `doit clean <step>` one of them\n"
        )
    place = getattr(task, "place", None)
    if place is not None and place.platform == "guest" and not task.clean_actions:
        return (
            f"{task.name}: removed nothing here: it is made in the guest VM; clean it there "
            f"(`doit vm` boots the guest, then `doit clean {task.name}` in its project)\n"
        )
    return f"{task.name}: removed nothing (this step keeps no output that clean removes)\n"


def _clean_quietly(task: Any, dryrun: bool) -> str:
    """doit's ``Task.clean`` without its "executing ..." line; what the clean printed."""
    task.init_options()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        if task._remove_targets is True:
            existed = [t for t in sorted(task.targets) if os.path.lexists(t)]
            for target in existed:
                if dryrun:
                    print(f"would remove {target}")
                elif os.path.isdir(target) and not os.path.islink(target):
                    with contextlib.suppress(OSError):
                        os.rmdir(target)  # as doit's: an empty directory only
                else:
                    os.remove(target)
            gone = [t for t in existed if not os.path.lexists(t)]
            if not dryrun:
                print(f"{task.name}: removed {', '.join(gone) or 'nothing'}")
            return out.getvalue()
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
    return out.getvalue()


class Forget(_Plain, DoitForget):
    """``doit forget``: lock first, so a refusal prints nothing but itself."""

    def _execute(self, forget_sub: bool, forget_disable_default: bool, forget_all: bool) -> Any:
        _check_names(None if forget_all else self.sel_tasks, self.task_list)
        _take_lock("forget", self.dep_manager.name)
        noop.discard(os.path.join(self.dep_manager.name, noop.NAME))
        return super()._execute(forget_sub, forget_disable_default, forget_all)


def _listed(items: Any) -> list[str]:
    return [f"  - {i}" for i in items]


class Info(_Plain, DoitInfo):
    """``doit info NAME``: what the step is, whether it would run and why, what it depends
    on and makes; in words, exit 0."""

    def _execute(self, pos_args: list[str], hide_status: bool = False) -> Any:
        if len(pos_args) != 1:
            raise InvalidCommand("doit info: name one step, e.g. `doit info grep`")
        _check_names(pos_args, self.task_list)
        tasks = {t.name: t for t in self.task_list}
        task = tasks[pos_args[0]]
        lines = [describe(task)]
        if not hide_status:
            statuses = Statuses(self.dep_manager, tasks)
            status = statuses.of(task.name)
            if status == RUN:
                lines.append("status: would run, because")
                lines += _listed(statuses.reasons(task.name))
            elif status == "ignore":
                lines.append("status: ignored (`doit ignore`): a run skips it")
            else:
                lines.append("status: up to date")
        if is_group(task):
            lines.append("its steps:")
            lines += _listed(parts(task, tasks))
        else:
            if task.file_dep:
                lines.append("depends on the files:")
                lines += _listed(task.file_dep)
            if task.task_dep:
                lines.append("runs after:")
                lines += _listed(task.task_dep)
            if task.targets:
                lines.append("makes:")
                lines += _listed(task.targets)
        self.outstream.write("\n".join(lines) + "\n")
        return 0


def describe(task: Any) -> str:
    """One line: the name, where it runs (platform, procedure step, version), what it is."""
    place = getattr(task, "place", None)
    where = []
    if place is not None:
        where.append(f"a {place.platform} step")
        if place.step:
            where.append(f"procedure {place.step}")
        if place.version:
            where.append(f"version {place.version}")
    elif is_group(task):
        where.append("a group")
    head = f"{task.name} ({', '.join(where)})" if where else task.name
    return f"{head}: {_description(task)}" if task.doc else head


def _description(task: Any) -> str:
    """The task's doc without the version or step it starts with (the list shows them)."""
    doc = (task.doc or "").strip()
    place = getattr(task, "place", None)
    for lead in (place.version, place.step) if place else ():
        if lead and doc.startswith(lead + " "):
            doc = doc[len(lead) :].lstrip()
    return doc


# `doit list` sections: (platform, phase letter) -> heading
_PHASES = {
    "H": "H1-H7, prepare and run live-bootstrap",
    "V": "V1-V45, the packages and setup the toolkit needs",
    "A": "A1-A5, the Azure Linux toolkit, to the ISO",
}
_PLATFORMS = {
    "host": "host: steps on this machine (`doit host` runs them all)",
    "sandbox": "sandbox: built into cache/sandbox/root (`doit` builds them all)",
    "guest": "guest: in the guest VM (`doit guest` runs them all)",
}
_ORDER = {"host": 0, "sandbox": 1, "guest": 2}


class List(_Plain, DoitList):
    """``doit list``: the steps grouped by platform and phase, in pipeline order (doit's
    alphabetical list when names, ``--template`` or ``--sort`` are given); ``--status``
    calls a group up to date only when all its steps are."""

    def _execute(
        self,
        subtasks: bool = False,
        quiet: bool = True,
        status: bool = False,
        private: bool = False,
        list_deps: bool = False,
        template: str | None = None,
        sort: str = "name",
        pos_args: list[str] | None = None,
    ) -> Any:
        tasks = {t.name: t for t in self.task_list}
        self.statuses = Statuses(self.dep_manager, tasks)
        if pos_args or template is not None or sort != "name":
            return super()._execute(
                subtasks, quiet, status, private, list_deps, template, sort, pos_args
            )
        shown = [
            t
            for t in self.task_list
            if (subtasks or not t.subtask_of) and (private or not t.name.startswith("_"))
        ]
        index = {t.name: i for i, t in enumerate(self.task_list)}  # the plan's order
        placed = [t for t in shown if getattr(t, "place", None) is not None]
        others = sorted(t for t in shown if getattr(t, "place", None) is None)
        placed.sort(
            key=lambda t: (_ORDER.get(t.place.platform, 3), *step_rank(t.place.step), index[t.name])
        )
        width = max((len(t.name) for t in shown), default=0) + 3
        vwidth = max((len(t.place.version) for t in placed), default=0) + 2
        heading = None
        on_host = any(t.place.platform == "host" for t in placed)
        for t in placed:
            letter = t.place.step[:1]
            here = (t.place.platform, letter if letter in _PHASES else "")
            if here != heading:
                if heading is not None:
                    self.outstream.write("\n")
                title = _PLATFORMS.get(here[0], here[0])
                if here[0] == "guest" and not on_host:
                    title = "guest: this machine's steps (`doit` runs them all)"
                phase = f"; {_PHASES[here[1]]}" if here[1] else ""
                self.outstream.write(f"# {title}{phase}\n")
                heading = here
            cols = f"{t.place.step:<5}{t.place.version:<{vwidth}}"
            self._line(t, width, cols, quiet, status, list_deps, tasks)
        if others:
            if placed:
                self.outstream.write("\n# groups and tools\n")
            for t in others:
                self._line(t, width, "", quiet, status, list_deps, tasks)
        return 0

    def _line(
        self, task: Any, width: int, cols: str, quiet: bool, status: bool, deps: bool, tasks: Any
    ) -> None:
        line = f"{task.name:<{width}}"
        if not quiet:
            line += cols + _description(task)
        if status:
            line = f"{self.STATUS_MAP[self.statuses.of(task.name)]} {line}"
        self.outstream.write(line.rstrip() + "\n")
        if deps:
            for dep in task.file_dep:
                self.outstream.write(f" -  {dep}\n")
            self.outstream.write("\n")

    def _print_task(
        self, template: str, task: Any, status: bool, list_deps: bool, tasks: Any
    ) -> None:
        """doit's line, with the group-aware status."""
        data = {"name": task.name, "doc": task.doc}
        if status:
            data["status"] = self.STATUS_MAP[self.statuses.of(task.name)]
        self.outstream.write(template.format(**data))
        if list_deps:
            for dep in task.file_dep:
                self.outstream.write(f" -  {dep}\n")
            self.outstream.write("\n")


class Help(_Plain, DoitHelp):
    """``doit help``: this project's everyday commands first; ``doit help STEP`` says what
    the step is and what acts on it."""

    def show_help(self, in_args: list[str]) -> int:
        self.print_usage(self.cmds)
        return 0

    def print_usage(self, cmds: dict[str, Any]) -> None:
        print(
            "azl-bootstrap, on doit: each package and stage is a step\n\n"
            "  doit                  build every sandbox step that is out of date\n"
            "  doit STEP ...         run those steps and what they need (`doit host`, `doit guest`)\n"
            "  doit list [--status]  the steps by platform and phase (R: would run, U: up to date)\n"
            "  doit info STEP        whether a step would run, and why\n"
            "  doit clean STEP       remove what a step made (the next doit makes it again)\n"
            "  doit help STEP        what a step is\n\n"
            "Commands (`doit help COMMAND` for its options):"
        )
        for name in sorted(cmds):
            print(f"  doit {name:<14}{cmds[name].doc_purpose}")

    def _execute(self, pos_args: list[str]) -> bool:
        tasks = {t.name: t for t in self.task_list}
        name = pos_args[0]
        if name not in tasks:
            raise unknown_task(name, list(tasks))
        task = tasks[name]
        print(describe(task))
        if is_group(task):
            n = len(parts(task, tasks))
            print(f"  doit {name:<20}run its {n} steps (`doit info {name}` lists them)")
            print(f"  doit info {name:<15}which of them would run now, and why")
            print(f"  doit clean -c {name:<11}remove what its steps made")
            return True
        print(f"  doit {name:<20}run it, after the steps it needs")
        print(f"  doit info {name:<15}whether it would run now, and why")
        print(f"  doit clean {name:<14}remove what it made (the next run makes it again)")
        print(f"  doit list --deps {name:<8}the files it depends on")
        return True


class _Refused(_Plain):
    """A doit command that cannot serve this project: it says why, and what to use instead."""

    refusal = ""

    def execute(self, params: Any, args: Any) -> Any:
        raise InvalidCommand(self.refusal)


class DumpDB(_Refused, DoitDumpDB):
    """``doit dumpdb`` reads a dbm file; this project's state is no such file."""

    refusal = (
        "doit dumpdb cannot read this project's state: it is kept in cache/state/ by "
        "azl-bootstrap's own backend (tasks/store/state.py), not in a dbm file; "
        "`doit info STEP` shows what is recorded of a step and whether it would run"
    )


class Strace(_Refused, DoitStrace):
    """``doit strace`` wraps shell actions; this project's steps are Python actions."""

    refusal = (
        "doit strace cannot trace this project's steps: they are Python actions that start "
        "their commands themselves, and strace only wraps shell actions. A step's commands "
        "and their output are in cache/logs/STEP.log; run `strace -f -e trace=file doit STEP` "
        "to see the files a build opens"
    )


class Ignore(_Plain, DoitIgnore):
    """``doit ignore`` with the one-line option errors."""


class ResetDep(_Plain, DoitResetDep):
    """``doit reset-dep`` with the one-line option errors."""


class TabCompletion(_Plain, DoitTabCompletion):
    """``doit tabcompletion`` with the one-line option errors."""


class _SelectOnce(TaskControl):
    """doit 0.37's ``--single`` processes the selection twice, and the second time
    ``Task.init_options`` (options set already) answers None for the rest of the command
    line: every task but the first was dropped, so ``doit -s azurelinux go-tools`` ran the
    tree only and exited 0. The first selection stands."""

    def process(self, task_selection: Any) -> None:
        if self.selected_tasks is None or task_selection is None:
            super().process(task_selection)


class Run(_Plain, DoitRun):
    """``doit`` / ``doit run``: a no-op replayed from its stamp, else doit's run (then a
    stamp if it was a no-op that files alone decided)."""

    explicit = False  # doit does not tell `doit run -x` from `doit -x`

    def show_help(self, in_args: list[str]) -> int:
        """``doit -h``: the usage; ``doit STEP --help``: what each step is."""
        names = [a for a in in_args if not a.startswith("-") and "=" not in a]
        if not names:
            self.help_command().print_usage(self.all_cmds.to_dict())
            return 0
        for name in names:
            self.help_command().parse_execute([name])
        return 0

    def execute(self, params: Any, args: list[str]) -> Any:
        saved, cmd_run.TaskControl = cmd_run.TaskControl, _SelectOnce
        try:
            return self._run(params, args)
        finally:
            cmd_run.TaskControl = saved

    def _run(self, params: Any, args: list[str]) -> Any:
        jobs = params.get("num_process")
        if jobs is not None and jobs < 0:
            raise InvalidCommand(
                f"doit: -n {jobs}: the number of steps to run at once must be 1 or more "
                "(without -n: one at a time)"
            )
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


class Status(_Plain, Command):
    """``doit status``: the pipeline at a glance (``tasks.engine.status``); no lock taken,
    so it answers while another doit runs the pipeline."""

    name = "status"
    doc_purpose = (
        "where the pipeline to an ISO stands: each phase, the current step, elapsed, an estimate"
    )
    doc_usage = ""
    doc_description = None
    cmd_options = ()

    def execute(self, params: Any, args: list[str]) -> int:
        from tasks.engine.status import main

        sys.stdout.write(main(Path.cwd()))
        return 0
