"""A kept rehearsal root (tests/rehearsal32/root.py) gets what ``PACKAGES`` gained since it was
made, without a fresh debootstrap; the real root is tests/test_rehearsal32.py's (slow)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from tests.rehearsal32 import root as rehearsal32


def test_a_kept_root_gets_the_packages_added_since(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = rehearsal32.root_dir(tmp_path)
    root.mkdir(parents=True)
    older = rehearsal32.PACKAGES[:-2] + rehearsal32.BOOTSTRAP_GO[:1]  # made before the last two
    (root / rehearsal32.READY).write_text("\n".join(older) + "\n")
    scripts: list[str] = []

    @contextlib.contextmanager
    def entered(r: Path, project: Path):  # noqa: ANN202 - stands in for the chroot
        assert (r, project) == (root, tmp_path)
        yield lambda script, log=None, env=None: scripts.append(script)

    monkeypatch.setattr(rehearsal32, "entered", entered)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert rehearsal32.make_root(tmp_path, archive="unused") == root
    assert scripts == [f"apt-get install -y -q {' '.join(rehearsal32.PACKAGES[-2:])}"]
    have = set((root / rehearsal32.READY).read_text().split())
    assert have == set(rehearsal32.PACKAGES) | {rehearsal32.BOOTSTRAP_GO[0]}
    rehearsal32.make_root(tmp_path, archive="unused")  # complete now: nothing to install
    assert len(scripts) == 1


def test_without_root_a_kept_root_that_lacks_packages_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = rehearsal32.root_dir(tmp_path)
    root.mkdir(parents=True)
    (root / rehearsal32.READY).write_text("python3\n")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(rehearsal32.RehearsalError, match="lacks .*libmagic-dev.*needs root"):
        rehearsal32.make_root(tmp_path, archive="unused")
