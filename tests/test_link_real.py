"""The whole guest path against the stand-in guest (OpenSSH on 127.0.0.1), with real inputs:
the project and its mirror pushed, the wheelhouse installed offline into a venv of the
guest-like interpreter through the link, and the real pcre2 -> grep sandbox build run by that
interpreter's ``doit`` through the link, its output live on the host."""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from pathlib import Path

import pytest

from tasks.guest.push import MIRROR_EXCLUDE, PROJECT_EXCLUDE, push
from tasks.guest.run import GuestRun
from tasks.guest.wheelhouse import engine_requirements, install_command, make_wheelhouse
from tests.conftest import REPO
from tests.guest_python import guest_python
from tests.sshd import Sshd, missing
from tests.test_link import Output, guest_project

pytestmark = [
    pytest.mark.network,
    pytest.mark.slow,
    pytest.mark.skipif(bool(missing()), reason=str(missing())),
]


def test_pcre2_and_grep_built_in_the_stand_in_guest(tmp_path: Path, archive: str) -> None:
    interpreter = guest_python(archive)
    host = guest_project(tmp_path / "host")
    for name in ("pcre2", "grep"):
        shutil.copy(REPO / "recipes" / f"{name}.toml", host.root / "recipes")
    config = 'platform = "sandbox"\n'
    if (REPO / "mirror").is_dir():
        config += f"mirrors = [{json.dumps(str(REPO / 'mirror'))}]\n"
    host.config(config)
    r = host.doit("mirror")  # the host fetches; the guest never touches the network
    assert r.code == 0, r.out + r.err
    wheelhouse = tmp_path / "host" / "cache" / "wheelhouse"
    make_wheelhouse(wheelhouse, engine_requirements(REPO / "pyproject.toml"))

    sshd = Sshd(tmp_path / "sshd")
    sshd.start()
    try:
        link, dest = sshd.endpoint(), tmp_path / "guest" / "azl"
        start = time.monotonic()
        pushed = push(link, host.root, str(dest), PROJECT_EXCLUDE)
        mirror = push(link, host.root / "mirror", str(dest / "mirror"), MIRROR_EXCLUDE)
        wheels = push(link, wheelhouse, str(dest / "wheelhouse"))
        print(
            f"push: {time.monotonic() - start:.1f} s, "
            f"{(pushed.bytes + mirror.bytes + wheels.bytes) / 1e6:.1f} MB",
            file=sys.stderr,
        )
        venv = dest / "venv"
        start = time.monotonic()
        r = link.run(
            f"{interpreter} -m venv {venv} && PIP_CONFIG_FILE=/dev/null "
            + install_command(str(venv / "bin" / "python"), str(dest / "wheelhouse"))
        )
        assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
        print(f"wheelhouse install: {time.monotonic() - start:.1f} s", file=sys.stderr)

        out = Output()
        code = GuestRun(link, str(dest), ["grep"], out, python=str(venv / "bin" / "python")).drive()
        assert code == 0, out.text
        assert ".  pcre2" in out.text and ".  grep" in out.text
        assert out.when(".  pcre2") < out.when(".  grep")
        grep = dest / "cache" / "sandbox" / "root" / "usr" / "bin" / "grep"
        r = link.run(f"echo foo123bar | {grep} -oP '\\d+(?=bar)'")
        assert r.stdout == b"123\n", r.stderr
        # the same names again: the guest's state says everything is done
        out = Output()
        code = GuestRun(link, str(dest), ["grep"], out, python=str(venv / "bin" / "python")).drive()
        ran = re.findall(r"^\.  (\S+)", out.text, re.M)
        assert code == 0 and [t for t in ran if not t.startswith("mirror")] == [], out.text
    finally:
        sshd.stop()
