"""The supervisor (tasks/build/supervise.py) ends the way its command ended: killed by the
same signal, also SIGKILL (a power cut of the VM, the OOM killer on a build), whose handler
cannot be reset (it used to crash there with a traceback and exit 1)."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_supervisor_dies_by_its_commands_signal(sig: signal.Signals) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "tasks.build.supervise", "sh", "-c", f"kill -{int(sig)} $$"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert r.returncode == -sig, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
