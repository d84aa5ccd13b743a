"""The host's drive of the guest plan: settings from ``[vm]`` of the config, and the whole
push-install-run sequence against the stand-in guest (OpenSSH on 127.0.0.1)."""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.engine.plan import Project
from tasks.guest.drive import Connection, GuestSettings, drive, parse_size, vm_settings
from tasks.kinds.guest import guest_mirror_files
from tasks.model.recipe import RecipeError
from tests.conftest import REPO
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
    (project.root / "mirror" / "lb-distfile-1.0.tar.gz").write_bytes(b"host only")
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
        files = guest_mirror_files(Project(project.root))  # what the guest step pushes
        code = drive(project.root, settings, ["a"], out, connect=stand_in, mirror_files=files)
        assert code == 0, out.text
        assert "azl: pushed project:" in out.text and "azl: pushed mirror:" in out.text
        assert (dest / "cache" / "wheelhouse" / "requirements.txt").exists()
        # the mirror files of the guest's plan only (not e.g. live-bootstrap's distfiles)
        assert (dest / "mirror" / "a-1.0.tar.gz").exists()
        assert not (dest / "mirror" / "lb-distfile-1.0.tar.gz").exists()
        assert "installing" not in out.text
        assert (dest / "cache" / "manifests" / "a.json").exists()
        assert not (dest / "cache" / "manifests" / "b.json").exists()  # only what was asked

        out = Output()
        assert drive(project.root, settings, ["b"], out, connect=stand_in) == 0, out.text
        assert "pushed project: 0 of" in out.text  # nothing changed on the host
        assert ".  b" in out.text and ".  a" not in out.text
    finally:
        sshd.stop()


@pytest.mark.skipif(bool(missing()), reason=str(missing()))
def test_host_doit_runs_a_guest_only_step_in_the_guest_by_its_name(tmp_path: Path) -> None:
    """``doit g1`` on the host, where g1 is a guest-only step: the host's ``doit`` pushes the
    project and runs ``doit g1`` in the guest (here a guest already running at
    ``[vm] address``: the stand-in), with the guest's output live and its exit code."""
    sshd = Sshd(tmp_path / "sshd")
    sshd.start()
    project = guest_project(tmp_path / "host")
    # the repository's guest.toml without its dependency on lb-image (hours of live-bootstrap)
    text = (REPO / "recipes" / "guest.toml").read_text()
    assert 'depends = ["lb-image"]' in text
    (project.root / "recipes" / "guest.toml").write_text(text.replace('depends = ["lb-image"]', ""))
    log, marker = tmp_path / "g1.log", tmp_path / "g1.done"
    (project.root / "recipes" / "g1.toml").write_text(
        'kind = "session"\nplatforms = ["guest"]\ndescription = "a guest session step"\n'
        f'check = "test -f {marker}"\n'
        f"script.post_install = 'echo ran >> {log}; touch {marker}; echo g1 says hello'\n"
    )
    (project.root / "recipes" / "g2.toml").write_text(
        'kind = "session"\nplatforms = ["guest"]\ncheck = "false"\n'
        "script.post_install = 'echo g2 cannot; exit 4'\n"
    )
    (project.root / "cache" / "wheelhouse").mkdir(parents=True)  # made before; not needed:
    (project.root / "cache" / "wheelhouse" / "requirements.txt").write_text("doit\n")  # imports
    dest = tmp_path / "guest" / "azl"
    project.config(
        f'platform = "sandbox"\n[vm]\naddress = "127.0.0.1:{sshd.port}"\n'
        f'client_key = "{sshd.client_key}"\nhost_key = "{sshd.host_key_pub}"\n'
        f'dest = "{dest}"\npython = "{sys.executable}"\n'
        'setup = "export AZL_PLATFORM=guest"\n'
    )
    try:
        listed = project.doit("list")
        assert listed.code == 0, listed.err
        assert re.search(r"^g1 +in the guest VM: a guest session step", listed.out, re.M)

        r = project.doit("g1")
        assert r.code == 0, r.out + r.err
        # the guest doit's own report, after the push, on the host; the step ran in the guest
        assert re.search(r"azl: pushed project: .*\n(.*\n)*\.  g1\n", r.out), r.out
        assert log.read_text() == "ran\n"
        assert (dest / "cache" / "logs" / "g1.log").exists()
        assert "azl: pushed project" in (project.root / "cache" / "logs" / "guest.log").read_text()

        r = project.doit("g1")  # the guest's state decides: its check holds, nothing runs
        assert r.code == 0 and log.read_text() == "ran\n", r.out + r.err

        r = project.doit("g2")
        assert r.code != 0
        assert "g2 cannot" in r.out
        assert "the guest's doit g2 exited" in r.out + r.err
    finally:
        sshd.stop()


def test_cores_ram_and_kvm_come_from_preflight_unless_vm_sets_them(tmp_path: Path) -> None:
    from tasks.guest.drive import with_preflight

    cfg = tmp_path / "azl-bootstrap.toml"
    assert with_preflight(tmp_path, vm_settings({}, cfg), {}) == GuestSettings()  # no preflight
    (tmp_path / "cache" / "host").mkdir(parents=True)
    (tmp_path / "cache" / "host" / "preflight.json").write_text(
        '{"accel": "kvm", "sizes": {"qemu_cores": 6, "qemu_ram_mib": 12288}}'
    )
    s = with_preflight(tmp_path, vm_settings({}, cfg), {})
    assert (s.cores, s.memory_mb, s.kvm) == (6, 12288, True)
    table = {"cores": 2, "kvm": False}
    s = with_preflight(tmp_path, vm_settings(table, cfg), table)
    assert (s.cores, s.memory_mb, s.kvm) == (2, 12288, False)
