"""The stand-in image's /steps files (tests/e2e/standin.py), made from the pinned
live-bootstrap checkout as its steps make them, read by the engine as the guest reads them.
Fast: no image, no VM (the rehearsal itself is tests/test_e2e.py, slow)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.host.lbinputs import Layout, rootfs_args
from tasks.model.config import Config, Paths
from tasks.model.platform import detect
from tests import lbcheckout
from tests.conftest import REPO
from tests.e2e.standin import after_loop, bootstrap_cfg, lb_spec, make_bootable_init, steps_env


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("lb") / "live-bootstrap"
    lbcheckout.live_bootstrap(dst)  # from ../shared/git's bundles
    return dst


def test_steps_files_as_live_bootstrap_leaves_them(checkout: Path, tmp_path: Path) -> None:
    spec = lb_spec(REPO)
    decisions = {"sizes": {"qemu_cores": 3, "qemu_ram_mib": 4096, "image_size": "8G"}}
    argv = rootfs_args(spec, decisions, Layout(Paths(tmp_path)), ["http://127.0.0.1:40000"])
    cfg = bootstrap_cfg(checkout, argv)
    values = dict(line.split("=", 1) for line in cfg.splitlines())  # the last of each wins
    # rootfs.py's own lines for lb-image's options, then move_disk's and finalize_job_count's
    assert values["QEMU"] == "True" and values["CHROOT"] == "False"
    assert values["KERNEL_BOOTSTRAP"] == "True" and values["UPDATE_CHECKSUMS"] == "True"
    assert values["INTERACTIVE"] == "False" and values["FINAL_JOBS"] == "3"
    assert cfg.splitlines()[-2:] == ["DISK=sda1", "JOBS=3"]
    steps = tmp_path / "steps"
    steps.mkdir()
    (steps / "bootstrap.cfg").write_text(cfg)
    (steps / "env").write_text(steps_env(checkout))
    # the engine reads them as the guest's: its platform, target and libdir
    platform = detect(tmp_path, Config(), steps=steps)
    assert platform.name == "guest"
    assert platform.target == "i686-unknown-linux-musl"
    assert platform.libdir == "/usr/lib/i686-unknown-linux-musl"
    env = (steps / "env").read_text()
    assert "LIBDIR=${PREFIX}/lib/mes" not in env and "export SHELL=/usr/bin/bash" in env
    init = make_bootable_init(checkout)
    assert init.startswith("#!/usr/bin/bash\n") and "openvt" in init
    assert 'bash "$script"' in after_loop(checkout) and "sysrq" not in after_loop(checkout)
