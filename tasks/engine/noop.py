"""The no-op fast path: a stamp of everything that decided the last all-up-to-date run.

A ``doit`` whose every task is up to date costs the interpreter, doit's imports, the recipes,
the plan, the journal and doit's run phase, only to print ``-- pkg`` lines. Like ninja and
tup, which reach the cost of ``stat`` by trusting what they stat, ``doit run``
(``tasks.engine.commands.Run``) does this:

- after a run in which no task executed, none failed, and every task the run visited decides
  up-to-dateness from files alone (its kind says so: ``STAT_DETERMINED`` in
  ``tasks/kinds/``; the loader marks the tasks of other kinds, e.g. a session step's check
  runs a command, the preflight always runs), it writes ``cache/state/noop.stamp``
  (atomically): the key of the command line and the environment the loader reads, the stat
  key (mtime_ns, ctime_ns, size, inode; ``null``: absent) of every input that decides:
  each visited task's file_dep and targets, the journal, every file and directory under
  ``recipes/``, the config file, ``dodo.py``, the engine's own modules (``tasks/**/*.py``
  and their directories), the C compilers the platform asks for its triple, live-bootstrap's
  ``/steps/bootstrap.cfg``; and what the reporter printed;
- the next ``doit`` with the same key takes the project lock, stats those paths and, if
  every key matches, prints the recorded lines and exits 0 without loading ``dodo.py``. Any
  other outcome (no stamp, another key, one path differs, a damaged stamp, the lock held)
  deletes the stamp and runs the real check.

Every change that can make a task out of date changes one of those stat keys: a build, a
``forget``, an ``ignore`` commit to the journal; ``clean`` removes targets (and deletes the
stamp itself, as ``forget`` does); an edit of a recipe, a patch, the config or the engine
changes its file. A write keeps the size and mtime only if it also keeps the ctime, which
``touch`` and ``utime`` cannot set back.

Racy stamps (git's racy-index rule): a file changed in the same clock tick as its stat keeps
its stat key. So the stamp is written only if every path's mtime and ctime are older than the
run's start by ``RACY_NS`` (two seconds on a file system with whole-second times): any change
made after doit looked at a file then gives it a newer ctime. A run right after a build
therefore often writes no stamp; the next no-op does. Files on a network file system whose
server clock runs behind this machine's by more than ``RACY_NS`` are beyond this guard.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

FORMAT = 1
NAME = "noop.stamp"
RACY_NS = 100_000_000  # file times lag the clock by at most a tick (<= 10 ms): ample margin
COARSE_RACY_NS = 2_000_000_000  # whole-second (or FAT's two-second) file times
ENV_PREFIXES = ("AZL_",)
ENV_NAMES = ("CC", "PATH")  # the compiler triple (tasks.model.platform.compiler_target)
GUEST_MARK = "/steps/bootstrap.cfg"  # tasks.model.platform.detect: the guest
COMPILERS = ("cc", "gcc")  # and $CC: what compiler_target runs

StatKey = list[int] | None


def state_dir(project: str) -> str:
    """``tasks.model.config.Paths(project).state`` without importing the config (a test checks
    they agree)."""
    return os.path.join(project, "cache", "state")


def stat_key(path: str) -> StatKey:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino]


def make_key(args: list[str], params: Mapping[str, Any], env: Mapping[str, str]) -> str:
    """The command line (task names, options as parsed, ``name=value`` variables) and what
    of the environment and the terminal the loader and the reporter read."""
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
            "env": {
                k: v for k, v in sorted(env.items()) if k.startswith(ENV_PREFIXES) or k in ENV_NAMES
            },
            "cwd": os.getcwd(),
            "uid": os.geteuid(),
            "tty": [_isatty(sys.stdout), _isatty(sys.stderr)],
            "python": [sys.executable, sys.version, doit_cmd.VERSION],
        },
        sort_keys=True,
    )


def _isatty(stream: Any) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


def replay(stamp: str, key: str, out: TextIO, err: TextIO) -> bool:
    """If ``stamp`` holds ``key`` and every recorded path has its recorded stat key, print
    what the recorded run printed and return True. Anything else: False (a damaged or
    foreign stamp is ignored, never trusted)."""
    try:
        with open(stamp, "rb") as f:
            data = json.loads(f.read())
        if data["format"] != FORMAT or data["key"] != key:
            return False
        paths, keys = data["paths"], data["stats"]
        if not (isinstance(paths, list) and isinstance(keys, list) and len(paths) == len(keys)):
            return False
        for path, recorded in zip(paths, keys, strict=True):
            if not isinstance(path, str) or stat_key(path) != recorded:
                return False
        text, bar = data["out"], data["bar"]
        if not isinstance(text, str) or not isinstance(bar, str):
            return False
    except (OSError, ValueError, KeyError, TypeError):
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
    stamp: str, key: str, paths: Iterable[str], started_ns: int, out: str, bar: str = ""
) -> bool:
    """Write the stamp for ``paths`` as they are now, unless one of them changed too close
    to ``started_ns`` (the run's start) to be trusted; whether it was written."""
    from tasks.store.fsutil import atomic_write

    ordered = sorted(set(paths))
    keys = [stat_key(p) for p in ordered]
    for k in keys:
        if k is None:
            continue
        racy = COARSE_RACY_NS if k[0] % 1_000_000_000 == 0 == k[1] % 1_000_000_000 else RACY_NS
        if max(k[0], k[1]) >= started_ns - racy:
            return False
    data = {"format": FORMAT, "key": key, "paths": ordered, "stats": keys, "out": out, "bar": bar}
    os.makedirs(os.path.dirname(stamp), exist_ok=True)
    atomic_write(stamp, json.dumps(data).encode(), fsync=False)  # lost: a real check
    return True


def project_inputs(project: str, dodo: str) -> list[str]:
    """The paths besides the tasks' files whose stat decides a no-op: the journal (and the
    per-task state of older versions), recipes/ whole, the config file, dodo.py, the
    engine's modules, the guest's mark and the C compilers."""
    from tasks.store import recipecache

    state = state_dir(project)
    recipes = os.path.join(project, "recipes")
    out = [
        os.path.join(state, "journal"),
        os.path.join(state, "tasks"),
        recipes,
        os.path.join(project, "azl-bootstrap.toml"),
        dodo,
        GUEST_MARK,
    ]
    with contextlib.suppress(OSError):
        out += [os.path.join(recipes, rel) for rel in recipecache.scan(recipecache.Path(recipes))]
    engine = str(recipecache.ENGINE)
    for top, dirs, files in os.walk(engine):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        out.append(top)
        out += [os.path.join(top, f) for f in files if f.endswith(".py")]
    path_dirs = os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
    for cc in (os.environ.get("CC"), *COMPILERS):
        if cc:
            out += [cc] if "/" in cc else [os.path.join(d, cc) for d in path_dirs if d]
    return out
