"""The guest link against a real OpenSSH server on 127.0.0.1 standing in for the guest: push
the project and its mirror (only what changed), run the guest ``doit`` through it with live
output and its exit code, survive a dropped connection, a vanished guest and the kexec."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.guest.push import MIRROR_EXCLUDE, PROJECT_EXCLUDE, push
from tasks.guest.run import GuestRun
from tests.conftest import REPO, Project
from tests.sshd import Sshd, missing

pytestmark = pytest.mark.skipif(bool(missing()), reason=str(missing()))


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    server = Sshd(tmp_path / "sshd")
    server.start()
    yield server
    server.stop()


def guest_project(root: Path) -> Project:
    """A project that runs on its own: dodo.py, the engine (tasks/), recipes, mirror."""
    project = Project(root)
    (root / "azl-bootstrap.toml").unlink()  # the guest decides its platform itself
    shutil.copytree(REPO / "tasks", root / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", root)  # names doit's state backend (no install)
    return project


def push_all(sshd: Sshd, project: Project, dest: Path) -> None:
    link = sshd.endpoint()
    push(link, project.root, str(dest), PROJECT_EXCLUDE)
    push(link, project.root / "mirror", str(dest / "mirror"), MIRROR_EXCLUDE)


class Output:
    """What the host user sees, with the time each line arrived."""

    def __init__(self) -> None:
        self.lines: list[tuple[float, str]] = []

    def __call__(self, line: str) -> None:
        self.lines.append((time.monotonic(), line))

    @property
    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def when(self, needle: str) -> float:
        return next(t for t, line in self.lines if needle in line)


def runs(marker: Path) -> int:
    return len(marker.read_text().splitlines()) if marker.exists() else 0


def counting(marker: Path, sleep: float = 0) -> str:
    """An install script that records each run in ``marker`` (a build that really ran)."""
    return (
        f'echo "$PKG" >> "{marker}"; sleep {sleep}; mkdir -p "$DESTDIR$PREFIX/share"'
        ' && cp data.txt "$DESTDIR$PREFIX/share/$PKG.txt"'
    )


def test_push_sends_only_what_changed(tmp_path: Path, sshd: Sshd) -> None:
    project = guest_project(tmp_path / "host")
    project.recipe("a")
    (project.root / "mirror" / "big.bin").write_bytes(bytes(range(256)) * 4096)
    (project.root / "cache").mkdir()
    (project.root / "cache" / "host-only").write_text("never pushed")
    dest = tmp_path / "guest" / "azl"
    link = sshd.endpoint()

    first = push(link, project.root, str(dest), PROJECT_EXCLUDE)
    mirror = push(link, project.root / "mirror", str(dest / "mirror"), MIRROR_EXCLUDE)
    assert first.sent == first.files > 10 and mirror.sent == 2
    vm = Path("tasks", "guest", "vm.py")
    assert (dest / vm).read_bytes() == (REPO / vm).read_bytes()
    assert (dest / "tasks" / "build" / "action.py").exists()  # the engine's, not a build dir
    assert (dest / "mirror" / "big.bin").stat().st_size == 1 << 20
    assert not (dest / "cache" / "host-only").exists()
    assert not (dest / "azl-bootstrap.toml").exists()

    # unchanged: nothing sent, not even a tar header
    again = push(link, project.root, str(dest), PROJECT_EXCLUDE)
    assert (again.sent, again.bytes) == (0, 0)

    # one changed file (same size, same mtime: content decides), one gone, one new
    recipe = project.root / "recipes" / "a.toml"
    st = recipe.stat()
    recipe.write_text(recipe.read_text().replace('"1.0"', '"1.1"', 1))
    import os

    os.utime(recipe, ns=(st.st_atime_ns, st.st_mtime_ns))
    (project.root / "tasks" / "engine" / "graph.py").unlink()
    (project.root / "recipes" / "b.toml").write_text('version = "1"\n')
    (dest / "cache").mkdir()
    (dest / "cache" / "guest-made").write_text("the guest's own")
    # a file changed in the guest since the push is sent again
    (dest / "dodo.py").write_text("# edited in the guest\n")
    r = push(link, project.root, str(dest), PROJECT_EXCLUDE)
    assert (r.sent, r.deleted) == (3, 1)
    assert (dest / "recipes" / "a.toml").read_text() == recipe.read_text()
    assert (dest / "dodo.py").read_bytes() == (REPO / "dodo.py").read_bytes()
    assert not (dest / "tasks" / "engine" / "graph.py").exists()
    assert (dest / "cache" / "guest-made").exists()  # never pushed: never deleted


def test_the_guest_doit_runs_through_the_link(tmp_path: Path, sshd: Sshd) -> None:
    marker = tmp_path / "built"
    project = guest_project(tmp_path / "host")
    project.recipe("a", install=counting(marker, sleep=4))
    project.recipe("b", deps=("a",), install=counting(marker))
    project.recipe("broken", deps=("a",), install='echo "broken: no such compiler" >&2; exit 3')
    dest = tmp_path / "guest" / "azl"
    push_all(sshd, project, dest)

    out = Output()
    code = GuestRun(sshd.endpoint(), str(dest), ["b"], out, python=sys.executable).drive()
    end = time.monotonic()
    assert code == 0, out.text
    assert ".  a" in out.text and ".  b" in out.text
    # live: the line for a arrived while a was still building (it sleeps 4 s)
    assert end - out.when(".  a") > 2, out.lines
    assert (dest / "cache" / "manifests" / "b.json").exists()
    assert runs(marker) == 2

    # the same task names again: nothing rebuilt
    out = Output()
    assert GuestRun(sshd.endpoint(), str(dest), ["b"], out, python=sys.executable).drive() == 0
    assert runs(marker) == 2

    # a failing recipe: non-zero exit, its message on the host
    out = Output()
    code = GuestRun(sshd.endpoint(), str(dest), ["broken"], out, python=sys.executable).drive()
    assert code != 0
    assert "broken" in out.text and "no such compiler" in out.text, out.text


def test_a_dropped_connection_is_reported_and_the_run_goes_on(tmp_path: Path, sshd: Sshd) -> None:
    marker = tmp_path / "built"
    project = guest_project(tmp_path / "host")
    project.recipe("a", install=counting(marker, sleep=4))
    project.recipe("b", deps=("a",), install=counting(marker))
    dest = tmp_path / "guest" / "azl"
    push_all(sshd, project, dest)

    out = Output()
    run = GuestRun(sshd.endpoint(), str(dest), ["b"], out, python=sys.executable)

    def drop() -> None:
        while runs(marker) == 0:
            time.sleep(0.1)
        assert sshd.kill_sessions() >= 1  # mid-build: a is building

    killer = threading.Thread(target=drop)
    killer.start()
    code = run.drive()
    killer.join()
    assert code == 0, out.text
    assert "connection to the guest lost" in out.text
    assert "reconnected" in out.text
    assert runs(marker) == 2  # a built once, then b
    assert out.text.count(".  a") == 1  # no line shown twice after the reconnect


def test_a_vanished_guest_fails_the_run_and_the_next_run_continues(
    tmp_path: Path, sshd: Sshd
) -> None:
    marker = tmp_path / "built"
    project = guest_project(tmp_path / "host")
    project.recipe("a", install=counting(marker, sleep=3))
    project.recipe("b", deps=("a",), install=counting(marker, sleep=1))
    dest = tmp_path / "guest" / "azl"
    push_all(sshd, project, dest)

    def vanish() -> None:
        while runs(marker) == 0:
            time.sleep(0.1)
        sshd.stop()

    killer = threading.Thread(target=vanish)
    killer.start()
    out = Output()
    run = GuestRun(
        sshd.endpoint(), str(dest), ["b"], out, python=sys.executable, reconnect_timeout=3
    )
    code = run.drive()
    killer.join()
    assert code == 255
    assert "the guest did not come back" in out.text

    sshd.start()  # the next host run: the guest build went on meanwhile, or goes on now
    out = Output()
    code = GuestRun(sshd.endpoint(), str(dest), ["b"], out, python=sys.executable).drive()
    assert code == 0, out.text
    assert runs(marker) == 2  # nothing finished was rebuilt


def test_the_kexec_ends_the_guest_session_and_the_link_follows_it(
    tmp_path: Path, sshd: Sshd
) -> None:
    """The mock kexec does what the real one does to the stand-in: the running machine
    becomes x86_64, every process of the guest's session dies (doit too) and the SSH server
    goes away until the "new kernel" has started it again."""
    marker, machine = tmp_path / "built", tmp_path / "machine"
    machine.write_text("i686\n")
    project = guest_project(tmp_path / "host")
    project.recipe("a", install=counting(marker))
    dest = tmp_path / "guest" / "azl"
    kexec = "\n".join(
        [
            f'echo kexec >> "{marker}"',
            f'echo x86_64 > "{machine}"',
            f"SSHD=$(cat {sshd.work / 'sshd.pid'})",
            'kill -9 $(cat /proc/$SSHD/task/$SSHD/children) "$SSHD"',
            f"kill -9 -$(cat {dest / 'cache' / 'link' / 'run.pid'})",  # the run's session
            "sleep 30",
        ]
    )
    project.recipe(
        "kexec", 'kind = "checkpoint"\nrunning_machine = "x86_64"\n', deps=("a",), install=kexec
    )
    project.recipe("b", deps=("kexec",), install=counting(marker))
    push_all(sshd, project, dest)

    def new_kernel() -> None:
        assert sshd.proc is not None
        try:
            sshd.proc.wait(timeout=120)  # the kexec takes the server down
        except subprocess.TimeoutExpired:
            return  # no kexec came: the assertions below say what happened
        time.sleep(2)
        sshd.start()  # the /init of the new kernel starts it again

    booter = threading.Thread(target=new_kernel)
    booter.start()
    out = Output()
    run = GuestRun(
        sshd.endpoint(), str(dest), ["b"], out, python=sys.executable,
        setup=f'export AZL_MACHINE="$(cat {machine})"', reconnect_timeout=60,
    )  # fmt: skip
    code = run.drive()
    booter.join()
    assert code == 0, out.text
    assert "connection to the guest lost" in out.text
    assert "starting it again" in out.text
    assert marker.read_text().split() == ["a", "kexec", "b"]  # nothing twice


def test_a_refused_key_or_a_changed_host_key_fails_at_once(tmp_path: Path, sshd: Sshd) -> None:
    from tasks.guest.link import Endpoint, LinkError

    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other], check=True)
    start = time.monotonic()
    stranger = Endpoint(sshd.port, other, sshd.host_key_pub, tmp_path / "s1")
    with pytest.raises(LinkError, match="the guest refused our key"):
        stranger.wait_up(60)
    impostor = Endpoint(sshd.port, sshd.client_key, other.with_suffix(".pub"), tmp_path / "s2")
    with pytest.raises(LinkError, match="not the one recorded"):
        impostor.wait_up(60)
    assert time.monotonic() - start < 30  # neither waited for the timeout
