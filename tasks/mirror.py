"""The source mirror: one fetch task per source file, target ``mirror/<file>``.

URL order for a source: the configured mirrors, then the recipe's upstream URLs, then Debian's
archive for sources whose Debian ``.orig`` tarball is byte-identical (the recipe names the pool
path; the archive's base URI comes from the config or the machine's apt sources, never from
this repository). Every file is verified by sha256 before it appears under its final name.

A fetch task is up to date while the file's stat key (size, mtime, ctime, inode) equals the one
recorded when it was last verified: a no-op run hashes nothing. Any change to the file (a hand
edit, a copy over it) makes the task run, which re-verifies the file and fetches it again if
its hash is wrong.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tasks import lock
from tasks.config import Config, Paths
from tasks.download import debian_archive_uri, fetch, sha256_file
from tasks.recipe import Source


def source_urls(source: Source, config: Config, debian: str | None) -> list[str]:
    """Where ``source`` may be fetched from, in the order they are tried."""
    urls = [m.rstrip("/") + "/" + source.file for m in config.mirrors]
    urls += list(source.urls)
    if source.debian and debian:
        urls.append(f"{debian.rstrip('/')}/pool/{source.debian}")
    return urls


def _stat_key(path: Path) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def fetch_source(source: Source, paths: Paths, config: Config) -> dict[str, Any]:
    """Action of ``mirror:<file>``: keep a verified copy, or fetch one. Returns the stat key
    that marks the file as verified (saved by doit as the task's value)."""
    lock.acquire(paths.state)
    dest = paths.mirror / source.file
    if dest.exists() and sha256_file(dest) == source.sha256:
        return {"verified": _stat_key(dest)}
    paths.mirror.mkdir(parents=True, exist_ok=True)
    debian = config.debian_archive or debian_archive_uri()
    fetch(source_urls(source, config, debian), dest, source.sha256)
    return {"verified": _stat_key(dest)}


class Verified:
    """uptodate: the mirror file is the one verified last time (stat only, no hashing)."""

    def __init__(self, path: Path, sha256: str):
        self.path, self.sha256 = path, sha256

    def __call__(self, task: Any, values: dict[str, Any]) -> bool:
        try:
            return values.get("verified") == _stat_key(self.path)
        except OSError:
            return False

    def __str__(self) -> str:
        return f"{self.path} verified (sha256 {self.sha256[:12]}...) and unchanged since"
