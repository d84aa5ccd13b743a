"""The optional project config file, ``azl-bootstrap.toml`` next to ``dodo.py``.

Every key is optional::

    platform = "sandbox"          # or "guest"; default: detected (guest = live-bootstrap's /steps)
    jobs = 2                      # make -j; default: from cores and free memory
    root = "cache/sandbox/root"   # sandbox ROOT, relative to the project
    target = "x86_64-linux-gnu"   # override the detected TARGET triple
    prefix = "/usr"               # override PREFIX
    libdir = "/usr/lib"           # override LIBDIR
    mirrors = ["file:///srv/mirror", "http://10.0.2.2:8000"]   # tried before upstream URLs
    debian_archive = "http://..."  # base URI of Debian's archive; default: the apt sources
    keep_build = false            # keep build trees of successful builds
    offline = true                # never use the network (default: on in the guest); only
                                  # mirror/ and file:// mirrors are used
    isolate_network = true        # builds run in an empty network namespace (default: as root)
    azurelinux_tree = "/root/azurelinux"   # the Azure Linux tree of the toolkit stages;
                                  # default: `dir` in recipes/azurelinux.toml, per platform
    azurelinux_stages = true      # the toolkit stages (go-tools, toolchain, iso) exist on
                                  # every platform; false: on none; default: the guest only
    [versions]
    grep = "3.11"                 # pick a version other than the recipe's default
    [host]                        # the host half's sizes and KVM use: see tasks/host/preflight.py
    ram_mib = 8192
    [vm]                          # the guest VM run from the host: see tasks/guest/drive.py
    size = "400G"                 # image, host_key, client_key, cores, memory_mb, kvm, ...
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from tasks.model.recipe import RecipeError
from tasks.store import inputs

CONFIG_NAME = "azl-bootstrap.toml"
_TYPES: dict[str, type] = {
    "platform": str,
    "jobs": int,
    "root": str,
    "target": str,
    "prefix": str,
    "libdir": str,
    "mirrors": list,
    "debian_archive": str,
    "keep_build": bool,
    "offline": bool,
    "isolate_network": bool,
    "versions": dict,
    "azurelinux_tree": str,
    "azurelinux_stages": bool,
    "host": dict,
    "vm": dict,
}


@dataclass
class Config:
    platform: str | None = None
    jobs: int | None = None
    root: str | None = None
    target: str | None = None
    prefix: str | None = None
    libdir: str | None = None
    mirrors: list[str] = field(default_factory=list)
    debian_archive: str | None = None
    keep_build: bool = False
    offline: bool | None = None  # None: on in the guest, off elsewhere
    isolate_network: bool | None = None  # None: on when running as root
    versions: dict[str, str] = field(default_factory=dict)
    azurelinux_tree: str | None = None  # None: the platform's default (`dir` in the tree recipe)
    azurelinux_stages: bool | None = None  # None: the toolkit stages exist in the guest only
    host: dict[str, Any] = field(default_factory=dict)  # checked by host_config
    vm: dict[str, Any] = field(default_factory=dict)  # checked by tasks.guest.drive.vm_settings


def load_config(project: Path) -> Config:
    """Read ``project/azl-bootstrap.toml`` if it exists; errors name the file and the key."""
    path = inputs.file(project / CONFIG_NAME)
    if not path.exists():
        return Config()
    try:
        with open(path, "rb") as f:
            data: dict[str, Any] = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(path, "", f"not valid TOML: {e}") from None
    for key, value in data.items():
        if key not in _TYPES:
            raise RecipeError(path, key, f"unknown key (known: {', '.join(sorted(_TYPES))})")
        if not isinstance(value, _TYPES[key]) or (_TYPES[key] is int and isinstance(value, bool)):
            raise RecipeError(path, key, f"expected {_TYPES[key].__name__}")
    if data.get("platform") not in (None, "sandbox", "guest"):
        raise RecipeError(path, "platform", "must be 'sandbox' or 'guest'")
    if "jobs" in data and data["jobs"] < 1:
        raise RecipeError(path, "jobs", "must be at least 1")
    for name, version in data.get("versions", {}).items():
        if not isinstance(version, str):
            raise RecipeError(path, f"versions.{name}", "expected a version string")
    if not all(isinstance(m, str) for m in data.get("mirrors", [])):
        raise RecipeError(path, "mirrors", "expected a list of URLs")
    host_config(data.get("host", {}), path)
    return Config(**data)


@dataclass(frozen=True)
class Paths:
    """Where everything lives, relative to the project (the directory of ``dodo.py``).
    The directories are worked out once (a plan asks for them thousands of times)."""

    project: Path

    @cached_property
    def recipes(self) -> Path:
        return self.project / "recipes"

    @cached_property
    def mirror(self) -> Path:
        return self.project / "mirror"

    @cached_property
    def _mirror_prefix(self) -> str:
        return f"{self.mirror}/"

    def mirror_file(self, file: str) -> str:
        """``str(self.mirror / file)``, without a ``Path`` for a plain file name."""
        if not file or "/" in file or file.startswith("."):
            return str(self.mirror / file)
        return self._mirror_prefix + file

    @cached_property
    def cache(self) -> Path:
        return self.project / "cache"

    @cached_property
    def _manifests(self) -> Path:
        return self.cache / "manifests"

    @cached_property
    def state(self) -> Path:
        """doit state (the journal), the digest cache and the project lock."""
        return self.cache / "state"

    @cached_property
    def logs(self) -> Path:
        return self.cache / "logs"

    def build_dir(self, pkg: str) -> Path:
        return self.cache / "build" / pkg

    def stage_dir(self, pkg: str) -> Path:
        return self.cache / "stage" / pkg

    def manifest(self, pkg: str) -> Path:
        """The package task's target: what its last build installed."""
        return self._manifests / f"{pkg}.json"

    def installed(self, pkg: str) -> Path:
        """What ROOT holds from the package. Unlike the manifest, ``clean`` keeps it, so the
        next merge can still remove files the package no longer installs."""
        return self.cache / "installed" / f"{pkg}.json"

    @property
    def git(self) -> Path:
        """Clones of the git repositories that git sources are snapshots of."""
        return self.cache / "git"

    def log(self, pkg: str) -> Path:
        return self.logs / f"{pkg}.log"


_HOST_KEYS = {"cores": int, "ram_mib": int, "image_size": str, "kvm": str}


def host_config(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """The ``[host]`` table, checked; errors name the file and ``host.<key>``."""
    for key, value in data.items():
        if key not in _HOST_KEYS:
            raise RecipeError(path, f"host.{key}", f"unknown key (known: {', '.join(_HOST_KEYS)})")
        typ = _HOST_KEYS[key]
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise RecipeError(path, f"host.{key}", f"expected {typ.__name__}")
    if data.get("cores", 1) < 1:
        raise RecipeError(path, "host.cores", "must be at least 1")
    if data.get("ram_mib", 256) < 256:
        raise RecipeError(path, "host.ram_mib", "must be at least 256")
    if "image_size" in data:
        size = data["image_size"]
        if not (size[:-1].isdigit() and size[-1] in "GM" and int(size[:-1]) > 0):
            raise RecipeError(
                path, "host.image_size", f"{size!r}: expected e.g. '100G' or '65536M'"
            )
    if data.get("kvm", "auto") not in ("auto", "on", "off"):
        raise RecipeError(path, "host.kvm", "must be 'auto', 'on' or 'off'")
    return data
