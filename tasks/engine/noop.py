"""The no-op fast path: a stamp of everything that decided the last all-up-to-date run.

A ``doit`` whose every task is up to date costs the interpreter, doit's imports, the recipes,
the plan, the journal and doit's run phase, only to print ``-- pkg`` lines. Like ninja and
tup, which reach the cost of ``stat`` by trusting what they stat, ``doit run``
(``tasks.engine.commands.Run``) does this:

- after a run in which no task executed, none failed, and every task the run visited decides
  up-to-dateness from files alone (its kind says so: ``STAT_DETERMINED`` in
  ``tasks/kinds/``; the loader marks the tasks of other kinds, e.g. a session step's check
  runs a command, the preflight always runs), it writes ``cache/state/noop.stamp``
  (atomically): the key of the command line, the engine and the terminal; and every input
  the plan was made from, as ``tasks.store.inputs`` registered it where it was read (files
  and directory listings by stat key, environment variables by value, each entry a path
  resolution walked by its kind: ``dodo.py``, doit's config files, the journal, ``recipes/``
  whole, the config, the engine's modules, ROOT and its links, the git mirror directories,
  live-bootstrap's ``/steps`` files, the C compiler, ...); each visited task's file_dep and
  targets (what doit's check reads); and what the reporter printed;
- the next ``doit`` with the same key takes the project lock, compares those inputs and, if
  every one matches, prints the recorded lines and exits 0 without loading ``dodo.py``. Any
  other outcome (no stamp, another key, one input differs, a damaged stamp, the lock held)
  deletes the stamp and runs the real check.

Nothing is keyed because someone remembered it: an input is in the stamp because the plan
read it. ``tests/test_noop_property.py`` drives random sequences of what users do through
``doit`` and compares each replay with the real check.

Racy stamps: a file changed in the same clock tick as its stat keeps its stat key. So the
stamp is written only if no stat key is racy (``tasks.store.statkey.racy``) against the
run's start: any change made after doit looked at a file then gives it a newer ctime. A run
right after a build therefore often writes no stamp; the next no-op does. Files on a network
file system whose server clock runs behind this machine's by more than the racy window are
beyond this guard.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from tasks.store import inputs, statkey

FORMAT = 2  # 2: the inputs as tasks.store.inputs registered them
NAME = "noop.stamp"


def state_dir(project: str) -> str:
    """``tasks.model.config.Paths(project).state`` without importing the config (a test checks
    they agree)."""
    return os.path.join(project, "cache", "state")


def make_key(args: list[str], params: Mapping[str, Any]) -> str:
    """The command line (task names, options as parsed, ``name=value`` variables), the
    engine this process runs (another checkout is another engine) and what of the terminal
    the reporter reads."""
    from doit import doit_cmd

    def plain(v: Any) -> Any:
        if v is None or isinstance(v, str | int | float | bool):
            return v
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        return type(v).__name__

    return json.dumps(
        {
            "args": list(args),
            "params": {k: plain(params[k]) for k in sorted(params)},
            "vars": dict(sorted((doit_cmd._CMDLINE_VARS or {}).items())),
            "cwd": os.getcwd(),
            "uid": os.geteuid(),
            "tty": [_isatty(sys.stdout), _isatty(sys.stderr)],
            "python": [sys.executable, sys.version, doit_cmd.VERSION],
            "engine": str(inputs.ENGINE),
        },
        sort_keys=True,
    )


def _isatty(stream: Any) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


def _key(path: str) -> list[int] | None:
    key = statkey.of_path(path)
    return None if key is None else list(key)


def replay(stamp: str, key: str, out: TextIO, err: TextIO) -> bool:
    """If ``stamp`` holds ``key`` and every recorded input is as recorded, print what the
    recorded run printed and return True. Anything else: False (a damaged or foreign stamp
    is ignored, never trusted)."""
    try:
        with open(stamp, "rb") as f:
            data = json.loads(f.read())
        if data["format"] != FORMAT or data["key"] != key:
            return False
        env, links, paths, keys = data["env"], data["links"], data["paths"], data["stats"]
        if not (isinstance(paths, list) and isinstance(keys, list) and len(paths) == len(keys)):
            return False
        for name, value in env.items():
            if os.environ.get(name) != value:
                return False
        for path, kind in links.items():
            if inputs.entry_kind(path) != kind:
                return False
        for path, recorded in zip(paths, keys, strict=True):
            if not isinstance(path, str) or _key(path) != recorded:
                return False
        text, bar = data["out"], data["bar"]
        if not isinstance(text, str) or not isinstance(bar, str):
            return False
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    out.write(text)
    out.flush()
    if bar:
        err.write(bar)
        err.flush()
    return True


def discard(stamp: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(stamp)


def record(
    stamp: str,
    key: str,
    read: inputs.Snapshot,
    files: Iterable[str],
    started_ns: int,
    out: str,
    bar: str = "",
) -> bool:
    """Write the stamp for the inputs ``read`` and the tasks' ``files`` as they are now,
    unless one of them changed too close to ``started_ns`` (the run's start) to be trusted,
    or an entry a resolution walked is no longer what it saw; whether it was written."""
    from tasks.store.fsutil import atomic_write

    ordered = sorted(set(read.files).union(map(os.path.abspath, files)))
    keys = [_key(p) for p in ordered]
    if any(statkey.racy(k, started_ns) for k in keys):
        return False
    if any(inputs.entry_kind(p) != kind for p, kind in read.links.items()):
        return False  # changed since the plan resolved through it
    data = {
        "format": FORMAT,
        "key": key,
        "env": read.env,
        "links": read.links,
        "paths": ordered,
        "stats": keys,
        "out": out,
        "bar": bar,
    }
    os.makedirs(os.path.dirname(stamp), exist_ok=True)
    atomic_write(stamp, json.dumps(data).encode(), fsync=False)  # lost: a real check
    return True
