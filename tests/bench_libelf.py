"""libelf benchmark: prints figures (not a test; timings are not asserted).

    nice -n 19 .venv/bin/python tests/bench_libelf.py [--jobs 2]

1. recipes/libelf's phases (config, compile, install) with musl-gcc, static, as
   tests/test_libelf.py runs them.
2. The kernel's ``make tools/objtool`` (libsubcmd and objtool, host programs with musl-gcc,
   static) against that libelf, in a tree configured with recipes/kernel64's config.
3. objtool on the objects the slow test compiles, with the kernel build's own arguments, each
   on a fresh copy of the object compiled without objtool.

Sources come from the repository's mirror/ or Debian's archive (~140 MB for the kernel).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tasks.sources.download import debian_archive_uri  # noqa: E402
from tests import kernel64_proof  # noqa: E402
from tests import libelf_proof as proof  # noqa: E402
from tests.test_libelf import OBJECTS  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    archive = debian_archive_uri()
    if archive is None:
        print("no Debian archive in the apt sources", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-libelf-") as tmp:
        work = Path(tmp)
        zlib = proof.build_zlib(kernel64_proof.fetch_source(proof.ZLIB, archive), work, "musl-gcc")
        elfutils = kernel64_proof.fetch_source(proof.libelf_source(), archive)
        stage, seconds = proof.build_libelf(elfutils, work, "musl-gcc", zlib, args.jobs)
        size = (stage / "usr" / "lib" / "libelf.a").stat().st_size
        print(f"libelf (musl-gcc, -j{args.jobs}): {seconds:.1f} s, libelf.a {size} bytes")

        tree = proof.configure_kernel(kernel64_proof.fetch_tarball(archive), work, zlib)
        start = time.monotonic()
        make = [*tree.host, f"-j{args.jobs}", "tools/objtool"]
        proof.kernel_make(tree.src, tree.out, tree.log, make, libelf_stage=stage)
        print(f"make tools/objtool (musl-gcc, static): {time.monotonic() - start:.1f} s")

        built = proof.kernel_make(
            tree.src, tree.out, tree.log, [*tree.host, "V=1", f"-j{args.jobs}", *OBJECTS], stage
        )
        objtool_args = re.findall(r"tools/objtool/objtool (.*?) \S+\.o$", built, re.M)[0].split()
        make = [*tree.host, f"-j{args.jobs}", "OBJECT_FILES_NON_STANDARD=y", *OBJECTS]
        proof.kernel_make(tree.src, tree.out, tree.log, make, stage)
        objtool = tree.out / "tools" / "objtool" / "objtool"
        for obj in OBJECTS:
            copy = work / "copy.o"
            shutil.copy(tree.out / obj, copy)
            start = time.monotonic()
            subprocess.run([objtool, *objtool_args, copy], check=True)
            took = time.monotonic() - start
            print(f"objtool {obj} ({copy.stat().st_size} bytes after): {took * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
