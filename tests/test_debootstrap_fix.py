"""The tree's debootstrap fix (recipes/azurelinux.toml, recipes/azurelinux/debootstrap-spec.patch)
against the real spec of the pinned tree (``SPECS/debootstrap`` from
``../shared/azurelinux/specs-6a8b54d4.tar.gz``).

The ISO stage's SRPM packer (toolkit srpmpacker, every spec under SPECS/) needs each spec's
Source file with the sha256 of its signatures.json. The real spec's file,
debootstrap_1.0.128+nmu2.tar.gz, is no longer in Debian's pool (a 404 here), so no mirror can
hold it; the fixed spec's file is there, matches its signature, and unpacks to the directory
``%autosetup -n %{name}`` enters, with what ``%install`` uses.
"""

from __future__ import annotations

import json
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from tasks.sources.download import FetchError, fetch
from tests.conftest import REPO

SPECS = REPO.parent / "shared" / "azurelinux" / "specs-6a8b54d4.tar.gz"
PATCH = REPO / "recipes" / "azurelinux" / "debootstrap-spec.patch"
SPEC_DIR = "SPECS/debootstrap"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """The real SPECS/debootstrap of the pinned tree."""
    if not SPECS.is_file():
        pytest.skip(f"{SPECS} is missing (see ../shared/azurelinux/README.md)")
    with tarfile.open(SPECS) as tar:
        members = [m for m in tar.getmembers() if f"/{SPEC_DIR}/" in m.name and m.isfile()]
        tar.extractall(tmp_path, members=members)
    (top,) = tmp_path.iterdir()
    return top


def apply_fix(tree: Path) -> None:
    """As the tree task applies a fix (tasks/kinds/tree.py)."""
    r = subprocess.run(["patch", "-p1", "--forward", "--batch", "-i", str(PATCH)], cwd=tree,
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


def source0(tree: Path) -> tuple[str, str, str]:
    """(name, the Source0 file name with its macros expanded, its sha256 in signatures.json)."""
    spec = (tree / SPEC_DIR / "debootstrap.spec").read_text()
    tags = dict(re.findall(r"(?m)^(Name|Version|Source0):\s*(\S+)$", spec))
    url = tags["Source0"].replace("%{name}", tags["Name"]).replace("%{version}", tags["Version"])
    file = url.rsplit("/", 1)[1]
    sigs = json.loads((tree / SPEC_DIR / "debootstrap.signatures.json").read_text())["Signatures"]
    assert list(sigs) == [file], f"signatures.json names {list(sigs)}, Source0 is {file}"
    return tags["Name"], file, sigs[file]


def test_the_fix_applies_to_the_real_spec_and_names_one_signed_source(tree: Path) -> None:
    name, before, _ = source0(tree)
    assert before == "debootstrap_1.0.128+nmu2.tar.gz"
    apply_fix(tree)
    name, after, sha = source0(tree)
    assert after == "debootstrap_1.0.128+nmu2+deb12u2.tar.gz"
    assert sha == "c5ff2803461978d1b5fd965ae64ea5aabef94c3126793a58e8f9a4a92c00db96"
    spec = (tree / SPEC_DIR / "debootstrap.spec").read_text()
    assert re.search(r"(?m)^Release:\s*1%\{\?dist\}$", spec)
    # the changelog's newest entry is of the new version (rpm takes it for the package's)
    first = re.search(r"(?m)^%changelog\n(\* .*)$", spec)
    assert first and first.group(1).endswith("- 1.0.128+nmu2+deb12u2-1"), first


def test_only_the_fixed_source_can_be_had_from_debian(tree: Path, archive: str) -> None:
    pool = f"{archive}/pool/main/d/debootstrap"
    _, old, old_sha = source0(tree)
    with pytest.raises(FetchError, match="404"):
        fetch([f"{pool}/{old}"], REPO / "mirror" / old, old_sha, progress=False, attempts=1)
    apply_fix(tree)
    name, new, sha = source0(tree)
    dest = REPO / "mirror" / new  # kept: the mirror the guest's ISO stage packs from
    fetch([f"{pool}/{new}"], dest, sha, progress=False)
    with tarfile.open(dest) as tar:
        names = tar.getnames()
    assert {n.split("/", 1)[0] for n in names} == {name}  # `%autosetup -n %{name}`
    # what the spec's %install runs and installs: `make install` and the man page
    assert {f"{name}/Makefile", f"{name}/debootstrap.8", f"{name}/debian/copyright"} <= set(names)
