"""Run one build command so that it cannot outlive the ``doit`` that started it.

``start(CMD)`` runs this file as the leader of a new process group (for a build command,
qemu and rootfs.py alike), with a pipe from doit as its stdin. It runs CMD in that group (stdin from
/dev/null) and waits. If doit dies in any way, even by SIGKILL, the kernel closes doit's end
of the pipe, this process reads EOF and kills the whole group: no orphaned ``make`` keeps
writing into a build tree that the next run is about to reuse. The exit status is CMD's
(a CMD killed by signal N makes this process die of signal N too).

With ``AZL_NO_NETWORK=1`` in its environment it first moves itself into a new, empty network
namespace (``unshare(CLONE_NEWNET)``: needs root, as in the guest), so the build has no
network at all, not even loopback: only fetch tasks use the network. If that is not
possible it refuses (exit 126) rather than build unisolated.

CMD runs with umask 022 whatever the caller's: files a build creates without an explicit
mode (``cat > f``, ``mkdir -p``, ``cp``) get the same modes, which the manifest records, on
every machine and for every user (``doit verify`` compares them).

``start`` sets ``PYTHONCOERCECLOCALE=0``, which this process removes before running CMD:
without it, Python started with no locale variables (a toolkit stage's environment has none)
would export ``LC_CTYPE=C.UTF-8`` to CMD (PEP 538), a variable the caller never set.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from typing import Any


def start(argv: list[str], *, stdin: Any = subprocess.PIPE, **popen: Any) -> subprocess.Popen:
    """The one way the engine starts a supervised child (a build command, qemu, rootfs.py):
    this file run by the same interpreter with ``-S`` (standard library only: a few ms less
    per command), leading a new process group, its stdin a pipe whose other end only the
    caller holds (``stdin``: the read end of the caller's own pipe, else a new pipe)."""
    env = popen.pop("env", None)
    env = {**(os.environ if env is None else env), "PYTHONCOERCECLOCALE": "0"}
    return subprocess.Popen(
        [sys.executable, "-S", __file__, *argv],
        stdin=stdin,
        env=env,
        start_new_session=True,
        **popen,
    )


def _watch_parent() -> None:
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    os.killpg(0, signal.SIGKILL)  # doit is gone: the build group goes with it


CLONE_NEWNET = 0x40000000


def _no_network() -> str | None:
    """Enter a new network namespace; the reason it failed, or None."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWNET) != 0:
            return os.strerror(ctypes.get_errno())
    except (OSError, AttributeError, ImportError) as e:
        return str(e)
    return None


def main(argv: list[str]) -> int:
    if not argv:
        sys.stderr.write("usage: python -m tasks.build.supervise CMD [ARG...]\n")
        return 2
    if os.environ.get("AZL_NO_NETWORK") == "1":
        why = _no_network()
        if why:
            sys.stderr.write(
                f"cannot cut the build off the network ({why}); run as root, or "
                "set isolate_network = false in azl-bootstrap.toml\n"
            )
            return 126
    os.environ.pop("PYTHONCOERCECLOCALE", None)  # ours (see above), not the command's
    os.umask(0o022)  # the modes of what the build creates: not the caller's umask
    try:
        # close_fds=False: the jobserver's pipe (passed by doit) reaches make
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, close_fds=False)
    except OSError as e:
        sys.stderr.write(f"cannot run {argv[0]!r}: {e.strerror}\n")
        return 127
    threading.Thread(target=_watch_parent, daemon=True).start()
    code = child.wait()
    if code < 0:  # die the same way, so doit sees "killed by signal N"
        if -code not in (signal.SIGKILL, signal.SIGSTOP):  # these have no handler to reset
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
