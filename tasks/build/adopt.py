"""Adopting a build that finished but whose task state was never committed.

The manifest is a package task's target and commit point, but doit commits the task's state
(``tasks.store.state``) only after the action returns: a kill in between would leave a complete
build that the next run cannot tell from none and rebuilds in full. So the build also records
the key of its inputs (``inputs_key``) in ``cache/installed/<pkg>.json``, written after the
merge into ROOT and before the manifest. When the task runs again, the build is adopted
instead of redone if the manifest is there, lists exactly the files the installed record
lists, and the recorded key equals the key of today's inputs.

The key covers what the task's up-to-date check covers: the engine version, the platform's
and the build's normalised signatures, and the content (xxh3) of the patches, the recipe's
files, the sources and the manifests of the dependencies; not the recipe file's text.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from tasks.build import ENGINE_VERSION
from tasks.model.config import Paths
from tasks.model.platform import Platform
from tasks.model.recipe import Build
from tasks.store import checker


def input_files(build: Build, paths: Paths) -> list[Path]:
    """The files whose content the build depends on (the task's file_dep but the recipe)."""
    files = build.recipe.patch_paths() + build.recipe.file_paths()
    if not build.version.unconfirmed:
        files += [paths.mirror / s.file for s in build.version.sources]
    return files + [paths.manifest(d) for d in build.depends]


def inputs_key(build: Build, platform: Platform, paths: Paths) -> str:
    """sha256 of everything that decides what the build makes (see the module docstring)."""
    digests: dict[str, str | None] = {}
    for path in input_files(build, paths):
        try:
            digests[str(path)] = checker.file_digest(str(path))
        except OSError:
            digests[str(path)] = None  # a checkpoint dependency has no manifest
    doc = {
        "engine": ENGINE_VERSION,
        "platform": platform.signature(),
        "build": build.signature(),
        "files": digests,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def _load(path: Path) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("files"), dict) else None


def adoptable(build: Build, platform: Platform, paths: Paths) -> bool:
    """Whether the last build of ``build`` completed with today's inputs (see above)."""
    done, installed = _load(paths.manifest(build.name)), _load(paths.installed(build.name))
    if done is None or installed is None or "inputs" not in installed:
        return False
    if done["files"] != installed["files"] or not os.path.isdir(platform.root):
        return False
    return installed["inputs"] == inputs_key(build, platform, paths)
