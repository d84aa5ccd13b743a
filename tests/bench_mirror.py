"""Mirror benchmark: prints figures and ratios (not a test; timings are not asserted).

    .venv/bin/python tests/bench_mirror.py [--download-mib 256] [--runs 3] [--files 8]
                                           [--file-mib 128]

1. Download throughput from the local test HTTP server (``tests/httpserver.py``, in this
   process): ``tasks.sources.download.fetch`` (streams into ``.part``, hashes with sha256 on the way,
   fsyncs, renames), run in a child Python process, against ``curl -s -o`` (no hashing, no
   fsync) on the same URL, and against curl followed by ``sha256sum`` and ``sync`` (the same
   work done with standard tools). Best of ``--runs`` runs each.
2. ``doit mirror`` over a project whose ``mirror/`` already holds N random files (written
   directly, recipes pinning their sha256): the first run verifies every file; the second is
   the no-op run, which should only stat them. Bytes hashed are counted inside the doit
   process (sha256 by the fetch tasks, xxh3 by the file_dep checker).

Disk use: the download file twice at most, then the N files (defaults: 256 MiB, then 1 GiB);
every temporary directory is removed at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import REPO, Project  # noqa: E402
from tests.httpserver import serve  # noqa: E402
from tests.test_mirror import counting_doit, write_recipe  # noqa: E402

MiB = 1 << 20
FETCH = """\
import sys, time
from tasks.sources.download import fetch
url, dest, sha = sys.argv[1:4]
t0 = time.perf_counter()
fetch([url], dest, sha, progress=False)
print(time.perf_counter() - t0)
"""


def bench_download(mib: int, runs: int) -> None:
    data = os.urandom(mib * MiB)
    sha = hashlib.sha256(data).hexdigest()
    with tempfile.TemporaryDirectory(prefix="bench-mirror-") as tmp, serve({"f.bin": data}) as srv:
        url = srv.url("f.bin")
        dest = Path(tmp) / "f.bin"
        t_fetch, t_curl, t_same = [], [], []
        for _ in range(runs):
            proc = subprocess.run(
                [sys.executable, "-c", FETCH, url, str(dest), sha],
                cwd=REPO,
                capture_output=True,
                text=True,
                check=True,
            )
            t_fetch.append(float(proc.stdout.strip()))
            assert dest.stat().st_size == len(data)
            dest.unlink()

            t0 = time.perf_counter()
            subprocess.run(["curl", "-s", "-o", str(dest), url], check=True)
            t_curl.append(time.perf_counter() - t0)
            # what fetch does on top: verify the sha256 and make the file durable
            check = subprocess.run(["sha256sum", str(dest)], capture_output=True, text=True)
            subprocess.run(["sync", str(dest)], check=True)
            t_same.append(time.perf_counter() - t0)
            assert check.stdout.split()[0] == sha
            dest.unlink()
    rows = [
        ("tasks.sources.download.fetch", min(t_fetch)),
        ("curl -s -o", min(t_curl)),
        ("curl, sha256sum, sync", min(t_same)),  # the work fetch does, with standard tools
    ]
    print(f"download: {mib} MiB from the local test HTTP server, best of {runs}")
    for label, t in rows:
        print(f"  {label:<24}{t:7.2f} s  {mib / t:7.0f} MiB/s")
    print(f"  {'ratio fetch / curl':<24}{min(t_curl) / min(t_fetch):7.2f}")
    print(f"  {'ratio fetch / curl+sum':<24}{min(t_same) / min(t_fetch):7.2f}")


def bench_noop_mirror(files: int, file_mib: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-mirror-") as tmp:
        project = Project(Path(tmp) / "proj")
        for i in range(files):
            name = f"src{i}.bin"
            data = os.urandom(file_mib * MiB)
            (project.root / "mirror" / name).write_bytes(data)
            sha = hashlib.sha256(data).hexdigest()
            source = dict(file=name, sha256=sha, urls=[f"file:///nonexistent/{name}"], unpack=False)
            write_recipe(project, f"p{i}", [source], install="true")
            del data
        total = files * file_mib * MiB
        usage = sum(p.stat().st_size for p in project.root.rglob("*") if p.is_file())

        t0 = time.perf_counter()
        r, sha_first, xxh_first = counting_doit(project, "mirror")
        t_first = time.perf_counter() - t0
        assert r.code == 0, r.out + r.err
        assert len(r.ran) == files + 1, r.out  # every file verified, SHA256SUMS written

        t0 = time.perf_counter()
        r, sha_noop, xxh_noop = counting_doit(project, "mirror")
        t_noop = time.perf_counter() - t0
        assert r.code == 0, r.out + r.err
        assert r.ran == [], r.out

        t0 = time.perf_counter()
        r = project.doit("list")
        t_list = time.perf_counter() - t0
        assert r.code == 0
    gib = total / 2**30
    print(f"doit mirror: {files} sources x {file_mib} MiB = {gib:.2f} GiB already in mirror/")
    print(f"  (project on disk: {usage / 2**30:.2f} GiB; page cache warm)")
    print(
        f"  {'first run (verifies)':<24}{t_first:7.2f} s  hashed: sha256 {sha_first} bytes, "
        f"xxh3 {xxh_first} bytes"
    )
    print(
        f"  {'no-op run':<24}{t_noop:7.2f} s  hashed: sha256 {sha_noop} bytes, "
        f"xxh3 {xxh_noop} bytes"
    )
    print(f"  {'doit list':<24}{t_list:7.2f} s  (loading the project alone, for reference)")
    print(f"  {'ratio first / no-op':<24}{t_first / t_noop:7.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--download-mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--file-mib", type=int, default=128)
    args = ap.parse_args()
    if shutil.which("curl") is None:
        sys.exit("bench_mirror: curl is not installed")
    bench_download(args.download_mib, args.runs)
    bench_noop_mirror(args.files, args.file_mib)


if __name__ == "__main__":
    main()
