"""Shared fixtures: a throw-away azl-bootstrap project (the repository's dodo.py, mock recipes,
a mirror of real tarballs made by the test) and a way to run the real ``doit`` in it."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import textwrap
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# git bundles of live-bootstrap (and its submodules) and musl-cross-make, beside the checkout
# (../shared/git/README.md): the tests' only local git mirror, used through the project's own
# mirror options (a ``<name>.bundle`` in a mirror directory)
SHARED_GIT = REPO.parent / "shared" / "git"


# what the package builds export (tasks/model/platform.py build_env) and the guest's profile sets:
# none of it may reach the toolkit stages or the LFS user (test_stage_env, test_sudo)
PACKAGE_VARS = {
    "PKG_CONFIG_PATH": "/usr/lib/i686-unknown-linux-musl/pkgconfig",
    "PREFIX": "/usr",
    "LIBDIR": "/usr/lib/i686-unknown-linux-musl",
    "TARGET": "i686-unknown-linux-musl",
    "ROOT": "/",
    "DESTDIR": "/tmp/destdir",
    "CPPFLAGS": "-I/usr/include",
    "LDFLAGS": "-L/usr/lib/i686-unknown-linux-musl",
    "CFLAGS": "-O0",
    "SOURCE_DATE_EPOCH": "0",
    "MAKEJOBS": "-j2",
    "GOARCH": "386",
    "GOFLAGS": "-mod=vendor",
}


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def ran(self) -> list[str]:
        """Tasks that executed (``.  name`` lines of the plain reporter)."""
        return re.findall(r"^\.  (\S+)", self.out, re.M)

    @property
    def uptodate(self) -> list[str]:
        return re.findall(r"^-- (\S+)", self.out, re.M)

    def packages_ran(self) -> list[str]:
        return [t for t in self.ran if not t.startswith("mirror:")]


class Project:
    """A project directory with the repository's ``dodo.py`` and its own recipes."""

    def __init__(self, root: Path):
        self.root = root
        (root / "recipes").mkdir(parents=True)
        (root / "mirror").mkdir()
        shutil.copy(REPO / "dodo.py", root / "dodo.py")
        self.config('platform = "sandbox"\njobs = 2\n')

    def config(self, text: str) -> None:
        (self.root / "azl-bootstrap.toml").write_text(text)

    def tarball(self, name: str, files: dict[str, str | bytes], mode: int = 0o644) -> str:
        """A real .tar.gz ``mirror/<name>.tar.gz`` with top directory ``<name>/``; its sha256."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for rel, content in sorted(files.items()):
                data = content.encode() if isinstance(content, str) else content
                info = tarfile.TarInfo(f"{name}/{rel}")
                info.size, info.mode, info.mtime = len(data), mode, 1_000_000_000
                tar.addfile(info, io.BytesIO(data))
        path = self.root / "mirror" / f"{name}.tar.gz"
        path.write_bytes(buf.getvalue())
        return hashlib.sha256(buf.getvalue()).hexdigest()

    def recipe(
        self,
        name: str,
        body: str = "",
        *,
        deps: tuple[str, ...] = (),
        install: str | None = None,
        files: dict[str, str] | None = None,
        version: str = "1.0",
    ) -> Path:
        """A mock package: a real tarball in the mirror and a ``script`` recipe that installs
        ``share/<name>.txt`` (the content of ``data.txt``) unless ``install`` says otherwise."""
        src = f"{name}-{version}"
        sha = self.tarball(src, files or {"data.txt": f"{name} {version}\n"})
        install = (
            install
            or 'mkdir -p "$DESTDIR$PREFIX/share" && cp data.txt "$DESTDIR$PREFIX/share/$PKG.txt"'
        )
        text = textwrap.dedent(
            f"""\
            version = "{version}"
            depends = {list(deps)!r}
            build_system = "script"
            """
        ).replace("'", '"')
        text += body + "\n"
        text += f"script.install = '''{install}'''\n"
        text += (
            f'[versions."{version}"]\n'
            f'sources = [{{ file = "{src}.tar.gz", sha256 = "{sha}", urls = ["file:///nonexistent/{src}.tar.gz"] }}]\n'
        )
        path = self.root / "recipes" / f"{name}.toml"
        path.write_text(text)
        return path

    def doit(self, *args: str, env: dict[str, str] | None = None, timeout: float = 600) -> Result:
        """Run the real ``doit`` (``python -m doit``) in the project."""
        proc = subprocess.run(
            [sys.executable, "-m", "doit", *args],
            cwd=self.root,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "doit", *args],
            cwd=self.root,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    @property
    def sandbox_root(self) -> Path:
        return self.root / "cache" / "sandbox" / "root"

    def installed(self, rel: str) -> Path:
        return self.sandbox_root / "usr" / rel

    def manifest(self, name: str) -> Path:
        return self.root / "cache" / "manifests" / f"{name}.json"


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path / "proj")


def real_project(
    root: Path, *names: str, keep_build: bool = False, mirrors: tuple[Path, ...] = ()
) -> Project:
    """A project at ``root`` with copies of the repository's recipes ``names`` (dependencies
    included by the caller) and their files (``recipes/<name>/``), the repository's
    ``mirror/`` and ``mirrors`` as local mirrors, two jobs."""
    project = Project(root)
    for name in names:
        shutil.copy(REPO / "recipes" / f"{name}.toml", project.root / "recipes")
        if (REPO / "recipes" / name).is_dir():
            shutil.copytree(REPO / "recipes" / name, project.root / "recipes" / name)
    config = 'platform = "sandbox"\njobs = 2\n'
    local = [*mirrors, *([REPO / "mirror"] if (REPO / "mirror").is_dir() else [])]
    if local:
        config += f"mirrors = {json.dumps([str(m) for m in local])}\n"
    if keep_build:
        config += "keep_build = true\n"
    project.config(config)
    return project


def shared_git(*names: str) -> Path:
    """The bundle directory ``../shared/git``, checked to hold ``<name>.bundle`` for every
    name; a missing bundle fails the test (naming it), never skips it."""
    for name in names:
        if not (SHARED_GIT / f"{name}.bundle").is_file():
            pytest.fail(f"{SHARED_GIT / name}.bundle is missing (see ../shared/git/README.md)")
    return SHARED_GIT


# the bootstrap Go of the sandbox's go1.23.1 (recipes/go.toml), which `./setup.sh --with-go`
# installs (bookworm-backports' golang-1.22-go); CI installs it
BOOTSTRAP_GO = Path("/usr/lib/go-1.22/bin/go")


def find_go() -> str | None:
    """The Go the Go tests use: the bootstrap Go, else one on PATH (a newer one may be there)."""
    return str(BOOTSTRAP_GO) if BOOTSTRAP_GO.is_file() else shutil.which("go")


def run(*argv: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a command that must succeed; its output in the assertion message if not."""
    out = subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kwargs)
    assert out.returncode == 0, f"{argv}: exit {out.returncode}\n{out.stdout}{out.stderr}"
    return out


def sandbox_version(name: str) -> str:
    """The version the sandbox builds by default of the repository's recipe ``name``."""
    from tasks.engine.recipeset import parse_recipe

    recipe, errors = parse_recipe(REPO / "recipes" / f"{name}.toml")
    assert recipe is not None, errors
    return recipe.for_platform("sandbox").version.version


def links_into_sandbox(project: Project, binary: Path, library: str) -> None:
    """``binary`` loads ``library`` from the project's sandbox root, not from the host."""
    ldd = run("ldd", binary).stdout
    line = next((ln for ln in ldd.splitlines() if library in ln), None)
    assert line and str(project.sandbox_root.resolve()) in line, ldd


@pytest.fixture(scope="session")
def archive() -> str:
    """Base URI of Debian's archive from the apt sources. Skips only when there is none or
    its host cannot be connected to at all; a 404 of a pinned file must fail its test."""
    from tasks.sources.download import debian_archive_uri

    uri = debian_archive_uri()
    if uri is None:
        pytest.skip("no Debian archive in this machine's apt sources")
    parts = urllib.parse.urlsplit(uri)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=10).close()
    except OSError as e:
        pytest.skip(f"Debian's archive cannot be connected to: {e}")
    return uri


@pytest.fixture(scope="session")
def dropbear_tarball(tmp_path_factory: pytest.TempPathFactory, archive: str) -> Path:
    """The host half's after-step dropbear (``recipes/lb-image.toml``), fetched once
    from Debian's archive, whose .orig is byte-identical to the upstream release."""
    import tomllib

    from tasks.sources.download import fetch

    version = tomllib.loads((REPO / "recipes/lb-image.toml").read_text())["dropbear"]
    recipe = tomllib.loads((REPO / "recipes/dropbear.toml").read_text())
    src = recipe["versions"][version]["sources"][0]
    dest = tmp_path_factory.mktemp("dropbear") / src["file"]
    fetch([f"{archive}/pool/{src['debian']}"], dest, src["sha256"], progress=False)
    return dest


# The pinned Azure Linux tree's SPECS that tests need (../shared/azurelinux/README.md)
AZL_SPECS = REPO.parent / "shared" / "azurelinux" / "specs-6a8b54d4.tar.gz"


def azurelinux_spec_files(dest: Path, package: str) -> dict[str, Path]:
    """The files of ``SPECS/<package>/`` of the pinned tree, written to ``dest`` (by name).
    Skips the test when ../shared holds no copy of the tree's SPECS."""
    if not AZL_SPECS.is_file():
        pytest.skip(f"{AZL_SPECS} is missing (the pinned tree's SPECS, see its README)")
    dest.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    with tarfile.open(AZL_SPECS) as tar:
        for member in tar:
            parts = Path(member.name).parts  # azurelinux-<commit>/SPECS/<package>/<file>
            if member.isfile() and len(parts) == 4 and parts[1:3] == ("SPECS", package):
                f = tar.extractfile(member)
                assert f is not None
                out[parts[3]] = dest / parts[3]
                out[parts[3]].write_bytes(f.read())
    assert out, f"{AZL_SPECS} has no SPECS/{package}/"
    return out
