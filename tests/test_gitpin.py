"""Git commit pins (tasks/sources/gitpin.py) against real repositories: one made by the test (commits, a
submodule with its own submodule, a pull-request ref on no branch) served by a real
``git daemon`` on 127.0.0.1, as bare paths, as a bundle and as snapshot tarballs; and the real
live-bootstrap at its pinned commit from the git bundles in ../shared/git (Azure Linux too,
where a bundle of it is there: the test inputs hold only tarballs of parts of its tree)."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tasks.sources.gitpin import (
    GIT_ENV,
    Pin,
    PinError,
    checkout,
    checkout_head,
    gitlinks,
    make_snapshot,
    verify_source,
)
from tests.conftest import SHARED_GIT, shared_git

REPO = Path(__file__).resolve().parent.parent
UNREACHABLE = "https://unreachable.invalid/team"  # never contacted: network=False


def git(cwd: Path, *args: str) -> str:
    env = GIT_ENV | {
        "GIT_AUTHOR_DATE": "2020-01-01T00:00:00Z",
        "GIT_COMMITTER_DATE": "2020-01-01T00:00:00Z",
    }
    r = subprocess.run(
        ["git", "-c", "protocol.file.allow=always", "-c", "init.defaultBranch=main", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, f"git {args}: {r.stderr}"
    return r.stdout.strip()


def commit_files(repo: Path, files: dict[str, str], message: str) -> str:
    for rel, text in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@dataclass
class Origin:
    """Bare repositories ``app.git``, ``lib.git``, ``inner.git`` under ``root`` (app has submodule
    ``lib`` at ``lib_commit``, which has ``inner`` at ``inner_commit``; relative URLs)."""

    root: Path
    work: Path  # app's working repository (pushes into app.git)
    first: str  # main's first commit
    pr: str  # refs/pull/1/head: on no branch
    lib_commit: str
    inner_commit: str

    def tree(self, commit: str) -> str:
        return git(self.root / "app.git", "rev-parse", f"{commit}^{{tree}}")

    def pin(self, url: str, commit: str, **kw: object) -> Pin:
        return Pin(url, commit, self.tree(commit), **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Origin:
    root = tmp_path_factory.mktemp("origin")
    for name in ("inner", "lib", "app"):
        git(root, "init", "--quiet", "--bare", f"{name}.git")
    work = root / "work"
    inner = root / "work-inner"
    git(root, "clone", "--quiet", str(root / "inner.git"), str(inner))
    inner_commit = commit_files(inner, {"inner.txt": "inner one\n"}, "inner")
    git(inner, "push", "--quiet", "origin", "HEAD:refs/heads/main")
    lib = root / "work-lib"
    git(root, "clone", "--quiet", str(root / "lib.git"), str(lib))
    commit_files(lib, {"lib.txt": "lib one\n"}, "lib")
    git(lib, "submodule", "add", "--quiet", "../inner.git", "inner")
    lib_commit = commit_files(lib, {}, "inner as a submodule")
    git(lib, "push", "--quiet", "origin", "HEAD:refs/heads/main")
    commit_files(lib, {"lib.txt": "lib two: not recorded by app\n"}, "lib moves on")
    git(lib, "push", "--quiet", "origin", "HEAD:refs/heads/main")

    git(root, "clone", "--quiet", str(root / "app.git"), str(work))
    commit_files(work, {"app.txt": "app one\n", "tool.sh": "#!/bin/sh\necho tool\n"}, "one")
    os.chmod(work / "tool.sh", 0o755)
    (work / "link").symlink_to("app.txt")
    git(work, "submodule", "add", "--quiet", "../lib.git", "lib")
    git(work, "-C", "lib", "checkout", "--quiet", lib_commit)
    first = commit_files(
        work, {".gitattributes": "secret.txt export-ignore\n", "secret.txt": "kept\n"}, "lib"
    )
    git(work, "push", "--quiet", "origin", "HEAD:refs/heads/main")
    pr = commit_files(work, {"app.txt": "app from the pull request\n"}, "pr")
    git(work, "push", "--quiet", "origin", "HEAD:refs/pull/1/head")
    git(work, "reset", "--quiet", "--hard", first)
    return Origin(root, work, first, pr, lib_commit, inner_commit)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def daemon(origin: Origin) -> Iterator[str]:
    """``git daemon`` serving the origin's bare repositories; its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        ["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={origin.root}",
         "--listen=127.0.0.1", f"--port={port}", str(origin.root)],
        env=GIT_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, (
                    "git daemon did not start"
                )
                time.sleep(0.05)
        yield f"git://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def status(dest: Path) -> list[str]:
    """``git submodule status --recursive`` lines: ' <commit> <path> ...' when checked out."""
    r = subprocess.run(
        ["git", "submodule", "status", "--recursive"],
        cwd=dest,
        env=GIT_ENV,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def assert_pinned_tree(dest: Path, origin: Origin, commit: str) -> None:
    assert checkout_head(dest) == commit
    assert checkout_head(dest / "lib") == origin.lib_commit
    assert checkout_head(dest / "lib" / "inner") == origin.inner_commit
    assert (dest / "lib" / "lib.txt").read_text() == "lib one\n"  # not lib's moved main
    assert (dest / "lib" / "inner" / "inner.txt").read_text() == "inner one\n"
    assert git(dest, "status", "--porcelain") == ""
    assert [line[0] for line in status(dest)] == [" ", " "]  # both initialised, at their commit


# ------------------------------------------------------------------------------ git sources


def test_pull_request_commit_is_checked_out_by_id_from_git_daemon(
    origin: Origin, daemon: str, tmp_path: Path
) -> None:
    pin = origin.pin(f"{daemon}/app.git", origin.pr, ref="refs/pull/1/head")
    record = checkout(pin, tmp_path / "app")
    assert_pinned_tree(tmp_path / "app", origin, origin.pr)
    assert (tmp_path / "app" / "app.txt").read_text() == "app from the pull request\n"
    assert record["origin"] == f"{daemon}/app.git"
    assert record["submodules"][0]["url"] == f"{daemon}/lib.git"  # ../lib.git, resolved
    assert not (tmp_path / "app.part").exists()


def test_head_is_detached_at_the_commit_not_a_branch(
    origin: Origin, daemon: str, tmp_path: Path
) -> None:
    checkout(origin.pin(f"{daemon}/app.git", origin.first, ref="refs/heads/main"), tmp_path / "a")
    r = subprocess.run(
        ["git", "-C", str(tmp_path / "a"), "symbolic-ref", "-q", "HEAD"], env=GIT_ENV
    )
    assert r.returncode == 1  # detached: no branch is checked out
    assert (tmp_path / "a" / "tool.sh").stat().st_mode & 0o111
    assert os.readlink(tmp_path / "a" / "link") == "app.txt"


def test_a_moved_branch_does_not_change_the_checkout(
    origin: Origin, daemon: str, tmp_path: Path
) -> None:
    pin = origin.pin(f"{daemon}/app.git", origin.first, ref="refs/heads/main")
    moved = commit_files(origin.work, {"app.txt": "main moved on\n"}, "moved")
    git(origin.work, "push", "--quiet", "--force", "origin", "HEAD:refs/heads/main")
    try:
        checkout(pin, tmp_path / "app")
        assert_pinned_tree(tmp_path / "app", origin, origin.first)
        assert (tmp_path / "app" / "app.txt").read_text() == "app one\n"
        assert git(origin.root / "app.git", "rev-parse", "main") == moved
    finally:
        git(origin.work, "reset", "--quiet", "--hard", origin.first)
        git(origin.work, "push", "--quiet", "--force", "origin", "HEAD:refs/heads/main")


def test_bare_repositories_in_a_mirror_dir_work_offline(origin: Origin, tmp_path: Path) -> None:
    mirror = snapshot_mirror(origin, tmp_path)  # the plain layout <dir>/<name>.git
    (mirror / "team+app").mkdir()
    git(
        tmp_path,
        "clone",
        "--quiet",
        "--mirror",
        str(origin.root / "app.git"),
        str(mirror / "team+app" / "repo"),
    )
    pin = origin.pin(f"{UNREACHABLE}/app", origin.pr, ref="refs/pull/1/head")
    record = checkout(pin, tmp_path / "app", mirrors=[mirror], network=False)
    assert_pinned_tree(tmp_path / "app", origin, origin.pr)
    assert record["origin"] == str(mirror / "team+app" / "repo")
    assert record["submodules"][0]["origin"] == str(mirror / "lib.git")


def test_bundle_in_a_mirror_dir(origin: Origin, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in ("app", "lib", "inner"):
        git(
            origin.root / f"{name}.git",
            "bundle",
            "create",
            "--quiet",
            str(mirror / f"{name}.bundle"),
            "--all",
        )
    record = checkout(
        origin.pin(f"{UNREACHABLE}/app.git", origin.pr),
        tmp_path / "app",
        mirrors=[mirror],
        network=False,
    )
    assert_pinned_tree(tmp_path / "app", origin, origin.pr)
    assert record["origin"] == str(mirror / "app.bundle")


def test_wrong_tree_is_refused_naming_both_ids_and_the_source(
    origin: Origin, daemon: str, tmp_path: Path
) -> None:
    wrong = origin.tree(origin.pr)
    pin = Pin(f"{daemon}/app.git", origin.first, wrong)
    with pytest.raises(PinError) as e:
        checkout(pin, tmp_path / "app")
    msg = str(e.value)
    assert f"expected tree {wrong}" in msg and f"found tree {origin.tree(origin.first)}" in msg
    assert f"{daemon}/app.git" in msg and origin.first in msg
    assert not (tmp_path / "app").exists() and not (tmp_path / "app.part").exists()


def test_a_failed_pin_keeps_the_previous_checkout(
    origin: Origin, daemon: str, tmp_path: Path
) -> None:
    checkout(origin.pin(f"{daemon}/app.git", origin.first), tmp_path / "app")
    with pytest.raises(PinError, match="submodule lib: expected commit 0{40}"):
        checkout(
            origin.pin(f"{daemon}/app.git", origin.pr, submodules={"lib": "0" * 40}),
            tmp_path / "app",
        )
    assert_pinned_tree(tmp_path / "app", origin, origin.first)


def test_a_commit_nobody_has_is_reported_with_every_source(
    origin: Origin, daemon: str, tmp_path: Path
) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    git(
        tmp_path,
        "clone",
        "--quiet",
        "--bare",
        str(origin.root / "lib.git"),
        str(mirror / "app.git"),
    )
    pin = Pin(f"{daemon}/app.git", "1" * 40, origin.tree(origin.first))
    with pytest.raises(PinError) as e:
        checkout(pin, tmp_path / "app", mirrors=[mirror])
    assert f"commit {'1' * 40} of {daemon}/app.git could not be had" in str(e.value)
    assert str(mirror / "app.git") in str(e.value) and f"not found in {daemon}/app.git" in str(
        e.value
    )
    assert not (tmp_path / "app.part").exists()


# ------------------------------------------------------------------------------ snapshots


def snapshot_mirror(origin: Origin, tmp_path: Path) -> Path:
    """A mirror dir with ``lib.git``/``inner.git`` for the submodules; the caller adds the
    snapshot of app."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in ("lib", "inner"):
        git(
            tmp_path,
            "clone",
            "--quiet",
            "--mirror",
            str(origin.root / f"{name}.git"),
            str(mirror / f"{name}.git"),
        )
    return mirror


def test_snapshot_tarball_is_verified_by_tree_id(origin: Origin, tmp_path: Path) -> None:
    mirror = snapshot_mirror(origin, tmp_path)
    tarball = mirror / f"app-{origin.first}.tar.gz"
    make_snapshot(origin.root / "app.git", origin.first, tarball, f"app-{origin.first}")
    pin = origin.pin(f"{UNREACHABLE}/app", origin.first, submodules={"lib": origin.lib_commit})
    record = checkout(pin, tmp_path / "app", mirrors=[mirror], network=False)
    dest = tmp_path / "app"
    assert record["snapshot"] and record["tree"] == origin.tree(origin.first)
    assert (dest / "secret.txt").read_text() == "kept\n"  # export-ignore did not drop it
    assert (dest / "tool.sh").stat().st_mode & 0o111 and os.readlink(dest / "link") == "app.txt"
    assert checkout_head(dest / "lib") == origin.lib_commit  # the submodule from its git mirror
    assert (dest / "lib" / "inner" / "inner.txt").read_text() == "inner one\n"


def test_tampered_snapshot_is_refused_by_tree_id(origin: Origin, tmp_path: Path) -> None:
    mirror = snapshot_mirror(origin, tmp_path)
    good = tmp_path / "good.tar"
    make_snapshot(origin.root / "app.git", origin.first, good, "app")
    tarball = mirror / f"app-{origin.first}.tar"
    with tarfile.open(good) as src, tarfile.open(tarball, "w") as dst:
        for m in src.getmembers():
            data = src.extractfile(m) if m.isfile() else None
            if m.name == "app/app.txt":
                body = b"app one, changed by someone\n"
                m.size = len(body)
                data = io.BytesIO(body)
            dst.addfile(m, data)
    pin = origin.pin(f"{UNREACHABLE}/app", origin.first, submodules={"lib": origin.lib_commit})
    with pytest.raises(PinError) as e:
        checkout(pin, tmp_path / "app", mirrors=[mirror], network=False)
    msg = str(e.value)
    assert str(tarball) in msg and f"expected tree {origin.tree(origin.first)}" in msg
    assert "found tree" in msg
    assert not (tmp_path / "app").exists() and not (tmp_path / "app.part").exists()


def test_plain_git_archive_with_export_ignore_is_refused_and_explained(
    origin: Origin, tmp_path: Path
) -> None:
    mirror = snapshot_mirror(origin, tmp_path)
    tarball = mirror / f"app-{origin.first}.tar"
    git(
        origin.root / "app.git",
        "archive",
        "--format=tar",
        "--prefix=app/",
        "-o",
        str(tarball),
        origin.first,
    )
    pin = origin.pin(f"{UNREACHABLE}/app", origin.first, submodules={"lib": origin.lib_commit})
    with pytest.raises(
        PinError, match=r"export attributes.*\.gitattributes: secret\.txt export-ignore"
    ):
        checkout(pin, tmp_path / "app", mirrors=[mirror], network=False)


# ------------------------------------------------------------------------------ the real pins

LB = Pin(
    "https://github.com/fosslinux/live-bootstrap",
    "1296c44bb345ef5d54ecffd7688f9813d46a032a",
    "ce748d1999b2e4c398d502c2266534f4f33e1886",
    ref="refs/pull/469/head",
    submodules={
        "builder-hex0": "a2781242d19e6be891b453d8fa827137ab5db31a",
        "seed/stage0-posix": "a13c7bcf6de64694a5fca3fb02c1c90958bc1acb",
    },
    # other architectures' stage0 trees: not used by an x86 build, not in the local mirror
    skip=tuple(
        f"seed/stage0-posix/{a}" for a in ("AArch64", "AMD64", "armv7l", "riscv32", "riscv64")
    ),
)
# stage0-posix a13c7bcf records these (read with git ls-tree in the pinned repository)
STAGE0 = {
    "M2-Mesoplanet": "3dcbd0bc5f4d76d2c1cc8f6e5bafa4b214127b7d",
    "M2-Planet": "80b99d4424e6c4ea2bd396fdddcd58c354d452cd",
    "M2libc": "8ebbe0a09f85e705b1aa03362698694a285ea3d0",
    "bootstrap-seeds": "cedec6b8066d1db229b6c77d42d120a23c6980ed",
    "mescc-tools": "367ccaf088ba0972754c7c92bb20925cb3be3e26",
    "mescc-tools-extra": "8f17eb5f4014ca7d14bf6fd1f8ffc22ab28ca7c6",
    "x86": "a15adc72f099506fb0d40c8824d7aaa97735f7c3",
}
AZL = Pin(
    "https://github.com/microsoft/azurelinux",
    "6a8b54d4e365e99320b499712dba0c94de480777",
    "d6e903195faa36314ef775b98ede60bc6f182cb7",
    ref="refs/pull/14568/head",
)


def real_mirror(owner_name: str) -> list[Path]:
    """The mirror directories holding ``owner_name``'s repository: ``../shared/git`` with its
    ``<name>.bundle`` (a missing bundle fails the test)."""
    return [shared_git(owner_name.split("+", 1)[1])]


def test_real_live_bootstrap_at_the_seed_commit_with_its_submodules(tmp_path: Path) -> None:
    mirrors = real_mirror("fosslinux+live-bootstrap")
    dest = tmp_path / "live-bootstrap"
    record = checkout(LB, dest, mirrors=mirrors, network=False)
    assert checkout_head(dest) == LB.commit and record["tree"] == LB.tree
    for path, commit in LB.submodules.items():
        assert checkout_head(dest / path) == commit
    s0 = dest / "seed" / "stage0-posix"
    links = gitlinks(
        dest / ".git" / "modules" / "seed/stage0-posix", LB.submodules["seed/stage0-posix"]
    )
    assert {p: links[p] for p in STAGE0} == STAGE0
    for path, commit in STAGE0.items():
        assert checkout_head(s0 / path) == commit, path
    assert (s0 / "x86" / "hex0_x86.hex0").is_file()
    assert (dest / "steps" / "manifest").is_file() and (dest / "rootfs.py").is_file()
    lines = status(dest)
    skipped = [line for line in lines if line.startswith("-")]
    assert sorted(line.split()[1] for line in skipped) == sorted(LB.skip)
    assert not [line for line in lines if line.startswith("+")]  # nothing at another commit


def test_real_azure_linux_commit_and_tree(tmp_path: Path) -> None:
    bundle = SHARED_GIT / "azurelinux.bundle"
    if not bundle.is_file():  # ../shared/azurelinux has only tarballs of parts of the tree
        pytest.skip(f"no {bundle}: the whole Azure Linux history is not among the test inputs")
    gitdir = tmp_path / "azurelinux.git"
    git(tmp_path, "init", "--quiet", "--bare", str(gitdir))
    git(gitdir, "fetch", "--quiet", str(bundle), "+refs/*:refs/*")
    assert verify_source(AZL, gitdir) == AZL.tree
    with pytest.raises(PinError, match="expected tree 0{40}"):
        verify_source(Pin(AZL.url, AZL.commit, "0" * 40), gitdir)


def test_checkout_differs_names_a_moved_submodule(
    origin: Origin, daemon: str, tmp_path: Path
) -> None:
    from tasks.sources.gitpin import checkout_differs

    record = checkout(origin.pin(f"{daemon}/app.git", origin.first), tmp_path / "app")
    assert checkout_differs(tmp_path / "app", record) is None
    git(tmp_path / "app" / "lib", "commit", "--quiet", "--allow-empty", "-m", "moved by hand")
    why = checkout_differs(tmp_path / "app", record)
    assert (
        why and why.startswith(f"{tmp_path / 'app' / 'lib'}: HEAD is ") and origin.lib_commit in why
    )


def test_partial_clone_missing_a_blob_of_the_pin_is_named(origin: Origin, tmp_path: Path) -> None:
    """A mirror that is a partial clone (blobs filtered out, as the local Azure Linux mirror
    here is) cannot serve the pinned tree: the error says so."""
    git(origin.root / "app.git", "config", "uploadpack.allowFilter", "true")
    mirror = tmp_path / "mirror"
    git(
        tmp_path,
        "clone",
        "--quiet",
        "--bare",
        "--filter=blob:none",
        (origin.root / "app.git").as_uri(),
        str(mirror / "app.git"),
    )
    with pytest.raises(PinError, match="partial clone"):
        checkout(
            origin.pin(f"{UNREACHABLE}/app", origin.first),
            tmp_path / "app",
            mirrors=[mirror],
            network=False,
        )
