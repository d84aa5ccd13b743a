"""One recipe vocabulary (tasks/kinds/): the registry, the kind interface, the kinds without a
test module of their own (session), and the host platform.

The tree and stage kinds are tested in test_azurelinux.py, the checkpoint in
test_chain_and_guest.py, the package kind everywhere else.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.engine.recipeset import load_recipes, parse_recipe
from tasks.kinds import KINDS
from tasks.model.recipe import COMMON_KEYS, PACKAGE_KEYS, RecipeErrors
from tests.conftest import REPO, Project, Result

INTERFACE = {
    "parse": ["c", "data", "path", "name"],
    "on_platform": ["recipe", "platform", "config"],
    "tasks": ["plan", "build"],
    "outputs": ["plan", "build"],
}


def ok(r: Result) -> Result:
    assert r.code == 0, f"exit {r.code}\n--- out\n{r.out}\n--- err\n{r.err}"
    return r


def errors(rdir: Path) -> dict[tuple[str, str], str]:
    """(file name, field) -> message of every error of the recipe set."""
    with pytest.raises(RecipeErrors) as e:
        load_recipes(rdir)
    return {(Path(err.path).name, err.field): err.message for err in e.value.errors}


# --------------------------------------------------------------------------- the registry


@pytest.mark.parametrize("module", ["tasks.kinds.base", *(m.__name__ for m in KINDS.values())])
def test_each_kind_module_imports_alone_and_never_the_loader(module: str) -> None:
    """No import circle: a kind module (and what it imports) never needs the loader."""
    code = (
        "import importlib, sys\n"
        f"importlib.import_module({module!r})\n"
        "print(sorted(m for m in sys.modules if m == 'tasks.engine.plan'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", f"{module} imports the loader"


def test_every_kind_provides_the_documented_interface() -> None:
    doc = sys.modules["tasks.kinds"].__doc__ or ""
    for name, module in KINDS.items():
        assert f"\n{name} " in doc, f"kind {name} is missing from the table in tasks/kinds"
        assert isinstance(module.KEYS, frozenset) and not module.KEYS & COMMON_KEYS, name
        for func, params in INTERFACE.items():
            assert list(inspect.signature(getattr(module, func)).parameters) == params, (
                f"{module.__name__}.{func}"
            )


LOAD = """\
import gc, json, sys
from pathlib import Path
from doit.exceptions import InvalidDodoFile
from tasks.engine.setup import setup
try:
    config, project = setup(Path("."))
except InvalidDodoFile:
    print(json.dumps({"invalid": True, "gc": gc.isenabled()}))
    raise SystemExit
off = not gc.isenabled()
tasks = list(project.tasks())
print(json.dumps({"off while loading": off, "gc": gc.isenabled(), "tasks": len(tasks),
                  "modules": sorted(m for m in sys.modules if m.startswith("tasks."))}))
"""


def test_a_plan_imports_only_its_kinds_and_the_gc_is_on_once_loaded(project: Project) -> None:
    """A no-op of a package-only recipe set loads no other kind and none of the actions'
    helpers (unpack, git pins, the toolkit); the GC, off while the plan loads, is on again
    for the run (a build with it left off would grow without bound)."""
    project.recipe("a")
    project.recipe("b", deps=("a",))

    def load() -> dict:
        r = subprocess.run(
            [sys.executable, "-c", LOAD], cwd=project.root, capture_output=True, text=True
        )
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    got = load()
    assert got["off while loading"] and got["gc"] and got["tasks"] > 2
    kinds = [m for m in got["modules"] if m.startswith("tasks.kinds.")]
    assert kinds == ["tasks.kinds.base", "tasks.kinds.package"]
    assert not {"tasks.build.unpack", "tasks.sources.gitpin", "tasks.toolkit.action"} & set(
        got["modules"]
    )
    (project.root / "recipes" / "c.toml").write_text('version = "1"\nkind = "pakage"\n')
    assert load() == {"invalid": True, "gc": True}


def test_unknown_kind_is_an_error_with_a_did_you_mean(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text('kind = "stag"\nmake_target = "x"\n')
    recipe, errs = parse_recipe(path)
    assert recipe is None and [(e.field) for e in errs] == ["kind"]
    assert "unknown kind 'stag'" in errs[0].message and "did you mean 'stage'" in errs[0].message
    assert str(path) in str(errs[0])


def test_a_key_of_another_kind_is_unknown_and_required_keys_are_named(tmp_path: Path) -> None:
    rdir = tmp_path / "recipes"
    rdir.mkdir()
    script = 'script.install = "true"\n'
    (rdir / "pkg.toml").write_text(f'build_system = "script"\n{script}make_target = "x"\n')
    (rdir / "cp.toml").write_text(f'kind = "checkpoint"\n{script}')
    (rdir / "cp2.toml").write_text(
        f'kind = "checkpoint"\nrunning_machine = "x86_64"\nbuild_system = "make"\n{script}'
    )
    (rdir / "ses.toml").write_text(f'kind = "session"\n{script}running_machine = "x"\n')
    found = errors(rdir)
    assert found == {
        ("pkg.toml", "make_target"): "unknown key (did you mean 'make_args'?)",
        ("cp.toml", "running_machine"): "missing: the `uname -m` that says the step is done",
        ("cp2.toml", "build_system"): "'make': this kind of step runs `script` phases only",
        ("ses.toml", "check"): (
            "missing: a shell command that succeeds exactly when the effect is there"
        ),
        ("ses.toml", "running_machine"): "unknown key",
    }


def test_every_recipe_of_the_repository_has_a_registered_kind() -> None:
    recipes = load_recipes(REPO / "recipes")
    kinds = {r.kind for r in recipes.values()}
    assert kinds <= set(KINDS) and {"package", "checkpoint", "tree", "stage"} <= kinds
    for recipe in recipes.values():  # a package keeps its build_system
        if recipe.kind == "package":
            assert not (set(KINDS[recipe.kind].KEYS) ^ PACKAGE_KEYS)


# --------------------------------------------------------------------------- session


def session(project: Project, name: str, check: str, install: str, deps: str = "[]") -> None:
    (project.root / "recipes" / f"{name}.toml").write_text(
        f'kind = "session"\ndepends = {deps}\ncheck = """{check}"""\n'
        f"script.install = '''{install}'''\n"
    )


def test_session_step_is_redone_exactly_when_its_effect_is_absent(
    project: Project, tmp_path: Path
) -> None:
    effect, runs = tmp_path / "mounted", tmp_path / "runs"
    session(project, "mount-it", f'test -e "{effect}"', f'echo x >> "{runs}"; touch "{effect}"')
    project.recipe("after", deps=("mount-it",))
    r = ok(project.doit())
    assert r.packages_ran() == ["mount-it", "after"]
    assert runs.read_text() == "x\n" and effect.exists()
    assert ok(project.doit()).packages_ran() == []
    # the effect is gone (a reboot): only the step is redone; what depends on it is ordered
    # after it but not rebuilt (the step has no outputs)
    effect.unlink()
    assert "status: up to date" in ok(project.doit("info", "after")).out
    r = ok(project.doit("info", "mount-it"))
    assert "status: would run" in r.out and f'check succeeds: test -e "{effect}"' in r.out
    assert ok(project.doit()).packages_ran() == ["mount-it"]
    assert runs.read_text() == "x\nx\n"
    assert not (project.root / "cache" / "manifests" / "mount-it.json").exists()  # no stamp


def test_session_step_whose_check_still_fails_is_a_failure(
    project: Project, tmp_path: Path
) -> None:
    session(project, "daemon", f'test -e "{tmp_path / "never"}"', "echo started")
    r = project.doit("daemon")
    assert r.code == 1
    assert "daemon: check failed (the step ran, but its check still fails)" in r.out
    assert "cache/logs/daemon.log" in r.out
    assert ok(project.doit("list")).out.count("daemon") == 1


# --------------------------------------------------------------------------- host


def names(r: Result) -> set[str]:
    """The task names of ``doit list``."""
    return {line.split()[0] for line in ok(r).out.splitlines() if line.strip()}


def host_project(project: Project) -> None:
    project.recipe("a")  # a sandbox (and guest) package
    project.recipe("probe", 'platforms = ["host"]\n')
    project.recipe("image", 'platforms = ["host"]\n', deps=("probe", "a"))


def test_host_steps_are_in_the_plan_off_the_guest_but_not_in_all(project: Project) -> None:
    host_project(project)
    assert {"a", "probe", "image", "host", "all"} <= names(project.doit("list"))
    # one host step alone: nothing of the sandbox's
    assert ok(project.doit("probe")).packages_ran() == ["probe"]
    # `doit` (what ./setup.sh runs): the sandbox's steps only
    assert ok(project.doit()).packages_ran() == ["a"]
    # `doit host`: every host step, with what they depend on
    assert ok(project.doit("host")).packages_ran() == ["image"]
    assert ok(project.doit("host")).packages_ran() == []
    guest = names(project.doit("list", env={"AZL_PLATFORM": "guest"}))
    assert "a" in guest and not {"probe", "image", "host"} & guest
