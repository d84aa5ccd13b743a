"""recipes/musl-cross-make's pins, checked against their second source: the snapshot's sha256
is that of `git archive | gzip -n` of the pinned commit, every sha1 the prepare script checks
is musl-cross-make's own hashes/ file at that commit, and the tarballs Debian ships
byte-identical are fetched and match both the recipe's sha256 and musl-cross-make's sha1.

The pinned commit is fetched from musl-cross-make's git bundle in ../shared/git (through the
project's gitpin, as from any mirror directory); a missing bundle fails the tests.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest

from tasks.engine.recipeset import parse_recipe
from tasks.sources import gitpin
from tests.conftest import REPO, shared_git

RECIPE = REPO / "recipes" / "musl-cross-make.toml"


def version():
    recipe, errors = parse_recipe(RECIPE)
    assert recipe is not None, errors
    return recipe.for_platform("guest").version


SEED_DATE = "2025-09-01"  # the seed's test (../shared/seed/Azure.md)


@pytest.fixture(scope="module")
def mcm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bare repository holding the pinned commit, fetched from the bundle by gitpin."""
    snap = next(s for s in version().sources if s.git)
    repo = tmp_path_factory.mktemp("mcm") / "musl-cross-make.git"
    gitpin.git("init", "--quiet", "--bare", repo)
    [bundle] = gitpin.local_sources(snap.git, [shared_git("musl-cross-make")])
    gitpin.fetch_commit(repo, str(bundle), snap.ref, None)
    return repo


def git(repo: Path, *args: str) -> bytes:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=True).stdout


def test_snapshot_sha256_is_the_pinned_commit(mcm: Path) -> None:
    snap = next(s for s in version().sources if s.git)
    tar = git(mcm, "archive", "--format=tar", f"--prefix={snap.git_prefix()}/", snap.ref or "")
    gz = subprocess.run(["gzip", "-n"], input=tar, capture_output=True, check=True).stdout
    assert hashlib.sha256(gz).hexdigest() == snap.sha256


def test_config_versions_have_pinned_sources_and_its_sha1s(mcm: Path) -> None:
    """config.mak names exactly the pinned tarballs, and every file prepare checks with sha1
    has that hash file at the pinned commit."""
    v = version()
    ref = next(s.ref for s in v.sources if s.git)
    prepare = RECIPE.read_text()
    files = {s.file for s in v.sources if not s.git}
    mak = dict(re.findall(r"^(\w+)_VER = ?(\S*)$", prepare, re.M))
    assert mak.pop("LINUX") == ""  # no kernel headers
    named = {f"{k.lower()}-{ver}" for k, ver in mak.items()}
    assert {f.rsplit(".tar", 1)[0] for f in files} == named
    checked = re.search(r"^for f in (.*); do$", prepare, re.M)
    assert checked
    for f in checked.group(1).split():
        assert f in files
        line = git(mcm, "show", f"{ref}:hashes/{f}.sha1").decode()
        assert line.split()[1] == f


@pytest.mark.network
def test_debian_copies_are_byte_identical_to_upstream(mcm: Path, archive: str, tmp_path: Path):
    """Fetched from Debian's archive, each file with a `debian` path has the recipe's sha256
    and musl-cross-make's sha1: two independent sources, one file."""
    from tasks.sources.download import fetch

    v = version()
    ref = next(s.ref for s in v.sources if s.git)
    debian = [s for s in v.sources if s.debian]
    assert len(debian) >= 3
    for s in debian:
        dest = tmp_path / s.file
        fetch([f"{archive}/pool/{s.debian}"], dest, s.sha256, progress=False)
        sha1 = git(mcm, "show", f"{ref}:hashes/{s.file}.sha1").decode().split()[0]
        assert hashlib.sha1(dest.read_bytes()).hexdigest() == sha1, s.file


def test_the_pin_is_master_on_the_seeds_date(tmp_path: Path) -> None:
    """The seed built musl-cross-make's master of its day: the pin is the last commit on
    master committed by then (the next one came later), read from the bundle's history."""
    ref = next(s.ref for s in version().sources if s.git)
    bundle = shared_git("musl-cross-make") / "musl-cross-make.bundle"
    repo = tmp_path / "mcm.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(bundle), str(repo)], check=True)
    dated = git(repo, "log", "--format=%H %cs", "--first-parent", "master").decode().split("\n")
    commits = [line.split() for line in dated if line]
    at_seed = next(h for h, day in commits if day <= SEED_DATE)
    assert ref == at_seed, f"master on {SEED_DATE} was {at_seed}, the recipe pins {ref}"
