"""A live-bootstrap checkout at the pinned commit, with its submodules at the commits it
records, made from local bare mirrors (plain git; no network).

Mirrors are ``<dir>/<owner>+<name>/repo`` in the directories of ``AZL_GIT_MIRRORS``
(colon-separated) or a ``.mirror`` directory in a parent of this checkout. A submodule whose
repository is not mirrored (stage0-posix's non-x86 architectures) stays an empty directory,
as after a partial ``git submodule update``: live-bootstrap's x86 run does not read them.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

LB_COMMIT = "1296c44bb345ef5d54ecffd7688f9813d46a032a"


def mirror_dirs() -> list[Path]:
    env = os.environ.get("AZL_GIT_MIRRORS")
    if env:
        return [Path(p) for p in env.split(":") if p]
    for parent in Path(__file__).resolve().parents:
        if (parent / ".mirror").is_dir():
            return [parent / ".mirror"]
    return []


def find_mirror(url: str) -> Path | None:
    """The bare repository mirroring ``url`` (by owner+name, else by a unique name)."""
    parts = url.rstrip("/").removesuffix(".git").split("/")
    owner, name = parts[-2], parts[-1]
    for d in mirror_dirs():
        exact = d / f"{owner}+{name}" / "repo"
        if exact.is_dir():
            return exact
        by_name = list(d.glob(f"*+{name}/repo"))
        if len(by_name) == 1:
            return by_name[0]
    return None


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def checkout(src: Path, dst: Path, commit: str) -> None:
    """Clone ``src`` at ``commit`` into ``dst``, then its submodules, recursively."""
    _git("clone", "-q", "--shared", "--no-checkout", str(src), str(dst))
    _git("-C", str(dst), "checkout", "-q", "--detach", commit)
    modules = dst / ".gitmodules"
    if not modules.exists():
        return
    subs: dict[str, dict[str, str]] = {}
    for line in _git(
        "config", "-f", str(modules), "--get-regexp", r"submodule\..*\.(path|url)"
    ).splitlines():
        key, value = line.split(" ", 1)
        name, field = key.removeprefix("submodule.").rsplit(".", 1)
        subs.setdefault(name, {})[field] = value
    for sub in subs.values():
        entry = _git("-C", str(dst), "ls-tree", "HEAD", sub["path"]).split()
        mirror = find_mirror(sub["url"])
        if not entry or mirror is None:
            continue
        where = dst / sub["path"]
        if where.is_dir():
            where.rmdir()
        checkout(mirror, where, entry[2])


def live_bootstrap(dst: Path) -> bool:
    """The pinned live-bootstrap checkout at ``dst``; False when it is not mirrored here."""
    src = find_mirror("https://github.com/fosslinux/live-bootstrap")
    if src is None or find_mirror("https://github.com/oriansj/stage0-posix") is None:
        return False
    checkout(src, dst, LB_COMMIT)
    return True
