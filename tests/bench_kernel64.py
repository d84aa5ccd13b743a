"""kernel64 benchmark: prints figures (not a test; timings are not asserted).

    .venv/bin/python tests/bench_kernel64.py [--boots 1]

1. The kernel build (kconfig64.sh + ``make bzImage`` with this machine's gcc): the time
   recorded when the cached kernel of tests/kernel64_proof.py was built, or a build now if
   there is none (20-40 min on 2 cores; the source is fetched from Debian's archive).
2. TCG boot: from the start of qemu (``-accel tcg``) to the end of the 32-bit /init on the
   SATA disk (the same boot tests/test_kernel64.py checks), best of ``--boots``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tasks.sources.download import debian_archive_uri  # noqa: E402
from tests import kernel64_proof as proof  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--boots", type=int, default=1)
    args = parser.parse_args()
    built = proof.cached()
    if built is None:
        archive = debian_archive_uri()
        if archive is None:
            print("no cached kernel and no Debian archive in the apt sources", file=sys.stderr)
            return 1
        src = proof.substitute_source()
        built = proof.build(proof.fetch_tarball(archive), src.sha256)
    record = (proof.cache_dir() / "build.json").read_text()
    print(f"kernel build: {built.seconds / 60:.1f} min ({record.strip()})")
    times = []
    for _ in range(args.boots):
        with tempfile.TemporaryDirectory() as tmp:
            console, seconds = proof.boot(built.bzimage, proof.make_disk(Path(tmp)))
        ok = "AZL done" in console
        times.append(seconds)
        print(f"TCG boot to the end of /init: {seconds:.1f} s ({'ok' if ok else 'FAILED'})")
    print(f"best TCG boot: {min(times):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
