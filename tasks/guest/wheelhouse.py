"""The engine's Python dependencies for the guest, fetched on the host, installed offline there.

What the guest's Python is (live-bootstrap at the pinned commit 1296c44b,
``steps/python-3.11.1``): CPython 3.11.1 (so no tarfile extraction filters, which came in
3.11.4), configured ``--with-system-ffi`` with the default ``--with-ensurepip=upgrade``, and
a ``Modules/Setup.local`` that builds these modules in statically (``*static*``):

- ``_ssl`` and ``_hashlib`` against OpenSSL 3.0.13, linked statically (``-l:libssl.a``);
- ``_ctypes`` against libffi 3.3; ``zlib``; ``_lzma``; ``pyexpat``/``_elementtree``;
  ``_decimal``, ``_multiprocessing``, ``_posixsubprocess``, ``_socket``, ``select``,
  ``mmap``, the CJK codecs, ``unicodedata`` and the rest of the always-present modules;
- commented out, so absent: ``_bz2``, ``_dbm``, ``_gdbm``, ``readline``, ``_curses``,
  ``_uuid``, ``_crypt``, ``nis``, ``_tkinter``; and ``_sqlite3`` (no SQLite in live-bootstrap).

``make install`` runs ``ensurepip`` (no step at that commit removes the bundled wheels or
passes ``--without-ensurepip``), so the guest has pip 22.3.1 and setuptools 65.5.0, the
versions bundled with 3.11.1 — but no ``wheel`` package, no network access to an index and
no certificate store. Hence the install here is ``pip install --no-index --find-links``:

- pure-Python wheels made on the host (``pip download --only-binary :all: --platform any
  --abi none --implementation py --python-version 3.11``): doit, requests, tqdm and their
  dependencies, plus setuptools and wheel for the build environments;
- sdists of psutil and xxhash (xxhash bundles libxxhash's C source), built in the guest with
  its own compiler by pip's isolated build, whose ``setuptools`` comes from the wheelhouse.

``requirements.txt`` in the wheelhouse names what to install; ``install_command`` is the
guest's command line.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from tasks.guest.link import quote

SDISTS = ("psutil", "xxhash")  # C extensions: built in the guest
BUILD_TOOLS = ("setuptools", "wheel")  # for the isolated builds of the sdists


class WheelhouseError(Exception):
    pass


def engine_requirements(pyproject: Path) -> list[str]:
    """The ``[project] dependencies`` of the project's ``pyproject.toml``."""
    with open(pyproject, "rb") as f:
        deps = tomllib.load(f).get("project", {}).get("dependencies")
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise WheelhouseError(f"{pyproject}: project.dependencies: expected a list of strings")
    return deps


def requirement_name(requirement: str) -> str:
    """The distribution name of a requirement (``urllib3>=2,<3`` -> ``urllib3``), lower case."""
    import re

    return re.split(r"[\s<>=~!;\[]", requirement, maxsplit=1)[0].lower()


def make_wheelhouse(dest: Path, requirements: list[str], python: str = sys.executable) -> None:
    """Fill ``dest`` with the wheels and sdists the guest needs (uses the host's pip and
    its index), and write ``dest/requirements.txt``."""
    dest.mkdir(parents=True, exist_ok=True)
    sdists = [r for r in requirements if requirement_name(r) in SDISTS]
    wheels = [r for r in requirements if requirement_name(r) not in SDISTS] + list(BUILD_TOOLS)
    pip = [python, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
    for cmd in (
        [*pip, "--dest", dest, "--no-deps", "--no-binary", ",".join(SDISTS), *sdists],
        [
            *pip, "--dest", dest, "--only-binary", ":all:", "--platform", "any",
            "--abi", "none", "--implementation", "py", "--python-version", "3.11", *wheels,
        ],
    ):  # fmt: skip
        r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
        if r.returncode:
            raise WheelhouseError(f"pip download failed (exit {r.returncode}):\n{r.stderr}")
    (dest / "requirements.txt").write_text("\n".join(requirements) + "\n")


def install_command(python: str, wheelhouse: str) -> str:
    """The guest's shell line that installs the wheelhouse offline into ``python``."""
    return quote(
        [
            python, "-m", "pip", "install", "--no-index", "--find-links", wheelhouse,
            "--disable-pip-version-check", "--no-warn-script-location",
            "-r", f"{wheelhouse}/requirements.txt",
        ]
    )  # fmt: skip
