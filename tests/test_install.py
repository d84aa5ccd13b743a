"""A non-editable install: ``pip install .`` puts every layer of ``tasks`` (the kinds too)
and the doit plugin entry points into the environment, and ``doit list`` works in a project
directory that has no ``tasks/`` of its own.

No network: the wheel is built with ``pip wheel --no-deps`` and installed with ``--no-deps``
into a fresh venv whose dependencies (doit, psutil, ...) are this environment's installed
copies, linked in one by one (not this environment's site-packages as a whole, which holds
the editable install of the project under test)."""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO


def _requirements(dist: str, seen: set[str]) -> None:
    """``dist`` and what it requires, recursively (extras left out)."""
    for req in md.requires(dist) or ():
        if "extra ==" in req:
            continue
        name = re.split(r"[ ;<>=!~\[(]", req, maxsplit=1)[0]
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        try:
            md.distribution(name)
        except md.PackageNotFoundError:
            continue  # a marker excluded it here
        seen.add(key)
        _requirements(name, seen)


def _link_dependencies(site: Path) -> None:
    deps: set[str] = set()
    _requirements("azl-bootstrap", deps)
    for dep in sorted(deps):
        dist = md.distribution(dep)
        tops = {Path(str(f)).parts[0] for f in dist.files or ()}
        for top in tops:
            src = Path(dist.locate_file(top))
            if top.startswith("..") or not src.exists() or (site / top).exists():
                continue
            (site / top).symlink_to(src)


@pytest.mark.skipif(shutil.which("git") is None, reason="the wheel is built from a clean copy")
def test_a_wheel_install_has_every_layer_and_runs_doit_list(tmp_path: Path) -> None:
    src = tmp_path / "src"  # the tracked files only: no egg-info or build/ of the checkout
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    for rel in filter(None, files):
        dest = src / rel.decode()
        if (REPO / rel.decode()).is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel.decode(), dest)
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip"]
    built = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, src],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = wheels.glob("azl_bootstrap-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for layer in ("store", "model", "sources", "build", "toolkit", "host", "guest", "kinds"):
        assert f"tasks/{layer}/__init__.py" in names, names
    assert "tasks/kinds/package.py" in names and "tasks/engine/commands.py" in names
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    points = zipfile.ZipFile(wheel).read(entry).decode()
    assert "azl = tasks.store.state:TaskStateDB" in points, points
    assert "info = tasks.engine.commands:Info" in points, points

    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [*pip, "--python", python, "install", "--no-deps", "--no-index", "-q", wheel],
        capture_output=True,
        text=True,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    assert site != Path(sysconfig.get_paths()["purelib"])
    _link_dependencies(site)

    project = tmp_path / "project"  # dodo.py and recipes, no tasks/ and no pyproject.toml
    (project / "recipes").mkdir(parents=True)
    shutil.copy(REPO / "dodo.py", project / "dodo.py")
    for name in ("pcre2", "grep"):
        shutil.copy(REPO / "recipes" / f"{name}.toml", project / "recipes")
    (project / "azl-bootstrap.toml").write_text('platform = "sandbox"\n')
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run(
        [python, "-c", "import tasks.kinds.package as p; print(p.__file__)"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.returncode == 0 and where.stdout.startswith(str(site)), where.stdout + where.stderr
    r = subprocess.run(
        [python, "-m", "doit", "list"], cwd=project, env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^grep +V27 +3\.11 ", r.stdout, re.M), r.stdout  # our list command
    r = subprocess.run(
        [python, "-m", "doit", "info", "grep"], cwd=project, env=env, capture_output=True, text=True
    )
    assert r.returncode == 0 and "status: would run, because" in r.stdout, r.stdout + r.stderr
