"""The guest-like interpreter for tests: CPython 3.11 as live-bootstrap's guest has it.

Built from Debian's ``python3.11`` ``.orig`` tarball (3.11.2: no tarfile extraction filters,
which came in 3.11.4), fetched through the engine's own fetch from the archive named in the
machine's apt sources, and configured without ``_sqlite3``, ``_bz2``, ``_dbm``/``_gdbm``
(``py_cv_module_<name>=n/a``: what the guest lacks even where the host has the headers).
``_ssl``, ``_hashlib``, ``_ctypes``, ``zlib`` and ``_lzma`` stay, as in the guest's
``Setup.local`` (see ``tasks/guest/wheelhouse.py``).

The build (~3-4 min on 2 cores) is cached under ``cache/guest-python/`` of the checkout (or
``$AZL_TEST_CACHE``), keyed by the tarball's sha256; ``python -m tests.guest_python`` builds it
ahead of the tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ORIG = "python3.11_3.11.2.orig.tar.gz"
POOL = "main/p/python3.11/" + ORIG
SHA256 = "2411c74bda5bbcfcddaf4531f66d1adc73f247f529aee981b029513aefdbf849"
MISSING = ("_sqlite3", "_bz2", "_dbm", "_gdbm")


def cache_dir() -> Path:
    return Path(os.environ.get("AZL_TEST_CACHE") or REPO / "cache") / "guest-python"


def guest_python(archive: str, jobs: int = 2) -> Path:
    """The ``bin/python3.11`` of the cached build; builds it first if absent."""
    prefix = cache_dir() / SHA256[:16]
    python = prefix / "bin" / "python3.11"
    done = prefix / ".complete"  # written last: a killed build is redone, not half-used
    if done.exists():
        return python
    shutil.rmtree(prefix, ignore_errors=True)
    from tasks.sources.download import fetch

    work = cache_dir() / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    tarball = cache_dir() / ORIG
    if not tarball.exists():
        fetch([f"{archive}/pool/{POOL}"], tarball, SHA256, progress=False)
    with tarfile.open(tarball) as tar:
        tar.extractall(work)  # noqa: S202 - pinned by sha256
    src = next(p for p in work.iterdir() if p.is_dir())
    env = {**os.environ, **{f"py_cv_module_{m}": "n/a" for m in MISSING}}
    log = cache_dir() / "build.log"
    with open(log, "w") as out:
        for cmd in (
            ["./configure", f"--prefix={prefix}"],  # ensurepip: the default, as in the guest
            ["make", f"-j{jobs}"],
            ["make", "install"],
        ):
            code = subprocess.run(cmd, cwd=src, env=env, stdout=out, stderr=out).returncode
            if code:
                raise RuntimeError(f"guest-like Python: {' '.join(cmd)} failed, see {log}")
    shutil.rmtree(work)
    done.write_text(SHA256 + "\n")
    return python


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    from tasks.sources.download import debian_archive_uri

    uri = debian_archive_uri()
    if uri is None:
        sys.exit("no Debian archive in the apt sources")
    print(guest_python(uri))
