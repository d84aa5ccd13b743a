"""What the plan was made from: every input read while the plan is made, registered where it
is read.

The no-op stamp (``tasks.engine.noop``) replays "up to date" while nothing that decided the
last all-up-to-date run changed. It can only be as sound as its list of such inputs, so that
list is not kept by hand: each read that can decide the plan (which tasks exist, their
file_dep, targets, signatures and checks) goes through this module, which returns what was
read and remembers it:

- ``file(path)``: a file whose content is read, or whose existence is asked (its stat key,
  ``None`` while absent); ``listing(dir)``: a directory whose entries are listed or globbed
  (its stat key: adding, removing or renaming an entry changes its mtime);
- ``env(name)``: an environment variable (its value, ``None`` while unset);
- ``resolve(path)``: a path resolved through symbolic links (``Path.resolve``): the kind of
  every entry the resolution walked (a directory, a file, absent, or a link and its target),
  so a directory moved behind a link, or a link pointed elsewhere, is seen.

``begin()`` empties the register (``doit run`` calls it before it loads ``dodo.py``);
``snapshot()`` is what was read since. A read that can change nothing the plan decides is not
registered: caches whose every entry is checked against its source (``recipes.cache``,
``digests.json``), free memory and cores (``JOBS``, in no signature), the clock.
``tests/test_inputs.py`` runs the plan under an audit hook and fails for any file opened,
directory listed or variable read that is not registered here.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from tasks.store import statkey

P = TypeVar("P", str, Path)
ENGINE = Path(__file__).resolve().parent.parent  # the tasks package this process imported
_MAX_LINKS = 40  # as the kernel's ELOOP limit

_files: dict[str, None] = {}  # an ordered set of absolute paths (stat key decides)
_links: dict[str, str] = {}  # absolute path -> its kind as the resolution saw it
_env: dict[str, str | None] = {}


@dataclass
class Snapshot:
    files: list[str] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)
    env: dict[str, str | None] = field(default_factory=dict)


def begin() -> None:
    """Forget what was registered: a new plan is about to be made."""
    _files.clear()
    _links.clear()
    _env.clear()


def snapshot() -> Snapshot:
    """Everything registered since ``begin``."""
    return Snapshot(list(_files), dict(_links), dict(_env))


def file(path: P) -> P:
    """Register ``path`` (a file read, or asked whether it exists); returns it."""
    _files[os.path.abspath(path)] = None
    return path


listing = file  # a directory whose entries decide: its stat key changes with every entry


def engine_files() -> dict[str, statkey.Key]:
    """The engine's own modules (``tasks/**/*.py`` of the package this process imported) and
    their directories, with their stat keys; registered (a new or edited module)."""
    found: dict[str, statkey.Key] = {}
    for top, dirs, files in os.walk(ENGINE):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for path in [top, *(os.path.join(top, f) for f in sorted(files) if f.endswith(".py"))]:
            key = statkey.of_path(file(path))
            if key is not None:
                found[path] = key
    return found


def env(name: str, default: str | None = None) -> str | None:
    """``os.environ.get(name, default)``, registered."""
    value = os.environ.get(name)
    _env[name] = value
    return default if value is None else value


def which(command: str) -> str | None:
    """The program ``command`` names, as ``subprocess`` would find it on ``PATH`` (a name
    with a slash: itself); every place looked at is registered, and ``PATH``."""
    if "/" in command:
        return file(command) if os.access(command, os.X_OK) else None
    for d in (env("PATH") or os.defpath).split(os.pathsep):
        path = file(os.path.join(d or ".", command))
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def entry_kind(path: str) -> str:
    """What resolution sees at ``path``: ``absent``, ``dir``, ``file`` (anything else that is
    not a link) or ``link:<target>``."""
    try:
        st = os.lstat(path)
    except OSError:
        return "absent"
    if stat.S_ISLNK(st.st_mode):
        try:
            return "link:" + os.readlink(path)
        except OSError:
            return "absent"
    return "dir" if stat.S_ISDIR(st.st_mode) else "file"


def resolve(path: Path) -> Path:
    """``path.resolve()``, registering the kind of every entry the resolution looks at."""
    todo = os.path.abspath(path).split("/")[1:]
    here, links = "/", 0
    while todo:
        name = todo.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            here = os.path.dirname(here)
            continue
        nxt = os.path.join(here, name)
        kind = _links.setdefault(nxt, entry_kind(nxt))
        if kind.startswith("link:") and links < _MAX_LINKS:
            links += 1
            target = kind[5:]
            todo = target.split("/") + todo
            if target.startswith("/"):
                here = "/"
        else:
            here = nxt
    return path.resolve()
