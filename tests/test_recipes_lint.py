"""Lint of the repository's own recipe set (Buildroot's check-package, as a unit test).

Every recipe loads and validates; every source of a buildable version is pinned; every
dependency resolves on both platforms; there is no cycle; the order of the run follows the
procedure (reference/procedure.md, steps V1-V45, A1-A6); and each flag or tweak the seed
report insists on is present where the reference puts it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tasks.engine.plan import Project
from tasks.engine.recipeset import load_recipes
from tasks.model.config import Config
from tasks.model.platform import MACHINES
from tasks.model.recipe import PLATFORMS, step_rank
from tests.conftest import REPO

RECIPES = load_recipes(REPO / "recipes")


def plan(monkeypatch: pytest.MonkeyPatch, platform: str) -> Project:
    monkeypatch.setenv("AZL_PLATFORM", platform)
    return Project(REPO)


def step_number(step: str) -> tuple[int, int]:
    rank = step_rank(step)
    assert rank != (0, 0), f"bad step {step!r}"
    return rank


def test_every_recipe_names_its_procedure_step() -> None:
    for recipe in RECIPES.values():
        assert recipe.step, f"{recipe.path}: no `step` (which step of procedure.md is it?)"
        step_number(recipe.step)
        assert recipe.description, f"{recipe.path}: no description"


def test_every_buildable_source_is_pinned() -> None:
    for recipe in RECIPES.values():
        for version in recipe.versions.values():
            for source in version.sources:
                if version.unconfirmed:
                    continue  # never built: the preflight refuses it
                assert re.fullmatch(r"[0-9a-f]{64}", source.sha256), (recipe.path, source.file)
                assert source.urls or source.debian or source.git, (recipe.path, source.file)


def test_the_defaults_are_confirmed_unless_nothing_confirmed_exists() -> None:
    """Where the seed's version cannot be confirmed, the nearest confirmed one is the default
    and the seed's stays in the recipe, marked."""
    for recipe in RECIPES.values():
        for plat in PLATFORMS:
            for build in recipe.builds(plat):
                confirmed = [v for v in recipe.versions.values() if not v.unconfirmed]
                if build.version.unconfirmed:
                    assert not confirmed, (
                        f"{recipe.path}: default on {plat} is unconfirmed "
                        f"although {[v.version for v in confirmed]} are confirmed"
                    )


@pytest.mark.parametrize("platform", MACHINES)
def test_dependencies_resolve_without_cycles(
    monkeypatch: pytest.MonkeyPatch, platform: str
) -> None:
    project = plan(monkeypatch, platform)
    for name, build in project.builds.items():
        for dep in build.depends:
            assert dep in project.builds, f"{name} -> {dep} on {platform}"
    position = {n: i for i, n in enumerate(project.order)}
    for name, build in project.builds.items():
        for dep in build.depends:
            assert position[dep] < position[name]


def test_guest_order_follows_the_procedure(monkeypatch: pytest.MonkeyPatch) -> None:
    """No package depends on a later step, and the run visits steps in the procedure's order
    wherever the dependencies leave a choice."""
    project = plan(monkeypatch, "guest")
    for name, build in project.builds.items():
        for dep in build.depends:
            dep_step = project.builds[dep].recipe.step
            assert step_number(dep_step) <= step_number(build.recipe.step), (
                f"{name} ({build.recipe.step}) depends on {dep} ({dep_step}), a later step"
            )
    steps = [step_number(project.builds[n].recipe.step) for n in project.order]
    assert steps == sorted(steps), [(n, project.builds[n].recipe.step) for n in project.order]


def recipe_text(name: str) -> str:
    return (REPO / "recipes" / f"{name}.toml").read_text()


# The seed's flags and tweaks (seed/Azure.md, reference/procedure.md §3), where they belong.
SEED_FLAGS = {
    "pcre2": [
        "--enable-pcre2-16",
        "--enable-pcre2-32",
        "--enable-rebuild-chartables",
        "--enable-jit",
        "--sbindir=${PREFIX}/bin",
    ],
    "grep": ["--enable-perl-regexp"],
    "autoconf-dickey": ["--program-suffix=-dickey"],
    "ncurses": ["autoreconf-dickey -v -i -f"],
    "glib": ["PKG_CONFIG_PATH"],
    "qemu": ["PKG_CONFIG_PATH"],
    "go": ["GOHOSTARCH", "CGO_ENABLED", "GOARCH", "GOROOT_BOOTSTRAP"],
    # the seed's line, then console=ttyS0 (the VM has no display: recipes/kexec.toml)
    "kexec": [
        "kexec -f --command-line='root=/dev/sda1 rootwait rw init=/init consoleblank=0 "
        "console=ttyS0' /boot/vmlinuz"
    ],
}


@pytest.mark.parametrize("name", sorted(SEED_FLAGS))
def test_seed_flags_are_where_the_reference_puts_them(name: str) -> None:
    if name not in RECIPES:
        pytest.fail(f"recipes/{name}.toml is missing")
    text = recipe_text(name)
    for flag in SEED_FLAGS[name]:
        assert flag in text, f"recipes/{name}.toml lacks {flag!r}"


def test_pcre2_flags_reach_configure_on_both_platforms() -> None:
    for plat in MACHINES:
        args = RECIPES["pcre2"].for_platform(plat).configure_args
        assert {"--enable-pcre2-16", "--enable-pcre2-32", "--enable-jit"} <= set(args)


def test_grep_is_the_seeds_39_in_the_guest() -> None:
    assert RECIPES["grep"].for_platform("guest").version.version == "3.9"
    assert RECIPES["grep"].for_platform("sandbox").version.version == "3.11"


def test_substitutes_are_marked_and_sandbox_only() -> None:
    for recipe in RECIPES.values():
        guest = recipe.builds("guest")
        for build in guest:
            assert not build.version.substitute_for, (
                f"{recipe.path}: the guest builds the substitute {build.version.version}"
            )
        for v in recipe.versions.values():
            if v.substitute_for:
                assert v.note, f"{recipe.path}: substitute {v.version} has no note saying why"


def test_the_sandbox_plan_loads_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sandbox plan of the real recipe set loads on this machine (no guest-only step; the
    host's steps are in it too)."""
    project = plan(monkeypatch, "sandbox")
    for build in project.builds.values():
        assert build.platform in build.recipe.platforms and build.platform != "guest"
    assert {b.platform for b in project.builds.values()} == {"sandbox", "host"}
    assert isinstance(project.config, Config)
    assert Path(project.platform.root).is_absolute()
