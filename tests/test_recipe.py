"""Tests for tasks.model.recipe and tasks.model.config: every validation error names the file and the field,
all errors are reported at once, and through the real ``doit`` a bad recipe changes nothing."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from tasks.engine.recipeset import load_recipes, parse_recipe
from tasks.model.config import Config, load_config
from tasks.model.recipe import (
    VARIABLES,
    RecipeError,
    RecipeErrors,
    bad_variables,
    expand,
    step_rank,
)

REPO = Path(__file__).resolve().parents[1]
SHA = "0123456789abcdef" * 4  # a well-formed sha256
SHA2 = "fedcba9876543210" * 4


# --------------------------------------------------------------------------- helpers


def source(version: str = "1.0", **fields: str) -> str:
    """An inline TOML table of one valid source; ``fields`` replace or add raw TOML values."""
    raw = {
        "file": f'"pkg-{version}.tar.gz"',
        "sha256": f'"{SHA}"',
        "urls": f'["https://example.org/pkg-{version}.tar.gz"]',
    }
    raw.update(fields)
    return "{ " + ", ".join(f"{k} = {v}" for k, v in raw.items() if v is not None) + " }"


def versions(*vers: str, src: str | None = None) -> str:
    """``[versions."X"]`` tables with one valid source each (or ``src`` for all of them)."""
    return "".join(f'\n[versions."{v}"]\nsources = [{src or source(v)}]\n' for v in vers)


def write(rdir: Path, name: str, top: str = "", tables: str | None = None) -> Path:
    """``rdir/<name>.toml``: the top-level keys ``top`` (``version = "1.0"`` unless it sets
    one) followed by ``tables`` (one valid version 1.0 unless given)."""
    rdir.mkdir(parents=True, exist_ok=True)
    top = textwrap.dedent(top)
    head = ("\n" + top).split("\n[", 1)[0]  # the top-level keys, before any table
    if not any(line.startswith("version ") for line in head.splitlines()):
        top = 'version = "1.0"\n' + top
    path = rdir / f"{name}.toml"
    path.write_text(top + (versions("1.0") if tables is None else textwrap.dedent(tables)))
    return path


def load_errors(rdir: Path) -> list[RecipeError]:
    with pytest.raises(RecipeErrors) as ei:
        load_recipes(rdir)
    assert str(ei.value) == "\n".join(str(e) for e in ei.value.errors)
    return ei.value.errors


def error_for(rdir: Path, path: Path, fld: str) -> RecipeError:
    """The one error about ``fld`` of ``path``; its message names both."""
    errors = load_errors(rdir)
    found = [e for e in errors if e.path == str(path) and e.field == fld]
    assert len(found) == 1, "\n".join(str(e) for e in errors)
    err = found[0]
    assert str(err).startswith(f"{path}: {fld}: "), str(err)
    return err


@pytest.fixture
def rdir(tmp_path: Path) -> Path:
    d = tmp_path / "recipes"
    d.mkdir()
    return d


# --------------------------------------------------------------------------- valid recipes


def test_valid_recipe_set_loads(rdir: Path) -> None:
    (rdir / "app").mkdir()
    (rdir / "app" / "fix.patch").write_text("--- a\n+++ b\n")
    write(rdir, "lib", 'build_system = "cmake"\ndescription = "a library"\n')
    write(
        rdir,
        "app",
        """\
        depends = ["lib"]
        configure_args = ["--prefix=${PREFIX}", "--with-dollar=$$HOME"]
        make_args = ["-j${JOBS}"]
        install_args = ["DESTDIR=${DESTDIR}"]
        env = { CFLAGS = "-O2 -I${PREFIX}/include" }
        patches = ["fix.patch"]
        patch_strip = 0
        script = { prepare = "autoreconf -fi" }

        [platform.guest]
        version = "0.9"
        configure_args = ["--host=${TARGET}"]
        env = { LDFLAGS = "-static" }
        """,
        versions("1.0", "0.9"),
    )
    recipes = load_recipes(rdir)
    assert sorted(recipes) == ["app", "lib"]
    app, lib = recipes["app"], recipes["lib"]
    assert lib.build_system == "cmake" and lib.description == "a library"
    assert app.build_system == "autotools"  # the default
    assert app.depends == ["lib"]
    assert app.configure_args == ["--prefix=${PREFIX}", "--with-dollar=$$HOME"]
    assert app.patch_paths() == [rdir / "app" / "fix.patch"]
    assert app.patch_strip == 0
    assert app.script == {"prepare": "autoreconf -fi"}
    assert sorted(app.versions) == ["0.9", "1.0"]
    src = app.versions["1.0"].sources[0]
    assert (src.file, src.sha256, src.unpack, src.strip_components) == (
        "pkg-1.0.tar.gz",
        SHA,
        True,
        1,
    )
    assert src.urls == ("https://example.org/pkg-1.0.tar.gz",)


def test_source_file_defaults_to_last_url_component(rdir: Path) -> None:
    write(rdir, "a", tables=versions("1.0", src=source(file=None)))
    assert load_recipes(rdir)["a"].versions["1.0"].sources[0].file == "pkg-1.0.tar.gz"


def test_source_with_only_a_debian_pool_path_is_valid(rdir: Path) -> None:
    src = source(urls=None, debian='"main/p/pkg/pkg_1.0.orig.tar.gz"')
    write(rdir, "a", tables=versions("1.0", src=src))
    s = load_recipes(rdir)["a"].versions["1.0"].sources[0]
    assert s.urls == () and s.debian == "main/p/pkg/pkg_1.0.orig.tar.gz"


def test_the_repository_recipe_set_loads() -> None:
    recipes = load_recipes(REPO / "recipes")
    assert recipes
    for recipe in recipes.values():
        for plat in ("sandbox", "guest"):
            builds = recipe.builds(plat)  # none where the recipe is another platform's step
            assert bool(builds) == (plat in recipe.platforms), (recipe.path, plat)


# --------------------------------------------------------------------------- schema errors


def test_unknown_top_level_key_with_hint(rdir: Path) -> None:
    path = write(rdir, "a", 'dependz = ["b"]\n')
    err = error_for(rdir, path, "dependz")
    assert "unknown key" in err.message and "did you mean 'depends'?" in err.message


def test_unknown_top_level_key_without_close_match_has_no_hint(rdir: Path) -> None:
    path = write(rdir, "a", "zzzzzz = 1\n")
    err = error_for(rdir, path, "zzzzzz")
    assert err.message == "unknown key"


def test_unknown_source_key_with_hint(rdir: Path) -> None:
    src = source(sha265=f'"{SHA}"')
    path = write(rdir, "a", tables=versions("1.0", src=src))
    err = error_for(rdir, path, "versions.1.0.sources[0].sha265")
    assert "unknown key" in err.message and "did you mean 'sha256'?" in err.message


def test_unknown_version_key_with_hint(rdir: Path) -> None:
    path = write(rdir, "a", tables='[versions."1.0"]\nnotes = "x"\nsources = [' + source() + "]\n")
    err = error_for(rdir, path, "versions.1.0.notes")
    assert "did you mean 'note'?" in err.message


def test_missing_sha256(rdir: Path) -> None:
    path = write(rdir, "a", tables=versions("1.0", src=source(sha256=None)))
    err = error_for(rdir, path, "versions.1.0.sources[0].sha256")
    assert err.message.startswith("missing")


@pytest.mark.parametrize(
    "sha",
    [
        pytest.param(SHA[:63], id="too-short"),
        pytest.param(SHA + "0", id="too-long"),
        pytest.param(SHA.upper(), id="uppercase"),
        pytest.param("g" + SHA[1:], id="non-hex"),
        pytest.param("", id="empty"),
    ],
)
def test_malformed_sha256(rdir: Path, sha: str) -> None:
    path = write(rdir, "a", tables=versions("1.0", src=source(sha256=f'"{sha}"')))
    err = error_for(rdir, path, "versions.1.0.sources[0].sha256")
    assert "64 lowercase hex digits" in err.message and repr(sha) in err.message


@pytest.mark.parametrize("tables", ["", "versions = {}\n"], ids=["absent", "empty"])
def test_missing_versions(rdir: Path, tables: str) -> None:
    path = write(rdir, "a", tables=tables)
    err = error_for(rdir, path, "versions")
    assert err.message.startswith("missing")


def test_version_without_sources(rdir: Path) -> None:
    path = write(rdir, "a", tables='[versions."1.0"]\nsources = []\n')
    error_for(rdir, path, "versions.1.0.sources")


def test_missing_default_version(rdir: Path) -> None:
    path = rdir / "a.toml"
    path.write_text(versions("1.0"))
    err = error_for(rdir, path, "version")
    assert err.message.startswith("missing")


def test_default_version_not_among_versions(rdir: Path) -> None:
    path = write(rdir, "a", 'version = "2.0"\n', versions("1.0", "1.1"))
    err = error_for(rdir, path, "version")
    assert "'2.0'" in err.message and "1.0" in err.message and "1.1" in err.message


def test_unknown_build_system(rdir: Path) -> None:
    path = write(rdir, "a", 'build_system = "scons"\n')
    err = error_for(rdir, path, "build_system")
    assert "'scons'" in err.message and "autotools" in err.message


def test_unknown_script_phase(rdir: Path) -> None:
    path = write(rdir, "a", 'script = { build = "make" }\n')
    err = error_for(rdir, path, "script.build")
    assert "unknown phase" in err.message and "compile" in err.message


def test_script_phase_must_be_a_string(rdir: Path) -> None:
    path = write(rdir, "a", 'script = { install = ["make", "install"] }\n')
    error_for(rdir, path, "script.install")


def test_script_build_system_needs_a_phase(rdir: Path) -> None:
    path = write(rdir, "a", 'build_system = "script"\n')
    error_for(rdir, path, "script")


def test_unknown_dependency_with_hint(rdir: Path) -> None:
    write(rdir, "pcre2")
    path = write(rdir, "grep", 'depends = ["pcre"]\n')
    err = error_for(rdir, path, "depends")
    assert "unknown package 'pcre'" in err.message and "did you mean 'pcre2'?" in err.message


def test_unknown_dependency_in_platform_override(rdir: Path) -> None:
    path = write(rdir, "a", '[platform.guest]\ndepends = ["nosuch"]\n' + versions("1.0"), "")
    err = error_for(rdir, path, "depends")
    assert "unknown package 'nosuch'" in err.message


def test_dependency_cycle(rdir: Path) -> None:
    pa = write(rdir, "a", 'depends = ["b"]\n')
    pb = write(rdir, "b", 'depends = ["c"]\n')
    pc = write(rdir, "c", 'depends = ["a"]\n')
    write(rdir, "d", 'depends = ["a"]\n')  # depends on the cycle, not part of it
    errors = load_errors(rdir)
    assert len(errors) == 1
    err = errors[0]
    assert err.field == "depends" and err.path == str(pa)
    assert "a -> b -> c -> a" in err.message
    for p in (pa, pb, pc):
        assert str(p) in str(err)
    assert "d.toml" not in str(err)


def test_self_dependency_is_a_cycle(rdir: Path) -> None:
    path = write(rdir, "a", 'depends = ["a"]\n')
    err = error_for(rdir, path, "depends")
    assert "a -> a" in err.message


def test_dependency_cycle_on_one_platform_only(rdir: Path) -> None:
    write(rdir, "a", 'depends = ["b"]\n')
    path = write(rdir, "b", '[platform.guest]\ndepends = ["a"]\n' + versions("1.0"), "")
    errors = load_errors(rdir)
    assert len(errors) == 1 and "dependency cycle" in errors[0].message
    assert str(path) in str(errors[0])


def test_duplicate_package(rdir: Path) -> None:
    first = write(rdir, "one", 'name = "foo"\n')
    second = write(rdir, "two", 'name = "foo"\n')
    err = error_for(rdir, second, "name")
    assert "'foo'" in err.message and str(first) in err.message


@pytest.mark.parametrize("name", ["Foo", "-x", "a b", "all", "list", "mirror"])
def test_invalid_or_reserved_name(rdir: Path, name: str) -> None:
    path = write(rdir, "a", f'name = "{name}"\n')
    error_for(rdir, path, "name")


@pytest.mark.parametrize(
    ("top", "fld"),
    [
        ('configure_args = ["--with-x=${NOPE}"]\n', "configure_args[0]"),
        ('make_args = ["V=1", "X=${NOPE}"]\n', "make_args[1]"),
        ('install_args = ["${NOPE}"]\n', "install_args[0]"),
        ('env = { CFLAGS = "-I${NOPE}/include" }\n', "env.CFLAGS"),
        ('[platform.guest]\nconfigure_args = ["${NOPE}"]\n', "platform.guest.configure_args[0]"),
        ('[platform.sandbox]\nenv = { X = "${NOPE}" }\n', "platform.sandbox.env.X"),
    ],
)
def test_unknown_variable(rdir: Path, top: str, fld: str) -> None:
    path = write(rdir, "a", top)
    err = error_for(rdir, path, fld)
    assert "unknown variable ${NOPE}" in err.message and "$$" in err.message


def test_dollar_dollar_escape_is_accepted(rdir: Path) -> None:
    write(
        rdir,
        "a",
        """\
        configure_args = ["--x=$${NOPE}", "--y=$$HOME", "--z=${PREFIX}$$"]
        env = { CFLAGS = "$${NOPE}" }
        """,
    )
    recipe = load_recipes(rdir)["a"]
    assert recipe.configure_args[0] == "--x=$${NOPE}"
    assert expand(recipe.configure_args[0], {}) == "--x=${NOPE}"
    assert expand(recipe.env["CFLAGS"], {}) == "${NOPE}"


def test_patch_file_that_does_not_exist(rdir: Path) -> None:
    path = write(rdir, "a", 'patches = ["missing.patch"]\n')
    err = error_for(rdir, path, "patches[0]")
    assert "file not found" in err.message and str(rdir / "a" / "missing.patch") in err.message


@pytest.mark.parametrize("patch", ["../b/x.patch", "sub/../../x.patch", "/etc/passwd"])
def test_patch_path_outside_the_recipe_dir(rdir: Path, patch: str) -> None:
    (rdir / "b").mkdir()
    (rdir / "b" / "x.patch").write_text("")
    (rdir / "x.patch").write_text("")
    path = write(rdir, "a", f'patches = ["{patch}"]\n')
    err = error_for(rdir, path, "patches[0]")
    assert "must be a path inside recipes/a/" in err.message


def test_platform_override_with_unknown_platform(rdir: Path) -> None:
    path = write(rdir, "a", '[platform.vm]\nversion = "1.0"\n')
    err = error_for(rdir, path, "platform.vm")
    assert "unknown platform" in err.message and "guest" in err.message


def test_platform_override_unknown_key_and_version(rdir: Path) -> None:
    path = write(rdir, "a", '[platform.guest]\nversion = "9"\nbuild_system = "make"\n')
    errors = load_errors(rdir)
    fields = sorted(e.field for e in errors)
    assert fields == ["platform.guest.build_system", "platform.guest.version"]
    assert all(str(e).startswith(f"{path}: {e.field}: ") for e in errors)


@pytest.mark.parametrize(
    ("top", "fld", "expected"),
    [
        ('configure_args = "--enable-jit"\n', "configure_args", "expected list, got str"),
        ('depends = "pcre2"\n', "depends", "expected list, got str"),
        ('patches = "x.patch"\n', "patches", "expected list, got str"),
        ('env = "CFLAGS=-O2"\n', "env", "expected dict, got str"),
        ("version = 1\n", "version", "expected str, got int"),
        ("patch_strip = true\n", "patch_strip", "expected int, got bool"),
        ("configure_args = [1]\n", "configure_args[0]", "expected a string, got int"),
        ("env = { CFLAGS = 2 }\n", "env.CFLAGS", "expected a string, got int"),
        ('[platform.guest]\nmake_args = "x"\n', "platform.guest.make_args", "expected list"),
    ],
)
def test_wrong_types(rdir: Path, top: str, fld: str, expected: str) -> None:
    path = write(rdir, "a", top)
    errors = load_errors(rdir)
    found = [e for e in errors if e.field == fld]
    assert found, "\n".join(map(str, errors))
    assert str(found[0]).startswith(f"{path}: {fld}: ") and expected in found[0].message


@pytest.mark.parametrize(
    ("src", "fld", "expected"),
    [
        (source(file='"../evil.tar.gz"'), "file", "plain file name"),
        (source(file='".hidden"'), "file", "plain file name"),
        (source(urls=None), "urls", "nowhere to fetch it from"),
        (source(debian='"/abs/path.tar.gz"'), "debian", "relative pool path"),
        (source(debian='"main/../../x.tar.gz"'), "debian", "relative pool path"),
        (source(strip_components='"1"'), "strip_components", "expected int"),
        (source(unpack='"yes"'), "unpack", "expected bool"),
    ],
)
def test_bad_source_fields(rdir: Path, src: str, fld: str, expected: str) -> None:
    path = write(rdir, "a", tables=versions("1.0", src=src))
    err = error_for(rdir, path, f"versions.1.0.sources[0].{fld}")
    assert expected in err.message


def test_source_must_be_a_table(rdir: Path) -> None:
    path = write(rdir, "a", tables='[versions."1.0"]\nsources = ["pkg.tar.gz"]\n')
    error_for(rdir, path, "versions.1.0.sources[0]")


def test_invalid_toml_names_the_file(rdir: Path) -> None:
    write(rdir, "good")
    path = rdir / "bad.toml"
    path.write_text('version = "1.0\n')
    errors = load_errors(rdir)
    assert len(errors) == 1
    assert errors[0].path == str(path) and errors[0].field == ""
    assert str(errors[0]).startswith(f"{path}: not valid TOML")


def test_parse_recipe_of_unreadable_file(tmp_path: Path) -> None:
    recipe, errors = parse_recipe(tmp_path / "nope.toml")
    assert recipe is None and len(errors) == 1
    assert str(tmp_path / "nope.toml") in str(errors[0]) and "cannot read" in str(errors[0])


def test_missing_recipe_directory(tmp_path: Path) -> None:
    with pytest.raises(RecipeErrors) as ei:
        load_recipes(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(ei.value)


def test_all_errors_of_all_files_are_reported_at_once(rdir: Path) -> None:
    pa = write(rdir, "a", 'dependz = []\nbuild_system = "scons"\n')
    pb = write(
        rdir, "b", 'configure_args = ["${NOPE}"]\n', versions("1.0", src=source(sha256=None))
    )
    pc = rdir / "c.toml"
    pc.write_text("this is = not = toml\n")
    pd = write(rdir, "d", 'depends = ["nosuch"]\n')  # a dependency error next to schema errors
    errors = load_errors(rdir)
    got = {(e.path, e.field) for e in errors}
    assert got == {
        (str(pa), "dependz"),
        (str(pa), "build_system"),
        (str(pb), "configure_args[0]"),
        (str(pb), "versions.1.0.sources[0].sha256"),
        (str(pc), ""),
        (str(pd), "depends"),
    }
    with pytest.raises(RecipeErrors) as ei:
        load_recipes(rdir)
    assert len(str(ei.value).splitlines()) == len(errors)


# --------------------------------------------------------------------------- config file


def cfg(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "azl-bootstrap.toml"
    path.write_text(textwrap.dedent(text))
    return path


def config_error(tmp_path: Path, text: str, fld: str) -> RecipeError:
    path = cfg(tmp_path, text)
    with pytest.raises(RecipeError) as ei:
        load_config(tmp_path)
    assert ei.value.path == str(path) and ei.value.field == fld
    assert str(ei.value).startswith(f"{path}: {fld}" if fld else f"{path}: "), str(ei.value)
    return ei.value


def test_config_absent_gives_defaults(tmp_path: Path) -> None:
    assert load_config(tmp_path) == Config()


def test_config_valid(tmp_path: Path) -> None:
    cfg(
        tmp_path,
        """\
        platform = "guest"
        jobs = 3
        mirrors = ["file:///srv/mirror"]
        keep_build = true
        [versions]
        grep = "3.8"
        """,
    )
    c = load_config(tmp_path)
    assert (c.platform, c.jobs, c.mirrors, c.keep_build) == (
        "guest",
        3,
        ["file:///srv/mirror"],
        True,
    )
    assert c.versions == {"grep": "3.8"}


def test_config_unknown_key(tmp_path: Path) -> None:
    err = config_error(tmp_path, "platfrom = 'sandbox'\n", "platfrom")
    assert "unknown key" in err.message and "platform" in err.message


@pytest.mark.parametrize("value", ['"host"', '"Sandbox"', '""'])
def test_config_bad_platform_value(tmp_path: Path, value: str) -> None:
    err = config_error(tmp_path, f"platform = {value}\n", "platform")
    assert "'sandbox' or 'guest'" in err.message


@pytest.mark.parametrize(
    ("text", "fld"),
    [
        ("jobs = 0\n", "jobs"),
        ("jobs = true\n", "jobs"),
        ('jobs = "2"\n', "jobs"),
        ('mirrors = "file:///srv"\n', "mirrors"),
        ("mirrors = [1]\n", "mirrors"),
        ('keep_build = "no"\n', "keep_build"),
        ("[versions]\ngrep = 3\n", "versions.grep"),
    ],
)
def test_config_bad_values(tmp_path: Path, text: str, fld: str) -> None:
    config_error(tmp_path, text, fld)


def test_config_invalid_toml(tmp_path: Path) -> None:
    err = config_error(tmp_path, "platform = \n", "")
    assert "not valid TOML" in err.message


def project_dir(tmp_path: Path, config: str) -> Path:
    """A project directory (no dodo.py needed) with recipes a and grep (3.11 and 3.8)."""
    proj = tmp_path / "proj"
    write(proj / "recipes", "a")
    write(proj / "recipes", "grep", 'version = "3.11"\n', versions("3.11", "3.8"))
    cfg(proj, 'platform = "sandbox"\njobs = 1\n' + config)
    return proj


def project_errors(proj: Path) -> list[RecipeError]:
    from tasks.engine.plan import Project

    with pytest.raises(RecipeErrors) as ei:
        Project(proj)
    return ei.value.errors


def test_config_versions_naming_an_unknown_package(tmp_path: Path) -> None:
    proj = project_dir(tmp_path, '[versions]\ngrepp = "3.11"\n')
    (err,) = project_errors(proj)
    assert str(err).startswith(f"{proj / 'azl-bootstrap.toml'}: versions.grepp: ")
    assert "no such package" in err.message


def test_config_versions_picks_a_version(tmp_path: Path) -> None:
    from tasks.engine.plan import Project

    proj = project_dir(tmp_path, '[versions]\ngrep = "3.8"\n')
    assert Project(proj).builds["grep"].version.version == "3.8"


def test_config_versions_naming_an_unknown_version_is_rejected(tmp_path: Path) -> None:
    proj = project_dir(tmp_path, '[versions]\ngrep = "9.9"\n')
    (err,) = project_errors(proj)
    assert "'9.9'" in err.message and "3.11" in err.message and "3.8" in err.message


def test_config_versions_naming_an_unknown_version_names_the_config(tmp_path: Path) -> None:
    proj = project_dir(tmp_path, '[versions]\ngrep = "9.9"\n')
    (err,) = project_errors(proj)
    assert str(err).startswith(f"{proj / 'azl-bootstrap.toml'}: versions.grep: "), str(err)


def test_config_and_recipe_errors_are_reported_together(tmp_path: Path) -> None:
    from tasks.engine.plan import Project

    proj = project_dir(tmp_path, "bogus = 1\n")
    write(proj / "recipes", "b", 'build_system = "scons"\n')
    with pytest.raises((RecipeError, RecipeErrors)) as ei:
        Project(proj)
    assert "bogus" in str(ei.value) and "build_system" in str(ei.value)


# --------------------------------------------------------------------------- expand, signature


VARS = {"PREFIX": "/usr", "LIBDIR": "/usr/lib", "TARGET": "x86_64-linux-gnu", "JOBS": "4"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("--prefix=${PREFIX}", "--prefix=/usr"),
        ("${PREFIX}${LIBDIR}", "/usr/usr/lib"),
        ("--host=${TARGET} -j${JOBS}", "--host=x86_64-linux-gnu -j4"),
        ("$$", "$"),
        ("$${PREFIX}", "${PREFIX}"),
        ("$$$${PREFIX}", "$${PREFIX}"),
        ("$$${PREFIX}", "$/usr"),
        ("$HOME and $", "$HOME and $"),  # not ${...}: left alone
        ("plain", "plain"),
    ],
)
def test_expand(value: str, expected: str) -> None:
    assert expand(value, VARS) == expected


def test_expand_unknown_variable_raises_key_error() -> None:
    with pytest.raises(KeyError):
        expand("${NOPE}", VARS)


def test_bad_variables() -> None:
    assert bad_variables("${PREFIX}/${NOPE}/${ALSO_BAD}") == ["NOPE", "ALSO_BAD"]
    assert bad_variables("$${NOPE} $$HOME ${DESTDIR}") == []
    assert bad_variables("${}") == [""]
    assert bad_variables("${prefix}") == ["prefix"]  # case matters
    assert all(bad_variables("${" + v + "}") == [] for v in VARIABLES)


def signature_of(rdir: Path, top: str, tables: str | None = None, plat: str = "sandbox") -> dict:
    for old in rdir.glob("*.toml"):
        old.unlink()
    write(rdir, "a", top, tables)
    return load_recipes(rdir)["a"].for_platform(plat).signature()


BASE = 'description = "one"\nconfigure_args = ["--enable-x"]\n'


def test_signature_changes_with_a_configure_flag(rdir: Path) -> None:
    base = signature_of(rdir, BASE)
    assert signature_of(rdir, BASE) == base  # stable
    assert signature_of(rdir, BASE.replace("--enable-x", "--disable-x")) != base
    assert signature_of(rdir, BASE.replace('"--enable-x"', '"--enable-x", "-q"')) != base


def test_signature_changes_with_sources_and_env(rdir: Path) -> None:
    base = signature_of(rdir, BASE)
    assert signature_of(rdir, BASE, versions("1.0", src=source(sha256=f'"{SHA2}"'))) != base
    assert signature_of(rdir, BASE + 'env = { A = "1" }\n') != base
    assert signature_of(rdir, BASE + 'build_system = "make"\n') != base


def test_signature_ignores_urls_description_and_notes(rdir: Path) -> None:
    base = signature_of(rdir, BASE)
    other_urls = source(urls='["https://mirror.example.net/moved/pkg-1.0.tar.gz"]')
    assert signature_of(rdir, BASE, versions("1.0", src=other_urls)) == base
    assert signature_of(rdir, BASE.replace('"one"', '"another text"')) == base
    noted = '[versions."1.0"]\nnote = "what Debian ships"\nsources = [' + source() + "]\n"
    assert signature_of(rdir, BASE, noted) == base
    with_debian = source(debian='"main/p/pkg/pkg_1.0.orig.tar.gz"')
    assert signature_of(rdir, BASE, versions("1.0", src=with_debian)) == base


def test_signature_is_order_independent_for_env_and_depends(rdir: Path) -> None:
    write(rdir, "x")
    write(rdir, "y")
    sigs = []
    for text in (
        'depends = ["x", "y"]\nenv = { A = "1", B = "2" }\n',
        'depends = ["y", "x"]\nenv = { B = "2", A = "1" }\n',
    ):
        write(rdir, "a", text)
        sigs.append(load_recipes(rdir)["a"].for_platform("sandbox").signature())
    assert sigs[0] == sigs[1]


def test_platform_override_selects_the_version(rdir: Path) -> None:
    write(
        rdir,
        "grep",
        """\
        version = "3.11"
        configure_args = ["--enable-perl-regexp"]
        env = { A = "1", B = "2" }

        [platform.guest]
        version = "3.9"
        configure_args = ["--host=${TARGET}"]
        env = { B = "guest" }
        """,
        versions("3.11", "3.9", "3.8"),
    )
    grep = load_recipes(rdir)["grep"]
    sandbox, guest = grep.for_platform("sandbox"), grep.for_platform("guest")
    assert sandbox.version.version == "3.11"
    assert guest.version.version == "3.9"
    assert guest.version.sources[0].file == "pkg-3.9.tar.gz"
    assert sandbox.configure_args == ["--enable-perl-regexp"]
    assert guest.configure_args == ["--host=${TARGET}"]
    assert guest.env == {"A": "1", "B": "guest"} and sandbox.env == {"A": "1", "B": "2"}
    # the config's version wins over everything
    assert grep.for_platform("guest", "3.8").version.version == "3.8"
    assert grep.for_platform("sandbox", "3.8").version.version == "3.8"
    with pytest.raises(RecipeError) as ei:
        grep.for_platform("guest", "4.0")
    assert ei.value.field == "version" and str(rdir / "grep.toml") in str(ei.value)
    assert sandbox.signature() != guest.signature()


# --------------------------------------------------------------------------- through doit


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under ``root`` with its type, size and mtime (ns)."""
    snap = {".": (os.lstat(root).st_mode, 0, os.lstat(root).st_mtime_ns)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            size = 0 if os.path.isdir(p) and not os.path.islink(p) else st.st_size
            snap[os.path.relpath(p, root)] = (st.st_mode, size, st.st_mtime_ns)
    return snap


# PYTHONDONTWRITEBYTECODE: importing dodo.py must not leave a __pycache__ (Python's doing,
# not the engine's), so that the snapshot sees only what the engine writes.
NO_PYC = {"PYTHONDONTWRITEBYTECODE": "1"}


@pytest.mark.parametrize("args", [(), ("list",), ("info", "a"), ("clean",), ("forget",)])
def test_doit_with_a_malformed_recipe_exits_3_and_changes_nothing(project, args) -> None:
    project.recipe("a")
    project.recipe("b", 'configure_args = ["--with-x=${NOPE}"]', deps=("a",))
    (project.root / "recipes" / "c.toml").write_text(
        'dependz = ["a"]\n' + (project.root / "recipes" / "a.toml").read_text()
    )
    before = snapshot(project.root)
    r = project.doit(*args, env=NO_PYC)
    assert r.code == 3, r.out + r.err
    assert "ERROR" in r.err
    assert "recipes/b.toml: configure_args[0]: unknown variable ${NOPE}" in r.err
    assert "recipes/c.toml: dependz: unknown key (did you mean 'depends'?)" in r.err
    assert not (project.root / "cache").exists()
    assert snapshot(project.root) == before


def test_doit_after_a_build_a_malformed_recipe_changes_nothing(project) -> None:
    project.recipe("a")
    project.recipe("b", deps=("a",))
    r = project.doit(env=NO_PYC)
    assert r.code == 0, r.out + r.err
    assert (project.root / "cache").is_dir()
    recipe = project.root / "recipes" / "b.toml"
    recipe.write_text(recipe.read_text().replace('build_system = "script"', 'build_system = "x"'))
    before = snapshot(project.root)
    r = project.doit(env=NO_PYC)
    assert r.code == 3, r.out + r.err
    assert "recipes/b.toml: build_system: 'x' is not one of" in r.err
    assert snapshot(project.root) == before


def test_doit_with_a_bad_config_exits_3_and_changes_nothing(project) -> None:
    project.recipe("a")
    project.config('platform = "sandbox"\njobz = 2\n')
    before = snapshot(project.root)
    r = project.doit(env=NO_PYC)
    assert r.code == 3, r.out + r.err
    assert "azl-bootstrap.toml: jobz: unknown key" in r.err
    assert snapshot(project.root) == before


def test_doit_lists_a_valid_recipe_set(project) -> None:
    project.recipe("a")
    project.recipe("b", deps=("a",))
    r = project.doit("list", env=NO_PYC)
    assert r.code == 0, r.out + r.err
    assert {"a", "b", "all", "mirror"} <= set(r.out.split())


def test_step_must_be_a_step_of_the_procedure(rdir: Path) -> None:
    path = write(rdir, "a", 'step = "V 26"\n')
    assert "not a step of the procedure" in error_for(rdir, path, "step").message
    assert step_rank("H7") < step_rank("V1") < step_rank("V26") < step_rank("A1")
    assert step_rank("") == (0, 0)
