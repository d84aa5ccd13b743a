"""Named points where the fault suite can kill the engine exactly (``bench/faults.py`` and
the tests): with ``AZL_FAULT=kill:<point>:<package>`` in the environment, the process SIGKILLs
itself when the build of ``<package>`` reaches ``<point>``. Without it, nothing happens.

Points: ``unpacked``, ``merged`` (ROOT holds the new files, no manifest yet),
``manifest-written`` (the manifest is written, doit has not committed the task's state).
"""

from __future__ import annotations

import os
import signal


def reached(point: str, package: str) -> None:
    """Die here if the environment asks for it."""
    if os.environ.get("AZL_FAULT") == f"kill:{point}:{package}":
        os.kill(os.getpid(), signal.SIGKILL)
