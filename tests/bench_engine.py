"""Engine benchmark: prints figures and ratios (not a test; timings are not asserted).

    .venv/bin/python tests/bench_engine.py [--packages 120] [--shared-mib 200]

1. A mock project of N packages (each depending on up to two earlier ones, each with its own
   tarball and one shared large tarball): first build, no-op run, run after ``touch`` of every
   input (content unchanged: nothing may rebuild), and the same again (the digest cache
   makes the touch cost a one-time re-hash).
2. The xxh3 checker against doit's stock MD5 checker on the shared file that every package
   depends on: bytes read and time.
3. The cost of committing state per task (atomic write + fsync) against one write at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from doit.dependency import MD5Checker  # noqa: E402

from tasks import checker  # noqa: E402
from tasks.state import _JSON, TaskStateDB  # noqa: E402
from tests.conftest import Project  # noqa: E402


def timed(fn):  # noqa: ANN001, ANN201
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def bench_project(n: int, shared_mib: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        project = Project(Path(tmp) / "proj")
        shared = project.root / "mirror" / "shared.bin"
        shared.write_bytes(os.urandom(1 << 20) * shared_mib)
        sha_shared = hashlib.sha256(shared.read_bytes()).hexdigest()
        for i in range(n):
            deps = tuple(f"p{j:03d}" for j in (i - 1, i // 2) if 0 <= j < i)
            body = ""
            path = project.recipe(f"p{i:03d}", deps=tuple(sorted(set(deps))))
            text = path.read_text().replace(
                "sources = [",
                f'sources = [{{ file = "shared.bin", sha256 = "{sha_shared}", unpack = false, '
                'urls = ["file:///nonexistent"] }, ',
            )
            path.write_text(body + text)
        print(
            f"project: {n} packages, each with its own tarball and a shared {shared_mib} MiB file"
        )
        t_first, r = timed(lambda: project.doit())
        assert r.code == 0, r.out + r.err
        t_noop, r = timed(lambda: project.doit())
        assert r.ran == [], r.out
        inputs = [p for p in project.root.rglob("*") if p.is_file() and "cache" not in p.parts]
        for p in inputs:
            os.utime(p)
        t_touch1, r = timed(lambda: project.doit())
        assert r.packages_ran() == [], r.out  # fetch tasks re-verify touched sources
        t_touch2, r = timed(lambda: project.doit())
        print(f"  first build          {t_first:7.2f} s  ({t_first / n * 1000:.0f} ms per package)")
        print(f"  no-op run            {t_noop:7.2f} s")
        print(
            f"  after touch (1st)    {t_touch1:7.2f} s  ({len(inputs)} inputs touched, 0 rebuilt)"
        )
        print(
            f"  after touch (2nd)    {t_touch2:7.2f} s  (digest cache: {t_touch1 / t_touch2:.1f}x faster)"
        )


def bench_checker(shared_mib: int, tasks: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.bin"
        path.write_bytes(os.urandom(1 << 20) * shared_mib)
        st = os.stat(path)
        md5 = MD5Checker()
        old_md5 = [st.st_mtime - 1, st.st_size, "0"]  # a touched file: stat differs, size same
        t_md5, _ = timed(lambda: [md5.check_modified(str(path), st, old_md5) for _ in range(tasks)])
        xx = checker.XXH3Checker()
        before = checker.hashed_bytes
        old_xx = [0, 0, st.st_size, 0, "0"]
        t_xx, _ = timed(lambda: [xx.check_modified(str(path), st, old_xx) for _ in range(tasks)])
        read_xx = checker.hashed_bytes - before
        print(f"checker: one {shared_mib} MiB file that {tasks} tasks depend on, touched")
        print(f"  doit MD5Checker      {t_md5:7.2f} s  ({tasks * st.st_size / 2**20:.0f} MiB read)")
        print(f"  XXH3Checker          {t_xx:7.2f} s  ({read_xx / 2**20:.0f} MiB read)")
        print(f"  ratio                {t_md5 / t_xx:7.1f}x")


def bench_state(tasks: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = TaskStateDB(os.path.join(tmp, "state"), codec=_JSON())
        record = {"_values_:": {"signature": {"x": 1}}, "checker:": "XXH3Checker"}

        def per_task() -> None:
            for i in range(tasks):
                for k, v in record.items():
                    db.set(f"t{i}", k, v)
                db.set(f"t{i}", "deps:", [f"dep{i}"])

        t_commit, _ = timed(per_task)
        data = {f"t{i}": {**record, "deps:": [f"dep{i}"]} for i in range(tasks)}
        t_once, _ = timed(lambda: Path(tmp, "all.json").write_text(json.dumps(data)))
        print(f"state: {tasks} task records")
        print(
            f"  committed per task   {t_commit * 1000:7.1f} ms ({t_commit / tasks * 1000:.2f} ms each)"
        )
        print(
            f"  one write at the end {t_once * 1000:7.1f} ms (stock doit json: loses all on SIGKILL)"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packages", type=int, default=120)
    ap.add_argument("--shared-mib", type=int, default=200)
    args = ap.parse_args()
    bench_project(args.packages, args.shared_mib)
    bench_checker(args.shared_mib, 40)
    bench_state(args.packages)


if __name__ == "__main__":
    main()
