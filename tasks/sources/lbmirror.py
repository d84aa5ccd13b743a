"""live-bootstrap's distfiles through this project's mirror, laid out where ``rootfs.py`` reads
them.

The list is live-bootstrap's own (``tasks.sources.lbsources``) at the pinned commit. It is read when the
tasks are made, from any git directory that has the commit (the checkout's, or a local git
mirror), and kept in ``cache/`` by commit id (a commit id pins it: the copy is never stale).
Each distfile becomes an ordinary ``mirror:<file>`` fetch task (so resume, fallbacks, Debian
pool paths, the offline report, the summary and ``mirror/SHA256SUMS`` are the same for both
halves); ``lb-mirror`` then links each into ``<checkout>/distfiles/<file>``, where
``rootfs.py`` (``lib/generator.py``) copies them from (relative symbolic links).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path

from tasks.model.recipe import Source
from tasks.sources.gitpin import has_commit
from tasks.sources.lbsources import Entry, distfiles, entries, read_commit
from tasks.store import inputs
from tasks.store.fsutil import atomic_write


def distfile_list(
    commit: str, stores: Iterable[Path], cache: Path, debian: Mapping[str, str] = {}
) -> list[Entry] | None:
    """The distinct distfiles of live-bootstrap at ``commit`` (None if no store has it yet),
    each with the Debian pool path ``debian`` names for its file."""
    saved = inputs.file(cache / f"distfiles-{commit}.json")  # deleted: the stores decide again
    items: list[Entry] | None = None
    if saved.is_file():
        rows = json.loads(saved.read_text())
        items = [
            Entry(
                r["step"],
                r["line"],
                Source(**{**r["source"], "urls": tuple(r["source"]["urls"])}),
                r["use"],
            )
            for r in rows
        ]
    else:
        for store in stores:
            if inputs.file(store / "HEAD").exists() and has_commit(store, commit):
                items = distfiles(entries(*read_commit(store, commit)))
                rows = [asdict(e) for e in items]
                cache.mkdir(parents=True, exist_ok=True)
                atomic_write(saved, json.dumps(rows, indent=0).encode(), fsync=False)
                break
    if items is None:
        return None
    return [replace(e, source=replace(e.source, debian=debian.get(e.source.file))) for e in items]


def layout(mirror: Path, distfiles_dir: Path, files: Sequence[str]) -> dict[str, int]:
    """Make ``distfiles_dir/<file>`` a relative symbolic link to the verified ``mirror/<file>``
    for every file (``rootfs.py`` copies them with ``shutil.copy2``/``copytree``, which follow
    links). Not hard links: a new link changes the file's ctime, and the mirror's fetch tasks
    would hash every file again. Returns how many were linked and already in place."""
    distfiles_dir.mkdir(parents=True, exist_ok=True)
    counts = {"linked": 0, "in place": 0}
    for name in files:
        dest = distfiles_dir / name
        target = os.path.relpath((mirror / name).absolute(), distfiles_dir.absolute())
        if dest.is_symlink() and os.readlink(dest) == target:
            counts["in place"] += 1
            continue
        part = dest.with_name(dest.name + ".part")
        part.unlink(missing_ok=True)
        os.symlink(target, part)
        os.replace(part, dest)
        counts["linked"] += 1
    return counts
