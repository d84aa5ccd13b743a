"""Which recipe edits rebuild the package, through the real ``doit``: one table over every
recipe field. Cosmetic edits (comments, key order, whitespace, URLs, descriptions, notes, the
procedure step, another platform's overrides) rebuild nothing; every field that changes what
is built reruns it. The edits are applied one after another to one package, each checked
with its own run."""

from __future__ import annotations

import re
from collections.abc import Callable

from tasks.model import recipe as recipe_mod
from tests.conftest import Project
from tests.test_engine import ok

INSTALL = (
    'mkdir -p "$DESTDIR$PREFIX/share" && '
    'cat $(find . -name data.txt | sort | head -1) > "$DESTDIR$PREFIX/share/$PKG.txt"'
)

RECIPE = """\
name = "a"
description = "the a package"
version = "1.0"
depends = []
build_system = "script"
configure_args = ["--one"]
make_args = []
install_args = []
env = {{ FOO = "1" }}
patches = []
patch_strip = 1
step = "V3"
files = []
network = false
script.install = '''{install}'''

[platform.sandbox]
env = {{ SANDBOX = "1" }}

[platform.guest]
make_args = ["-j1"]

[versions."1.0"]
note = "the first"
env = {{ BAR = "1" }}
sources = [{{ file = "a-1.0.tar.gz", sha256 = "{sha10}", urls = ["file:///nonexistent/a-1.0.tar.gz"], unpack = true, strip_components = 1 }}]

[versions."2.0"]
sources = [{{ file = "a-2.0.tar.gz", sha256 = "{sha20}", urls = ["file:///nonexistent/a-2.0.tar.gz"] }}]
"""

Edit = Callable[[Project, str], str]


def sub(old: str, new: str, count: int = 1) -> Edit:
    def edit(project: Project, text: str) -> str:
        assert old in text, f"{old!r} not in the recipe:\n{text}"
        return text.replace(old, new, count)

    return edit


def with_file(rel: str, content: str, then: Edit | None = None) -> Edit:
    def edit(project: Project, text: str) -> str:
        path = project.root / "recipes" / "a" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        return then(project, text) if then else text

    return edit


def new_tarball(project: Project, text: str) -> str:
    sha = project.tarball("a-1.1", {"data.txt": "a 1.1\n"})
    old = re.search(r'file = "a-1\.0\.tar\.gz", sha256 = "([0-9a-f]{64})"', text)
    assert old
    return text.replace(old.group(0), f'file = "a-1.1.tar.gz", sha256 = "{sha}"')


def add_dependency(project: Project, text: str) -> str:
    project.recipe("b")
    return text.replace("depends = []", 'depends = ["b"]', 1)


PATCH = "--- data.txt\n+++ data.txt\n@@ -1 +1 @@\n-a 1.0\n+a {}\n"  # for patch -p0

# (what is edited, the edit, whether the package must be rebuilt)
TABLE: list[tuple[str, Edit, bool]] = [
    ("a comment", sub('name = "a"\n', '# a comment\nname = "a"  # trailing\n'), False),
    (
        "whitespace",
        sub("make_args = []\ninstall_args", "make_args   =   [ ]\n\ninstall_args"),
        False,
    ),
    (
        "key order",
        sub(
            'description = "the a package"\nversion = "1.0"\n',
            'version = "1.0"\ndescription = "the a package"\n',
        ),
        False,
    ),
    ("description", sub("the a package", "the A package, described anew"), False),
    ("name (the same, spelled otherwise)", sub('name = "a"', "name = 'a'"), False),
    (
        "sources.urls",
        sub("file:///nonexistent/a-1.0.tar.gz", "https://example.org/moved/a-1.0.tar.gz"),
        False,
    ),
    (
        "sources.debian",
        sub("unpack = true", 'debian = "main/a/a/a_1.0.orig.tar.gz", unpack = true'),
        False,
    ),
    ("sources.unpack (its default, dropped)", sub(", unpack = true", ""), False),
    ("versions.note", sub("the first", "the first, annotated"), False),
    ("step", sub('step = "V3"', 'step = "V4"'), False),
    ("platform.guest", sub('make_args = ["-j1"]', 'make_args = ["-j2"]'), False),
    ("configure_args", sub('["--one"]', '["--two"]'), True),
    ("make_args", sub("make_args   =   [ ]", 'make_args = ["V=1"]'), True),
    ("install_args", sub("install_args = []", 'install_args = ["V=1"]'), True),
    ("env", sub('env = { FOO = "1" }', 'env = { FOO = "2" }'), True),
    ("versions.env", sub('env = { BAR = "1" }', 'env = { BAR = "2" }'), True),
    ("script", sub("| head -1)", "| head -n 1)"), True),
    (
        "platform.sandbox",
        sub('SANDBOX = "1"', 'SANDBOX = "2"'),
        True,
    ),
    ("patch_strip", sub("patch_strip = 1", "patch_strip = 0"), True),
    (
        "patches",
        with_file("x.patch", PATCH.format("patched"), sub("patches = []", 'patches = ["x.patch"]')),
        True,
    ),
    ("a patch's content", with_file("x.patch", PATCH.format("patched again")), True),
    ("patches (removed)", sub('patches = ["x.patch"]', "patches = []"), True),
    ("files", with_file("extra.txt", "extra\n", sub("files = []", 'files = ["extra.txt"]')), True),
    ("a file's content", with_file("extra.txt", "extra, changed\n"), True),
    ("network", sub("network = false", "network = true"), True),
    ("sources.strip_components", sub("strip_components = 1", "strip_components = 0"), True),
    (
        "build_system",
        sub('build_system = "script"', 'build_system = "make"\nscript.compile = "true"'),
        True,
    ),
    ("sources.file and sha256", new_tarball, True),
    ("version", sub('version = "1.0"\ndescription', 'version = "2.0"\ndescription'), True),
    ("depends", add_dependency, True),
]

# Fields the table does not edit, and why.
NOT_EDITED = {
    "name": "a new name is a new package (only its spelling is edited above)",
    "versions": "edited through version, note, env and sources",
    "platform": "edited through platform.sandbox and platform.guest",
    "platforms": "dropping the platform drops the package",
    "chain": "a chain makes other packages (tests/test_recipe.py)",
    "kind": "another kind is another kind of step (tasks/kinds)",
    "sources": "edited field by field",
    "substitute_for": "documentation of the version (shown by doit list)",
    "unconfirmed": "an unconfirmed version is never built",
    "sha256": "edited with file",
    "git": "a git source's file is pinned by sha256 (its ref only says where it came from)",
    "ref": "as git",
    "prefix": "as git",
}


def test_the_table_covers_every_recipe_field() -> None:
    edited = {what.split()[0].split(".")[-1] for what, _, _ in TABLE}
    keys = recipe_mod.COMMON_KEYS | recipe_mod.PACKAGE_KEYS
    keys |= recipe_mod._VERSION_KEYS | recipe_mod._SOURCE_KEYS
    missing = sorted(k for k in keys if k not in edited and k not in NOT_EDITED)
    assert missing == [], f"recipe fields with no row in TABLE: {missing}"


def test_recipe_edits_rebuild_exactly_when_the_build_changes(project: Project) -> None:
    sha10 = project.tarball("a-1.0", {"data.txt": "a 1.0\n"})
    sha20 = project.tarball("a-2.0", {"data.txt": "a 2.0\n"})
    path = project.root / "recipes" / "a.toml"
    path.write_text(RECIPE.format(install=INSTALL, sha10=sha10, sha20=sha20))
    assert ok(project.doit()).packages_ran() == ["a"]
    wrong = []
    for what, edit, rebuilds in TABLE:
        path.write_text(edit(project, path.read_text()))
        r = ok(project.doit())
        ran = "a" in r.packages_ran()
        if ran != rebuilds:
            wrong.append(f"{what}: {'rebuilt' if ran else 'not rebuilt'}")
        assert ok(project.doit()).ran == [], what  # and then it is up to date
    assert wrong == [], wrong
    assert project.installed("share/a.txt").read_text() == "a 2.0\n"
