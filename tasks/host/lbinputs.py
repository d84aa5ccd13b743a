"""What goes into live-bootstrap's image, and how rootfs.py is called (``tasks.host.lbimage`` runs it).

- ``Spec``: ``recipes/lb-image.toml`` (pinned commit, arch, checksum mode, the after-step in
  ``recipes/lb-image/``, a dropbear version of ``recipes/dropbear.toml``);
- ``Layout``: where the host half keeps things under ``cache/host`` and ``cache/logs``;
- the rootfs.py command line (the seed's flags, sizes from preflight) and the qemu wrapper;
- the distfiles rootfs.py fetches before it builds the image, linked from ``mirror/``;
- the after-step and its ``azl/`` directory placed into the checkout's ``steps/after``;
- ``image_inputs``: what a finished image is made of (a change rebuilds it).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed

from tasks.model.config import Config, Paths
from tasks.model.recipe import Checker, Source
from tasks.sources import lbmirror, lbsources
from tasks.sources.download import sha256_file
from tasks.store.fsutil import atomic_write, safe_rmtree

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Spec:
    """What ``recipes/lb-image.toml`` (kind ``lbimage``) says, checked."""

    path: Path
    commit: str
    arch: str
    update_checksums: bool
    after_step: Path  # in recipes/<name>/
    dropbear_file: str
    dropbear_sha256: str
    checkout: str = "cache/live-bootstrap"  # relative to the project


def parse_spec(c: Checker, data: dict[str, Any], path: Path, name: str) -> Spec | None:
    """The kind's keys, each problem reported with ``c.err`` (file and field); None if any.
    ``dropbear`` names a version of ``recipes/dropbear.toml``, read for its file and sha256."""
    values = {}
    for key, typ in (
        ("commit", str),
        ("arch", str),
        ("update_checksums", bool),
        ("after_step", str),
        ("dropbear", str),
    ):
        if key not in data:
            c.err(key, "missing")
        values[key] = c.typed(data, key, typ, "", None)
    if any(v is None for v in values.values()):
        return None
    if len(values["commit"]) != 40:
        c.err("commit", f"{values['commit']!r}: expected a full 40-digit commit id")
    after = path.parent / name / values["after_step"]
    if not after.is_file():
        c.err("after_step", f"file not found: {after}")
    src = None
    try:
        with open(path.parent / "dropbear.toml", "rb") as f:
            versions = tomllib.load(f).get("versions", {})
        src = versions[values["dropbear"]]["sources"][0]
    except (OSError, tomllib.TOMLDecodeError) as e:
        c.err("dropbear", f"cannot read {path.parent / 'dropbear.toml'}: {e}")
    except (KeyError, IndexError, TypeError):
        c.err(
            "dropbear",
            f"{values['dropbear']!r} is not a version of recipes/dropbear.toml with a source",
        )
    checkout = c.typed(data, "checkout", str, "", "cache/live-bootstrap")
    if checkout.startswith("/") or ".." in Path(checkout).parts:
        c.err("checkout", f"must be a path inside the project, got {checkout!r}")
    if len(c.errors) or src is None:
        return None
    return Spec(
        path,
        values["commit"],
        values["arch"],
        values["update_checksums"],
        after,
        src["file"],
        src["sha256"],
        checkout,
    )


@dataclass(frozen=True)
class Layout:
    """Where the host half keeps things, under ``cache/host`` and ``cache/logs``."""

    paths: Paths

    @property
    def host(self) -> Path:
        return self.paths.cache / "host"

    checkout_dir: str = "cache/live-bootstrap"  # the recipe's ``checkout``

    @property
    def checkout(self) -> Path:
        """The pinned live-bootstrap checkout rootfs.py runs from (``doit live-bootstrap``)."""
        return self.paths.project / self.checkout_dir

    @property
    def target(self) -> Path:
        return self.host / "lb-target"

    @property
    def image(self) -> Path:
        return self.target / "init.img"

    @property
    def record(self) -> Path:
        return self.host / "lb-image.json"

    @property
    def state(self) -> Path:
        return self.host / "lb-image.state.json"

    @property
    def ssh(self) -> Path:
        return self.host / "ssh"

    @property
    def qemu(self) -> Path:
        return self.host / "qemu"

    @property
    def serial_log(self) -> Path:
        return self.paths.logs / "lb-image.log"

    @property
    def rootfs_log(self) -> Path:
        return self.paths.logs / "lb-image.rootfs.log"


# -- the command line --------------------------------------------------------------------


def mirror_urls(paths: Paths, config: Config) -> list[str]:
    """``file://`` of the project mirror, then the config's mirrors (directories as file://)."""
    urls = [f"file://{paths.mirror.resolve()}"]
    for m in config.mirrors:
        if "://" not in m:
            urls.append(f"file://{Path(m).resolve()}")
        elif not m.startswith("file://") or m[7:].startswith("/"):
            urls.append(m)
    return urls


def rootfs_args(
    spec: Spec, decisions: dict[str, Any], lay: Layout, mirrors: list[str]
) -> list[str]:
    """rootfs.py's arguments: the seed's flags, sizes from preflight, never ``--interactive``."""
    sizes = decisions["sizes"]
    args = [
        "--arch",
        spec.arch,
        "-t",
        str(lay.target.resolve()),
        "--cores",
        str(sizes["qemu_cores"]),
    ]
    if spec.update_checksums:
        args.append("--update-checksums")
    args += ["--mirrors", *mirrors, "--qemu", "--qemu-ram", str(sizes["qemu_ram_mib"])]
    args += [
        "--target-size",
        sizes["image_size"],
        "--qemu-cmd",
        str((lay.qemu / "qemu-wrapper").resolve()),
    ]
    return args


def image_inputs(spec: Spec, decisions: dict[str, Any], lay: Layout) -> dict[str, Any]:
    """What the image is made of; a change rebuilds it (cores, RAM, accel do not)."""
    key = lay.ssh / "id_ed25519.pub"
    return {
        "commit": spec.commit,
        "arch": spec.arch,
        "update_checksums": spec.update_checksums,
        "image_size": decisions["sizes"]["image_size"],
        "after_step": sha256_file(spec.after_step),
        "dropbear": spec.dropbear_sha256,
        "authorized_key": key.read_text().strip() if key.exists() else None,
    }


def write_wrapper(lay: Layout, decisions: dict[str, Any]) -> Path:
    """``cache/host/qemu/qemu-wrapper``: runs ``tasks/host/qemuwrap.py`` with this run's settings."""
    lay.qemu.mkdir(parents=True, exist_ok=True)
    qemu = decisions["tools"]["qemu-system-x86_64"]
    settings = {
        "qemu": qemu,
        "accel": decisions["accel"],
        "serial": str(lay.serial_log.resolve()),
        "pidfile": str((lay.qemu / "qemu.pid").resolve()),
    }
    atomic_write(lay.qemu / "settings.json", json.dumps(settings, indent=1).encode())
    wrapper = lay.qemu / "qemu-wrapper"
    script = (
        "#!/bin/sh\n# made by tasks/host/lbimage.py: rootfs.py's --qemu-cmd\n"
        f"exec {shlex.quote(sys.executable)} {shlex.quote(str(HERE / 'qemuwrap.py'))} "
        f'{shlex.quote(str((lay.qemu / "settings.json").resolve()))} "$@"\n'
    )
    atomic_write(wrapper, script.encode())
    wrapper.chmod(0o755)
    return wrapper


# -- what rootfs.py needs up front -------------------------------------------------------


def upfront_distfiles(checkout: Path) -> list[Source]:
    """The distfiles rootfs.py wants before it builds the image: those of the ``build:`` steps
    before ``improve: ...network...`` (``tasks.sources.lbsources``' "early" use), one per file."""
    return [e.source for e in lbsources.distfiles(lbsources.read_checkout(checkout), ("early",))]


def link_distfiles(checkout: Path, mirror: Path) -> list[Source]:
    """Link the up-front distfiles that ``mirror/`` holds into ``<checkout>/distfiles`` (as
    ``doit lb-mirror`` does, ``tasks.sources.lbmirror.layout``); return those it does not hold."""
    wanted = upfront_distfiles(checkout)
    have = [s.file for s in wanted if (mirror / s.file).is_file()]
    lbmirror.layout(mirror, checkout / "distfiles", have)
    return [s for s in wanted if s.file not in set(have)]


# -- the after-step ----------------------------------------------------------------------


def ensure_key(lay: Layout) -> Path:
    """The host's login key for the guest, ``cache/host/ssh/id_ed25519``; made once."""
    key = lay.ssh / "id_ed25519"
    if not key.exists():
        lay.ssh.mkdir(parents=True, exist_ok=True)
        lay.ssh.chmod(0o700)
        subprocess.run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "azl-bootstrap host",
                "-f",
                str(key),
            ],
            check=True,
            capture_output=True,
        )
    return key


def place_after_step(spec: Spec, lay: Layout) -> Path:
    """Put the after-step and ``azl/`` into ``<checkout>/steps/after``; return the script."""
    after = lay.checkout / "steps" / "after"
    safe_rmtree(after / "azl")
    (after / "azl").mkdir(parents=True)
    tarball = lay.paths.mirror / spec.dropbear_file
    if not tarball.is_file() or sha256_file(tarball) != spec.dropbear_sha256:
        raise TaskFailed(
            f"lb-image: {tarball} missing or not sha256 {spec.dropbear_sha256}: run doit mirror"
        )
    os.link(tarball, after / "azl" / spec.dropbear_file)
    (after / "azl" / "dropbear.sha256").write_text(
        f"{spec.dropbear_sha256}  {spec.dropbear_file}\n"
    )
    pub = ensure_key(lay).with_suffix(".pub")
    (after / "azl" / "authorized_keys").write_text(pub.read_text())
    script = after / spec.after_step.name
    script.write_bytes(spec.after_step.read_bytes())
    script.chmod(0o755)
    return script
