"""``./setup.sh`` as a user runs it a second time: it installs only what is missing.

The machine's tools are stood in for by scripts on PATH (``ldd``, ``apt-get``, ``sudo``)
and the project's ``.venv/bin/python`` by a stub, so the test runs the real script's checks
in seconds without installing anything."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO


def _setup_copy(tmp_path: Path, ldd_says: str, ldd_exit: int) -> subprocess.CompletedProcess[str]:
    root = tmp_path / "proj"
    root.mkdir()
    shutil.copy(REPO / "setup.sh", root / "setup.sh")
    venv = root / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").write_text("#!/bin/sh\nexit 0\n")  # pip install: nothing to do here
    stubs = tmp_path / "bin"
    stubs.mkdir()
    log = tmp_path / "apt.log"
    scripts = {
        "ldd": f"#!/bin/sh\necho '\t{ldd_says}'\nexit {ldd_exit}\n",
        "apt-get": f'#!/bin/sh\necho "$@" >> {log}\n',
        "sudo": '#!/bin/sh\nexec "$@"\n',
    }
    for name, text in scripts.items():
        (stubs / name).write_text(text)
    for p in [*stubs.iterdir(), venv / "python"]:
        p.chmod(0o755)
    env = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", "setup.sh", "--no-build"], cwd=root, env=env, capture_output=True, text=True
    )


@pytest.mark.skipif(shutil.which("bash") is None, reason="setup.sh is a bash script")
def test_a_static_busybox_is_not_reinstalled(tmp_path: Path) -> None:
    # ldd of a static binary prints "not a dynamic executable" and exits 1: under pipefail
    # `ldd ... | grep -q` took that 1 and asked for busybox-static on every run
    r = _setup_copy(tmp_path, "not a dynamic executable", 1)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "busybox-static" not in r.stdout + r.stderr, r.stdout + r.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="setup.sh is a bash script")
def test_a_dynamic_busybox_is_replaced_by_the_static_one(tmp_path: Path) -> None:
    r = _setup_copy(tmp_path, "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x0001)", 0)
    assert r.returncode == 0, r.stdout + r.stderr
    installing = [ln for ln in r.stdout.splitlines() if ln.startswith("setup: installing")]
    assert installing and "busybox-static" in installing[0], r.stdout + r.stderr
    assert "busybox-static" in (tmp_path / "apt.log").read_text()


def test_the_users_config_is_not_committed() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "azl-bootstrap.toml"], cwd=REPO, capture_output=True
    )
    if ignored.returncode == 128:
        pytest.skip("not a git checkout")
    assert ignored.returncode == 0, "azl-bootstrap.toml is not in .gitignore"
