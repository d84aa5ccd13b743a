"""Whether a task would run, and why, in words: what ``doit info`` and ``doit list --status``
print.

doit's own status of a group task (``all``, ``host``, ``mirror``: no actions, only
``task_dep``) is its ``uptodate=[True]``, so it claimed "up to date" on a fresh clone. Here a
group is up to date only when every step it groups (through nested groups) is; its reasons
name the steps that would run. A step's reasons are doit's, each said as a sentence: the
engine's uptodate objects say what they checked (``__str__``), a missing file names the
step that makes it, and no Python repr is ever printed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from doit.task import Task

RUN, UP_TO_DATE, IGNORED = "run", "up-to-date", "ignore"


def is_group(task: Task) -> bool:
    """A task that only names others (``all``, ``host``, ``mirror``)."""
    return not task.actions and bool(task.task_dep)


def parts(task: Task, tasks: Mapping[str, Task]) -> list[str]:
    """The steps a group stands for, nested groups expanded, in their order."""
    seen: set[str] = set()
    out: list[str] = []

    def walk(name: str) -> None:
        for dep in tasks[name].task_dep:
            if dep in seen or dep not in tasks:
                continue
            seen.add(dep)
            if is_group(tasks[dep]):
                walk(dep)
            else:
                out.append(dep)

    walk(task.name)
    return out


class Statuses:
    """Each task's status (``run``, ``up-to-date``, ``ignore``), asked of doit once per task."""

    def __init__(self, dep_manager: Any, tasks: Mapping[str, Task]):
        self.dep_manager, self.tasks = dep_manager, tasks
        self._status: dict[str, Any] = {}

    def doit_status(self, name: str) -> Any:
        """doit's status object of a step, with its reasons (``get_log``)."""
        if name not in self._status:
            task = self.tasks[name]
            self._status[name] = self.dep_manager.get_status(task, self.tasks, get_log=True)
        return self._status[name]

    def of(self, name: str) -> str:
        task = self.tasks[name]
        if self.dep_manager.status_is_ignore(task):
            return IGNORED
        if is_group(task):
            return RUN if self.pending(name) else UP_TO_DATE
        # doit says "error" when a file_dep is missing: the step would run once its
        # dependencies have made it, so for the user it is "would run"
        return UP_TO_DATE if self.doit_status(name).status == UP_TO_DATE else RUN

    def pending(self, group: str) -> list[str]:
        """The steps of a group that would run."""
        return [n for n in parts(self.tasks[group], self.tasks) if self.of(n) == RUN]

    def reasons(self, name: str) -> list[str]:
        """Why ``name`` would run, one sentence each ([] when it would not)."""
        task = self.tasks[name]
        if is_group(task):
            pending = self.pending(name)
            if not pending:
                return []
            total = len(parts(task, self.tasks))
            shown = ", ".join(pending[:12]) + (", ..." if len(pending) > 12 else "")
            return [f"{len(pending)} of its {total} steps would run: {shown}"]
        if self.of(name) != RUN:
            return []
        return _in_words(self.doit_status(name).reasons, self._makers())

    def _makers(self) -> dict[str, str]:
        if not hasattr(self, "_made_by"):
            self._made_by = {str(t): n for n, task in self.tasks.items() for t in task.targets}
        return self._made_by


def _check_in_words(check: Any) -> str:
    """An uptodate check that said "not up to date", as a sentence, never a repr."""
    if check is False:
        return "it runs every time (it is never up to date)"
    text = str(check)
    if type(check).__str__ is not object.__str__ and " at 0x" not in text:
        return text  # the engine's checks say what they found
    name = getattr(check, "__name__", type(check).__name__)
    if name == "config_changed":
        return "its settings changed since it last ran"
    doc = (getattr(check, "__doc__", None) or "").strip().splitlines()
    return doc[0] if doc and name != "<lambda>" else "its own check says it is out of date"


def _in_words(reasons: Mapping[str, Any], made_by: Mapping[str, str]) -> list[str]:
    out: list[str] = []
    if reasons.get("has_no_dependencies"):
        out.append("it runs every time (nothing recorded can show it is up to date)")
    for check, _args, _kwargs in reasons.get("uptodate_false") or ():
        out.append(_check_in_words(check))
    if reasons.get("checker_changed"):
        out.append("the way its files are compared changed since it last ran")

    def maker(path: str) -> str:
        return f" (made by {made_by[path]})" if path in made_by else ""

    for path in reasons.get("missing_target") or ():
        out.append(f"{path} does not exist yet (it makes it)")
    for path in reasons.get("missing_file_dep") or ():
        out.append(f"it needs {path}, which does not exist yet{maker(path)}")
    for path in reasons.get("changed_file_dep") or ():
        out.append(f"{path} changed since it last ran")
    for path in reasons.get("added_file_dep") or ():
        out.append(f"it now also depends on {path}")
    for path in reasons.get("removed_file_dep") or ():
        out.append(f"it no longer depends on {path}")
    return out or ["doit has no record of a successful run"]
