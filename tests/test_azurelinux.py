"""The Azure Linux tree and toolkit stages (kinds "tree" and "stage": tasks/kinds/tree.py,
tasks/kinds/stage.py, tasks/toolkit/action.py) on a stand-in tree.

The stand-in is a small git repository with the toolkit's make target names and output paths:
``go-tools`` writes the 27 tools of the real stages file into ``toolkit/out/tools`` (each
records the GOARCH it was built with), ``toolchain`` runs ``mkdir build`` in
``build/toolchain/lfs/x`` (failing with the seed's "File exists" when a killed run left it)
and writes the two archives, ``iso`` writes an ISO into ``out/images/full``. Files in a
``control`` directory next to the tree make it fail (``cannot find -lgcc_s`` once or always,
another error), hang, or bind-mount a directory under ``build/toolchain/lfs/dev``.

The tree reaches the project as the real thing does: a ``git archive | gzip -n`` snapshot
pinned by sha256 in the project's ``recipes/azurelinux.toml`` (the real recipe, with only the
tree's source replaced), made by the mirror's git fallback and verified, then unpacked and
made a git repository by the ``azurelinux`` task. The stages are the real ``go-tools``,
``toolchain`` and ``iso`` recipes; ``go`` is a stand-in package that installs a ``bin/go``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tasks.engine.recipeset import load_recipes
from tasks.model.recipe import RecipeErrors
from tasks.store.fsutil import mounts_under
from tests.conftest import REPO, Project, Result

RECIPES = REPO / "recipes"
REAL_TREE = RECIPES / "azurelinux.toml"
STAGES = ("go-tools", "raw-toolchain", "toolchain", "iso")
SESSIONS = ("devpts", "root-home", "hosts")  # the stages' session steps
TOOLS = [Path(p).name for p in tomllib.loads((RECIPES / "go-tools.toml").read_text())["outputs"]]
ARCHIVES = [
    *tomllib.loads((RECIPES / "raw-toolchain.toml").read_text())["outputs"],
    *tomllib.loads((RECIPES / "toolchain.toml").read_text())["outputs"],
]
# the stand-in go package: a `go` in a GOROOT's bin/, as the real go recipe installs it
GO_INSTALL = (
    'mkdir -p "$DESTDIR$PREFIX/lib/go/bin" && '
    "printf '#!/bin/sh\\necho go version go1.23.1\\n' > \"$DESTDIR$PREFIX/lib/go/bin/go\" && "
    'chmod +x "$DESTDIR$PREFIX/lib/go/bin/go"'
)
GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@localhost",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@localhost",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}

# Quiet (@) lines: make echoes a recipe line before running it, and an echoed
# "cannot find -lgcc_s" would make every failure look retryable.
MAKEFILE = """\
# Stand-in for the Azure Linux toolkit/Makefile: its target names and output paths only.
SOURCE_URL ?= http://127.0.0.1:9/sources/core
TOOLS := {tools}
TOOL_BINS_DIR := $(CURDIR)/out/tools
BUILD_DIR := $(abspath $(CURDIR)/../build)
OUT_DIR := $(abspath $(CURDIR)/../out)
CONTROL := $(abspath $(CURDIR)/../../control)
LFS := $(BUILD_DIR)/toolchain/lfs
tools := $(addprefix $(TOOL_BINS_DIR)/,$(TOOLS))

RAW := $(BUILD_DIR)/toolchain/toolchain_from_container.tar.gz
FINAL := $(BUILD_DIR)/toolchain/toolchain_built_rpms_all.tar.gz

.PHONY: go-tools raw-toolchain toolchain iso
go-tools: $(tools)
\t@env -0 > $(CONTROL)/go-tools.env

$(TOOL_BINS_DIR)/%:
\t@mkdir -p $(TOOL_BINS_DIR) $(BUILD_DIR)/tools
\t@if [ -x $(CONTROL)/probe.sh ]; then $(CONTROL)/probe.sh $(CONTROL)/probe; fi
\t@printf '%s GOARCH=%s GOTOOLCHAIN=%s REBUILD_TOOLS=%s flavor=%s\\n' $* "$$GOARCH" \
"$$GOTOOLCHAIN" "$(REBUILD_TOOLS)" "$$(cat $(CONTROL)/flavor 2>/dev/null)" > $@

# toolchain.mk: raw-toolchain: $(raw_toolchain); toolchain needs it, then the final one
raw-toolchain: $(RAW)

$(RAW): $(tools)
\tmkdir -p $(LFS)/x $(LFS)/dev
\tcd $(LFS)/x && mkdir build
\t@if [ -e $(CONTROL)/mount-from ]; then mount --bind "$$(cat $(CONTROL)/mount-from)" $(LFS)/dev; fi
\t@if [ -e $(CONTROL)/hang ]; then echo $$$$ > $(CONTROL)/started; sleep 600; fi
\t@if [ -e $(CONTROL)/lgcc-once ]; then rm $(CONTROL)/lgcc-once; \
echo "x86_64-lfs-linux-gnu/bin/ld: cannot find -lgcc_s: No such file or directory"; exit 1; fi
\t@if [ -e $(CONTROL)/lgcc-always ]; then echo "ld: cannot find -lgcc_s"; exit 1; fi
\t@if [ -e $(CONTROL)/other-error ]; then echo "error: something else broke"; exit 1; fi
\t@echo raw >> $(CONTROL)/raw.runs
\t@env -0 > $(CONTROL)/raw-toolchain.env
\tcat $(tools) > $@

toolchain: $(RAW)
\tmkdir -p $(BUILD_DIR)/toolchain/populated_toolchain/dev
\t@if [ -e $(BUILD_DIR)/toolchain/populated_toolchain/leftover ]; then \
echo "error: leftover of an earlier attempt"; exit 1; fi
\t@if [ -e $(CONTROL)/final-lgcc-once ]; then rm $(CONTROL)/final-lgcc-once; \
touch $(BUILD_DIR)/toolchain/populated_toolchain/leftover; echo "ld: cannot find -lgcc_s"; exit 1; fi
\t@if [ -e $(CONTROL)/final-error ]; then \
touch $(BUILD_DIR)/toolchain/populated_toolchain/leftover; echo "error: final broke"; exit 1; fi
\techo "final $(REBUILD_TOOLCHAIN) $(NO_TOOLCHAIN_CONTAINER)" > $(FINAL)

iso: $(tools)
\tmkdir -p $(OUT_DIR)/images/full
\techo "iso $(CONFIG_FILE)" > $(OUT_DIR)/images/full/AzureLinux-3.0-x86_64.iso
"""

# Stand-in for toolkit/scripts/safeunmount.sh: unmount what is mounted under its arguments.
SAFEUNMOUNT = """\
#!/bin/sh
control="$(cd "$(dirname "$0")/../../.." && pwd)/control"
echo "safeunmount $*" >> "$control/safeunmount.calls"
if [ -e "$control/unmount-broken" ]; then echo "ERROR: Unable to unmount '$1'"; exit 1; fi
for dir in "$@"; do
  top=$(realpath "$dir")
  for m in $(awk '{print $5}' /proc/self/mountinfo | grep -e "^$top/" -e "^$top\\$" | sort -r); do
    echo "WARNING: Removing mountpoint at '$m'"
    umount "$m" || exit 1
  done
done
"""


TOOLKIT_LISTS = (
    "container/toolchain-sha256sums",
    "container/toolchain-remote-wget-list",
    "container/bypass_container.sh",
    "build_official_toolchain_rpms.sh",
)


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout


def ok(r: Result) -> Result:
    assert r.code == 0, f"exit {r.code}\n--- out\n{r.out}\n--- err\n{r.err}"
    return r


def stand_in_repo(where: Path, extra: dict[str, str] | None = None) -> tuple[Path, str, str]:
    """A git repository ``azurelinux`` with the stand-in toolkit; (repo, commit, snapshot
    sha256 as ``git archive --prefix=azurelinux-<commit>/ | gzip -n`` makes it)."""
    repo = where / "azurelinux"
    files = {
        "toolkit/Makefile": MAKEFILE.format(tools=" ".join(TOOLS)),
        "toolkit/scripts/safeunmount.sh": SAFEUNMOUNT,
        "toolkit/tools/go.mod": "module stand-in\n\ngo 1.23.0\n",
        "SPECS/debootstrap/debootstrap.spec": "Name: debootstrap\nVersion: 1.0.128+nmu2\n",
        # the toolkit's own download lists (recipes/toolkit-sources.toml), empty here
        **{f"toolkit/scripts/toolchain/{f}": "" for f in TOOLKIT_LISTS},
        ".gitignore": "/build/\n/out/\n/toolkit/out/\n",
        **(extra or {}),
    }
    for rel, text in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    (repo / "toolkit/scripts/safeunmount.sh").chmod(0o755)
    git(repo, "-c", "init.defaultBranch=main", "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "stand-in")
    ref = git(repo, "rev-parse", "HEAD").strip()
    tar = subprocess.run(
        ["git", "archive", "--format=tar", f"--prefix=azurelinux-{ref}/", ref],
        cwd=repo,
        capture_output=True,
        check=True,
    ).stdout
    gz = subprocess.run(["gzip", "-n"], input=tar, capture_output=True, check=True).stdout
    return repo, ref, hashlib.sha256(gz).hexdigest()


def pinned_tree(repo: Path, ref: str, sha: str, text: str | None = None) -> str:
    """The real tree recipe with its pin replaced by the stand-in's commit and tree id."""
    text = REAL_TREE.read_text() if text is None else text
    tree = git(repo, "rev-parse", f"{ref}^{{tree}}").strip()
    subs = [
        (r'(?m)^url = ".*"$', f'url = "{repo}"'),
        (r'(?m)^commit = "[0-9a-f]{40}"$', f'commit = "{ref}"'),
        (r'(?m)^tree = "[0-9a-f]{40}"$', f'tree = "{tree}"'),
        (r'(?m)^ref = ".*"\n', ""),
    ]
    for pattern, new in subs:
        text, n = re.subn(pattern, new, text, count=1)
        assert n == 1, f"{pattern!r} not in the tree recipe"
    return stand_in_fixes(text)


def stand_in_fixes(text: str) -> str:
    """The tree recipe with the real fixes as empty slots: they patch the real SPECS
    (tests/test_debootstrap_fix.py), which the stand-in tree has not."""
    return text.replace('patch = "debootstrap-spec.patch"', 'patch = ""')


@dataclass
class Azl:
    """A project whose stages run on the stand-in tree, with one mock package."""

    project: Project
    tree: Path
    control: Path
    ref: str
    sha: str

    def doit(self, *args: str) -> Result:
        return self.project.doit(*args)

    @property
    def tools(self) -> Path:
        return self.tree / "toolkit" / "out" / "tools"

    @property
    def lfs(self) -> Path:
        return self.tree / "build" / "toolchain" / "lfs"

    def log(self, stage: str, n: int) -> Path:
        return self.project.root / "cache" / "logs" / f"{stage}.{n}.log"

    def control_file(self, name: str, text: str = "") -> None:
        (self.control / name).write_text(text)


def make_azl(project: Project, tmp_path: Path, tree_text: str | None = None) -> Azl:
    repo, ref, sha = stand_in_repo(tmp_path / "upstream")
    recipes = project.root / "recipes"
    (recipes / "azurelinux.toml").write_text(pinned_tree(repo, ref, sha, tree_text))
    for stage in (*STAGES, "toolkit-sources"):
        shutil.copy(RECIPES / f"{stage}.toml", recipes)
    for session in SESSIONS:  # guest-only: dropped from the sandbox's plan
        shutil.copy(RECIPES / f"{session}.toml", recipes)
    project.recipe("go", install=GO_INSTALL)
    tree, control = tmp_path / "tree", tmp_path / "control"
    control.mkdir()
    project.config(
        f'platform = "sandbox"\njobs = 2\nazurelinux_stages = true\nazurelinux_tree = "{tree}"\n'
    )
    project.recipe("pkg")
    return Azl(project, tree, control, ref, sha)


@pytest.fixture
def azl(project: Project, tmp_path: Path) -> Azl:
    return make_azl(project, tmp_path)


def built(azl: Azl) -> Result:
    """``doit toolchain`` from nothing: the mock packages, the tree, go-tools, toolchain."""
    r = ok(azl.doit("toolchain"))
    assert set(r.packages_ran()) == {
        "pkg", "go", "azurelinux", "go-tools", "raw-toolchain", "toolchain", "toolkit-sources",
    }  # fmt: skip
    return r


# --------------------------------------------------------------------------- the data


def test_real_recipes_have_the_procedure_steps() -> None:
    recipes = load_recipes(RECIPES)
    tree = recipes["azurelinux"]
    assert tree.kind == "tree" and tree.step == "A1" and tree.platforms == ("guest",)
    version = tree.versions[tree.version]
    assert not version.unconfirmed and not version.sources  # a commit pin, no snapshot sha256
    assert tree.spec.pin.commit == "6a8b54d4e365e99320b499712dba0c94de480777"
    assert tree.spec.pin.tree == "d6e903195faa36314ef775b98ede60bc6f182cb7"
    assert tree.spec.pin.ref == "refs/pull/14568/head"
    assert [(f.step, f.patch) for f in tree.spec.fixes] == [
        ("A1", "debootstrap-spec.patch"),
        ("A4", ""),
    ]
    go, raw, tc, iso = (recipes[n] for n in STAGES)
    assert [r.kind for r in (go, raw, tc, iso)] == ["stage"] * 4
    assert [r.step for r in (go, raw, tc, iso)] == ["A2", "A3", "A3", "A5"]
    # and the session steps they need, redone first after a kexec (test_guest_sessions.py)
    assert go.depends == ["azurelinux", "go", "root-home", "hosts"]
    assert raw.depends == ["azurelinux", "go-tools", "devpts", "root-home"]
    assert tc.depends == ["azurelinux", "go-tools", "raw-toolchain"]
    assert iso.depends == ["azurelinux", "go-tools", "toolchain"]
    go, raw, tc, iso = go.spec, raw.spec, tc.spec, iso.spec
    assert len(go.outputs) == 27 and go.make_vars == {"REBUILD_TOOLS": "y"}
    assert go.go_modules == "toolkit/tools"  # offline from the mirror's module cache
    # the raw toolchain is its own stage, and the final one keeps it
    assert raw.make_target == "raw-toolchain" and raw.make_vars == tc.make_vars
    assert raw.outputs == ("build/toolchain/toolchain_from_container.tar.gz",)
    assert tc.outputs == ("build/toolchain/toolchain_built_rpms_all.tar.gz",)
    assert raw.fresh == ("build/toolchain",) and raw.keep == ()
    assert tc.keep == raw.outputs
    assert "cannot find -lgcc_s" in raw.retry_patterns
    for s in (go, raw, tc, iso):  # any make with REBUILD_TOOLS=y may rebuild a tool
        assert s.env == {"GOARCH": "amd64", "GOTOOLCHAIN": "local"}
        assert s.path == ("${GO_BIN}",)
    assert tc.make_vars == {
        "REBUILD_TOOLS": "y",
        "REBUILD_TOOLCHAIN": "y",
        "NO_TOOLCHAIN_CONTAINER": "y",
        "PACKAGE_URL_LIST": "",
        "REPO_LIST": "",
        "DISABLE_UPSTREAM_REPOS": "y",
    }
    assert tc.fresh == ("build/toolchain",) and tc.max_attempts > 1
    assert "cannot find -lgcc_s" in tc.retry_patterns
    assert iso.outputs_glob == "out/images/full/*.iso"
    assert iso.make_vars["CONFIG_FILE"] == "./imageconfigs/full.json"


def test_stage_recipe_errors_name_file_and_field(tmp_path: Path) -> None:
    rdir = tmp_path / "recipes"
    shutil.copytree(RECIPES, rdir)
    edits = {
        "toolchain": (
            'depends = ["azurelinux", "go-tools", "raw-toolchain"]',
            'depends = ["azurelinux", "nosuch"]',
        ),
        "go-tools": ('GOARCH = "amd64"', 'GOARCH = "${NOPE}"'),
        "iso": ('make_target = "iso"', 'make_target = "iso"\nmake_tagret = "x"'),
    }
    for name, (old, new) in edits.items():
        path = rdir / f"{name}.toml"
        assert old in path.read_text()
        path.write_text(path.read_text().replace(old, new, 1))
    with pytest.raises(RecipeErrors) as e:
        load_recipes(rdir)
    found = sorted((Path(err.path).name, err.field) for err in e.value.errors)
    assert found == [
        ("go-tools.toml", "env.GOARCH"),
        ("iso.toml", "make_tagret"),
        # raw-toolchain depends on the broken go-tools: that is go-tools' error, not a second
        # "unknown package" line of its own
        ("toolchain.toml", "depends"),
    ]
    text = str(e.value)
    assert "did you mean 'make_target'" in text
    assert "unknown variable ${NOPE}" in text and "unknown package 'nosuch'" in text


def test_tree_recipe_errors_name_file_and_field(tmp_path: Path) -> None:
    rdir = tmp_path / "recipes"
    rdir.mkdir()
    text = REAL_TREE.read_text()
    for old, new in [
        ('target = "toolkit/Makefile"', 'target = "toolkit/Makefile"\nfixs = []'),
        ('dir = { guest = "/root/azurelinux", ', "dir = { "),
        ('patch = "debootstrap-spec.patch"', 'patch = "nosuch.patch"'),
        ('url = "https://github.com/microsoft/azurelinux"\n', ""),
        ('tree = "d6e903195faa36314ef775b98ede60bc6f182cb7"', 'tree = "d6e9031"'),
    ]:
        assert old in text
        text = text.replace(old, new, 1)
    (rdir / "azurelinux.toml").write_text(text)
    with pytest.raises(RecipeErrors) as e:
        load_recipes(rdir)
    assert sorted(err.field for err in e.value.errors) == [
        "dir.guest",
        "fixes[0].patch",
        "fixs",
        "tree",  # not a full tree id
        "url",  # nowhere to fetch the commit from
    ]
    assert "did you mean 'fixes'" in str(e.value)


def test_bad_stage_recipe_stops_doit_before_anything(azl: Azl) -> None:
    iso = azl.project.root / "recipes" / "iso.toml"
    iso.write_text(iso.read_text().replace("[make_vars]", "bogus = 1\n[make_vars]", 1))
    r = azl.doit("toolchain")
    assert r.code == 3 and "iso.toml: bogus: unknown key" in r.err
    assert not (azl.project.root / "cache" / "logs").exists()


def test_a_stage_without_its_tree_stops_doit_naming_the_field(azl: Azl) -> None:
    tc = azl.project.root / "recipes" / "toolchain.toml"
    old = 'depends = ["azurelinux", "go-tools", "raw-toolchain"]'
    tc.write_text(tc.read_text().replace(old, 'depends = ["raw-toolchain"]'))
    r = azl.doit("toolchain")
    assert r.code == 3, r
    assert "toolchain.toml: depends: a stage depends on exactly one tree recipe" in r.err
    assert not (azl.project.root / "cache" / "logs").exists()


# --------------------------------------------------------------------------- runs


def test_toolchain_builds_tree_go_tools_toolchain_for_amd64_then_nothing(azl: Azl) -> None:
    r = built(azl)
    order = r.packages_ran()
    assert order.index("azurelinux") < order.index("go-tools") < order.index("raw-toolchain")
    assert order.index("raw-toolchain") < order.index("toolchain")
    assert order.index("pkg") < order.index("go-tools")
    # the tree is the pinned commit, checked out from the repository and verified
    assert git(azl.tree, "rev-parse", "HEAD").strip() == azl.ref
    assert git(azl.tree, "log", "--format=%s").count("\n") == 1
    assert git(azl.tree, "ls-files", "toolkit/Makefile").strip() == "toolkit/Makefile"
    for tool in TOOLS:
        text = (azl.tools / tool).read_text()
        assert f"{tool} GOARCH=amd64 GOTOOLCHAIN=local REBUILD_TOOLS=y" in text
    final = (azl.tree / ARCHIVES[1]).read_text()
    assert final == "final y y\n"
    log = azl.log("go-tools", 1).read_text()
    assert "make go-tools REBUILD_TOOLS=y" in log and "GOARCH=amd64" in log
    # ${GO_BIN}: the directory of `go` in the go package's manifest, first on PATH
    assert re.search(r" PATH=\S*/usr/lib/go/bin:", log), log

    assert ok(azl.doit("toolchain")).packages_ran() == []
    assert ok(azl.doit()).packages_ran() == ["iso"]  # `all`: everything, the ISO last
    iso = azl.tree / "out" / "images" / "full" / "AzureLinux-3.0-x86_64.iso"
    assert iso.read_text() == "iso ./imageconfigs/full.json\n"
    assert ok(azl.doit()).packages_ran() == []
    # the ISO's name is not fixed: its record and digest decide
    iso.write_text("damaged\n")
    assert ok(azl.doit()).packages_ran() == ["iso"]
    assert ok(azl.doit()).packages_ran() == []


def test_git_clean_reruns_go_tools_and_toolchain_and_nothing_else(azl: Azl) -> None:
    built(azl)
    subprocess.run(["git", "clean", "-fxdq", ":/"], cwd=azl.tree, check=True)
    assert not azl.tools.exists() and not (azl.tree / "build").exists()
    ran = ["go-tools", "raw-toolchain", "toolchain"]
    assert ok(azl.doit("toolchain")).packages_ran() == ran
    assert ok(azl.doit("toolchain")).packages_ran() == []


def test_clean_go_tools_reruns_toolchain_only_if_the_tools_changed(azl: Azl) -> None:
    built(azl)
    ok(azl.doit("clean", "go-tools"))
    assert not azl.tools.exists() and (azl.tree / ARCHIVES[0]).exists()
    assert ok(azl.doit("toolchain")).packages_ran() == ["go-tools"]  # same tools: cutoff
    azl.control_file("flavor", "v2")  # the next tools differ
    ok(azl.doit("clean", "go-tools"))
    ran = ["go-tools", "raw-toolchain", "toolchain"]
    assert ok(azl.doit("toolchain")).packages_ran() == ran
    assert "flavor=v2" in (azl.tree / ARCHIVES[0]).read_text()


def test_clean_toolchain_keeps_the_raw_toolchain(azl: Azl) -> None:
    built(azl)
    ok(azl.doit("clean", "toolchain"))
    left = sorted(p.name for p in (azl.tree / "build" / "toolchain").iterdir())
    assert left == ["toolchain_from_container.tar.gz"] and azl.tools.exists()
    assert ok(azl.doit("toolchain")).packages_ran() == ["toolchain"]
    ok(azl.doit("clean", "raw-toolchain"))  # the raw one's clean takes all of build/toolchain
    assert not (azl.tree / "build" / "toolchain").exists()
    assert ok(azl.doit("toolchain")).packages_ran() == ["raw-toolchain", "toolchain"]


def test_a_failed_final_toolchain_keeps_the_finished_raw_toolchain(azl: Azl) -> None:
    built(azl)
    raw = azl.tree / ARCHIVES[0]
    before = raw.read_bytes()
    ok(azl.doit("clean", "toolchain"))
    azl.control_file("final-error")
    r = azl.doit("toolchain")
    assert r.code == 1 and "toolchain: make failed" in r.out, r.out
    assert raw.read_bytes() == before
    (azl.control / "final-error").unlink()
    # the next run: only the final toolchain, from a clean build/toolchain with the raw kept
    r = ok(azl.doit("toolchain"))
    assert r.packages_ran() == ["toolchain"]
    assert (azl.control / "raw.runs").read_text() == "raw\n"  # built once, ever
    log = azl.log("toolchain", 1).read_text()
    assert f"remove {azl.tree / 'build' / 'toolchain' / 'populated_toolchain'}" in log
    assert f"keep {raw}" in log and "leftover of an earlier attempt" not in log


def test_a_retried_final_toolchain_keeps_the_raw_toolchain(azl: Azl) -> None:
    built(azl)
    ok(azl.doit("clean", "toolchain"))
    azl.control_file("final-lgcc-once")
    r = ok(azl.doit("toolchain"))
    assert r.packages_ran() == ["toolchain"]
    first, second = azl.log("toolchain", 1).read_text(), azl.log("toolchain", 2).read_text()
    assert "cannot find -lgcc_s" in first and "==> done" in second
    assert "leftover of an earlier attempt" not in second  # the safe clean ran ...
    assert (azl.control / "raw.runs").read_text() == "raw\n"  # ... and kept the raw one


def test_lgcc_s_failure_is_retried_after_a_safe_clean_keeping_both_logs(azl: Azl) -> None:
    azl.control_file("lgcc-once")
    ok(azl.doit("toolchain"))
    first, second = azl.log("raw-toolchain", 1).read_text(), azl.log("raw-toolchain", 2).read_text()
    assert "cannot find -lgcc_s" in first
    # attempt 1 left build/toolchain/lfs/x/build behind; attempt 2 removed it first
    assert f"remove {azl.tree / 'build' / 'toolchain'}" in second
    assert "File exists" not in second and "==> done" in second
    assert not azl.log("raw-toolchain", 3).exists()
    # the next run keeps the previous run's logs as .log.1
    ok(azl.doit("clean", "raw-toolchain"))
    ok(azl.doit("toolchain"))
    log1 = azl.log("raw-toolchain", 1)
    assert log1.with_name("raw-toolchain.1.log.1").read_text() == first
    assert not azl.log("raw-toolchain", 2).exists()


def test_another_failure_is_not_retried(azl: Azl) -> None:
    azl.control_file("other-error")
    r = azl.doit("toolchain")
    assert r.code == 1
    assert "raw-toolchain: make failed (exit 2) on attempt 1 of 3" in r.out
    assert "not retried: the make output matches no retryable pattern" in r.out
    assert "command: make raw-toolchain REBUILD_TOOLS=y" in r.out
    assert "cache/logs/raw-toolchain.1.log" in r.out and "something else broke" in r.out
    assert azl.log("raw-toolchain", 1).exists() and not azl.log("raw-toolchain", 2).exists()


def test_retry_is_bounded(azl: Azl) -> None:
    azl.control_file("lgcc-always")
    r = azl.doit("toolchain")
    assert r.code == 1 and "on attempt 3 of 3" in r.out and "no attempt left" in r.out
    assert [azl.log("raw-toolchain", n).exists() for n in (1, 2, 3, 4)] == [True] * 3 + [False]
    for n in (1, 2):
        assert f"raw-toolchain.{n}.log (retried: the make output matches" in r.out


def test_leftover_build_dir_of_a_killed_run_is_removed_before_the_next(azl: Azl) -> None:
    azl.control_file("hang")
    proc = azl.project.popen("toolchain")
    started = azl.control / "started"
    deadline = time.monotonic() + 120
    while not started.exists() or not started.read_text().strip():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the toolchain never started"
        time.sleep(0.05)
    shell = int(started.read_text())
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    while True:  # the supervisor kills the make group once doit is gone
        try:
            os.kill(shell, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "the killed run's make is still running"
        time.sleep(0.05)
    leftover = azl.lfs / "x" / "build"
    assert leftover.is_dir()
    # the stand-in fails like the seed on a dirty $LFS ...
    (azl.control / "hang").unlink()
    seed = subprocess.run(
        ["make", "toolchain"],
        cwd=azl.tree / "toolkit",
        env={**os.environ, "LC_ALL": "C"},
        capture_output=True,
        text=True,
    )
    assert seed.returncode != 0
    assert "mkdir: cannot create directory 'build': File exists" in seed.stderr
    # ... and the stage cannot: it starts from an empty build/toolchain
    r = ok(azl.doit("toolchain"))
    assert "toolchain" in r.packages_ran()
    assert (azl.tree / ARCHIVES[1]).exists()


def test_tree_is_made_with_the_fixes_as_commits(project: Project, tmp_path: Path) -> None:
    text = stand_in_fixes(REAL_TREE.read_text())
    slot = 'name = "debootstrap-spec"\nstep = "A1"\npatch = ""'
    assert slot in text
    text = text.replace(slot, slot.replace('patch = ""', 'patch = "debootstrap.patch"'), 1)
    azl = make_azl(project, tmp_path, text)
    (project.root / "recipes" / "azurelinux").mkdir()
    (project.root / "recipes" / "azurelinux" / "debootstrap.patch").write_text(
        "--- a/SPECS/debootstrap/debootstrap.spec\n+++ b/SPECS/debootstrap/debootstrap.spec\n"
        "@@ -1,2 +1,2 @@\n Name: debootstrap\n-Version: 1.0.128+nmu2\n+Version: 1.0.128+nmu2.fixed\n"
    )
    r = ok(azl.doit("azurelinux"))
    assert r.packages_ran() == ["azurelinux"]
    spec = (azl.tree / "SPECS/debootstrap/debootstrap.spec").read_text()
    assert "nmu2.fixed" in spec
    assert git(azl.tree, "log", "--format=%s").splitlines()[0] == "A1 debootstrap-spec"
    assert git(azl.tree, "status", "--porcelain") == ""
    log = azl.log("azurelinux", 1).read_text()
    assert "fix coredns (A4): empty slot, nothing applied" in log
    assert ok(azl.doit("azurelinux")).packages_ran() == []


def test_tree_refuses_a_directory_it_did_not_make(azl: Azl) -> None:
    azl.tree.mkdir()
    (azl.tree / "mine.txt").write_text("keep me\n")
    r = azl.doit("azurelinux")
    assert r.code == 1 and "was not made by azl-bootstrap" in r.out
    assert (azl.tree / "mine.txt").read_text() == "keep me\n"


# --------------------------------------------------------------------------- mounts


def can_mount(tmp_path: Path) -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    a, b = tmp_path / "probe-a", tmp_path / "probe-b"
    a.mkdir()
    b.mkdir()
    if subprocess.run(["mount", "--bind", str(a), str(b)], capture_output=True).returncode:
        return False
    subprocess.run(["umount", str(b)], check=True)
    return True


@pytest.fixture
def mountable(tmp_path: Path) -> None:
    if not can_mount(tmp_path):
        pytest.skip("bind mounts are not permitted here (needs root)")


@contextlib.contextmanager
def unmount_all_under(tree: Path) -> Iterator[None]:
    """Whatever the test leaves mounted under the tree is unmounted, innermost first."""
    try:
        yield
    finally:
        for m in reversed(mounts_under(tree)):
            subprocess.run(["umount", m], check=False)


def host_dev(tmp_path: Path) -> Path:
    """Stands in for the host's /dev that the toolkit bind-mounts under $LFS."""
    src = tmp_path / "host-dev"
    src.mkdir()
    (src / "sentinel").write_text("must survive\n")
    return src


def test_clean_refuses_while_something_is_mounted_under_the_tree(
    azl: Azl, tmp_path: Path, mountable: None
) -> None:
    built(azl)
    # the final toolchain's chroot (the raw toolchain's lfs is gone by then)
    src, dev = host_dev(tmp_path), azl.tree / "build" / "toolchain" / "populated_toolchain" / "dev"
    with unmount_all_under(azl.tree):
        subprocess.run(["mount", "--bind", str(src), str(dev)], check=True)
        for stage in ("toolchain", "go-tools"):
            r = azl.doit("clean", stage)
            assert r.code != 0, r
            assert f"doit clean {stage}: refusing to clean" in r.err and str(dev) in r.err
            assert "Nothing was deleted" in r.err
        assert (dev / "sentinel").exists() and (src / "sentinel").exists()
        assert all((azl.tree / a).exists() for a in ARCHIVES) and azl.tools.is_dir()
    assert (src / "sentinel").read_text() == "must survive\n"


def test_retry_refuses_while_still_mounted_and_deletes_nothing(
    azl: Azl, tmp_path: Path, mountable: None
) -> None:
    src, dev = host_dev(tmp_path), azl.lfs / "dev"
    azl.control_file("mount-from", str(src))  # attempt 1 mounts, then fails with -lgcc_s
    azl.control_file("lgcc-once")
    azl.control_file("unmount-broken")  # and the tree's safeunmount.sh cannot unmount it
    with unmount_all_under(azl.tree):
        r = azl.doit("toolchain")
        assert r.code == 1
        assert "on attempt 2 of 3" in r.out and "refusing to delete" in r.out
        assert f"still mounted under the tree {azl.tree}: {dev}" in r.out
        assert mounts_under(azl.tree) == [str(dev)]
        assert (azl.lfs / "x" / "build").is_dir()  # nothing under build/toolchain deleted
        assert (dev / "sentinel").exists()
        assert "safeunmount" in (azl.control / "safeunmount.calls").read_text()
        assert not azl.log("raw-toolchain", 3).exists()
    assert (src / "sentinel").read_text() == "must survive\n"


def test_retry_unmounts_with_the_trees_safeunmount_then_starts_clean(
    azl: Azl, tmp_path: Path, mountable: None
) -> None:
    src = host_dev(tmp_path)
    azl.control_file("mount-from", str(src))
    azl.control_file("lgcc-once")
    with unmount_all_under(azl.tree):
        ok(azl.doit("toolchain"))
        second = azl.log("raw-toolchain", 2).read_text()
        assert f"Removing mountpoint at '{azl.lfs / 'dev'}'" in second
        # attempt 2 mounted again (the stand-in always does); the final toolchain's fresh
        # clean unmounted that with the same script before removing the raw stage's $LFS
        assert mounts_under(azl.tree) == []
        final = azl.log("toolchain", 1).read_text()
        assert f"Removing mountpoint at '{azl.lfs / 'dev'}'" in final
        assert f"remove {azl.lfs}" in final
    assert (src / "sentinel").read_text() == "must survive\n"
    assert all((azl.tree / a).exists() for a in ARCHIVES)


# --------------------------------------------------------------------------- the guest


def test_guest_lists_the_stages_and_stops_in_the_preflight(project: Project) -> None:
    shutil.copytree(REPO / "recipes", project.root / "recipes", dirs_exist_ok=True)
    guest = {"AZL_PLATFORM": "guest", "AZL_GIT_MIRRORS": ""}  # no local git mirror
    r = ok(project.doit("list", "--deps", env=guest))
    # `doit list` heads each platform and phase with a "# ..." line: not part of a block
    plain = "\n".join(ln for ln in r.out.splitlines() if not ln.startswith("# "))
    blocks = {b.split()[0]: b for b in plain.split("\n\n") if b.strip()}
    tree = "/root/azurelinux"
    assert "cache/stages/azurelinux.json" in blocks["go-tools"]
    if (REPO / "recipes" / "go.toml").exists():  # the go chain's last link
        go = re.findall(r"cache/manifests/(go[\d.]+)\.json", blocks["go-tools"])
        assert go and go[-1].startswith("go1.23")
    assert all(f"{tree}/toolkit/out/tools/{t}" in blocks["toolchain"] for t in TOOLS)
    assert f"{tree}/{ARCHIVES[0]}" in blocks["toolchain"]  # the raw toolchain
    assert f"{tree}/{ARCHIVES[1]}" in blocks["iso"]  # the final toolchain
    # a commit pin: no snapshot file, no sha256 to confirm
    assert "mirror/azurelinux-" not in blocks["azurelinux"]
    assert "6a8b54d4e365 -> /root/azurelinux" in blocks["azurelinux"]
    existed = os.path.exists(tree)
    r = project.doit("toolchain", env=guest)
    assert r.code == 2, r  # other steps stop it (offline sources) ...
    assert "marked unconfirmed" not in r.out  # a commit pin is confirmed, and so is the rest
    # ... and offline it must be in a local mirror, which the preflight checks up front
    assert (
        "  azurelinux: commit 6a8b54d4e365e99320b499712dba0c94de480777 of "
        "https://github.com/microsoft/azurelinux is in no local git mirror"
    ) in r.out
    assert "Nothing was built." in r.out
    assert not (project.root / "cache" / "stages").exists() and os.path.exists(tree) == existed
