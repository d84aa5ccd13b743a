"""Run the guest's ``doit`` from the host over the link, and follow it to the end.

The guest ``doit`` does not hang on the SSH session: it is started detached (its own session,
stdin from /dev/null) with its output in ``<dest>/cache/link/run.log`` and its exit status
written to ``run.rc`` when it ends; ``run.pid``, ``run.boot`` (the guest kernel's boot id)
and ``run.args`` say which run it is. The host follows the log over a second connection,
passing each line on as it comes, from the byte it had reached, so:

- a dropped connection or a killed host ``doit`` does not stop the guest build; the link (or
  the next host run) waits for the guest to answer again and goes on following where it was;
- a guest run that ended without an exit status (its process is gone, or the boot id
  changed: the kexec into the 64-bit kernel, a reboot, a crash) is started again with the
  same arguments: the guest's own state decides what is left to do, so nothing finished is
  rebuilt, and checkpoints such as the kexec are done or not by what the running guest is;
- a run already going when the host starts (from an earlier host run) is followed, not
  doubled; if it had other arguments, ours starts when it ends.

The status of the guest run decides the host's exit code. ``drive`` returns it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tasks.guest.link import SSH_FAILED, Endpoint, LinkError, quote

RUN_DIR = "cache/link"

# In the guest: start the run detached. argv: dest, python, setup, args-json
_START = r"""
import json, os, sys
dest, python, setup, args = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
os.chdir(dest)
os.makedirs("cache/link", exist_ok=True)
for name in ("run.rc", "run.pid"):
    try:
        os.unlink("cache/link/" + name)
    except OSError:
        pass
with open("cache/link/run.args", "w") as f:
    json.dump(args, f)
with open("/proc/sys/kernel/random/boot_id") as f, open("cache/link/run.boot", "w") as g:
    g.write(f.read().strip())
log = os.open("cache/link/run.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
if os.fork():
    sys.exit(0)
os.setsid()
null = os.open("/dev/null", os.O_RDONLY)
os.dup2(null, 0); os.dup2(log, 1); os.dup2(log, 2)
with open("cache/link/run.pid.part", "w") as f:
    f.write(str(os.getpid()))
os.replace("cache/link/run.pid.part", "cache/link/run.pid")
q = " ".join("'" + a.replace("'", "'\\''") + "'" for a in args)
script = (setup + "\n" if setup else "") + python + " -m doit " + q + "\n" + (
    "rc=$?; echo $rc > cache/link/run.rc.part && mv cache/link/run.rc.part cache/link/run.rc")
os.environ["PYTHONUNBUFFERED"] = "1"  # lines reach the log (and the host) as they come
os.execvp("sh", ["sh", "-c", script])
"""

# In the guest: the run's state, then (mode "follow") its log from a byte offset until it
# ends. The last stderr line: "AZL-RUN none|running|done <rc>|lost" and the run's args.
_STATUS = r"""
import json, os, sys, time
os.chdir(sys.argv[1])
mode, offset = sys.argv[2], int(sys.argv[3])
d = "cache/link/"
def read(name):
    try:
        with open(d + name) as f:
            return f.read().strip()
    except OSError:
        return None
def state():
    rc = read("run.rc")
    if rc is not None:
        return "done " + rc
    if read("run.args") is None:
        return "none"
    pid, boot = read("run.pid"), read("run.boot")
    with open("/proc/sys/kernel/random/boot_id") as f:
        now = f.read().strip()
    if pid is None:  # started a moment ago, not written yet
        return "running" if boot == now else "lost"
    alive = boot == now and os.path.exists("/proc/" + pid)
    if alive:
        try:
            with open("/proc/" + pid + "/stat") as f:
                alive = f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            alive = False
    return "running" if alive else ("done " + read("run.rc") if read("run.rc") else "lost")
out = sys.stdout.buffer
if mode == "follow":
    try:
        log = open(d + "run.log", "rb")
        log.seek(offset)
    except OSError:
        log = None
    while True:
        s = state()
        data = log.read(1 << 20) if log else b""
        if data:
            out.write(data)
            out.flush()
            continue
        if s != "running":
            break
        time.sleep(0.2)
sys.stderr.write("AZL-RUN " + state() + " " + (read("run.args") or "null") + "\n")
"""


@dataclass
class RunStatus:
    state: str  # none | running | done | lost | unreachable
    rc: int | None = None
    args: list[str] | None = None


def _parse(stderr: bytes) -> RunStatus | None:
    for line in reversed(stderr.decode(errors="replace").splitlines()):
        if line.startswith("AZL-RUN "):
            words = line.split(" ", 3) if line.startswith("AZL-RUN done") else line.split(" ", 2)
            state = words[1]
            rc = int(words[2]) if state == "done" else None
            args = json.loads(words[-1])
            return RunStatus(state, rc, args)
    return None


class GuestRun:
    """Drives one guest ``doit`` invocation; see the module docstring."""

    def __init__(
        self,
        link: Endpoint,
        dest: str,
        args: Sequence[str],
        out: Callable[[str], None],
        *,
        python: str = "python3",
        setup: str = "",
        reconnect_timeout: float = 600.0,
        max_starts: int = 4,
        alive: Callable[[], str | None] = lambda: None,
        console: Path | None = None,
    ):
        self.link, self.dest, self.args, self.out = link, dest, list(args), out
        # the VM's serial console log: while the guest is away (the kexec, a reboot) its new
        # lines are passed on, so the host follows the boot (the kexec's console=ttyS0)
        self.console = console
        self._console_at = console.stat().st_size if console and console.exists() else 0
        self.python, self.setup = python, setup
        self.reconnect_timeout, self.max_starts = reconnect_timeout, max_starts
        self.alive = alive  # why the guest cannot come back (its VM is gone), or None
        self.offset = 0
        self.starts = 0
        self.reconnects = 0
        self._partial = b""

    def _script(self, script: str, *argv: str) -> str:
        return quote([self.python, "-c", script, *argv])

    def status(self) -> RunStatus:
        r = self.link.run(self._script(_STATUS, self.dest, "status", "0"), timeout=60)
        st = _parse(r.stderr)
        if st is None:
            self.link.check_key_error(r.stderr)
            if r.returncode == SSH_FAILED:
                return RunStatus("unreachable")
            raise LinkError(f"cannot read the guest run's state: {r.stderr.decode().strip()}")
        return st

    def start(self) -> None:
        self.starts += 1
        r = self.link.run(
            self._script(_START, self.dest, self.python, self.setup, json.dumps(self.args)),
            timeout=60,
        )
        if r.returncode:
            raise LinkError(f"cannot start doit in the guest: {r.stderr.decode().strip()}")
        self.offset = 0

    def follow(self) -> RunStatus:
        """Pass the log on from ``offset`` until the run ends or the connection drops."""
        proc = subprocess.Popen(
            self.link.ssh_argv(self._script(_STATUS, self.dest, "follow", str(self.offset))),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        while chunk := proc.stdout.read1(65536):
            self.offset += len(chunk)
            lines = (self._partial + chunk).split(b"\n")
            self._partial = lines.pop()
            for line in lines:
                self.out(line.decode(errors="replace"))
        err = proc.stderr.read()
        proc.wait()
        st = _parse(err)
        if st is None:
            self.link.check_key_error(err)
            return RunStatus("unreachable")
        if st.state != "running" and self._partial:
            self.out(self._partial.decode(errors="replace"))
            self._partial = b""
        return st

    def _reconnect(self) -> bool:
        self.reconnects += 1
        self.out(f"azl: connection to the guest lost; waiting up to {self.reconnect_timeout:.0f} s")

        def alive() -> str | None:
            self.console_lines()
            return self.alive()

        try:
            self.link.wait_up(self.reconnect_timeout, alive=alive)
        except LinkError as e:
            self.out(f"azl: the guest did not come back: {e}")
            return False
        self.out("azl: reconnected to the guest")
        return True

    def console_lines(self) -> None:
        """Pass on the console's complete new lines as ``azl: console: ...``."""
        if self.console is None:
            return
        try:
            with open(self.console, "rb") as f:
                if os.fstat(f.fileno()).st_size < self._console_at:
                    self._console_at = 0  # a new VM's log
                f.seek(self._console_at)
                data = f.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1
        self._console_at += end
        for line in data[:end].decode(errors="replace").splitlines():
            line = line.strip()
            if line:
                self.out(f"azl: console: {line}")

    def drive(self) -> int:
        """Run (or follow) the guest doit to its end; its exit code, or 255 when the guest
        cannot be reached (the next host run goes on from the guest's state)."""
        st = self.status()
        while st.state == "unreachable":
            if not self._reconnect():
                return SSH_FAILED
            st = self.status()
        ours = st.state == "running" and st.args == self.args
        if st.state == "running" and not ours:
            self.out(
                f"azl: the guest is still running doit {' '.join(st.args or [])}; following it first"
            )
        elif not ours:
            self.start()
        while True:
            st = self.follow()
            if st.state == "unreachable":
                if not self._reconnect():
                    return SSH_FAILED
                continue
            if st.state == "done" and st.args == self.args and (self.starts or ours):
                return st.rc if st.rc is not None else 1
            if st.state == "lost" and self.starts >= self.max_starts:
                self.out(
                    f"azl: the guest doit ended without a result {self.starts} times; giving up"
                )
                return 1
            if st.state == "lost":
                self.out(
                    "azl: the guest doit ended without a result (kexec or reboot); starting it again"
                )
            self._wait_until_reachable()
            self.start()

    def _wait_until_reachable(self) -> None:
        deadline = time.monotonic() + self.reconnect_timeout
        while self.status().state == "unreachable":
            if time.monotonic() > deadline or not self._reconnect():
                raise LinkError("the guest did not come back")
