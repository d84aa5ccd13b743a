"""The wheelhouse made on the host, installed offline into a fresh venv of the guest-like
interpreter (CPython 3.11 from Debian's ``.orig`` tarball without _sqlite3/_bz2/_dbm, see
``tests/guest_python.py``); then the engine runs under it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.guest.wheelhouse import SDISTS, engine_requirements, install_command, make_wheelhouse
from tests.conftest import REPO, Project
from tests.guest_python import guest_python

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def interpreter(archive: str) -> Path:
    if not shutil.which("gcc") or not shutil.which("make"):
        pytest.skip("no compiler to build the guest-like Python")
    return guest_python(archive)


def test_the_guest_like_python_is_the_guests(interpreter: Path) -> None:
    probe = (
        "import importlib.util as u, tarfile, ssl, ctypes, zlib, lzma;"
        "print([m for m in ('_sqlite3','_bz2','_dbm','_gdbm') if u.find_spec(m)]);"
        "print(hasattr(tarfile, 'data_filter'))"
    )
    out = subprocess.run([interpreter, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["[]", "False"]
    pip = subprocess.run([interpreter, "-m", "pip", "--version"], capture_output=True, text=True)
    assert pip.stdout.startswith("pip 22.3.1"), pip.stdout + pip.stderr  # ensurepip's, as in 3.11.1


def test_the_wheelhouse_installs_offline_and_runs_the_engine(
    tmp_path: Path, interpreter: Path
) -> None:
    wheelhouse = tmp_path / "wheelhouse"
    make_wheelhouse(wheelhouse, engine_requirements(REPO / "pyproject.toml"))
    names = sorted(p.name for p in wheelhouse.iterdir())
    for sdist in SDISTS:  # built in the guest, never a host binary
        assert any(n.startswith(sdist) and n.endswith(".tar.gz") for n in names), names
    assert all(n.endswith(("-none-any.whl", ".tar.gz", ".txt")) for n in names), names

    venv = tmp_path / "venv"
    subprocess.run([interpreter, "-m", "venv", venv], check=True)
    start = time.monotonic()
    r = subprocess.run(
        ["sh", "-c", install_command(str(venv / "bin" / "python"), str(wheelhouse))],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PIP_CONFIG_FILE": "/dev/null", "HOME": str(tmp_path)},
    )
    took = time.monotonic() - start
    assert r.returncode == 0, r.stdout + r.stderr
    print(f"wheelhouse install into the guest-like Python: {took:.1f} s", file=sys.stderr)

    py = venv / "bin" / "python"
    check = "import doit, psutil, xxhash, requests, tqdm; print(xxhash.xxh3_64_hexdigest(b'a'))"
    out = subprocess.run([py, "-c", check], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "e6c632b61e964e1f"

    # the engine itself under the guest's interpreter: a real (mock) build with its state
    project = Project(tmp_path / "proj")
    shutil.copytree(REPO / "tasks", project.root / "tasks")
    shutil.copy(REPO / "pyproject.toml", project.root)  # names doit's state backend
    project.recipe("a")
    run = subprocess.run(
        [py, "-m", "doit"], cwd=project.root, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert project.manifest("a").exists()
