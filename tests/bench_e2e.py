"""Benchmark: the end-to-end rehearsal on the stand-in image (``tests/e2e/joints.py``), each
joint's time printed: the image, boot to SSH, push (files and bytes), wheelhouse, each package,
kexec to SSH, the session steps after it, power cut to resumed, the clean power-off.

    .venv/bin/python -m bench e2e [--reuse-image]

As root (debootstrap, chroot); needs the live-bootstrap bundle in ../shared/git (or
AZL_GIT_MIRRORS) and Debian's archive. ``--reuse-image`` boots the last stand-in image
instead of making it again (cold: from no ``cache/e2e`` at all).
"""

from __future__ import annotations

import os
import sys
import time

from tasks.sources.download import debian_archive_uri
from tests import lbcheckout
from tests.e2e.joints import REPO, Rehearsal
from tests.e2e.standin import e2e_dir


def main(argv: list[str]) -> int:
    bundles = REPO.parent / "shared" / "git"
    if not os.environ.get("AZL_GIT_MIRRORS") and bundles.is_dir():
        os.environ["AZL_GIT_MIRRORS"] = str(bundles)
    checkout = e2e_dir(REPO) / "live-bootstrap"
    if not (checkout / "rootfs.py").exists():
        lbcheckout.live_bootstrap(checkout)  # from ../shared/git's bundles
    start = time.monotonic()
    rehearsal = Rehearsal(checkout, debian_archive_uri() or "", reuse_image="--reuse-image" in argv)
    try:
        rehearsal.run()
    finally:
        print(f"\ne2e joints (total {time.monotonic() - start:.0f} s):")
        print(rehearsal.j.table())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
