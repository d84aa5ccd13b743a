"""The end-to-end rehearsal on a STAND-IN image (issue 16, item 7; slow: ``-m slow``).

live-bootstrap's finished image cannot be built here (its distfiles cannot all be had), so
``tests/e2e/standin.py`` makes a stand-in of it from Debian i386 (each piece named there and
in docs/e2e.md), and ``tests/e2e/joints.py`` drives it from the host through the code a
user's run takes after ``lb-image``: ``doit vm`` boots it under TCG and Ctrl-C powers it off;
then the guest link pushes the project, installs the wheelhouse, runs the guest setup steps
and builds bzip2 (the follower's SSH connection cut in the middle and followed again) and
lua (qemu killed in the middle: a power cut); after the next boot bzip2 is up to date and lua
is built; the kexec happens for real (into the stand-in 64-bit kernel), the host reconnects,
the session steps are redone, a 32-bit program and ``unshare --net`` run under the 64-bit
kernel, the Statfs Go proof builds with the go-tools stage's settings (and fails without
them), the Azure Linux tree (a stand-in commit of the pinned toolkit/ and four SPECS) is
checked out in the guest from the pushed snapshot, its tree id checked there, and a stand-in
toolkit stage runs in it; ``doit status`` is read before the first boot, while bzip2 builds
and after the clean power-off. Every assertion is in the joints; the timings are
``python -m bench e2e``'s.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tasks.sources.download import debian_archive_uri
from tests import lbcheckout
from tests.e2e.joints import REPO, Rehearsal
from tests.e2e.standin import e2e_dir

pytestmark = [pytest.mark.slow, pytest.mark.network]


def test_end_to_end_on_the_standin_image(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = [
        t for t in ("debootstrap", "qemu-system-x86_64", "sfdisk", "ssh") if not shutil.which(t)
    ]
    if os.geteuid() != 0 or missing:
        pytest.skip(f"needs root (debootstrap, chroot) and {missing or 'the tools'}")
    archive = debian_archive_uri()
    if not archive:
        pytest.skip("no Debian archive in the apt sources")
    bundles = REPO.parent / "shared" / "git"
    if not os.environ.get("AZL_GIT_MIRRORS") and bundles.is_dir():
        monkeypatch.setenv("AZL_GIT_MIRRORS", str(bundles))
    checkout = e2e_dir(REPO) / "live-bootstrap"
    if not (checkout / "rootfs.py").exists():
        lbcheckout.live_bootstrap(checkout)  # from ../shared/git's bundles (missing: it fails)
    joints = Rehearsal(checkout, archive).run()
    print(joints.table())
