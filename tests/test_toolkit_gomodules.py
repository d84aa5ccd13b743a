"""The real toolkit's Go modules (``toolkit/tools/go.mod`` and ``go.sum`` of the pinned tree,
from ``../shared/azurelinux/toolkit-6a8b54d4.tar.gz``): fetched through the Go module proxy
into the checkout's ``mirror/go-modules`` (kept there: the guest's go-tools stage builds from
it), every module checked against go.sum, and named among the files the guest is pushed.

The fetch needs a Go of at least go.mod's ``go 1.23.0`` (with ``GOTOOLCHAIN=local`` an older
one refuses the go.mod) and the proxy; the files are the proxy's bytes, checked by go.sum,
whatever Go fetched them. The offline build from them is tests/test_gotools_real.py (slow).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tasks.engine.plan import Project
from tasks.kinds.guest import guest_mirror_files
from tasks.sources import gomodules
from tests.conftest import REPO

TOOLKIT = REPO.parent / "shared" / "azurelinux" / "toolkit-6a8b54d4.tar.gz"
MODULES = 77  # `go mod download all` of the pinned go.mod: its build list


def go_of_at_least_1_23() -> str | None:
    go = shutil.which("go")
    if go is None:
        return None
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True).stdout
    m = re.match(r"go1\.(\d+)", out)
    return go if m and int(m.group(1)) >= 23 else None


GO = go_of_at_least_1_23()


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pinned toolkit/tools' go.mod and go.sum (all the fetch reads)."""
    if not TOOLKIT.is_file():
        pytest.skip(f"{TOOLKIT} is missing (see ../shared/azurelinux/README.md)")
    out = tmp_path_factory.mktemp("toolkit") / "tools"
    out.mkdir()
    with tarfile.open(TOOLKIT) as tar:
        for name in ("go.mod", "go.sum"):
            member = tar.getmember(f"azurelinux-6a8b54d4/toolkit/tools/{name}")
            f = tar.extractfile(member)
            assert f is not None
            (out / name).write_bytes(f.read())
    return out


@pytest.fixture(scope="module")
def cache(tools: Path) -> Path:
    """The checkout's mirror/go-modules, fetched when it does not serve this go.sum."""
    cache = REPO / "mirror" / gomodules.DEFAULT_DIR
    if gomodules.problem(tools, cache):
        if GO is None:
            pytest.skip("no Go >= 1.23 on PATH to fetch the toolkit's modules with")
        assert gomodules.download(GO, tools, cache) == MODULES
    return cache


def test_the_toolkit_modules_are_in_the_mirror_as_go_sum_says(tools: Path, cache: Path) -> None:
    assert gomodules.problem(tools, cache) is None
    checked, problems = gomodules.verify(tools, cache)
    assert problems == []
    assert checked == 2 * MODULES  # every module's zip and go.mod, by their h1: in go.sum
    # the upper-case paths of github.com/Azure/... in the proxy's escaped layout
    azcore = gomodules.proxy_dir(cache) / "github.com/!azure/azure-sdk-for-go/sdk/azcore/@v"
    assert any(azcore.glob("*.zip")), azcore


def test_the_guest_is_pushed_the_module_cache(cache: Path) -> None:
    """guest_mirror_files: what `doit guest` pushes of the mirror includes every module's
    proxy files (not the extracted sources, which Go in the guest makes itself)."""
    files = guest_mirror_files(Project(REPO))
    assert files is not None
    zips = [f for f in files if f.startswith(f"{gomodules.DEFAULT_DIR}/") and f.endswith(".zip")]
    assert len(zips) == MODULES
    assert f"{gomodules.DEFAULT_DIR}/{gomodules.RECORD}" in files
    extracted = [f for f in files if re.search(r"@v[0-9][^/]*/", f)]
    assert extracted == []
