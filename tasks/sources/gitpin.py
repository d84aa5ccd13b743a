"""A git commit id is a content pin: check out exactly that commit, with its submodules at the
commits it records, from wherever the objects can be had, and prove it.

A :class:`Pin` names a repository URL, a commit id, the commit's tree id, optionally the ref that
reaches it (``refs/pull/469/head``: fetched, never checked out) and the submodule commits the
commit records (checked against its gitlinks). :func:`checkout` builds ``<dest>.part`` and renames
it to ``dest`` only once every commit is verified, so ``dest`` is always whole. Sources are tried
in this order, for the top repository and for each submodule (recursively):

1. local mirror directories (``mirrors``): a bare repository ``<owner>+<name>/repo``,
   ``<owner>+<name>.git`` or ``<name>.git``, a bundle ``<owner>+<name>.bundle`` /
   ``<name>.bundle``, any ``*+<name>/repo`` (the commit id decides, not the name);
2. the URL itself (``git fetch`` of the commit, then of ``ref``, then of all branches and tags;
   skipped when ``network`` is false, unless the URL is a local path);
3. a snapshot tarball ``<name>-<commit>.tar[.gz|.xz]`` in a mirror directory: verified by
   re-creating its git tree id (:func:`snapshot_tree`); the checkout then has no ``.git``.

Verification: the commit exists, ``<commit>^{tree}`` equals the pinned tree, each pinned submodule
path is a gitlink to the pinned commit. A moving branch is only ever a way to get objects:
``HEAD`` is detached at the commit id. A checkout's work tree holds the blobs' exact bytes:
``.git/info/attributes`` switches off eol conversion, filters and ident for it.

Submodules are laid out as ``git submodule update --init --recursive`` lays them out (git dirs in
``.git/modules/<name>``, a ``.git`` file in the submodule's path) but with relative paths only, so
the rename of ``.part`` keeps them valid. ``skip`` lists submodule paths (``a/b`` for a nested
one) left uninitialised (e.g. other architectures' stage0 trees).

Every git command runs with a fixed environment (:data:`GIT_ENV`): no system or global config, no
credential prompts, no inherited ``GIT_*`` variables, C locale.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.store import inputs
from tasks.store.fsutil import atomic_write

# What git sees: nothing of the caller's git configuration or environment.
GIT_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "LC_", "LANG"))} | {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_ASKPASS": "true",
    "SSH_ASKPASS": "true",
    "GIT_SSH_COMMAND": "ssh -oBatchMode=yes",
    "GIT_AUTHOR_NAME": "azl-bootstrap",
    "GIT_AUTHOR_EMAIL": "azl-bootstrap@localhost",
    "GIT_COMMITTER_NAME": "azl-bootstrap",
    "GIT_COMMITTER_EMAIL": "azl-bootstrap@localhost",
    "LC_ALL": "C",
}
# Exact bytes in work trees and scratch indexes: no eol conversion, no filters, no $Id$.
RAW_ATTRIBUTES = "* -text -filter -ident -working-tree-encoding\n"
ZERO_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"  # git's empty tree
TARBALL_SUFFIXES = (".tar.gz", ".tar.xz", ".tar")


class PinError(Exception):
    """A pinned commit could not be had or is not what the pin says; the message names what was
    expected, what was found and where."""


@dataclass(frozen=True)
class Pin:
    url: str
    commit: str
    tree: str | None = None  # None only for a submodule, whose commit id pins it
    ref: str | None = None  # a ref that reaches the commit: fetched, never checked out
    submodules: Mapping[str, str] = field(default_factory=dict)  # path -> recorded commit
    skip: tuple[str, ...] = ()  # submodule paths (nested: "a/b") left uninitialised
    name: str = ""  # for messages; default: the repository's name

    @property
    def label(self) -> str:
        return self.name or repo_name(self.url)


def git(*args: str | os.PathLike, cwd: str | os.PathLike | None = None, **kw: Any) -> str:
    """Run git in :data:`GIT_ENV`; its stdout, stripped. Raises PinError with stderr on failure."""
    r = subprocess.run(
        ["git", *map(str, args)], cwd=cwd, env=kw.pop("env", GIT_ENV), capture_output=True, **kw
    )
    if r.returncode:
        err = r.stderr.decode(errors="replace") if isinstance(r.stderr, bytes) else r.stderr
        raise PinError(f"git {' '.join(map(str, args))}: {err.strip() or f'exit {r.returncode}'}")
    out = r.stdout.decode(errors="replace") if isinstance(r.stdout, bytes) else r.stdout
    return out.strip()


def repo_name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")


def _owner(url: str) -> str:
    parts = url.rstrip("/").replace(":", "/").split("/")
    return parts[-2] if len(parts) >= 2 else ""


def local_sources(url: str, mirrors: Iterable[Path]) -> list[Path]:
    """Bare repositories and bundles for ``url`` in the mirror directories, best first."""
    name, owner = repo_name(url), _owner(url)
    found: list[Path] = []
    for d in map(Path, mirrors):
        inputs.listing(d)  # an entry added or removed (the globs below)
        for sub in d.glob(f"*+{name}"):
            inputs.file(sub / "repo")  # a repository put into an existing owner+name/
        exact = [d / f"{owner}+{name}" / "repo", d / f"{owner}+{name}.git", d / f"{name}.git"]
        bundles = [d / f"{owner}+{name}.bundle", d / f"{name}.bundle"]
        others = sorted(d.glob(f"*+{name}/repo")) + sorted(d.glob(f"*+{name}.bundle"))
        found += [p for p in exact + bundles + others if p.exists() and p not in found]
    return found


def snapshot_tarballs(url: str, commit: str, mirrors: Iterable[Path]) -> list[Path]:
    name = repo_name(url)
    return [
        d / f"{stem}{suffix}"
        for d in map(Path, mirrors)
        for stem in (f"{_owner(url)}+{name}-{commit}", f"{name}-{commit}")
        for suffix in TARBALL_SUFFIXES
        if inputs.file(d / f"{stem}{suffix}").is_file()
    ]


def _is_local(url: str) -> bool:
    return url.startswith(("/", "file://", "./", "../")) or Path(url).exists()


def has_commit(gitdir: Path, commit: str) -> bool:
    """Whether the repository ``gitdir`` holds ``commit``. Where the object could be (or
    come to be) is an input of the plan: the loose object's directory, the packs, the
    alternates; so a fetch into the repository, a repack or a prune is seen."""
    objects = Path(gitdir) / "objects"
    for where in (objects / commit[:2], objects / "pack", objects / "info" / "alternates"):
        inputs.file(where)
    r = subprocess.run(
        ["git", f"--git-dir={gitdir}", "cat-file", "-e", f"{commit}^{{commit}}"],
        env=GIT_ENV,
        capture_output=True,
    )
    return r.returncode == 0


def fetch_commit(gitdir: Path, source: str, commit: str, ref: str | None) -> None:
    """Bring ``commit`` into ``gitdir`` from ``source`` (a URL, bare repository or bundle): the
    commit itself (shallow), else ``ref``, else every branch and tag. PinError if absent."""
    fetch = ["--git-dir", gitdir, "fetch", "--quiet", "--no-tags", "--no-write-fetch-head"]
    tries: list[list[str]] = []
    if source.endswith(".bundle"):
        tries.append([source, "+refs/*:refs/azl-pin/bundle/*"])
    else:
        tries.append(["--depth=1", source, commit])
        if ref:
            tries.append([source, f"+{ref}:refs/azl-pin/ref"])
        tries.append(
            [source, "+refs/heads/*:refs/azl-pin/heads/*", "+refs/tags/*:refs/azl-pin/tags/*"]
        )
    errors = []
    for extra in tries:
        try:
            git(*fetch, *extra)
        except PinError as e:
            errors.append(str(e))
        if has_commit(gitdir, commit):
            return
    why = "; ".join(errors) or "fetched, but the commit is not among its objects"
    if list(Path(source, "objects", "pack").glob("*.promisor")):
        why += " (it is a partial clone: the objects it filtered out cannot be served from it)"
    raise PinError(
        f"commit {commit} not found in {source}" + (f" (ref {ref})" if ref else "") + f": {why}"
    )


def gitlinks(gitdir: Path, commit: str) -> dict[str, str]:
    """Submodule path -> commit, as recorded in ``commit``'s tree."""
    out = git("--git-dir", gitdir, "ls-tree", "-r", "-z", commit)
    links = {}
    for entry in filter(None, out.split("\0")):
        meta, _, path = entry.partition("\t")
        mode, _, oid = meta.split(" ")
        if mode == "160000":
            links[path] = oid
    return links


def submodule_urls(gitdir: Path, commit: str) -> dict[str, tuple[str, str]]:
    """Submodule path -> (name, url) from ``commit:.gitmodules`` (empty if it has none)."""
    try:
        out = git(
            "--git-dir", gitdir, "config", "--blob", f"{commit}:.gitmodules", "-z", "--get-regexp",
            r"^submodule\..*\.(path|url)$",
        )  # fmt: skip
    except PinError:
        return {}
    return _parse_modules(out)


def _parse_modules(out: str) -> dict[str, tuple[str, str]]:
    names: dict[str, dict[str, str]] = {}
    for item in filter(None, out.split("\0")):
        key, _, value = item.partition("\n")
        name, _, what = key.removeprefix("submodule.").rpartition(".")
        names.setdefault(name, {})[what] = value
    return {v["path"]: (n, v.get("url", "")) for n, v in names.items() if "path" in v}


def submodule_urls_file(path: Path) -> dict[str, tuple[str, str]]:
    """Like :func:`submodule_urls`, from a ``.gitmodules`` file (a snapshot's)."""
    if not path.is_file():
        return {}
    out = git("config", "--file", path, "-z", "--get-regexp", r"^submodule\..*\.(path|url)$")
    return _parse_modules(out)


def resolve_url(base: str, url: str) -> str:
    """A submodule URL relative to its superproject's (``../x``), made absolute."""
    if not url.startswith(("./", "../")):
        return url
    parts = base.rstrip("/").split("/")
    for piece in url.split("/"):
        if piece == "..":
            parts.pop()
        elif piece not in (".", ""):
            parts.append(piece)
    return "/".join(parts)


@dataclass
class _Job:
    mirrors: list[Path]
    network: bool
    missing: list[str] = field(default_factory=list)  # repositories that could not be had


MIRROR_OPTIONS = (
    "Put a bare repository (<owner>+<name>.git, <name>.git) or a bundle (<name>.bundle) of each "
    "into a local git mirror: the project's mirror/, a directory named in `mirrors` of "
    "azl-bootstrap.toml, or one of AZL_GIT_MIRRORS (colon-separated directories)"
)


def _why_not(pin: Pin, tried: list[str], network: bool) -> str:
    """Why a repository could not be had: each local mirror's answer, and the URL's in a
    few words (an unreachable host is said once, not as git's three fetch errors)."""
    local = [t for t in tried if f" not found in {pin.url}" not in t]
    remote = " ".join(t for t in tried if t not in local)
    if not network and not _is_local(pin.url):
        local.append("the network is off (the URL was not tried)")
    elif any(w in remote for w in ("Could not resolve host", "unable to access", "Failed to co")):
        local.append(f"{pin.url} cannot be reached (no network?)")
    elif remote:
        local.append(f"not found in {pin.url}")
    if len(local) == 1 and not tried:
        local.insert(0, "no local mirror has it")
    return "\n    ".join(local)


def missing_error(pin: Pin, missing: list[str], mirrors: Sequence[Path]) -> PinError:
    """Every repository of ``pin`` that could not be had, and where to put them."""
    looked = ", ".join(str(m) for m in mirrors) or "none exists"
    return PinError(
        f"{pin.label}: {len(missing)} repositor{'y' if len(missing) == 1 else 'ies'} of the "
        f"pinned checkout {'is' if len(missing) == 1 else 'are'} in no local git mirror:\n  "
        + "\n  ".join(missing)
        + f"\n{MIRROR_OPTIONS}; local mirrors looked in: {looked}."
    )


def checkout(
    pin: Pin, dest: Path, *, mirrors: Sequence[Path] = (), network: bool = True
) -> dict[str, Any]:
    """Make ``dest`` the pinned checkout (built in ``<dest>.part``, renamed when verified; an
    existing ``dest`` is replaced only then). Returns the record: every repository's URL, commit,
    tree and where its objects came from. PinError names what failed."""
    dest = Path(dest).absolute()  # git runs in several directories
    part = dest.with_name(dest.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    job = _Job([Path(m).absolute() for m in mirrors], network)
    try:
        record = _populate(job, pin, part, part / ".git", pin.label, "")
        if job.missing:  # every missing repository at once, not one per run
            raise missing_error(pin, job.missing, job.mirrors)
    except BaseException:
        shutil.rmtree(part, ignore_errors=True)  # nothing half-made is left behind
        raise
    record["ref"] = pin.ref
    old = dest.with_name(dest.name + ".old")
    if dest.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
    os.replace(part, dest)
    shutil.rmtree(old, ignore_errors=True)
    return record


def _populate(job: _Job, pin: Pin, work: Path, gitdir: Path, label: str, at: str) -> dict[str, Any]:
    """Fill ``work`` with ``pin`` (its git dir at ``gitdir``), submodules recursively; ``at`` is
    its path from the top (for ``skip``)."""
    gitdir.mkdir(parents=True, exist_ok=True)
    git("init", "--quiet", "--bare", gitdir)
    git("--git-dir", gitdir, "config", "core.bare", "false")
    git("--git-dir", gitdir, "config", "core.worktree", os.path.relpath(work, gitdir))
    (gitdir / "info").mkdir(exist_ok=True)
    (gitdir / "info" / "attributes").write_text(RAW_ATTRIBUTES)
    tried = []
    origin = None
    for src in local_sources(pin.url, job.mirrors) + (
        [pin.url] if job.network or _is_local(pin.url) else []
    ):
        try:
            fetch_commit(gitdir, str(src), pin.commit, pin.ref)
            origin = str(src)
            break
        except PinError as e:
            tried.append(str(e))
    if origin is None and pin.tree:  # a tarball can be checked only against a pinned tree
        shutil.rmtree(gitdir)
        for tarball in snapshot_tarballs(pin.url, pin.commit, job.mirrors):
            try:
                tree = _from_snapshot(pin, tarball, work, label)
            except PinError as e:
                tried.append(str(e))
                shutil.rmtree(work)
                continue
            subs = _submodules(job, pin, work, None, dict(pin.submodules), label, at)
            return {"url": pin.url, "commit": pin.commit, "tree": tree, "origin": str(tarball),
                    "snapshot": True, "submodules": subs}  # fmt: skip
    if origin is None:
        why = _why_not(pin, tried, job.network)
        job.missing.append(
            f"{label}: commit {pin.commit} of {pin.url} could not be had:\n    {why}"
        )
        if not at:  # the top repository: nothing below it can be known
            raise missing_error(pin, job.missing, job.mirrors)
        return {"url": pin.url, "commit": pin.commit, "missing": True}  # the run fails at the end
    tree = git("--git-dir", gitdir, "rev-parse", f"{pin.commit}^{{tree}}")
    _check_tree(pin, tree, origin, label)
    git("--git-dir", gitdir, "update-ref", "refs/azl-pin/commit", pin.commit)
    git("--git-dir", gitdir, "checkout", "--quiet", "--detach", pin.commit, cwd=work)
    links = gitlinks(gitdir, pin.commit)
    for path, want in pin.submodules.items():
        if links.get(path) != want:
            found = f"gitlink to {links[path]}" if path in links else "no submodule there"
            raise PinError(
                f"{label}: submodule {path}: expected commit {want} (pinned), found {found} "
                f"in commit {pin.commit} from {origin}"
            )
    subs = _submodules(job, pin, work, gitdir, links, label, at)
    return {"url": pin.url, "commit": pin.commit, "tree": tree, "origin": origin,
            "submodules": subs}  # fmt: skip


def _submodules(
    job: _Job,
    pin: Pin,
    work: Path,
    gitdir: Path | None,
    links: Mapping[str, str],
    label: str,
    at: str,
) -> list[dict[str, Any]]:
    """Check out each gitlink ``path -> commit`` (but those in ``skip``) under ``work``; their
    URLs come from ``.gitmodules`` (of the commit, or of the snapshot's files)."""
    if gitdir is None:  # a snapshot: the .gitmodules file, and a fresh git dir for the modules
        urls = submodule_urls_file(work / ".gitmodules")
        gitdir = work / ".git"
    else:
        urls = submodule_urls(gitdir, pin.commit)
    subs: list[dict[str, Any]] = []
    for path, commit in sorted(links.items()):
        full = f"{at}{path}"
        if full in pin.skip:
            subs.append({"path": path, "commit": commit, "skipped": True})
            continue
        name, url = urls.get(path, (path, ""))
        if not url:
            raise PinError(f"{label}: submodule {path} has no url in .gitmodules at {pin.commit}")
        url = resolve_url(pin.url, url)
        sub = Pin(url, commit, skip=pin.skip, name=f"{label}/{path}")
        subwork, subgit = work / path, gitdir / "modules" / name
        subs.append(_populate(job, sub, subwork, subgit, sub.label, f"{full}/") | {"path": path})
        (subwork / ".git").write_text(f"gitdir: {os.path.relpath(subgit, subwork)}\n")
        if (gitdir / "config").exists():
            git("--git-dir", gitdir, "config", f"submodule.{name}.url", url)
            git("--git-dir", gitdir, "config", f"submodule.{name}.active", "true")
    return subs


def _check_tree(pin: Pin, found: str, where: str, label: str) -> None:
    if pin.tree and found != pin.tree:
        raise PinError(
            f"{label}: commit {pin.commit}: expected tree {pin.tree} (pinned), found tree {found} "
            f"in {where}"
        )


def verify_source(pin: Pin, gitdir: Path) -> str:
    """Check the pin against a repository that has it, without a checkout: the commit exists,
    its tree and recorded submodules are the pinned ones. Returns the tree id."""
    if not has_commit(gitdir, pin.commit):
        raise PinError(f"{pin.label}: commit {pin.commit} not found in {gitdir}")
    tree = git("--git-dir", gitdir, "rev-parse", f"{pin.commit}^{{tree}}")
    _check_tree(pin, tree, str(gitdir), pin.label)
    if pin.submodules:
        links = gitlinks(gitdir, pin.commit)
        for path, want in pin.submodules.items():
            if links.get(path) != want:
                raise PinError(
                    f"{pin.label}: submodule {path}: expected commit {want} (pinned), found "
                    f"{links.get(path, 'no submodule there')} in {gitdir}"
                )
    return tree


def offline_missing(pin: Pin, mirrors: Sequence[Path]) -> str | None:
    """Why ``pin`` cannot be checked out without the network: None if a local repository has
    the commit, a bundle could (its heads are not searched), or a snapshot tarball for it is
    there (its tree pinned); submodules are not looked at. Cheap: for the offline preflight."""
    here = [Path(pin.url)] if pin.url.startswith("/") else []
    for src in here + local_sources(pin.url, mirrors):
        if src.name.endswith(".bundle") or has_commit(src, pin.commit):
            return None
    if pin.tree and snapshot_tarballs(pin.url, pin.commit, mirrors):
        return None
    looked = ", ".join(str(m) for m in mirrors) or "no local mirror"
    return f"commit {pin.commit} of {pin.url} is in no local git mirror (looked in {looked})"


def checkout_differs(dest: Path, record: Mapping[str, Any]) -> str | None:
    """Why the checkout ``dest`` is not the one ``record`` (of :func:`checkout`) describes:
    a repository whose HEAD moved, or None. Cheap (one rev-parse per repository); files
    edited in the work tree are not looked at."""
    if record.get("snapshot"):
        return None if dest.is_dir() else f"{dest}: missing"
    try:
        head = checkout_head(dest)
    except PinError as e:
        return f"{dest}: not a checkout ({e})"
    if head != record["commit"]:
        return f"{dest}: HEAD is {head}, the pin is {record['commit']}"
    for sub in record.get("submodules", []):
        if not sub.get("skipped"):
            why = checkout_differs(dest / sub["path"], sub)
            if why:
                return why
    return None


def checkout_head(work: Path) -> str:
    """The commit a checkout (or a submodule's path in one) has checked out."""
    return git("-C", work, "rev-parse", "HEAD")


# ------------------------------------------------------------------------------ snapshots


def make_snapshot(gitdir: Path, commit: str, dest: Path, prefix: str) -> None:
    """``git archive`` of ``commit`` that re-creates its tree: export-ignore and export-subst are
    switched off (they would drop or rewrite files), top directory ``<prefix>/``."""
    with tempfile.TemporaryDirectory() as tmp:  # a scratch git dir borrowing the objects
        scratch = Path(tmp) / "git"
        git("init", "--quiet", "--bare", scratch)
        objects = Path(gitdir).resolve() / "objects"
        (scratch / "objects" / "info" / "alternates").write_text(f"{objects}\n")
        (scratch / "info" / "attributes").write_text("* -export-ignore -export-subst\n")
        fmt = "tar.gz" if dest.name.endswith(".gz") else "tar"
        data = subprocess.run(
            ["git", "--git-dir", str(scratch), "archive", "--worktree-attributes",
             f"--format={fmt}", f"--prefix={prefix}/", commit],
            env=GIT_ENV, capture_output=True, check=True,
        ).stdout  # fmt: skip
    atomic_write(dest, data)


def snapshot_tree(work: Path, links: Mapping[str, str]) -> str:
    """The git tree id of the files under ``work`` (every file, ignored or not, exact bytes,
    modes as git records them: 644/755/symlink) plus a gitlink for each submodule ``path ->
    commit`` of ``links`` (a tarball has no gitlinks: its submodule directories are empty and
    the superproject's tree names them, so the pin supplies them). Computed in a scratch git
    dir and index; ``work`` is not changed."""
    with tempfile.TemporaryDirectory(prefix="azl-tree-") as tmp:
        gitdir = Path(tmp) / "git"
        git("init", "--quiet", "--bare", gitdir)
        (gitdir / "info" / "attributes").write_text(RAW_ATTRIBUTES)
        env = GIT_ENV | {
            "GIT_DIR": str(gitdir),
            "GIT_WORK_TREE": str(work),
            "GIT_INDEX_FILE": str(Path(tmp) / "index"),
        }
        for path in links:  # an empty directory where a submodule goes: nothing to add
            (work / path).mkdir(parents=True, exist_ok=True)
        git("-c", "core.fileMode=true", "-c", "core.symlinks=true", "-c", "core.autocrlf=false",
            "add", "--all", "--force", ".", env=env, cwd=work)  # fmt: skip
        for path, commit in sorted(links.items()):
            git("update-index", "--add", "--cacheinfo", f"160000,{commit},{path}", env=env)
        return git("write-tree", env=env)


def _members_top(tar: tarfile.TarFile) -> tuple[str, list[tarfile.TarInfo]]:
    members = [m for m in tar.getmembers() if m.type != tarfile.XGLTYPE]
    for m in members:
        if m.name.startswith("/") or ".." in m.name.split("/"):
            raise PinError(f"{tar.name}: unsafe member name {m.name!r}")
    tops = {m.name.split("/", 1)[0] for m in members}
    only_dirs = all("/" in m.name.rstrip("/") or m.isdir() for m in members)
    return (tops.pop() if len(tops) == 1 and only_dirs else ""), members


def extract_snapshot(tarball: Path, work: Path, links: Mapping[str, str]) -> tuple[str, str]:
    """Unpack a snapshot tarball into ``work`` (its single top directory stripped); return the
    tree id it re-creates (:func:`snapshot_tree`) and the commit id ``git archive`` stamped
    into it ("" if none)."""
    try:
        with tarfile.open(tarball) as tar:
            top, _ = _members_top(tar)
            stamped = tar.pax_headers.get("comment", "")
    except (tarfile.TarError, OSError) as e:
        raise PinError(f"{tarball}: not a readable tarball: {e}") from None
    work.mkdir(parents=True, exist_ok=True)
    strip = ["--strip-components=1"] if top else []
    r = subprocess.run(
        ["tar", "-x", "-f", str(tarball), "-C", str(work), "--no-same-owner", *strip],
        capture_output=True, text=True,
    )  # fmt: skip
    if r.returncode:
        raise PinError(f"{tarball}: tar failed: {r.stderr.strip()}")
    return snapshot_tree(work, links), stamped


def _from_snapshot(pin: Pin, tarball: Path, work: Path, label: str) -> str:
    tree, stamped = extract_snapshot(tarball, work, pin.submodules)
    if tree != pin.tree:
        note = f" (git archive of commit {stamped})" if stamped and stamped != pin.commit else ""
        raise PinError(
            f"{label}: snapshot {tarball}: expected tree {pin.tree} (pinned, commit "
            f"{pin.commit}), found tree {tree}{note}{explain_tree_mismatch(work)}"
        )
    return tree


def explain_tree_mismatch(work: Path) -> str:
    """Why a snapshot may not re-create its tree: export attributes in its .gitattributes."""
    hits = []
    for attrs in work.rglob(".gitattributes"):
        for line in attrs.read_text(errors="replace").splitlines():
            if "export-ignore" in line or "export-subst" in line:
                hits.append(f"{attrs.relative_to(work)}: {line.strip()}")
    if not hits:
        return ""
    return (
        "; the snapshot's .gitattributes use export attributes, so a plain git archive drops or "
        "rewrites files (make it with tasks.sources.gitpin.make_snapshot): " + "; ".join(hits)
    )


def write_record(path: Path, record: Mapping[str, Any]) -> None:
    atomic_write(path, (json.dumps(record, indent=1, sort_keys=True) + "\n").encode())
