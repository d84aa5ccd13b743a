"""The guest's session steps (kind "session": redone whenever their effect is absent), run for
real as root in private namespaces of this machine, so nothing outside them changes:

- devpts.toml: /dev/pts unmounted in a private mount namespace (as after the kexec), then
  the step's check fails, its script mounts devpts, the check passes;
- ssh-access.toml: the machine's dropbear started in a new network namespace with private
  /run and /etc/dropbear; the check sees it listening on port 22, it answers with its SSH
  banner; killed afterwards;
- hosts.toml: a bare /etc/hosts and /etc/hostname bound over the machine's, a new UTS
  namespace whose host name is "(none)" as live-bootstrap's;
- root-home.toml: an /etc/passwd whose root home does not exist.

The plan test checks the wiring: the stages depend on the sessions they need, so `doit
toolchain` after a kexec redoes them first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from tasks.engine.plan import Project as Plan
from tests.conftest import REPO

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare"),
    reason="the steps run in private namespaces: needs root and unshare",
)


def recipe(name: str) -> dict:
    return tomllib.loads((REPO / "recipes" / f"{name}.toml").read_text())


def steps(name: str) -> tuple[str, str]:
    r = recipe(name)
    return r["check"], r["script"]["install"]


def in_namespaces(flags: list[str], setup: str, name: str, after: str = "") -> str:
    """In new namespaces: ``setup``; then the check must fail, the install succeed, the
    check pass, a second install change nothing the check sees; then ``after``. Returns the
    script's output."""
    check, install = steps(name)
    script = f"""
set -u
{setup}
if ( {check} ) >/dev/null 2>&1; then echo "CHECK PASSED BEFORE"; exit 10; fi
( set -e; {install} ) || {{ echo "INSTALL FAILED"; exit 11; }}
( {check} ) || {{ echo "CHECK FAILED AFTER"; exit 12; }}
( set -e; {install} ) || {{ echo "SECOND INSTALL FAILED"; exit 13; }}
( {check} ) || {{ echo "CHECK FAILED AFTER SECOND"; exit 14; }}
{after}
"""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "PREFIX": "/usr"}  # fmt: skip
    r = subprocess.run(["unshare", *flags, "sh", "-c", script], env=env, capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


@needs_root
def test_devpts_is_mounted_again_after_it_is_gone() -> None:
    setup = """
while grep -q '^[^ ]* /dev/pts devpts ' /proc/mounts; do umount -l /dev/pts || exit 20; done
"""
    after = "grep '^[^ ]* /dev/pts devpts ' /proc/mounts"
    out = in_namespaces(["-m"], setup, "devpts", after)
    assert "mounted devpts on /dev/pts" in out
    mounts = [line for line in out.splitlines() if " /dev/pts devpts " in line]
    assert len(mounts) == 1 and "gid=5" in mounts[0] and "mode=620" in mounts[0], out


@needs_root
def test_dropbear_is_started_again_when_it_is_not_listening(tmp_path: Path) -> None:
    if not shutil.which("dropbear", path="/usr/sbin:/usr/bin:/sbin:/bin"):
        pytest.skip("no dropbear on this machine")
    run, keys = tmp_path / "run", tmp_path / "dropbear"
    run.mkdir()
    keys.mkdir()
    setup = f"""
ip link set lo up
mount --bind {run} /run
mount --bind {keys} /etc/dropbear
"""
    banner = (
        "python3 -c \"import socket; s = socket.create_connection(('127.0.0.1', 22), 10); "
        'print(s.recv(64).split(bytes([13, 10]))[0].decode())"'
    )
    after = f"{banner}; kill $(cat /run/dropbear.pid); echo KILLED"
    out = in_namespaces(["-m", "-n"], setup, "ssh-access", after)
    assert "started dropbear on port 22" in out and "KILLED" in out
    assert "SSH-2.0-dropbear" in out  # an SSH server answers on port 22


@needs_root
def test_hosts_and_host_name_are_set_again(tmp_path: Path) -> None:
    hosts, hostname = tmp_path / "hosts", tmp_path / "hostname"
    hosts.write_text("# live-bootstrap has none; a line of the user's:\n10.0.2.2 build-host\n")
    hostname.write_text("")
    setup = f"""
mount --bind {hosts} /etc/hosts
mount --bind {hostname} /etc/hostname
echo '(none)' > /proc/sys/kernel/hostname
"""
    after = "uname -n"
    out = in_namespaces(["-m", "-u"], setup, "hosts", after)
    assert out.splitlines()[-1] == "azl-bootstrap"
    assert hostname.read_text() == "azl-bootstrap\n"
    lines = hosts.read_text().splitlines()
    assert lines == [
        "# live-bootstrap has none; a line of the user's:",
        "10.0.2.2 build-host",
        "127.0.0.1 localhost",
        "::1 localhost ip6-localhost ip6-loopback",
        "127.0.1.1 azl-bootstrap",
    ]  # the second run added nothing


@needs_root
def test_root_home_is_made_when_passwd_names_a_missing_one(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    home = tmp_path / "roothome"
    passwd.write_text(f"root:x:0:0:root:{home}:/bin/bash\n")
    out = in_namespaces(["-m"], f"mount --bind {passwd} /etc/passwd", "root-home")
    assert f"made {home}" in out
    # searchable by others: the lfs user builds the raw toolchain in /root/azurelinux/build
    assert home.is_dir() and (home.stat().st_mode & 0o777) == 0o755


@needs_root
def test_root_home_that_others_cannot_enter_is_made_searchable(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    home = tmp_path / "roothome"
    home.mkdir(mode=0o700)
    home.chmod(0o700)
    passwd.write_text(f"root:x:0:0:root:{home}:/bin/bash\n")
    in_namespaces(["-m"], f"mount --bind {passwd} /etc/passwd", "root-home")
    assert (home.stat().st_mode & 0o777) == 0o755


def test_sessions_are_guest_steps_the_stages_wait_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZL_PLATFORM", "guest")
    plan = Plan(REPO)
    sessions = {"devpts", "ssh-access", "hosts", "root-home"}
    for name in sessions:
        build = plan.builds[name]
        assert build.recipe.kind == "session" and build.recipe.platforms == ("guest",), name
    assert "devpts" in plan.builds["ssh-access"].depends
    # what the stages need is redone before them after a kexec
    assert {"root-home", "hosts"} <= set(plan.builds["go-tools"].depends)
    assert {"devpts", "root-home"} <= set(plan.builds["raw-toolchain"].depends)
    # the setup package keeps only files
    assert "post_install" not in plan.builds["guest-setup"].recipe.script
