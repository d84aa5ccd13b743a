"""What the user sees during ``doit``: one tqdm bar over the run's tasks on a terminal, quiet
plain lines otherwise (``.  pcre2`` ran, ``-- pcre2`` up to date). Build output goes to
``cache/logs/<pkg>.log``; a failure prints the package, the step, the command, the log path
and the log's last lines (``tasks.build.action``)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from doit.exceptions import InvalidTask, UnmetDependency
from doit.reporter import ConsoleReporter

from tasks.store import lock


def visited(tasks: dict[str, Any], selected: list[str]) -> set[str]:
    """The tasks a run of ``selected`` will visit."""
    seen: set[str] = set()
    todo = list(selected)
    while todo:
        name = todo.pop()
        if name in seen or name not in tasks:
            continue
        seen.add(name)
        t = tasks[name]
        todo += list(t.task_dep) + list(t.setup_tasks) + list(t.calc_dep)
    return seen


def _closure(tasks: dict[str, Any], selected: list[str]) -> set[str]:
    """The tasks with actions that a run of ``selected`` will visit."""
    return {n for n in visited(tasks, selected) if tasks[n].actions}


class Reporter(ConsoleReporter):
    """Set ``state_dir`` on a subclass (``make_reporter``): the run takes the project lock
    here, before the first task starts."""

    state_dir: Path
    preflight: Preflight | None = None
    desc = "azl-bootstrap progress: a bar on a terminal, plain lines otherwise"

    def initialize(self, tasks: dict[str, Any], selected_tasks: list[str]) -> None:
        global LAST
        LAST = self
        self.said: list[str] = []  # what it printed on stdout (tasks.engine.noop replays it)
        self.executed = 0  # tasks whose actions ran
        try:
            lock.acquire(self.state_dir)
        except lock.LockedError as e:
            raise InvalidTask(str(e)) from None
        self.counted = _closure(tasks, selected_tasks)
        self.fetched: list[tuple[str, dict[str, Any]]] = []
        self.verified: dict[str, bool] = {}  # verify:PKG -> reproducible
        problem = self.preflight(tasks, self.counted) if self.preflight else None
        if problem:
            raise InvalidTask(problem)
        tty = getattr(self.outstream, "isatty", lambda: False)() and sys.stderr.isatty()
        self.bar = None
        self.done = 0
        if tty:
            from tqdm import tqdm  # only for a terminal: a no-op in a pipe never imports it

            self.weights = bar_weights(self.state_dir, tasks, self.counted)
            # the bar counts estimated seconds (tasks.engine.durations), so its time left is
            # the steps' recorded durations, not the number of tasks left
            self.bar = tqdm(
                total=round(sum(self.weights.values())),
                unit="s",
                file=sys.stderr,
                dynamic_ncols=True,
                leave=True,
                bar_format="{l_bar}{bar}| {postfix} [{elapsed}<{remaining}]",
            )
            self._postfix("")

    def _postfix(self, name: str) -> None:
        assert self.bar is not None
        self.bar.set_postfix_str(f"{self.done}/{len(self.counted)} tasks {name}".rstrip())

    def _tick(self, task: Any, ran: bool = True) -> None:
        """One task less; a task that did not run takes its estimate off the total instead
        of counting it as done (the rate, hence the time left, stays that of real work)."""
        if self.bar is not None and task.name in self.counted:
            self.done += 1
            weight = round(self.weights.get(task.name, 0))
            if ran:
                self.bar.update(weight)
            else:
                self.bar.total = max(self.bar.total - weight, self.bar.n)
                self.bar.refresh()
            self._postfix("")

    def write(self, text: str) -> None:
        self.said.append(text)
        self.outstream.write(text)

    def execute_task(self, task: Any) -> None:
        self.executed += bool(task.actions)
        if self.bar is not None:
            if task.actions:
                self._postfix(task.name)
        else:
            super().execute_task(task)

    def add_success(self, task: Any) -> None:
        self._tick(task)
        if task.name.startswith("mirror:") and "origin" in task.values:
            self.fetched.append((task.name.removeprefix("mirror:"), task.values))
        elif task.name.startswith("verify:"):
            self.verified[task.name.removeprefix("verify:")] = True

    def skip_uptodate(self, task: Any) -> None:
        self._tick(task, ran=False)
        if self.bar is None and task.actions:  # a group task (``all``) says nothing
            super().skip_uptodate(task)

    def skip_ignore(self, task: Any) -> None:
        self._tick(task)
        self._say(f"!! {task.name} (ignored)\n")

    def add_failure(self, task: Any, fail: Any) -> None:
        self._tick(task)
        if not task.actions and isinstance(fail, UnmetDependency):
            return  # a group task (``all``, ``verify``) whose failed parts are listed already
        self.failures.append({"task": task, "exception": fail})
        self._say(f"FAILED {task.name}\n")
        if task.name.startswith("verify:"):
            self.verified[task.name.removeprefix("verify:")] = False

    def _say(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text.rstrip("\n"), file=sys.stderr)
        else:
            self.write(text)

    def complete_run(self) -> None:
        if getattr(self, "bar", None) is not None:
            self.bar.close()
        if getattr(self, "fetched", None):
            self.write(mirror_summary(self.fetched))
        for res in self.failures:
            self.write(f"#### {res['task'].name}\n{res['exception'].get_msg().rstrip()}\n")
        if getattr(self, "verified", None):
            self.write(verify_summary(self.verified))
        if self.runtime_errors:
            self.write("Execution aborted.\n" + "\n".join(self.runtime_errors) + "\n")

    def bar_summary(self) -> str:
        """What a replayed no-op shows on a terminal instead of the bar."""
        if self.bar is None:
            return ""
        return f"{len(self.counted)}/{len(self.counted)} task(s) up to date (nothing changed)\n"


def bar_weights(state_dir: Path, tasks: dict[str, Any], counted: set[str]) -> dict[str, float]:
    """Each counted task's estimated seconds (``tasks.engine.durations``: this machine's
    runs, else the seed's figures, else a guess); a task that is up to date takes no time,
    but doit only knows that when it gets there: a fetch or a group counts one second."""
    from tasks.engine import durations

    known = durations.recorded(Path(state_dir).parent)
    out = {}
    for name in counted:
        if name.startswith(("mirror:", "guest-inputs:")) or not tasks[name].actions:
            out[name] = 1.0
        else:
            out[name] = durations.estimate(name, known)[0]
    return out


LAST: Reporter | None = None  # the reporter of the last run in this process (tasks.engine.commands)


def mirror_summary(fetched: list[tuple[str, dict[str, Any]]]) -> str:
    """Files, bytes and where each came from, for the fetch tasks that ran, each followed by
    the failures its fetch recovered from (``recovered: ...``: a URL skipped, cuts resumed, a
    server that ignored Range, a damaged mirror file kept as ``.bad``)."""
    got = [(f, v) for f, v in fetched if v.get("bytes")]
    kept = len(fetched) - len(got)
    total = sum(v["bytes"] for _, v in got)
    lines = [
        f"mirror: {len(got)} file(s) fetched, {total / 2**20:.1f} MiB; {kept} re-verified in place"
    ]
    for f, v in sorted(fetched):
        if v.get("bytes"):
            lines.append(f"  {f}  {v['bytes'] / 2**20:.1f} MiB  from {v['origin']}")
        lines += [f"    recovered: {n}" for n in v.get("notes") or ()]
    return "\n".join(lines) + "\n"


def verify_summary(verified: dict[str, bool]) -> str:
    """The last line of a ``doit verify``: how many of the packages it rebuilt came out equal
    to their installed manifest, and which did not (a package whose rebuild failed to build
    counts as not reproducible; its failure is listed above)."""
    bad = sorted(p for p, same in verified.items() if not same)
    line = f"verify: {len(verified) - len(bad)} of {len(verified)} packages reproducible"
    return line + (f"; not reproducible: {', '.join(bad)}\n" if bad else "\n")


Preflight = Callable[[dict[str, Any], set[str]], "str | None"]


def make_reporter(state_dir: Path, preflight: Preflight | None = None) -> type[Reporter]:
    """A reporter class bound to this project's lock and its pre-run check (doit wants a
    class, created with the output stream and options)."""
    return type(
        "AzlReporter",
        (Reporter,),
        {"state_dir": state_dir, "preflight": staticmethod(preflight) if preflight else None},
    )
