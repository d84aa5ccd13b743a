"""The supervisor (tasks/build/supervise.py) ends the way its command ended: killed by the
same signal, also SIGKILL (a power cut of the VM, the OOM killer on a build), whose handler
cannot be reset (it used to crash there with a traceback and exit 1)."""

from __future__ import annotations

import signal
import subprocess

import pytest

from tasks.build import supervise
from tests.conftest import REPO


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_supervisor_dies_by_its_commands_signal(sig: signal.Signals) -> None:
    # started as the engine starts it: its own process group, its stdin a pipe we hold open
    # (at EOF it kills its whole group: with a shared group and stdin at /dev/null, as under
    # CI, that group was pytest's)
    proc = supervise.start(
        ["sh", "-c", f"kill -{int(sig)} $$"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO, text=True,
    )  # fmt: skip
    assert proc.stderr is not None and proc.stdin is not None
    err = proc.stderr.read()
    code = proc.wait(timeout=60)
    proc.stdin.close()
    assert code == -sig, err
    assert "Traceback" not in err, err
