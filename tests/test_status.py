"""``doit status`` (issue 16): the pipeline at a glance, as the user types it, at several
moments of a run. The moments are laid out as the steps leave them (preflight's record,
lb-image's state file, the journal, the VM's ``cache/vm/vm.json``); while the "VM" is up the
guest's state is read over a real SSH link (the OpenSSH stand-in of tests/sshd.py, a
directory of this machine standing in for the guest's project)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tasks.engine import durations, report
from tasks.guest.run import GUEST_STATE
from tests.conftest import REPO
from tests.sshd import Sshd, missing


def project(root: Path, config: str = "") -> Path:
    shutil.copytree(REPO / "recipes", root / "recipes")
    shutil.copy(REPO / "dodo.py", root)
    (root / "mirror").mkdir()
    (root / "azl-bootstrap.toml").write_text('platform = "sandbox"\n' + config)
    return root


def status(root: Path) -> str:
    r = subprocess.run([sys.executable, "-m", "doit", "status"], cwd=root, capture_output=True,
                       text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout


def line(out: str, phase: str) -> str:
    return next(ln for ln in out.splitlines() if re.match(rf"^  {re.escape(phase)}\s", ln))


def remaining(out: str) -> int:
    h, m, s = re.search(r"remaining: about (\d+):(\d\d):(\d\d)", out).groups()
    return int(h) * 3600 + int(m) * 60 + int(s)


def write(path: Path, doc: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def test_status_before_and_during_live_bootstrap(tmp_path: Path) -> None:
    root = project(tmp_path / "p")
    out = status(root)
    print(out)
    assert "not started" in line(out, "preflight") and "not started" in line(out, "iso")
    # nothing recorded here: the seed's figures (live-bootstrap ~6 h, toolchain ~5 h, ...)
    assert "~6:00:00, the seed's run" in line(out, "lb-image")
    assert "~5:00:00" in line(out, "toolchain")
    fresh = remaining(out)
    assert fresh > 24 * 3600

    host = root / "cache" / "host"
    write(host / "preflight.json", {"accel": "tcg"})
    write(root / "cache" / "checkouts" / "live-bootstrap.json", {})
    started = int(time.time()) - 3600
    write(host / "lb-image.state.json", {"state": "running", "pid": os.getpid(),
          "step": "gcc-4.0.4", "started": started, "time": int(time.time())})  # fmt: skip
    out = status(root)
    print(out)
    assert "done" in line(out, "preflight") and "done" in line(out, "live-bootstrap")
    lb = line(out, "lb-image")
    assert re.search(r"running for 1:00:\d\d: live-bootstrap step: gcc-4.0.4", lb), lb
    assert fresh - remaining(out) > 3600  # an hour of it spent, the two done steps too
    assert "elapsed:" in out

    # stopped: failed, with what and where
    write(host / "lb-image.state.json", {"state": "stopped", "step": "gcc-4.0.4",
          "why": "interrupted", "time": int(time.time())})  # fmt: skip
    lb = line(status(root), "lb-image")
    assert "failed: stopped at gcc-4.0.4 (interrupted)" in lb and "cache/logs/lb-image.log" in lb


@pytest.mark.skipif(bool(missing()), reason=str(missing()))
def test_status_reads_the_guest_over_the_link_while_the_vm_is_up(tmp_path: Path) -> None:
    sshd = Sshd(tmp_path / "sshd")
    sshd.start()
    dest = tmp_path / "guest" / "azl-bootstrap"
    root = project(
        tmp_path / "p",
        f'[vm]\nclient_key = "{sshd.client_key}"\nhost_key = "{sshd.host_key_pub}"\n'
        f'dest = "{dest}"\npython = "{sys.executable}"\n',
    )
    # the guest's project: its engine, its journal (a finished pcre2 that took 2 min), its
    # running doit's log (building kernel64 now)
    shutil.copytree(REPO / "tasks", dest / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    from tasks.store.state import TaskStateDB

    db = TaskStateDB(str(dest / "cache" / "state"))
    db.set("pcre2", "_values_:", {"seconds": 120.0})
    db.dump()
    link = dest / "cache" / "link"
    link.mkdir(parents=True)
    (link / "run.log").write_text(".  pcre2\n.  libelf\n.  kernel64\n")
    (link / "run.pid").write_text(str(os.getpid()))
    (link / "run.args").write_text('["iso"]')
    host = root / "cache" / "host"
    write(host / "preflight.json", {"accel": "tcg"})
    write(host / "lb-image.state.json", {"state": "finished", "time": 0})
    assert sshd.proc is not None
    write(root / "cache" / "vm" / "vm.json", {"pid": sshd.proc.pid, "port": sshd.port})
    try:
        out = status(root)
    finally:
        sshd.stop()
    print(out)
    assert "guest: VM up, read over the link" in out
    packages = line(out, "guest packages")
    assert re.search(r"running: 1 of \d+ done; now kernel64", packages), packages
    saved = json.loads((host / GUEST_STATE).read_text())
    assert saved["seconds"] == {"pcre2": 120.0}

    # the VM is down now (its qemu gone): what was read last, and the failure in the
    # host's copy of the guest's output
    (root / "cache" / "logs").mkdir(parents=True)
    (root / "cache" / "logs" / "guest.log").write_text(
        "azl: guest doit iso\n.  kernel64\nFAILED kernel64\n"
    )
    saved["tail"], saved["running"] = [], False
    write(host / GUEST_STATE, saved)
    out = status(root)
    print(out)
    assert "guest: VM down; as read at" in out
    packages = line(out, "guest packages")
    assert "failed" in packages and "cache/logs/kernel64.log" in packages, packages


def test_the_progress_bar_counts_estimated_seconds(tmp_path: Path, monkeypatch) -> None:
    """On a terminal, the bar's total is the tasks' estimated seconds (a toolchain's 5 h
    weighs what it takes, a fetch one second), so its time left follows the durations; a
    task that turns out up to date leaves the total rather than counting as done."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    state = tmp_path / "cache" / "state"
    state.mkdir(parents=True)

    def task(name: str) -> SimpleNamespace:
        return SimpleNamespace(name=name, actions=[object()], task_dep=[], setup_tasks=[],
                               calc_dep=[], meta=None, values={})  # fmt: skip

    tasks = {n: task(n) for n in ("toolchain", "mirror:a.tar.gz", "pcre2")}
    rep = report.make_reporter(state)(Terminal(), {})
    rep.initialize(tasks, list(tasks))
    assert rep.bar is not None
    assert rep.bar.total == 5 * 3600 + 1 + durations.DEFAULT
    rep.skip_uptodate(tasks["pcre2"])
    assert (rep.bar.total, rep.bar.n) == (5 * 3600 + 1, 0)
    rep.add_success(tasks["mirror:a.tar.gz"])
    assert rep.bar.n == 1
    rep.complete_run()


def test_a_kexec_the_guest_saw_up_to_date_is_done(tmp_path: Path) -> None:
    """The kexec ends its own run (doit records nothing), and the run started again after the
    reconnection finds it up to date: status says done, not "not started" (seen in the e2e
    rehearsal). The journal alone decides for the packages."""
    root = project(tmp_path / "p")
    host = root / "cache" / "host"
    write(host / "preflight.json", {"accel": "tcg"})
    write(host / "lb-image.state.json", {"state": "finished", "time": 0})
    tail = [".  kexec", "azl: reconnected to the guest", "-- kexec", "-- pcre2", ".  go1.4"]
    guest = {"done": ["pcre2"], "seconds": {}, "rc": None, "running": True, "tail": tail,
             "time": int(time.time())}  # fmt: skip
    write(host / GUEST_STATE, guest)
    out = status(root)
    print(out)
    assert re.search(r"done$", line(out, "kexec")), line(out, "kexec")
    assert re.search(r"running: 1 of \d+ done; now go1.4", line(out, "guest packages")), out
    guest["tail"] = tail[:2]  # before the reconnection: the kexec is what runs
    write(host / GUEST_STATE, guest)
    assert "running: now kexec" in line(status(root), "kexec")
    # the run over, some packages done: partly done, not "not started"
    guest["tail"], guest["running"], guest["rc"] = tail, False, "0"
    write(host / GUEST_STATE, guest)
    packages = line(status(root), "guest packages")
    assert re.search(r"partly done: 1 of \d+ done", packages), packages
    # the tail never read: the host's copy of the guest's output says the same
    (root / "cache" / "logs").mkdir(parents=True)
    (root / "cache" / "logs" / "guest.log").write_text("azl: guest doit iso\n" + "\n".join(tail))
    guest["tail"] = []
    write(host / GUEST_STATE, guest)
    assert re.search(r"done$", line(status(root), "kexec"))
