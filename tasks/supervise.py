"""Run one build command so that it cannot outlive the ``doit`` that started it.

``python -m tasks.supervise CMD...`` is started by ``tasks.build`` as the leader of a new
process group, with a pipe from doit as its stdin. It runs CMD in that group (stdin from
/dev/null) and waits. If doit dies in any way, even by SIGKILL, the kernel closes doit's end
of the pipe, this process reads EOF and kills the whole group: no orphaned ``make`` keeps
writing into a build tree that the next run is about to reuse. The exit status is CMD's
(a CMD killed by signal N makes this process die of signal N too).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading


def _watch_parent() -> None:
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    os.killpg(0, signal.SIGKILL)  # doit is gone: the build group goes with it


def main(argv: list[str]) -> int:
    if not argv:
        sys.stderr.write("usage: python -m tasks.supervise CMD [ARG...]\n")
        return 2
    try:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    except OSError as e:
        sys.stderr.write(f"cannot run {argv[0]!r}: {e.strerror}\n")
        return 127
    threading.Thread(target=_watch_parent, daemon=True).start()
    code = child.wait()
    if code < 0:  # die the same way, so doit sees "killed by signal N"
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
