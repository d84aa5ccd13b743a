"""Benchmark: push the project and a 1 GB mirror to a stand-in guest (OpenSSH on 127.0.0.1),
first and second (unchanged) push, and after one mirror file changed.

    .venv/bin/python -m tests.bench_push [mirror-MB]

Prints seconds, files sent and bytes on the wire for each push. The digest cache
(``tasks.store.checker``) is per process here as in a doit run: the second push hashes nothing.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from tasks.guest.push import MIRROR_EXCLUDE, PROJECT_EXCLUDE, push
from tasks.store import checker
from tests.conftest import REPO
from tests.sshd import Sshd


def main(mirror_mb: int = 1024) -> None:
    with tempfile.TemporaryDirectory(prefix="azl-bench-push-") as tmp:
        work = Path(tmp)
        mirror = work / "mirror"
        mirror.mkdir()
        chunk = os.urandom(1 << 20)
        for i in range(mirror_mb // 16):
            with open(mirror / f"dist-{i:03d}.tar.gz", "wb") as f:
                for j in range(16):
                    f.write(chunk[j:] + chunk[:j])
        sshd = Sshd(work / "sshd")
        sshd.start()
        try:
            link, dest = sshd.endpoint(), work / "guest" / "azl"
            for label in ("first", "second (unchanged)", "one file changed"):
                if label == "one file changed":
                    with open(mirror / "dist-000.tar.gz", "r+b") as f:
                        f.write(b"changed")
                p = push(link, REPO, str(dest), PROJECT_EXCLUDE)
                m = push(link, mirror, str(dest / "mirror"), MIRROR_EXCLUDE)
                print(
                    f"{label:20s} project: {p.seconds:6.2f} s {p.sent:4d}/{p.files} files "
                    f"{p.bytes / 1e6:8.2f} MB | mirror: {m.seconds:6.2f} s {m.sent:3d}/{m.files} "
                    f"files {m.bytes / 1e6:8.1f} MB | hashed {checker.hashed_bytes / 1e6:.0f} MB"
                )
                checker.hashed_bytes = 0
        finally:
            sshd.stop()
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
