"""What a toolkit stage's make sees (tasks/kinds/stage.py): the seed's login environment plus
what the stage needs, and Go modules from the mirror's module cache (tasks/sources/gomodules.py).

The stand-in toolkit of tests/test_azurelinux.py dumps its environment from ``make go-tools``
and from the raw toolchain's recipe (where the real one runs bypass_container.sh and the LFS
scripts). doit runs with the package builds' variables in its own environment, as a shell that
sourced live-bootstrap's /steps/env or the guest's profile would have them.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from tasks.sources import gomodules
from tests.conftest import PACKAGE_VARS, Project
from tests.test_azurelinux import Azl, make_azl, ok

# what make and the shell add by themselves
MAKE_OWN = {"MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES", "PWD", "SHLVL", "_", "OLDPWD",
            "MAKE_TERMOUT", "MAKE_TERMERR"}  # fmt: skip
# make exports the variables of its command line (the stage's make_vars)
MAKE_VARS = {"go-tools": {"REBUILD_TOOLS"}, "raw-toolchain": {
    "REBUILD_TOOLS", "REBUILD_TOOLCHAIN", "NO_TOOLCHAIN_CONTAINER", "PACKAGE_URL_LIST", "REPO_LIST",
    "DISABLE_UPSTREAM_REPOS",
    "SOURCE_URL"}}  # fmt: skip  # SOURCE_URL: the mirror served on 127.0.0.1 (toolkit_sources)


def dumped(azl: Azl, name: str) -> dict[str, str]:
    items = (azl.control / f"{name}.env").read_bytes().decode().split("\0")
    return dict(item.split("=", 1) for item in items if item)


def test_no_package_variable_reaches_the_toolkit(project: Project, tmp_path: Path) -> None:
    azl = make_azl(project, tmp_path)
    home = tmp_path / "home"
    r = ok(azl.project.doit("toolchain", env={**PACKAGE_VARS, "HOME": str(home)}))
    assert "raw-toolchain" in r.packages_ran()
    for stage in ("go-tools", "raw-toolchain"):
        got = dumped(azl, stage)
        assert set(got) - MAKE_OWN - MAKE_VARS[stage] == {"PATH", "HOME", "GOARCH", "GOTOOLCHAIN"}
        assert (got["GOARCH"], got["GOTOOLCHAIN"], got["HOME"]) == ("amd64", "local", str(home))
        assert got.get("SOURCE_URL", "http://127.0.0.1:").startswith("http://127.0.0.1:")
        dirs = got["PATH"].split(":")
        assert dirs[0].endswith("/usr/lib/go/bin")  # ${GO_BIN}: the go package's go first
        sandbox = str(azl.project.sandbox_root / "usr")
        assert dirs[1:3] == [f"{sandbox}/bin", f"{sandbox}/sbin"] or dirs[1].startswith("cache")
        assert dirs[-4:] == ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]  # live-bootstrap's login
    log = azl.log("raw-toolchain", 1).read_text()
    assert "PKG_CONFIG_PATH" not in log.split("environment:", 1)[1].splitlines()[0]


def test_home_comes_from_passwd_when_the_caller_has_none(project: Project, tmp_path: Path) -> None:
    """live-bootstrap's console shell has no HOME; Go needs one for its caches."""
    import os
    import pwd

    azl = make_azl(project, tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "HOME"}
    r = azl.project.doit("go-tools", env={**env, "HOME": ""})
    ok(r)
    assert dumped(azl, "go-tools")["HOME"] == pwd.getpwuid(os.getuid()).pw_dir


def fake_module_cache(azl: Azl, tree_tools: Path) -> Path:
    """mirror/go-modules as tasks/gomodules.download leaves it for the tree's go.mod/go.sum
    (the real download is tests/test_gomodules.py's)."""
    cache = azl.project.root / "mirror" / gomodules.DEFAULT_DIR
    mod = gomodules.proxy_dir(cache) / "example.com" / "!azure" / "sdk" / "@v"
    mod.mkdir(parents=True)
    (mod / "v1.2.0.mod").write_text("module example.com/Azure/sdk\n")
    record = {
        name: hashlib.sha256((tree_tools / name).read_bytes()).hexdigest()
        for name in ("go.mod", "go.sum")
    }
    record["modules"] = [["example.com/Azure/sdk", "v1.2.0"]]
    (cache / gomodules.RECORD).write_text(json.dumps(record))
    return cache


def test_go_tools_builds_from_the_mirrors_module_cache(project: Project, tmp_path: Path) -> None:
    azl = make_azl(project, tmp_path)
    ok(azl.doit("azurelinux"))
    tools_dir = azl.tree / "toolkit" / "tools"
    (tools_dir / "go.sum").write_text("example.com/Azure/sdk v1.2.0/go.mod h1:x=\n")
    cache = fake_module_cache(azl, tools_dir)
    ok(azl.doit("go-tools"))
    got = dumped(azl, "go-tools")
    assert got["GOPROXY"] == f"file://{gomodules.proxy_dir(cache)}"
    assert (got["GOSUMDB"], got["GOFLAGS"]) == ("off", "-mod=mod")
    log = azl.log("go-tools", 1).read_text()
    assert f"Go modules from {cache} (read only, offline)" in log


def test_offline_without_the_modules_the_stage_stops_before_make(
    project: Project, tmp_path: Path
) -> None:
    azl = make_azl(project, tmp_path)
    ok(azl.doit("azurelinux"))  # the tree, fetched while online
    (tools_dir := azl.tree / "toolkit" / "tools").joinpath("go.sum").write_text(
        "x v1/go.mod h1:x=\n"
    )
    # offline, the tree's commit must be in a local mirror (tasks/sources/gitpin.py): a bare clone
    upstream = tmp_path / "upstream" / "azurelinux"
    bare = azl.project.root / "mirror" / "azurelinux.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(upstream), str(bare)], check=True)
    config = azl.project.root / "azl-bootstrap.toml"
    config.write_text(config.read_text() + "offline = true\n")
    r = azl.doit("go-tools")
    assert r.code == 1, r.out
    cache = azl.project.root / "mirror" / gomodules.DEFAULT_DIR
    assert "the Go modules are not here and the run is offline" in r.out
    assert f"no Go modules at {cache.absolute()}" in r.out
    assert "python3 -m tasks.sources.gomodules" in r.out  # how to fetch them
    assert not (azl.control / "go-tools.env").exists()  # make never ran
    assert "make: make go-tools" not in azl.log("go-tools", 1).read_text()
    # a cache made for another go.sum is refused the same way
    fake_module_cache(azl, tools_dir)
    (tools_dir / "go.sum").write_text("y v2/go.mod h1:y=\n")
    r = azl.doit("go-tools")
    assert r.code == 1 and "were fetched for another go.sum" in r.out, r.out


def test_keep_outside_fresh_and_clean_is_an_error(tmp_path: Path) -> None:
    import shutil

    from tasks.engine.recipeset import load_recipes
    from tasks.model.recipe import RecipeErrors
    from tests.conftest import REPO

    rdir = tmp_path / "recipes"
    shutil.copytree(REPO / "recipes", rdir)
    tc = rdir / "toolchain.toml"
    old = 'keep = ["build/toolchain/toolchain_from_container.tar.gz"]'
    assert old in tc.read_text()
    tc.write_text(tc.read_text().replace(old, 'keep = ["out/toolchain_from_container.tar.gz"]'))
    try:
        load_recipes(rdir)
    except RecipeErrors as e:
        found = [(Path(err.path).name, err.field) for err in e.errors]
        assert ("toolchain.toml", "keep[0]") in found, found
        assert "inside no fresh or clean path" in str(e)
    else:
        raise AssertionError("a keep path outside fresh/clean was accepted")


def test_only_a_stage_that_uses_go_bin_reads_the_go_manifest(tmp_path: Path) -> None:
    """A stage whose path and env do not name ${GO_BIN} runs without the go package built
    (the e2e rehearsal's stand-in stage stopped at "no bin/go in cache/manifests/go1.23.json");
    one that does still stops, naming the manifest."""
    import dataclasses

    import pytest

    from tasks.engine.recipeset import parse_recipe
    from tasks.kinds.stage import StageAction
    from tasks.model.config import Paths
    from tasks.model.platform import Platform
    from tests.conftest import REPO

    recipe, errors = parse_recipe(REPO / "recipes" / "go-tools.toml")
    assert recipe is not None and not errors
    platform = Platform("guest", "i386-unknown-linux-musl", "/", "/usr", "/usr/lib", 1)
    paths = Paths(tmp_path)

    def env_of(stage) -> dict[str, str]:
        action = StageAction(stage, paths, platform, tmp_path / "tree", "go1.23",
                             tmp_path / "record.json")  # fmt: skip
        return action.stage_environment()

    plain = dataclasses.replace(recipe.spec, path=("/opt/tools",), env={})
    assert env_of(plain)["PATH"].split(":")[0] == "/opt/tools"
    with pytest.raises(RuntimeError, match="go1.23"):
        env_of(recipe.spec)
