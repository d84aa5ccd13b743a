"""live-bootstrap's distfiles, read from its own ``steps/*/sources`` files, as mirror sources.

One line of a ``steps/<step>/sources`` file (split on blanks, as ``mirror.sh``,
``download-distfiles.sh`` and ``lib/generator.py`` split it) is either

- ``<url> <sha256> [<file>]``: a download; ``<file>`` defaults to the URL's last component;
- ``git://<repo>~<ref> <url-or-_> <sha256> [<file>]``: a tarball that ``mirror.sh`` makes as
  ``git archive --prefix <repo-name>-<ref without a leading v>/ <ref>`` (``gzip -n`` /
  ``xz -T1``), or downloads from ``<url>`` unless that is ``_`` (then ``<file>`` is required).
  ``git://github.com/...`` is cloned over https, as ``mirror.sh`` does.

``rootfs.py`` (``lib/generator.py``) takes the lines of the steps that ``steps/manifest`` names
in ``build:`` lines, in manifest order, and expects each file at ``<checkout>/distfiles/<file>``;
those before the ``improve: ...network...`` line are needed before the guest has a network
("early"). ``mirror.sh`` takes every ``steps/*/sources``. The same file in several steps is one
distfile; the same name with two sha256 is an error (:class:`SourcesError`, naming both lines).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from tasks.model.recipe import Source

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class SourcesError(Exception):
    """A sources line that cannot be used; the message names file, line and field."""


@dataclass(frozen=True)
class Entry:
    step: str
    line: int  # 1-based, in steps/<step>/sources
    source: Source
    use: str = "unused"  # "early" (before the network), "build" (later), "unused" (not in manifest)

    @property
    def where(self) -> str:
        return f"steps/{self.step}/sources:{self.line}"


def parse_line(text: str, where: str) -> Source:
    """One sources line as a :class:`tasks.model.recipe.Source` (not unpacked: a distfile)."""
    words = text.split()
    git = ref = None
    if words and words[0].startswith("git://"):
        repo, sep, ref = words[0].removeprefix("git://").partition("~")
        if not sep or not ref or not repo:
            raise SourcesError(
                f"{where}: git source: expected git://<repo>~<ref>, got {words[0]!r}"
            )
        host = repo.split("/", 1)[0]
        git = f"https://{repo}" if host == "github.com" else f"git://{repo}"
        words = words[1:]
    if len(words) not in (2, 3):
        raise SourcesError(f"{where}: expected '<url> <sha256> [<file>]', got {text.strip()!r}")
    url, sha = words[0], words[1]
    if not _SHA256.match(sha):
        raise SourcesError(f"{where}: sha256: expected 64 lowercase hex digits, got {sha!r}")
    name = words[2] if len(words) == 3 else url.rstrip("/").rsplit("/", 1)[-1]
    if url == "_" and len(words) == 2:
        raise SourcesError(f"{where}: file: missing: a source without URL (_) must name its file")
    if not name or name == "_" or "/" in name or name.startswith("."):
        raise SourcesError(f"{where}: file: must be a plain file name, got {name!r}")
    if url != "_" and "://" not in url:
        raise SourcesError(f"{where}: url: expected a URL or _, got {url!r}")
    urls = () if url == "_" else (url,)
    return Source(file=name, sha256=sha, urls=urls, unpack=False, git=git, ref=ref)


def parse_sources(step: str, text: str) -> list[Entry]:
    return [
        Entry(step, n, parse_line(line, f"steps/{step}/sources:{n}"))
        for n, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]


def manifest_use(manifest: str) -> dict[str, str]:
    """Step -> "early" or "build" for every ``build:`` line of ``steps/manifest`` (the first
    use wins), as ``lib/generator.py`` reads it."""
    use: dict[str, str] = {}
    phase = "early"
    for line in manifest.splitlines():
        line = line.strip()
        if line.startswith("improve: ") and "network" in line:
            phase = "build"
        if line.startswith("build: "):
            step = line.split(" ")[1].split("#")[0].strip()
            use.setdefault(step, phase)
    return use


def entries(sources: Mapping[str, str], manifest: str) -> list[Entry]:
    """Every line of every step's sources (step -> file text), marked with its use."""
    use = manifest_use(manifest)
    return [
        replace(e, use=use.get(step, "unused"))
        for step in sorted(sources)
        for e in parse_sources(step, sources[step])
    ]


def read_checkout(checkout: Path) -> list[Entry]:
    """:func:`entries` of a live-bootstrap checkout's ``steps/``."""
    steps = checkout / "steps"
    if not (steps / "manifest").is_file():
        raise SourcesError(f"{steps / 'manifest'}: missing: not a live-bootstrap checkout")
    sources = {p.parent.name: p.read_text() for p in steps.glob("*/sources")}
    return entries(sources, (steps / "manifest").read_text())


def read_commit(gitdir: Path, commit: str) -> tuple[dict[str, str], str]:
    """``(step -> sources text, manifest text)`` of live-bootstrap at ``commit``, read from any
    git directory that has it (the commit id pins the content; no checkout needed)."""
    from tasks.sources.gitpin import git  # local: the git environment lives there

    names = git("--git-dir", gitdir, "ls-tree", "-r", "--name-only", commit, "steps").splitlines()
    sources = {}
    for name in names:
        parts = name.split("/")
        if len(parts) == 3 and parts[2] == "sources":
            sources[parts[1]] = git("--git-dir", gitdir, "cat-file", "blob", f"{commit}:{name}")
    return sources, git("--git-dir", gitdir, "cat-file", "blob", f"{commit}:steps/manifest")


def distfiles(
    items: Iterable[Entry], uses: Iterable[str] = ("early", "build", "unused")
) -> list[Entry]:
    """One entry per distinct file (the first; its use the earliest of all), among those whose
    use is in ``uses``. The same file name with two sha256 raises SourcesError naming both."""
    rank = {"early": 0, "build": 1, "unused": 2}
    first: dict[str, Entry] = {}
    for e in items:
        have = first.get(e.source.file)
        if have is None:
            first[e.source.file] = e
        elif have.source.sha256 != e.source.sha256:
            raise SourcesError(
                f"{e.source.file}: two sha256: {have.source.sha256} ({have.where}) and "
                f"{e.source.sha256} ({e.where})"
            )
        else:  # the same file again: one distfile, every URL it was named with
            urls = tuple(dict.fromkeys(have.source.urls + e.source.urls))
            use = e.use if rank[e.use] < rank[have.use] else have.use
            first[e.source.file] = replace(have, use=use, source=replace(have.source, urls=urls))
    wanted = set(uses)
    return [e for e in first.values() if e.use in wanted]
