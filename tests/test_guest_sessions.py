"""The guest's session steps (kind ``session``) of the real recipe set: each ``check`` sees
the effect, not a stamp, and each step's script brings the effect back. Run on this machine
inside private namespaces (``unshare``: a mount namespace without /dev/pts, a UTS namespace
with another host name), and with a real dropbear on a loopback port, so nothing of the
machine changes."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tasks.kinds.session import effect_present
from tasks.loader import parse_recipe
from tests.conftest import REPO

ROOT_NS = os.geteuid() == 0 and shutil.which("unshare") is not None


def recipe(name: str):  # noqa: ANN201
    r, errors = parse_recipe(REPO / "recipes" / f"{name}.toml")
    assert r is not None, errors
    assert r.kind == "session" and "guest" in r.platforms
    return r


def in_namespace(flags: list[str], script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["unshare", *flags, "sh", "-c", script], capture_output=True, text=True, timeout=60
    )


@pytest.mark.skipif(not ROOT_NS, reason="needs root and unshare for a private mount namespace")
def test_devpts_is_redone_exactly_when_the_mount_is_gone() -> None:
    r = recipe("devpts")
    check, script = r.spec.check, r.script["install"]
    assert effect_present(check, dict(os.environ))  # this machine has its /dev/pts: not redone
    out = in_namespace(
        ["--mount", "--propagation", "private"],
        "while grep -q ' /dev/pts devpts ' /proc/mounts; do umount -l /dev/pts || exit 9; done\n"
        f"if {check}; then echo present; else echo absent; fi\n"
        f"{script}\n"
        f"if {check}; then echo present; else echo absent; fi\n",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["absent", "mounted", "devpts", "on", "/dev/pts", "present"]


@pytest.mark.skipif(not ROOT_NS, reason="needs root and unshare for a private UTS namespace")
def test_hostname_is_redone_exactly_when_the_kernel_forgot_it() -> None:
    if not Path("/etc/hostname").is_file():
        pytest.skip("this machine has no /etc/hostname")
    r = recipe("hostname")
    check, script = r.spec.check, r.script["install"]
    out = in_namespace(
        ["--uts"],
        f"if {check}; then echo present; else echo absent; fi\n"
        "echo '(none)' > /proc/sys/kernel/hostname\n"  # what a reboot or the kexec leaves
        f"if {check}; then echo present; else echo absent; fi\n"
        f"( {script} ) >/dev/null\n"
        f"if {check}; then echo present; else echo absent; fi\n",
    )
    assert out.returncode == 0, out.stderr
    first = (
        "present" if os.uname().nodename == Path("/etc/hostname").read_text().strip() else "absent"
    )
    assert out.stdout.split() == [first, "absent", "present"]


@pytest.mark.skipif(not ROOT_NS, reason="needs root and unshare for a private PID namespace")
def test_ssh_access_sees_whether_dropbear_runs(tmp_path: Path) -> None:
    """In a private PID namespace (its own /proc), so other dropbears of this machine are not
    seen: none runs -> due; a real dropbear runs -> done; it is killed -> due again."""
    dropbear = shutil.which("dropbear") or "/usr/sbin/dropbear"
    if not Path(dropbear).exists():
        pytest.skip("no dropbear (Debian: dropbear-bin)")
    check = recipe("ssh-access").spec.check
    key = tmp_path / "host_key"
    subprocess.run(["dropbearkey", "-t", "ed25519", "-f", key], capture_output=True, check=True)
    from tasks.vm import free_port

    state = f"if ( {check} ); then echo running; else echo absent; fi"
    out = in_namespace(
        ["--pid", "--fork", "--mount-proc"],
        f"{state}\n"
        f"{dropbear} -F -E -r {key} -p 127.0.0.1:{free_port()} 2>/dev/null & pid=$!\n"
        f"for i in $(seq 50); do ( {check} ) && break; sleep 0.1; done\n"
        f"{state}\n"
        "kill $pid; wait $pid\n"
        f"{state}\n",
    )
    assert out.stdout.split() == ["absent", "running", "absent"], out.stderr
