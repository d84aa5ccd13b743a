"""The source mirror: one fetch task per source file, target ``mirror/<file>``.

URL order for a source: the configured mirrors (directories, ``file://`` or HTTP, e.g. one made
by live-bootstrap's ``mirror.sh``), then the recipe's upstream URLs, then Debian's archive for
sources whose Debian ``.orig`` tarball is byte-identical (the recipe names the pool path; the
archive's base URI comes from the config or the machine's apt sources, never from this
repository), and last, for a ``git`` source, a ``git archive`` of the pinned ref made as
live-bootstrap's ``mirror.sh`` makes it. Every file is verified by sha256 before it appears
under its final name.

A fetch task is up to date while the file's stat key (size, mtime, ctime, inode) equals the one
recorded when it was last verified: a no-op run hashes nothing. After a ``touch`` (a new stat
key, the same bytes) the file's xxh3 digest, recorded when it was verified, recognises it
without a sha256 pass (the digest is the checker's, so the packages that depend on the file
reuse it). Any change to the bytes (a hand edit, bit rot noticed by a copy, a file replaced)
makes the task run, which re-verifies it by sha256 and fetches it again if its hash is wrong.

Offline (the default in the guest) nothing touches the network: only ``mirror/`` and local
mirrors are used, and a run whose sources are missing stops before any task, listing them all.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from doit.exceptions import TaskFailed

from tasks.model.config import Paths
from tasks.model.recipe import Source
from tasks.store import checker, inputs, lock, statkey, uptodate
from tasks.store.fsutil import atomic_write


@dataclass(frozen=True)
class MirrorSettings:
    mirrors: tuple[str, ...] = ()  # base URLs; plain directories become file:// URLs
    debian_archive: str | None = None  # None: read the apt sources when first needed
    offline: bool = False

    @staticmethod
    def make(
        mirrors: list[str], debian_archive: str | None, offline: bool, project: Path
    ) -> MirrorSettings:
        urls = tuple(m if "://" in m else inputs.resolve(project / m).as_uri() for m in mirrors)
        return MirrorSettings(urls, debian_archive, offline)

    def urls(self, source: Source, *, debian: str | None = None) -> list[str]:
        """Where ``source`` may be fetched from, in the order they are tried (offline: the
        local mirrors only)."""
        urls = [m.rstrip("/") + "/" + source.file for m in self.mirrors]
        urls += list(source.urls)
        archive = self.debian_archive or debian
        if source.debian and archive:
            urls.append(f"{archive.rstrip('/')}/pool/{source.debian}")
        if self.offline:
            urls = [u for u in urls if u.startswith("file://")]
        return urls


def _stat_key(path: Path) -> list[int]:
    """The verified file's stat key (a JSON list in the task's saved values)."""
    return list(statkey.of(os.stat(path)))


def fetch_source(
    source: Source, paths: Paths, settings: MirrorSettings
) -> dict[str, Any] | TaskFailed:
    """Action of ``mirror:<file>``: keep a verified copy, or fetch one. Returns (as the task's
    saved values) the stat key that marks the file verified and where it came from."""
    from tasks.sources.download import (  # requests
        FetchError,
        debian_archive_uri,
        fetch,
        sha256_file,
    )

    lock.acquire(paths.state)
    dest = paths.mirror / source.file
    notes: list[str] = []
    if dest.exists():
        got = sha256_file(dest)
        if got == source.sha256:
            return {
                "verified": _stat_key(dest),
                "sha256": source.sha256,
                "xxh3": checker.file_digest(str(dest)),
                "origin": "mirror/",
                "bytes": 0,
            }
        os.replace(dest, dest.with_name(dest.name + ".bad"))  # kept for inspection, never used
        notes.append(
            f"mirror/{source.file} had sha256 {got[:12]}..., not the pinned one: "
            f"kept as mirror/{source.file}.bad, fetched again"
        )
    paths.mirror.mkdir(parents=True, exist_ok=True)
    debian = None if settings.offline or settings.debian_archive else debian_archive_uri()
    urls = settings.urls(source, debian=debian)
    try:
        try:
            if not urls:
                raise FetchError(f"{source.file}: no local mirror has it")
            origin = fetch(urls, dest, source.sha256, notes=notes)
        except FetchError as e:
            if not source.git or settings.offline:
                raise FetchError(_offline_note(str(e), source, settings)) from None
            origin = git_snapshot(source, paths, dest)
    except FetchError as e:  # an expected failure: the message says it all, no traceback
        msg = str(e)
        if "sha256 mismatch" in msg:
            msg += "\n" + pinned_by(source, paths.recipes)
        return TaskFailed(msg)
    except OSError as e:  # the mirror directory itself: permissions, a read-only disk
        return TaskFailed(f"{source.file}: {e}")
    size = dest.stat().st_size
    return {
        "verified": _stat_key(dest),
        "sha256": source.sha256,
        "xxh3": checker.file_digest(str(dest)),
        "origin": origin,
        "bytes": size,
        "notes": notes,
    }


def pinned_by(source: Source, recipes: Path) -> str:
    """Which recipe file and field pin ``source``'s sha256 (for a mismatch message)."""
    import tomllib  # only on this failure path

    found = []
    for path in sorted(recipes.rglob("*.toml")):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue
        found += [f"{_rel(path, recipes)}: {f}" for f in _sha_fields(data, "", source.sha256)]
    if not found:
        return f"(no recipe under {recipes} pins sha256 {source.sha256})"
    return "the sha256 is pinned by " + "; ".join(found) + " (fix it there if upstream changed)"


def _rel(path: Path, recipes: Path) -> str:
    return str(Path(recipes.name) / path.relative_to(recipes))


def _sha_fields(node: Any, where: str, sha: str) -> list[str]:
    """The dotted field names under ``node`` holding ``sha256 = sha``."""
    if isinstance(node, dict):
        out = [f"{where}sha256" for k, v in node.items() if k == "sha256" and v == sha]
        for k, v in node.items():
            key = k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else f'"{k}"'
            out += _sha_fields(v, f"{where}{key}.", sha) if isinstance(v, dict | list) else []
        return out
    if isinstance(node, list):
        out = []
        for i, v in enumerate(node):
            out += _sha_fields(v, f"{where.removesuffix('.')}[{i}].", sha)
        return out
    return []


def _offline_note(message: str, source: Source, settings: MirrorSettings) -> str:
    if not settings.offline:
        return message
    online = MirrorSettings(settings.mirrors, settings.debian_archive, False).urls(source)
    where = "\n".join(f"  {u}" for u in online) or "  (no URL)"
    return (
        f"{message}\noffline: the network is not used; it can be fetched elsewhere from:\n{where}"
    )


def git_snapshot(source: Source, paths: Paths, dest: Path) -> str:
    """Make ``dest`` as ``git archive --prefix <repo>-<ref>/ <ref>`` of a clone kept under
    ``cache/git/``, compressed with ``gzip -n`` / ``xz -T1`` (reproducible, as live-bootstrap's
    ``mirror.sh``), and verify it like any download."""
    from tasks.sources.download import FetchError

    assert source.git and source.ref
    clone = paths.git / source.git.split("://", 1)[-1].strip("/")
    run = lambda *a: subprocess.run(a, capture_output=True, text=True)  # noqa: E731
    if not (clone / "HEAD").exists():
        clone.parent.mkdir(parents=True, exist_ok=True)
        r = run("git", "clone", "--bare", "--quiet", source.git, str(clone))
        if r.returncode:
            raise FetchError(f"{source.file}: git clone {source.git} failed: {r.stderr.strip()}")

    def have_ref() -> bool:
        return not run(
            "git", "-C", str(clone), "cat-file", "-e", f"{source.ref}^{{commit}}"
        ).returncode

    git_fetch = ["git", "-C", str(clone), "fetch", "--quiet"]
    if not have_ref():
        r = run(*git_fetch, "--tags", "origin", "+refs/heads/*:refs/heads/*")
        if r.returncode:
            raise FetchError(f"{source.file}: git fetch {source.git} failed: {r.stderr.strip()}")
    if not have_ref():  # a commit on no branch (a pull request's head): ask for it by name
        r = run(*git_fetch, "origin", source.ref)
        if r.returncode or not have_ref():
            raise FetchError(
                f"{source.file}: {source.ref} not found in {source.git}: {r.stderr.strip()}"
            )
    compress = {".gz": ["gzip", "-n"], ".xz": ["xz", "-T1"]}.get(dest.suffix)
    archive = [
        "git",
        "-C",
        str(clone),
        "archive",
        "--format=tar",
        f"--prefix={source.git_prefix()}/",
        source.ref,
    ]
    tar = subprocess.run(archive, capture_output=True)
    if tar.returncode:
        raise FetchError(
            f"{source.file}: git archive {source.ref} of {source.git} failed: {tar.stderr.decode().strip()}"
        )
    data = (
        subprocess.run(compress, input=tar.stdout, capture_output=True, check=True).stdout
        if compress
        else tar.stdout
    )
    got = hashlib.sha256(data).hexdigest()
    if got != source.sha256:
        raise FetchError(
            f"{source.file}: git archive of {source.git} at {source.ref}: sha256 mismatch: "
            f"expected {source.sha256}, got {got}"
        )
    atomic_write(dest, data)
    return f"git {source.git} {source.ref}"


def local_path(file_url: str) -> Path:
    return Path(unquote(urlparse(file_url).path))


class Verified:
    """uptodate: the mirror file is the one verified last time, against this sha256: the same
    stat key (no hashing), or else the same xxh3 digest (a touched file; the digest is
    memoised for the run and across runs). A recipe that pins a new sha256 re-verifies."""

    __signature__ = uptodate.SIGNATURE

    def __init__(self, path: str | os.PathLike, sha256: str):
        self.path, self.sha256 = path, sha256

    def __call__(self, task: Any, values: dict[str, Any]) -> bool:
        if values.get("sha256") != self.sha256:
            return False
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        if values.get("verified") == list(statkey.of(st)):  # older records: the digest decides
            return True
        digest = values.get("xxh3")
        return digest is not None and checker.file_digest(str(self.path), st) == digest

    def __str__(self) -> str:
        return f"{self.path} verified (sha256 {self.sha256[:12]}...) and unchanged since"


def write_sums(path: Path, sums: dict[str, str], only_in: Path | None = None) -> None:
    """``mirror/SHA256SUMS`` in the format ``sha256sum -c`` reads (sorted by file name); with
    ``only_in``, the files that are there (a file is there only once verified)."""
    if only_in is not None:
        sums = {f: h for f, h in sums.items() if (only_in / f).exists()}
    atomic_write(path, "".join(f"{sha}  {name}\n" for name, sha in sorted(sums.items())).encode())


def missing_sources(tasks: dict[str, Any], names: set[str], settings: MirrorSettings) -> list[str]:
    """Offline preflight: for the fetch tasks among ``names`` whose file is neither in
    ``mirror/`` nor in a local mirror, one report paragraph each."""
    from tasks.sources.download import debian_archive_uri

    report = []
    for name in sorted(names):
        meta = tasks[name].meta or {}
        source: Source | None = meta.get("source")
        if source is None or Path(tasks[name].targets[0]).exists():
            continue
        local = [u for u in settings.urls(source) if local_path(u).exists()]
        if local:
            continue
        debian = settings.debian_archive or debian_archive_uri()  # a file read, no network
        online = MirrorSettings(settings.mirrors, debian, False).urls(source)
        if source.git:
            online.append(f"git archive {source.ref} of {source.git}")
        tried = ", ".join(f"{m}/" for m in settings.mirrors) or "no local mirror configured"
        lines = [f"{source.file} (for {meta.get('package')}): not in mirror/ ({tried})"]
        lines += [f"    can be fetched from {u}" for u in online]
        report.append("\n".join(lines))
    return report
