"""One job budget for the whole run: a GNU make jobserver that the engine owns.

``doit -n K`` runs up to K builds at once and each build runs parallel jobs of its own; without
a shared budget the machine gets K times the jobs it has cores (or memory) for. The engine
makes one pipe holding ``budget`` tokens (``Platform.jobs``: cores, capped at one job per
2 GiB of available memory). Every build takes one token before it starts and gives it back
when it ends, so builds alone never exceed the budget. Within a build:

- ``make`` (the ``autotools`` and ``make`` templates) runs without ``-j`` and joins the pool
  through ``MAKEFLAGS=-jN --jobserver-auth=R,W`` (the pipe's descriptors, which make 4.2.1 in
  the guest and make 4.3 here both understand; a named fifo would need 4.4): each extra job
  takes a token from the pipe and returns it, so all the makes of a run share the budget;
- a phase that runs ``${JOBS}`` jobs (ninja via meson, cmake, a ``[script]`` phase naming
  ``JOBS``) takes a share: the tokens free when the phase starts, at most the budget, given
  back when it ends; ``JOBS`` is that share (1 in the build's other phases, which hold its
  one token: a serial configure or install keeps no tokens from the builds beside it). A
  ``make -j$JOBS`` inside a script runs its own jobs within the share it holds.

A make killed by a signal may not give back its tokens; the pipe lives as long as this
process, so the next ``doit`` starts with a full pool.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
from collections.abc import Iterator

TOKEN = b"+"


class JobServer:
    """A pipe of ``budget`` tokens. make reads and writes the pipe's own descriptors
    (blocking); the engine reads through its own non-blocking reopening of the read end."""

    def __init__(self, budget: int):
        self.budget = max(1, budget)
        self.read_fd, self.write_fd = os.pipe()
        # a separate open file description of the same pipe: O_NONBLOCK for the engine only
        # (without /proc: the shared, blocking one; a token make takes between the engine's
        # select and read then makes the engine wait for the next one, no more)
        try:
            self._engine_fd = os.open(
                f"/proc/self/fd/{self.read_fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
            )
        except OSError:
            self._engine_fd = self.read_fd
        os.write(self.write_fd, TOKEN * self.budget)
        self.held = 0  # tokens the engine's builds hold now (for tests and the bench)
        self._mutex = threading.Lock()

    @property
    def fds(self) -> tuple[int, int]:
        return self.read_fd, self.write_fd

    def makeflags(self) -> str:
        return f"-j{self.budget} --jobserver-auth={self.read_fd},{self.write_fd}"

    def _take(self, n: int) -> int:
        try:
            if self._engine_fd == self.read_fd:
                got = 0
                while got < n and select.select([self.read_fd], [], [], 0)[0]:
                    got += len(os.read(self.read_fd, 1))
            else:
                got = len(os.read(self._engine_fd, n))
        except BlockingIOError:
            return 0
        with self._mutex:
            self.held += got
        return got

    def acquire(self, stop: threading.Event | None = None) -> None:
        """Wait for one token (``stop`` set: give up with ``InterruptedError``)."""
        while not self._take(1):
            if stop is not None and stop.is_set():
                raise InterruptedError("stopped while waiting for a job slot")
            select.select([self._engine_fd], [], [], 0.5)

    def try_acquire(self, n: int) -> int:
        """Up to ``n`` tokens that are free now; how many were taken."""
        return self._take(n) if n > 0 else 0

    def release(self, n: int) -> None:
        if n > 0:
            with self._mutex:
                self.held -= n
            os.write(self.write_fd, TOKEN * n)


_server: JobServer | None = None
_server_lock = threading.Lock()
STOP = threading.Event()  # set by the SIGINT/SIGTERM handler: waiting builds give up


def server(budget: int) -> JobServer:
    """The run's job server (made on first use with ``budget`` tokens)."""
    global _server
    with _server_lock:
        if _server is None:
            _server = JobServer(budget)
        return _server


@contextlib.contextmanager
def slots(budget: int, joins_jobserver: bool) -> Iterator[tuple[int, dict[str, str], JobServer]]:
    """Hold this build's tokens: ``(jobs, environment, server)``. A build whose ``make``
    joins the jobserver holds one token and makes more itself; any other build holds a
    share of up to ``budget`` tokens (at least one, waiting for it if need be)."""
    js = server(budget)
    js.acquire(STOP)
    held = 1 + (0 if joins_jobserver else js.try_acquire(js.budget - 1))
    try:
        yield held, {"MAKEFLAGS": js.makeflags(), "JOBS": str(held)}, js
    finally:
        js.release(held)
