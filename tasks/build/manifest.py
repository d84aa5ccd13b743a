"""Manifests: what a package installed, and the merge of its stage into ROOT.

A manifest (``cache/manifests/<pkg>.json``) lists every installed path relative to ROOT with
its type, mode and sha256 (files) or target (symlinks), as sorted, indented JSON. Nothing in it
depends on time or on the recipe's text, so a rebuild with byte-identical output writes a
byte-identical manifest and the packages that depend on it stay up to date (early cutoff).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

from tasks.store.fsutil import atomic_write

# Files every autotools package would claim; they are regenerated, not owned.
DROP = {"usr/share/info/dir"}


class StageError(Exception):
    """The stage holds something that cannot be installed into ROOT."""


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def scan_stage(stage: Path, root: str) -> dict[str, dict[str, Any]]:
    """Entries of a DESTDIR tree, keyed by path relative to ROOT.

    With ROOT ``/`` that is the whole stage; in the sandbox the package was configured with
    prefixes inside ROOT, so its files sit under ``stage/<ROOT>`` and anything else is an error
    (the package ignored its prefix)."""
    base = stage / root.lstrip("/") if root != "/" else stage
    outside = []
    for dirpath, dirnames, filenames in os.walk(stage):
        rel = Path(dirpath).relative_to(stage)
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = Path(dirpath, name)
            if root != "/" and not p.is_relative_to(base):
                outside.append("/" + str(rel / name))
    if outside:
        shown = ", ".join(sorted(outside)[:5])
        raise StageError(f"installed outside ROOT {root}: {shown}")
    entries: dict[str, dict[str, Any]] = {}
    if not base.exists():
        return entries
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, base)
            if rel in DROP:
                os.unlink(full)
                continue
            st = os.lstat(full)
            mode = f"{stat.S_IMODE(st.st_mode):04o}"
            if stat.S_ISLNK(st.st_mode):
                entries[rel] = {"type": "link", "target": os.readlink(full)}
            elif stat.S_ISDIR(st.st_mode):
                entries[rel] = {"type": "dir", "mode": mode}
            elif stat.S_ISREG(st.st_mode):
                entries[rel] = {"type": "file", "mode": mode, "sha256": _sha256(full)}
            else:
                raise StageError(f"unsupported file type in stage: {rel}")
    return entries


def dumps(
    package: str, version: str, entries: dict[str, dict[str, Any]], inputs: str | None = None
) -> bytes:
    doc: dict[str, Any] = {"package": package, "version": version, "files": entries}
    if inputs is not None:
        doc["inputs"] = inputs
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def write(
    path: Path,
    package: str,
    version: str,
    entries: dict[str, dict[str, Any]],
    inputs: str | None = None,
) -> None:
    """Write the manifest atomically; it is the package task's target, its commit point.
    ``inputs`` (the installed record only, ``tasks.build.adopt``) is the key of the build's inputs;
    the manifest itself never holds it, so equal output keeps dependents up to date."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, dumps(package, version, entries, inputs))


def read(path: Path) -> dict[str, dict[str, Any]]:
    """The entries of an existing manifest ({} if there is none or it is unreadable)."""
    try:
        with open(path) as f:
            return json.load(f)["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def merge(
    stage: Path, root: str, entries: dict[str, dict[str, Any]], old: dict[str, dict[str, Any]]
) -> None:
    """Install the stage into ROOT, each file replaced atomically, then remove what the
    previous build of the package installed and this one no longer does."""
    base = stage / root.lstrip("/") if root != "/" else stage
    for rel, e in entries.items():  # sorted: parents before children
        src, dst = base / rel, Path(root, rel)
        if e["type"] == "dir":
            # a directory ROOT already has keeps its mode (think /tmp); under `doit -n N`
            # another package's merge may make it between a check and the mkdir
            try:
                dst.mkdir(parents=True)
            except FileExistsError:
                if not dst.is_dir():
                    raise
            else:
                os.chmod(dst, int(e["mode"], 8))
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.is_dir() and not dst.is_symlink():
            raise StageError(f"cannot install {rel}: a directory of that name is in ROOT")
        tmp = dst.with_name(f".{dst.name}.azl-new")
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        try:
            if e["type"] == "link":
                os.symlink(e["target"], tmp)
            else:
                shutil.copyfile(src, tmp, follow_symlinks=False)
                os.chmod(tmp, int(e["mode"], 8))
        except OSError as err:  # a full disk: no half-copied file stays behind
            with contextlib.suppress(OSError):
                tmp.unlink()
            if err.errno == errno.ENOSPC:
                raise StageError(
                    f"no space left on the device of {root} to install {rel}"
                ) from None
            raise
        os.replace(tmp, dst)
    for rel in sorted(set(old) - set(entries), reverse=True):  # children before parents
        dst = Path(root, rel)
        if old[rel]["type"] == "dir":
            with contextlib.suppress(OSError):  # not empty: another package uses it
                dst.rmdir()
        elif dst.is_symlink() or dst.is_file():
            dst.unlink()
