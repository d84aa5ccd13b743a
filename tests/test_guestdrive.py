"""The host's drive of the guest plan: settings from ``[vm]`` of the config, and the whole
push-install-run sequence against the stand-in guest (OpenSSH on 127.0.0.1)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.guestdrive import Connection, GuestSettings, drive, parse_size, vm_settings
from tasks.recipe import RecipeError
from tests.sshd import Sshd, missing
from tests.test_link import Output, guest_project


def test_vm_settings_name_file_and_field(tmp_path: Path) -> None:
    cfg = tmp_path / "azl-bootstrap.toml"
    s = vm_settings({"size": "2T", "cores": 8, "kvm": True}, cfg)
    assert (parse_size(s.size), s.cores, s.kvm) == (2 << 40, 8, True)
    with pytest.raises(RecipeError, match=r"vm\.cpus.*unknown key"):
        vm_settings({"cpus": 4}, cfg)
    with pytest.raises(RecipeError, match=r"vm\.cores.*expected int"):
        vm_settings({"cores": "4"}, cfg)
    with pytest.raises(RecipeError, match=r"vm\.size.*not a size: 'lots'"):
        vm_settings({"size": "lots"}, cfg)
    with pytest.raises(RecipeError) as err:
        vm_settings({"kvm": 1}, cfg)
    assert str(cfg) in str(err.value)


@pytest.mark.skipif(bool(missing()), reason=str(missing()))
def test_drive_pushes_and_runs_the_same_task_names_in_the_guest(tmp_path: Path) -> None:
    project = guest_project(tmp_path / "host")
    project.recipe("a")
    project.recipe("b", deps=("a",))
    # a wheelhouse as prepared earlier: pushed, and not installed (the guest imports all)
    (project.root / "cache" / "wheelhouse").mkdir(parents=True)
    (project.root / "cache" / "wheelhouse" / "requirements.txt").write_text("doit\n")
    sshd = Sshd(tmp_path / "sshd")
    sshd.start()

    @contextlib.contextmanager
    def stand_in(_project: Path, _s: GuestSettings) -> Iterator[Connection]:
        yield sshd.endpoint(), lambda: None

    dest = tmp_path / "guest" / "azl"
    settings = GuestSettings(dest=str(dest), python=sys.executable)
    try:
        out = Output()
        assert drive(project.root, settings, ["a"], out, connect=stand_in) == 0, out.text
        assert "azl: pushed host/" in out.text and "azl: pushed mirror/" in out.text
        assert (dest / "cache" / "wheelhouse" / "requirements.txt").exists()
        assert "installing" not in out.text
        assert (dest / "cache" / "manifests" / "a.json").exists()
        assert not (dest / "cache" / "manifests" / "b.json").exists()  # only what was asked

        out = Output()
        assert drive(project.root, settings, ["b"], out, connect=stand_in) == 0, out.text
        assert "pushed host/: 0 of" in out.text  # nothing changed on the host
        assert ".  b" in out.text and ".  a" not in out.text
    finally:
        sshd.stop()
