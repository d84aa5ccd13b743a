"""Recipes: one TOML file per step under ``recipes/``; patches and files under
``recipes/<name>/``. This module is the model (``Recipe``, ``Build``, ``Source``) and the
shared checks; ``tasks.engine.plan`` reads the files and each kind (``tasks.kinds``) its own keys.

Every recipe has ``COMMON_KEYS`` (name, kind, description, step, depends, platforms). A
recipe of kind ``package`` (the default) is data like this::

    name = "pcre2"                      # optional, defaults to the file name
    version = "10.46"                   # the default version
    depends = []
    build_system = "autotools"          # autotools | meson | cmake | make | script
    configure_args = ["--enable-jit"]   # one argv item each; ${VARS} allowed
    make_args = []
    install_args = []
    env = { CFLAGS = "-O2" }
    patches = ["fix-foo.patch"]         # files under recipes/pcre2/
    patch_strip = 1
    script = { prepare = "autoreconf -fi" }   # overrides of single phases (shell)

    [versions."10.46"]
    sources = [
      { file = "pcre2-10.46.tar.gz", sha256 = "8d28...", urls = ["https://..."],
        debian = "main/p/pcre2/pcre2_10.46.orig.tar.gz" },
    ]

    [platform.guest]                    # overrides per platform
    version = "10.46"

Every error names the file and the field (``RecipeError``); ``tasks.engine.plan.load_recipes``
collects the errors of all recipes and raises them together (``RecipeErrors``), changing
nothing on disk.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUILD_SYSTEMS = ("autotools", "meson", "cmake", "make", "script")
PHASES = ("prepare", "configure", "compile", "install", "post_install")
# Where a recipe may run (``platforms = [...]``); see tasks/model/platform.py. A recipe that names
# none runs on the sandbox and in the guest; a host step names "host".
PLATFORMS = ("sandbox", "guest", "host")
DEFAULT_PLATFORMS = ("sandbox", "guest")
# Names doit reserves for its commands, and our own group tasks.
RESERVED = {
    "list", "clean", "info", "run", "forget", "ignore", "strace", "dumpdb", "help",
    "tabcompletion", "reset-dep", "all", "mirror", "graph", "host", "vm",
}  # fmt: skip
# Variables a recipe value may use as ${NAME}: the platform's and the build's own.
VARIABLES = frozenset(
    {"TARGET", "PREFIX", "LIBDIR", "ROOT", "JOBS", "PLATFORM"}  # the platform's
    | {"DESTDIR", "SRCDIR", "BUILDDIR", "PKG", "VERSION", "PREV", "FILESDIR"}  # the build's
)
_VAR = re.compile(r"\$(\$|\{([^}]*)\})")
_NAME = re.compile(r"^[a-z0-9][a-z0-9+._-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_STEP = re.compile(r"([HVA])(\d+)")  # host, guest (V) and toolkit (A) steps of docs/procedure.md

# Keys every recipe may have, whatever its kind; each kind adds its own (``KEYS``).
COMMON_KEYS = frozenset({"name", "kind", "description", "step", "depends", "platforms"})
# The keys of a recipe that is built from versions and sources by shell phases (the kinds
# package, checkpoint and session take their keys from this set).
PACKAGE_KEYS = frozenset({
    "version", "versions", "build_system", "configure_args", "make_args", "install_args",
    "env", "patches", "patch_strip", "script", "platform", "chain", "files", "network",
})  # fmt: skip
_OVERRIDE_KEYS = {
    "version",
    "configure_args",
    "make_args",
    "install_args",
    "env",
    "depends",
    "chain",
}
_VERSION_KEYS = {"sources", "note", "substitute_for", "unconfirmed", "env"}
_SOURCE_KEYS = {
    "file",
    "sha256",
    "urls",
    "debian",
    "git",
    "ref",
    "prefix",
    "unpack",
    "strip_components",
}


class RecipeError(Exception):
    """One problem in one recipe: the file, the field and what is wrong."""

    def __init__(self, path: Path | str, fld: str, message: str):
        self.path, self.field, self.message = str(path), fld, message
        super().__init__(f"{self.path}: {fld}: {message}" if fld else f"{self.path}: {message}")


class RecipeErrors(Exception):
    """All problems found while loading a recipe set."""

    def __init__(self, errors: list[RecipeError]):
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


@dataclass(frozen=True)
class Source:
    """One source file of a package version, pinned by sha256."""

    file: str
    sha256: str
    urls: tuple[str, ...] = ()
    debian: str | None = None  # pool path of a byte-identical Debian .orig tarball
    unpack: bool = True
    strip_components: int = 1
    git: str | None = None  # a git repository: the file is `git archive` of `ref` ...
    ref: str | None = None  # ... a commit (or tag) ...
    prefix: str | None = None  # ... with this top directory (default <repo>-<ref>)

    def git_prefix(self) -> str:
        """Top directory of a git snapshot, named as live-bootstrap's mirror.sh names it."""
        if self.prefix:
            return self.prefix
        repo = (self.git or "").rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
        ref = self.ref or ""
        return f"{repo}-{ref[1:] if ref[:1] == 'v' and ref[1:2].isdigit() else ref}"


@dataclass(frozen=True)
class Version:
    version: str
    sources: tuple[Source, ...]
    note: str = ""
    substitute_for: str | None = None  # this version stands in for another (e.g. a +dfsg repack)
    unconfirmed: str | None = None  # why its sha256 cannot be confirmed: never built
    env: dict[str, str] = field(default_factory=dict)  # per-version environment


@dataclass
class Recipe:
    """A validated recipe, independent of the platform."""

    name: str
    path: Path
    version: str
    versions: dict[str, Version]
    depends: list[str] = field(default_factory=list)
    build_system: str = "autotools"
    configure_args: list[str] = field(default_factory=list)
    make_args: list[str] = field(default_factory=list)
    install_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    patches: list[str] = field(default_factory=list)
    patch_strip: int = 1
    script: dict[str, str] = field(default_factory=dict)
    platform: dict[str, dict[str, Any]] = field(default_factory=dict)
    description: str = ""
    platforms: tuple[str, ...] = DEFAULT_PLATFORMS  # where the recipe exists at all
    chain: list[str] = field(default_factory=list)  # a bootstrap chain of versions
    kind: str = "package"  # the module of tasks/kinds/ that makes its tasks
    spec: Any = None  # the kind's own validated data (a checkpoint's machine, a stage, ...)
    step: str = ""  # the step of docs/procedure.md it implements, e.g. "V26"
    files: list[str] = field(default_factory=list)  # recipes/<name>/ files the build reads
    network: bool = False  # acts on the live machine's network (e.g. starts sshd)

    @property
    def files_dir(self) -> Path:
        """Where this recipe's patches and files live: ``recipes/<name>/``."""
        return self.path.parent / self.name

    def patch_paths(self) -> list[Path]:
        return [self.files_dir / p for p in self.patches]

    def file_paths(self) -> list[Path]:
        """The recipe's own files a build reads as ``${FILESDIR}/<file>``."""
        return [self.files_dir / f for f in self.files]

    def chain_on(self, platform: str) -> list[str]:
        return list(self.platform.get(platform, {}).get("chain", self.chain))

    def link_name(self, version: str) -> str:
        """The package name of one link of a chain: ``go`` + ``1.17`` -> ``go1.17``."""
        return f"{self.name}{version}"

    def package_names(self, platform: str) -> list[str]:
        """The packages this recipe makes on ``platform`` (one, or one per chain link)."""
        if platform not in self.platforms:
            return []
        chain = self.chain_on(platform)
        return [self.link_name(v) for v in chain] if chain else [self.name]

    def builds(
        self, platform: str, version: str | None = None, *, listed: bool = True
    ) -> list[Build]:
        """The effective builds on ``platform``: one, or one per link of the chain, each
        link depending on the one before (``${PREV}`` names it). ``version`` (from the
        config) wins over the recipe's defaults and must be confirmed; an unconfirmed default
        stays in the plan, and a run that needs it stops before building anything. None
        where ``platforms`` does not list ``platform``, unless ``listed=False`` (the kind
        placed it there, as the config's ``azurelinux_stages`` does)."""
        if listed and platform not in self.platforms:
            return []
        over = self.platform.get(platform, {})
        chain = self.chain_on(platform)
        if chain and version:
            raise RecipeError(
                self.path, "chain", f"a chain cannot be pinned to one version ({version!r})"
            )
        out: list[Build] = []
        for ver in chain or [version or over.get("version", self.version)]:
            if ver not in self.versions:
                known = ", ".join(sorted(self.versions))
                raise RecipeError(self.path, "version", f"unknown version {ver!r} (known: {known})")
            v = self.versions[ver]
            if v.unconfirmed and version:  # asked for by the config: refuse at once
                raise RecipeError(
                    self.path,
                    f"versions.{ver}",
                    f"unconfirmed ({v.unconfirmed}): no verified sha256, so it is never built; "
                    "choose a confirmed version",
                )
            prev = out[-1].name if out else None
            depends = list(over.get("depends", self.depends)) if prev is None else [prev]
            out.append(
                Build(
                    recipe=self,
                    name=self.link_name(ver) if chain else self.name,
                    platform=platform,
                    version=v,
                    depends=depends,
                    configure_args=list(over.get("configure_args", self.configure_args)),
                    make_args=list(over.get("make_args", self.make_args)),
                    install_args=list(over.get("install_args", self.install_args)),
                    env={**self.env, **v.env, **over.get("env", {})},
                    prev=prev,
                )
            )
        return out

    def for_platform(self, platform: str, version: str | None = None) -> Build:
        """The build of a recipe that is not a chain (the last link of one that is)."""
        builds = self.builds(platform, version)
        if not builds:
            raise RecipeError(self.path, "platforms", f"not built on the {platform} platform")
        return builds[-1]


@dataclass
class Build:
    """A recipe resolved for one platform and one version: what a package task builds."""

    recipe: Recipe
    name: str
    platform: str
    version: Version
    depends: list[str]
    configure_args: list[str]
    make_args: list[str]
    install_args: list[str]
    env: dict[str, str]
    prev: str | None = None  # the previous link of a chain

    def signature(self) -> dict[str, Any]:
        """Everything that changes what gets built, normalised (no URLs, notes or docs):
        a changed flag changes the signature, a moved URL does not."""
        r = self.recipe
        return {
            "version": self.version.version,
            "sources": [
                [s.file, s.sha256, s.unpack, s.strip_components] for s in self.version.sources
            ],
            "depends": sorted(self.depends),
            "build_system": r.build_system,
            "configure_args": self.configure_args,
            "make_args": self.make_args,
            "install_args": self.install_args,
            "env": dict(sorted(self.env.items())),
            "patches": r.patches,
            "patch_strip": r.patch_strip,
            "script": dict(sorted(r.script.items())),
            "prev": self.prev,
            "files": r.files,
            "network": r.network,
        }


def expand(value: str, variables: dict[str, str]) -> str:
    """Replace ``${NAME}`` by its value; ``$$`` is a literal ``$``. Unknown names raise KeyError."""

    def sub(m: re.Match[str]) -> str:
        return "$" if m.group(1) == "$" else variables[m.group(2)]

    return _VAR.sub(sub, value)


def step_rank(step: str) -> tuple[int, int]:
    """Where a step comes in the procedure: H1.. before V1.. before A1..; no step first."""
    m = _STEP.fullmatch(step)
    return ("HVA".index(m.group(1)) + 1, int(m.group(2))) if m else (0, 0)


def bad_variables(value: str, known: frozenset[str] = VARIABLES) -> list[str]:
    """The ``${NAME}`` references in ``value`` that are not among ``known`` (recipe
    variables by default)."""
    return [
        m.group(2) for m in _VAR.finditer(value) if m.group(1) != "$" and m.group(2) not in known
    ]


# --------------------------------------------------------------------------- validation


def close_match(word: str, choices: Iterable[str]) -> list[str]:
    """The one choice closest to a mistyped ``word`` (for "did you mean"), or ``[]``. Only
    an error needs it, so ``difflib`` is imported then."""
    import difflib

    return difflib.get_close_matches(word, sorted(choices), 1)


class Checker:
    """Collects the errors of one recipe file, each naming the file and the field; kinds
    with variables of their own (a stage's ``${TREE}``) pass their set."""

    def __init__(self, path: Path, variables: frozenset[str] = VARIABLES):
        self.path, self.errors, self.variables = path, [], variables

    def err(self, fld: str, msg: str) -> None:
        self.errors.append(RecipeError(self.path, fld, msg))

    def keys(self, table: dict, allowed: set[str], where: str) -> None:
        for k in sorted(set(table) - allowed):
            hint = close_match(k, allowed)
            self.err(
                f"{where}{k}", "unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else "")
            )

    def typed(self, table: dict, key: str, typ: type, where: str, default: Any) -> Any:
        if key not in table:
            return default
        value = table[key]
        ok = isinstance(value, typ) and not (typ is int and isinstance(value, bool))
        if not ok:
            self.err(f"{where}{key}", f"expected {typ.__name__}, got {type(value).__name__}")
            return default
        return value

    def str_list(self, table: dict, key: str, where: str, check_vars: bool = True) -> list[str]:
        value = self.typed(table, key, list, where, [])
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.err(f"{where}{key}[{i}]", f"expected a string, got {type(item).__name__}")
            elif check_vars:
                self.vars(f"{where}{key}[{i}]", item)
        return [v for v in value if isinstance(v, str)]

    def str_table(self, table: dict, key: str, where: str) -> dict[str, str]:
        value = self.typed(table, key, dict, where, {})
        for k, v in value.items():
            if not isinstance(v, str):
                self.err(f"{where}{key}.{k}", f"expected a string, got {type(v).__name__}")
            else:
                self.vars(f"{where}{key}.{k}", v)
        return {k: v for k, v in value.items() if isinstance(v, str)}

    def vars(self, fld: str, value: str) -> None:
        for name in bad_variables(value, self.variables):
            known = ", ".join(sorted(self.variables))
            self.err(
                fld, f"unknown variable ${{{name}}} (known: {known}; write $$ for a literal $)"
            )

    def source(self, raw: Any, where: str, pinned: bool = True) -> Source | None:
        if not isinstance(raw, dict):
            self.err(where, "expected a table")
            return None
        self.keys(raw, _SOURCE_KEYS, where + ".")
        urls = self.str_list(raw, "urls", where + ".", check_vars=False)
        sha = self.typed(raw, "sha256", str, where + ".", None)
        if sha is None and "sha256" not in raw and pinned:
            self.err(where + ".sha256", "missing: every source must be pinned by sha256")
        elif sha is not None and not _SHA256.match(sha):
            self.err(where + ".sha256", f"expected 64 lowercase hex digits, got {sha!r}")
        name = self.typed(raw, "file", str, where + ".", None)
        if name is None and urls:
            name = urls[0].rstrip("/").rsplit("/", 1)[-1]
        if not name:
            self.err(where + ".file", "missing: give `file` or at least one URL")
        elif "/" in name or name.startswith("."):
            self.err(where + ".file", f"must be a plain file name, got {name!r}")
        debian = self.typed(raw, "debian", str, where + ".", None)
        if debian is not None and (debian.startswith("/") or ".." in debian.split("/")):
            self.err(where + ".debian", f"must be a relative pool path, got {debian!r}")
        git = self.typed(raw, "git", str, where + ".", None)
        ref = self.typed(raw, "ref", str, where + ".", None)
        prefix = self.typed(raw, "prefix", str, where + ".", None)
        if git is not None:
            if not ref:
                self.err(where + ".ref", "missing: a git source is pinned to a commit or tag")
            if "file" not in raw:
                self.err(where + ".file", "missing: name the snapshot tarball of a git source")
            elif not name.endswith((".tar.gz", ".tar.xz", ".tar")):
                self.err(where + ".file", "a git snapshot is a .tar.gz, .tar.xz or .tar")
        elif ref is not None or prefix is not None:
            self.err(where + ".ref", "`ref` and `prefix` belong to a `git` source")
        if not urls and debian is None and git is None:
            self.err(
                where + ".urls",
                "no URL, Debian pool path or git repository: nowhere to fetch it from",
            )
        unpack = self.typed(raw, "unpack", bool, where + ".", True)
        strip = self.typed(raw, "strip_components", int, where + ".", 1)
        if sha is None and not pinned and name:
            sha = ""  # an unconfirmed version: listed, never fetched or built
        elif sha is None or not name or not _SHA256.match(sha):
            return None
        return Source(name, sha, tuple(urls), debian, unpack, strip, git, ref, prefix)


def rel_paths(c: Checker, table: dict, key: str, where: str, inside: str) -> list[str]:
    """A list of relative paths that must stay inside ``inside`` (named in the error)."""
    values = c.str_list(table, key, where, check_vars=False)
    for i, v in enumerate(values):
        if not v or v.startswith("/") or ".." in Path(v).parts:
            c.err(f"{where}{key}[{i}]", f"must be a path inside {inside}, got {v!r}")
    return values


def package_fields(
    c: Checker, data: dict[str, Any], path: Path, name: str, build_system: str | None = None
) -> dict[str, Any]:
    """Validate the keys of a recipe built from versions and sources by shell phases
    (``PACKAGE_KEYS``; each kind allows its subset) and return them as ``Recipe`` fields.
    ``build_system`` forces one (a checkpoint or session step is always a ``script``)."""
    if build_system is None:
        build_system = c.typed(data, "build_system", str, "", "autotools")
    sourceless = build_system == "script"  # a script may build from recipes/<name>/ alone
    versions: dict[str, Version] = {}
    raw_versions = c.typed(data, "versions", dict, "", {})
    if not raw_versions and sourceless:
        raw_versions = {"0": {"sources": []}}
    elif not raw_versions:
        c.err("versions", "missing: at least one version with its sources")
    for ver, raw in raw_versions.items():
        where = f"versions.{ver}"
        if not isinstance(raw, dict):
            c.err(where, "expected a table")
            continue
        c.keys(raw, _VERSION_KEYS, where + ".")
        unconfirmed = c.typed(raw, "unconfirmed", str, where + ".", None)
        raw_sources = c.typed(raw, "sources", list, where + ".", [])
        if not raw_sources and not sourceless:
            c.err(where + ".sources", "missing: a version needs at least one source")
        sources = [
            c.source(s, f"{where}.sources[{i}]", pinned=unconfirmed is None)
            for i, s in enumerate(raw_sources)
        ]
        versions[ver] = Version(
            ver,
            tuple(s for s in sources if s),
            c.typed(raw, "note", str, where + ".", ""),
            c.typed(raw, "substitute_for", str, where + ".", None),
            unconfirmed,
            c.str_table(raw, "env", where + "."),
        )
    implicit = "0" if "versions" not in data and sourceless else None
    version = c.typed(data, "version", str, "", implicit)
    chain = c.str_list(data, "chain", "", check_vars=False)
    for i, v in enumerate(chain):
        if v not in versions:
            c.err(f"chain[{i}]", f"{v!r} is not one of the versions: {', '.join(versions)}")
    if version is None and chain:
        version = chain[-1]
    if version is None:
        c.err("version", "missing: name the default version")
    elif versions and version not in versions:
        c.err("version", f"{version!r} is not one of the versions: {', '.join(versions)}")

    if build_system not in BUILD_SYSTEMS:
        c.err("build_system", f"{build_system!r} is not one of {', '.join(BUILD_SYSTEMS)}")
    script = c.typed(data, "script", dict, "", {})
    for phase, text in script.items():
        if phase not in PHASES:
            c.err(f"script.{phase}", f"unknown phase (phases: {', '.join(PHASES)})")
        elif not isinstance(text, str):
            c.err(f"script.{phase}", "expected a string (a shell script)")
    if build_system == "script" and not script:
        c.err("script", "build_system 'script' needs at least one phase in [script]")

    patches = c.str_list(data, "patches", "", check_vars=False)
    files = c.str_list(data, "files", "", check_vars=False)
    for key, items in (("patches", patches), ("files", files)):
        for i, p in enumerate(items):
            if p.startswith("/") or ".." in Path(p).parts:
                c.err(f"{key}[{i}]", f"must be a path inside recipes/{name}/, got {p!r}")
            elif not (path.parent / name / p).is_file():
                c.err(f"{key}[{i}]", f"file not found: {path.parent / name / p}")

    overrides = c.typed(data, "platform", dict, "", {})
    for plat, over in overrides.items():
        where = f"platform.{plat}"
        if plat not in PLATFORMS:
            c.err(where, f"unknown platform (platforms: {', '.join(PLATFORMS)})")
        elif not isinstance(over, dict):
            c.err(where, "expected a table")
        else:
            c.keys(over, _OVERRIDE_KEYS, where + ".")
            v = c.typed(over, "version", str, where + ".", None)
            if v is not None and versions and v not in versions:
                c.err(
                    where + ".version", f"{v!r} is not one of the versions: {', '.join(versions)}"
                )
            for key in ("configure_args", "make_args", "install_args", "depends", "chain"):
                c.str_list(over, key, where + ".", check_vars=key not in ("depends", "chain"))
            for i, v in enumerate(over.get("chain", [])):
                if v not in versions:
                    c.err(f"{where}.chain[{i}]", f"{v!r} is not one of the versions")
            c.str_table(over, "env", where + ".")
    return dict(
        version=version or "",
        versions=versions,
        build_system=build_system,
        configure_args=c.str_list(data, "configure_args", ""),
        make_args=c.str_list(data, "make_args", ""),
        install_args=c.str_list(data, "install_args", ""),
        env=c.str_table(data, "env", ""),
        patches=patches,
        patch_strip=c.typed(data, "patch_strip", int, "", 1),
        script={k: v for k, v in script.items() if isinstance(v, str)},
        platform={k: v for k, v in overrides.items() if isinstance(v, dict)},
        chain=chain,
        files=files,
        network=c.typed(data, "network", bool, "", False),
    )


def common_fields(c: Checker, data: dict[str, Any], path: Path) -> dict[str, Any]:
    """Validate the keys every recipe has (``COMMON_KEYS``) and return them as ``Recipe``
    fields."""
    name = c.typed(data, "name", str, "", path.stem)
    if not _NAME.match(name):
        c.err("name", f"{name!r} is not a valid package name (lowercase, digits, + . _ -)")
    elif name in RESERVED:
        c.err("name", f"{name!r} is reserved for a doit command or group task")
    platforms = c.str_list(data, "platforms", "", check_vars=False) or list(DEFAULT_PLATFORMS)
    for i, plat in enumerate(platforms):
        if plat not in PLATFORMS:
            c.err(
                f"platforms[{i}]", f"unknown platform {plat!r} (platforms: {', '.join(PLATFORMS)})"
            )
    step = c.typed(data, "step", str, "", "")
    if step and not _STEP.fullmatch(step):
        c.err("step", f"{step!r} is not a step of the procedure (H1, V26, A3, ...)")
    return dict(
        name=name,
        path=path,
        depends=c.str_list(data, "depends", "", check_vars=False),
        description=c.typed(data, "description", str, "", ""),
        platforms=tuple(platforms),
        step=step,
    )
