"""Tests for tasks.model.platform: sandbox and guest detection, config overrides, the build
environment and the platform signature."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tasks.model.config import Config
from tasks.model.platform import Platform, _guest_env, compiler_target, default_jobs, detect


@pytest.fixture(autouse=True)
def no_cc_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CC", raising=False)


@pytest.fixture
def no_steps(tmp_path: Path) -> Path:
    """A steps directory without bootstrap.cfg: not the guest, whatever this host has."""
    steps = tmp_path / "no-steps"
    steps.mkdir()
    return steps


@pytest.fixture
def guest_steps(tmp_path: Path) -> Path:
    """What live-bootstrap leaves in /steps."""
    steps = tmp_path / "steps"
    steps.mkdir()
    (steps / "bootstrap.cfg").write_text("ARCH=x86\nCHROOT=False\n")
    (steps / "env").write_text(
        "# live-bootstrap environment\nexport PATH=/usr/bin\nTARGET=i686-unknown-linux-musl\n"
    )
    return steps


def cc_dumpmachine() -> str:
    out = subprocess.run(["cc", "-dumpmachine"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_sandbox_paths_are_under_the_project(tmp_path: Path, no_steps: Path, monkeypatch) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    monkeypatch.chdir(tmp_path)
    p = detect(Path("proj"), Config(), steps=no_steps)  # dodo.py passes a relative path
    root = (project / "cache/sandbox/root").resolve()
    assert p.name == "sandbox"
    assert os.path.isabs(p.root) and p.root == str(root)
    assert p.prefix == f"{root}/usr"
    assert p.libdir == f"{root}/usr/lib"
    assert p.target == cc_dumpmachine()
    assert p.jobs >= 1


def test_sandbox_target_follows_cc(tmp_path: Path, no_steps: Path, monkeypatch) -> None:
    fake = tmp_path / "fake-cc"
    fake.write_text("#!/bin/sh\necho riscv64-linux-gnu\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    assert compiler_target() == "riscv64-linux-gnu"
    assert detect(tmp_path, Config(), steps=no_steps).target == "riscv64-linux-gnu"
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))  # falls back to cc
    assert compiler_target() == cc_dumpmachine()


def test_guest_is_detected_from_steps(tmp_path: Path, guest_steps: Path) -> None:
    p = detect(tmp_path, Config(jobs=3), steps=guest_steps)
    assert p == Platform(
        name="guest",
        target="i686-unknown-linux-musl",
        root="/",
        prefix="/usr",
        libdir="/usr/lib/i686-unknown-linux-musl",
        jobs=3,
    )


def test_guest_target_comes_from_the_steps_env(tmp_path: Path, guest_steps: Path) -> None:
    (guest_steps / "env").write_text(
        'TARGET=i386-unknown-linux-musl\nexport TARGET="x86_64-unknown-linux-musl"\n  \nnoise\n'
    )
    p = detect(tmp_path, Config(), steps=guest_steps)
    assert p.target == "x86_64-unknown-linux-musl"  # the last assignment wins
    assert p.libdir == "/usr/lib/x86_64-unknown-linux-musl"


def test_guest_without_env_file_defaults_to_i686_musl(tmp_path: Path, guest_steps: Path) -> None:
    (guest_steps / "env").unlink()
    assert _guest_env(guest_steps) == {}
    assert detect(tmp_path, Config(), steps=guest_steps).target == "i686-unknown-linux-musl"


def test_config_platform_wins_over_detection(
    tmp_path: Path, guest_steps: Path, no_steps: Path
) -> None:
    assert detect(tmp_path, Config(platform="sandbox"), steps=guest_steps).name == "sandbox"
    p = detect(tmp_path, Config(platform="guest"), steps=no_steps)
    assert (p.name, p.root, p.prefix) == ("guest", "/", "/usr")
    assert p.target == "i686-unknown-linux-musl"


def test_config_overrides_win_in_the_sandbox(tmp_path: Path, no_steps: Path) -> None:
    cfg = Config(root="build/root", target="aarch64-linux-gnu", jobs=7)
    p = detect(tmp_path, cfg, steps=no_steps)
    root = str((tmp_path / "build/root").resolve())
    assert (p.root, p.prefix, p.libdir) == (root, f"{root}/usr", f"{root}/usr/lib")
    assert (p.target, p.jobs) == ("aarch64-linux-gnu", 7)
    p = detect(tmp_path, Config(prefix="/opt/x", libdir="/opt/x/lib64"), steps=no_steps)
    assert (p.prefix, p.libdir) == ("/opt/x", "/opt/x/lib64")
    p = detect(tmp_path, Config(prefix="/opt/y"), steps=no_steps)
    assert p.libdir == "/opt/y/lib"  # follows the prefix
    p = detect(tmp_path, Config(root="/abs/root"), steps=no_steps)
    assert p.root == "/abs/root"


def test_config_overrides_win_in_the_guest(tmp_path: Path, guest_steps: Path) -> None:
    p = detect(tmp_path, Config(target="i586-unknown-linux-musl"), steps=guest_steps)
    assert (p.target, p.libdir) == ("i586-unknown-linux-musl", "/usr/lib/i586-unknown-linux-musl")
    p = detect(tmp_path, Config(prefix="/usr/local", libdir="/usr/local/lib"), steps=guest_steps)
    assert (p.root, p.prefix, p.libdir) == ("/", "/usr/local", "/usr/local/lib")


def sandbox(tmp_path: Path, no_steps: Path, jobs: int = 2) -> Platform:
    return detect(tmp_path, Config(jobs=jobs), steps=no_steps)


HOST = {
    "PATH": "/host/bin:/usr/bin",
    "TMPDIR": "/var/tmp",
    "CFLAGS": "-O3 -march=native",
    "LDFLAGS": "-L/host/lib",
    "CPPFLAGS": "-I/host/include",
    "PKG_CONFIG_PATH": "/host/pkgconfig",
    "LD_LIBRARY_PATH": "/host/lib",
    "CC": "clang",
    "HOME": "/root",
    "LANG": "de_DE.UTF-8",
    "MAKEFLAGS": "-j64",
}


def test_build_env_sandbox(tmp_path: Path, no_steps: Path) -> None:
    p = sandbox(tmp_path, no_steps)
    env = p.build_env(HOST)
    for var in ("CFLAGS", "CC", "HOME", "LD_LIBRARY_PATH", "LANG", "MAKEFLAGS"):
        assert var not in env, var
    assert env["PATH"] == f"{p.prefix}/bin:/host/bin:/usr/bin"
    assert env["TMPDIR"] == "/var/tmp"
    assert env["LDFLAGS"] == f"-L{p.libdir} -Wl,-rpath,{p.libdir}"
    assert env["CPPFLAGS"] == f"-I{p.prefix}/include"
    assert env["PKG_CONFIG_PATH"] == f"{p.libdir}/pkgconfig:{p.prefix}/share/pkgconfig"
    assert (env["LC_ALL"], env["TZ"], env["SOURCE_DATE_EPOCH"]) == ("C", "UTC", "0")
    for var in ("TARGET", "ROOT", "PREFIX", "LIBDIR", "JOBS"):
        assert env[var] == p.variables()[var]
    assert "PLATFORM" not in env


def test_build_env_guest(tmp_path: Path, guest_steps: Path) -> None:
    p = detect(tmp_path, Config(), steps=guest_steps)
    env = p.build_env(HOST)
    assert env["PATH"] == "/host/bin:/usr/bin"  # the guest's own /usr/bin is already there
    assert "LDFLAGS" not in env and "CPPFLAGS" not in env and "CFLAGS" not in env
    assert env["PKG_CONFIG_PATH"] == (
        "/usr/lib/i686-unknown-linux-musl/pkgconfig:/usr/share/pkgconfig"
    )


def test_build_env_without_host_path(tmp_path: Path, no_steps: Path) -> None:
    p = sandbox(tmp_path, no_steps)
    env = p.build_env({})
    assert env["PATH"] == f"{p.prefix}/bin:/usr/bin:/bin"
    assert "TMPDIR" not in env


def test_build_env_defaults_to_os_environ(
    tmp_path: Path, no_steps: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CFLAGS", "-O3")
    monkeypatch.setenv("PATH", "/only/this")
    env = sandbox(tmp_path, no_steps).build_env()
    assert "CFLAGS" not in env and env["PATH"].endswith(":/only/this")


def test_signature_excludes_jobs(tmp_path: Path, no_steps: Path) -> None:
    one, many = sandbox(tmp_path, no_steps, 1), sandbox(tmp_path, no_steps, 64)
    assert one.variables()["JOBS"] == "1" and many.variables()["JOBS"] == "64"
    assert one.signature() == many.signature()
    assert "JOBS" not in one.signature()
    assert set(one.signature()) == {"PLATFORM", "TARGET", "ROOT", "PREFIX", "LIBDIR"}
    other = detect(tmp_path, Config(jobs=1, target="aarch64-linux-gnu"), steps=no_steps)
    assert other.signature() != one.signature()


def test_default_jobs_is_positive() -> None:
    assert 1 <= default_jobs() <= (os.cpu_count() or 1)


def test_jobs_are_capped_by_available_memory(tmp_path: Path, monkeypatch) -> None:
    """2 GiB of MemAvailable per job: a machine with 3 GiB free gets one job, whatever its
    cores; unreadable meminfo leaves the cores."""
    from tasks.model import platform

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 16000000 kB\nMemAvailable: 3145728 kB\n")
    assert platform._mem_available(str(meminfo)) == 3 << 30
    monkeypatch.setattr(platform, "_mem_available", lambda: 3 << 30)
    monkeypatch.setattr(platform.os, "sched_getaffinity", lambda pid: set(range(8)))
    assert default_jobs() == 1
    monkeypatch.setattr(platform, "_mem_available", lambda: None)
    assert default_jobs() == 8
