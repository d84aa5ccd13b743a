"""The Azure Linux toolkit's own downloads, read from the pinned tree's lists.

The toolkit fetches three kinds of files itself, from its source server ``SOURCE_URL``
(``toolkit/Makefile``: ``SOURCE_URL ?= ...``):

- ``toolchain``: the raw toolchain's sources. ``create_toolchain_in_container.sh`` turns
  ``toolkit/scripts/toolchain/container/toolchain-sha256sums`` into
  ``toolchain-local-wget-list`` (``$SOURCE_URL/<file>`` for every file of the sums, the kernel
  tarball among them), ``bypass_container.sh`` runs ``wget ... || true`` on it into
  ``$LFS/sources``, fetches the kernel tarball from GitHub if it is still missing, then
  ``sha256sum -c``. ``toolchain-remote-wget-list`` (the upstream URLs) only feeds the
  toolkit's change detection; here it gives each file its upstream URL, by file name;
- ``toolchain-specs``: the sources of the SPECs the final toolchain packs
  (``srpm_pack.mk``'s ``build_toolchain_srpms.flag``: ``--pack-list`` of
  ``list_toolchain_specs.sh``, the ``build_rpm_in_chroot_no_install <spec>`` lines of
  ``build_official_toolchain_rpms.sh``, and ``msopenjdk-17``);
- ``specs``: the sources of every SPEC under ``SPECS/`` (``input-srpms`` with an empty
  ``SRPM_PACK_LIST``, as the ISO stage packs them).

A SPEC's sources are the entries of its ``<name>.signatures.json`` (file -> sha256) that its
directory does not hold: srpmpacker takes the others from the directory itself
(``localSourceDir`` is the signatures file's directory) and downloads the rest from
``$SOURCE_URL/<file>``, enforcing the signature. The same file in several lists is one
file; the same name with two sha256 is a :class:`ListError` naming both places.
"""

from __future__ import annotations

import json
import re
import subprocess
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Protocol

from tasks.model.recipe import Source
from tasks.store import inputs
from tasks.store.fsutil import atomic_write

CONTAINER = "toolkit/scripts/toolchain/container"
SUMS = f"{CONTAINER}/toolchain-sha256sums"
REMOTE_LIST = f"{CONTAINER}/toolchain-remote-wget-list"
BYPASS = f"{CONTAINER}/bypass_container.sh"
MAKEFILE = "toolkit/Makefile"
OFFICIAL = "toolkit/scripts/toolchain/build_official_toolchain_rpms.sh"
# list_toolchain_specs.sh adds it: "downloaded instead of built"
EXTRA_TOOLCHAIN_SPECS = ("msopenjdk-17",)
SETS = ("toolchain", "toolchain-specs", "specs")
FORMAT = 1  # of the cached list: bump when what is read changes
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SPEC_LINE = re.compile(r"^\s*build_rpm_in_chroot_no_install\s+([A-Za-z0-9_-]+)", re.M)
_SOURCE_URL = re.compile(r"^SOURCE_URL\s*\?=\s*(\S+)\s*$", re.M)
# bypass_container.sh: `wget ... <url> -O <file> ...` (the kernel tarball's fallback)
_WGET_O = re.compile(r"\bwget\b[^\n]*?\s(https?://\S+)\s+-O\s+(\S+)")


class ListError(Exception):
    """A list of the tree that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Item:
    """One file the toolkit downloads: the mirror source, the lists that name it, and where."""

    source: Source
    sets: tuple[str, ...]
    where: str  # "<path in the tree>[:<line>]" of its first mention


class TreeFiles(Protocol):
    """Read access to the tree at the pinned commit (a git directory, or a checkout)."""

    def read(self, path: str) -> str | None:
        """The text of ``path`` (relative to the tree's top), None if there is none."""
        ...

    def spec_files(self) -> dict[str, list[str]]:
        """``SPECS/<dir>`` -> the paths of the files under it, relative to it."""
        ...


class GitTree:
    """The tree at ``commit`` in a git directory (no checkout needed)."""

    def __init__(self, gitdir: Path, commit: str):
        self.gitdir, self.commit = gitdir, commit

    def _git(self, *args: str, data: bytes | None = None) -> bytes:
        r = subprocess.run(
            ["git", f"--git-dir={self.gitdir}", *args], input=data, capture_output=True
        )
        if r.returncode:
            raise ListError(f"git {' '.join(args)} in {self.gitdir}: {r.stderr.decode().strip()}")
        return r.stdout

    def read(self, path: str) -> str | None:
        r = subprocess.run(
            ["git", f"--git-dir={self.gitdir}", "cat-file", "blob", f"{self.commit}:{path}"],
            capture_output=True,
        )
        return None if r.returncode else r.stdout.decode("utf-8", "replace")

    def spec_files(self) -> dict[str, list[str]]:
        out = self._git("ls-tree", "-r", "--name-only", self.commit, "--", "SPECS").decode()
        dirs: dict[str, list[str]] = {}
        for name in out.splitlines():
            parts = name.split("/")
            if len(parts) >= 3:
                dirs.setdefault("/".join(parts[:2]), []).append("/".join(parts[2:]))
        return dirs

    def read_many(self, paths: list[str]) -> dict[str, str]:
        """Many blobs in one ``git cat-file --batch`` (thousands of signatures files)."""
        if not paths:
            return {}
        out = self._git(
            "cat-file", "--batch", data="".join(f"{self.commit}:{p}\n" for p in paths).encode()
        )
        found, pos = {}, 0
        for path in paths:
            end = out.index(b"\n", pos)
            header = out[pos:end].decode().split()
            pos = end + 1
            if len(header) < 3 or header[1] != "blob":
                continue
            size = int(header[2])
            found[path] = out[pos : pos + size].decode("utf-8", "replace")
            pos += size + 1
        return found


class DirTree:
    """The tree as files (a checkout, or the unpacked ``git archive`` of parts of it)."""

    def __init__(self, root: Path):
        self.root = root

    def read(self, path: str) -> str | None:
        try:
            return (self.root / path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None

    def spec_files(self) -> dict[str, list[str]]:
        specs = self.root / "SPECS"
        if not specs.is_dir():
            return {}
        return {
            f"SPECS/{d.name}": sorted(str(f.relative_to(d)) for f in d.rglob("*") if not f.is_dir())
            for d in sorted(specs.iterdir())
            if d.is_dir()
        }

    def read_many(self, paths: list[str]) -> dict[str, str]:
        return {p: t for p in paths if (t := self.read(p)) is not None}


class TarTree:
    """The tree in a snapshot tarball (``git archive`` with one top directory, as
    ``tasks.sources.gitpin.make_snapshot`` makes it), read in one pass on first use: the
    toolkit's lists and the SPECs' file names and signatures only."""

    WANTED = (SUMS, REMOTE_LIST, BYPASS, MAKEFILE, OFFICIAL)

    def __init__(self, tarball: Path):
        self.tarball = tarball
        self._texts: dict[str, str] | None = None
        self._specs: dict[str, list[str]] = {}

    def _load(self) -> dict[str, str]:
        if self._texts is None:
            texts: dict[str, str] = {}
            try:
                with tarfile.open(self.tarball, "r:*") as tar:
                    for m in tar:
                        path = m.name.split("/", 1)[1] if "/" in m.name else ""
                        parts = path.split("/")
                        if not m.isfile() or not path:
                            continue
                        if parts[0] == "SPECS" and len(parts) >= 3:
                            self._specs.setdefault("/".join(parts[:2]), []).append(
                                "/".join(parts[2:])
                            )
                        sig = len(parts) == 3 and parts[2].endswith(".signatures.json")
                        if (path in self.WANTED or (parts[0] == "SPECS" and sig)) and (
                            f := tar.extractfile(m)
                        ):
                            texts[path] = f.read().decode("utf-8", "replace")
            except (tarfile.TarError, OSError) as e:
                raise ListError(f"{self.tarball}: not a readable snapshot: {e}") from None
            self._texts = texts
        return self._texts

    def read(self, path: str) -> str | None:
        return self._load().get(path)

    def spec_files(self) -> dict[str, list[str]]:
        self._load()
        return self._specs

    def read_many(self, paths: list[str]) -> dict[str, str]:
        return {p: t for p in paths if (t := self.read(p)) is not None}


def _need(tree: TreeFiles, path: str) -> str:
    text = tree.read(path)
    if text is None:
        raise ListError(f"{path}: missing from the tree (is it the Azure Linux tree?)")
    return text


def source_url(tree: TreeFiles) -> str:
    """The toolkit's default source server (``SOURCE_URL ?=`` in ``toolkit/Makefile``)."""
    m = _SOURCE_URL.search(_need(tree, MAKEFILE))
    if not m:
        raise ListError(f"{MAKEFILE}: no `SOURCE_URL ?= <url>` line")
    return m.group(1).rstrip("/")


def toolchain_specs(tree: TreeFiles) -> list[str]:
    """The SPECs the final toolchain packs, as ``list_toolchain_specs.sh`` lists them."""
    names = set(_SPEC_LINE.findall(_need(tree, OFFICIAL))) | set(EXTRA_TOOLCHAIN_SPECS)
    return sorted(names)


def read_lists(tree: TreeFiles) -> list[Item]:
    """Every file the toolkit downloads, one :class:`Item` each, toolchain files first."""
    server = source_url(tree)
    upstream: dict[str, list[str]] = {}
    for line in _need(tree, REMOTE_LIST).splitlines():
        url = line.strip()
        if url and not url.startswith("#"):
            upstream.setdefault(url.rsplit("/", 1)[-1], []).append(url)
    for url, name in _WGET_O.findall(_need(tree, BYPASS)):
        upstream.setdefault(name, []).append(url)
    items: dict[str, Item] = {}

    def add(name: str, sha: str, where: str, kind: str) -> None:
        if not _SHA256.match(sha):
            raise ListError(f"{where}: sha256: expected 64 lowercase hex digits, got {sha!r}")
        if not name or "/" in name or name.startswith("."):
            raise ListError(f"{where}: file: must be a plain file name, got {name!r}")
        have = items.get(name)
        if have is None:
            urls = (f"{server}/{name}", *upstream.get(name, ()))
            items[name] = Item(Source(name, sha, urls, unpack=False), (kind,), where)
        elif have.source.sha256 != sha:
            raise ListError(
                f"{name}: two sha256: {have.source.sha256} ({have.where}) and {sha} ({where})"
            )
        elif kind not in have.sets:
            items[name] = replace(have, sets=(*have.sets, kind))

    for n, line in enumerate(_need(tree, SUMS).splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if len(words) != 2:
            raise ListError(f"{SUMS}:{n}: expected '<sha256>  <file>', got {line.strip()!r}")
        add(words[1], words[0], f"{SUMS}:{n}", "toolchain")
    dirs = tree.spec_files()
    wanted = set(toolchain_specs(tree))
    signatures = {
        d: sorted(f for f in files if "/" not in f and f.endswith(".signatures.json"))
        for d, files in sorted(dirs.items())
    }
    texts = tree.read_many([f"{d}/{f}" for d, names in signatures.items() for f in names])
    for d, sigs in signatures.items():
        # srpmpacker walks the signatures file's directory for local files, at any depth
        local = {f.rsplit("/", 1)[-1] for f in dirs[d]}
        for sig in sigs:
            path, spec = f"{d}/{sig}", sig.removesuffix(".signatures.json")
            try:
                table = json.loads(texts.get(path, "{}")).get("Signatures", {})
            except (ValueError, AttributeError) as e:
                raise ListError(f"{path}: not a signatures file: {e}") from None
            if not isinstance(table, dict):
                raise ListError(f"{path}: Signatures: expected a table of file -> sha256")
            for name, sha in sorted(table.items()):
                if name in local:
                    continue  # srpmpacker takes it from the SPEC's directory
                if spec in wanted:
                    add(name, str(sha).lower(), path, "toolchain-specs")
                add(name, str(sha).lower(), path, "specs")
    return list(items.values())


def with_debian(items: Iterable[Item], debian: Mapping[str, str]) -> list[Item]:
    """Each item with the Debian pool path of its byte-identical ``.orig`` (a recipe's
    ``debian`` table: file -> pool path), where one is named."""
    return [replace(i, source=replace(i.source, debian=debian.get(i.source.file))) for i in items]


def cached_lists(cache: Path, commit: str, trees: Iterable[TreeFiles]) -> list[Item] | None:
    """:func:`read_lists` of the first tree that has the lists, kept in ``cache`` by commit id
    (a commit pins them: the copy is never stale); None if no tree had them."""
    saved = inputs.file(cache / f"lists-{commit}.json")  # its presence decides the sources
    try:
        doc = json.loads(saved.read_text())
        if doc.get("format") == FORMAT:
            return [_item(r) for r in doc["items"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    for tree in trees:
        if tree.read(SUMS) is None:
            continue
        items = read_lists(tree)
        cache.mkdir(parents=True, exist_ok=True)
        doc = {"format": FORMAT, "commit": commit, "items": [asdict(i) for i in items]}
        atomic_write(saved, json.dumps(doc, indent=0).encode(), fsync=False)
        return items
    return None


def _item(row: dict) -> Item:
    src = row["source"]
    return Item(Source(**{**src, "urls": tuple(src["urls"])}), tuple(row["sets"]), row["where"])
