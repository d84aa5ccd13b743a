"""The command line as a new user meets it, on a copy of this repository as cloned (its
recipes, nothing built): each command is run as typed (``python -m doit ...`` in the copy)
and must answer in words, in a line or two, never with a traceback or a Python repr."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, Result

REPRS = ("Traceback", "<function", "lambda", "args=[", "kwargs=", "Pin(", "CmdOption(", "0x")


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's dodo.py, pyproject.toml and recipes: a fresh clone, nothing built."""
    root = tmp_path_factory.mktemp("clone") / "azl-bootstrap"
    root.mkdir()
    for name in ("dodo.py", "pyproject.toml"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "recipes", root / "recipes")
    (root / "azl-bootstrap.toml").write_text('platform = "sandbox"\n')
    return root


def doit(root: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    proc = subprocess.run(
        [sys.executable, "-m", "doit", *args],
        cwd=root,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def plain(r: Result) -> str:
    said = r.out + r.err
    for bad in REPRS:
        assert bad not in said, said
    return said


def test_info_of_a_step_that_never_ran_says_it_would_run_and_why(clone: Path) -> None:
    r = doit(clone, "info", "grep")
    said = plain(r)
    assert r.code == 0, said
    assert said.startswith("grep (a sandbox step, procedure V27, version 3.11): GNU grep"), said
    assert "status: would run, because" in said and "error" not in said, said
    assert "it needs cache/manifests/pcre2.json, which does not exist yet (made by pcre2)" in said


@pytest.mark.parametrize("step", ["guest", "live-bootstrap"])
def test_info_of_host_steps_prints_no_python_reprs(clone: Path, step: str) -> None:
    r = doit(clone, "info", step)
    said = plain(r)
    assert r.code == 0 and "status: would run, because" in said, said
    if step == "guest":
        assert "the guest VM's own doit decides" in said, said
    else:
        assert "never checked out" in said and "meta" not in said, said


# the host group's steps: H1-H4, lb-mirror after the image, the push (H7), the toolkit's
# downloads
HOST_STEPS = ("preflight", "live-bootstrap", "lb-image", "lb-mirror", "push", "toolkit-sources")


def test_groups_are_not_up_to_date_while_their_steps_would_run(clone: Path) -> None:
    r = doit(clone, "info", "host")
    said = plain(r)
    assert r.code == 0 and "up to date" not in said, said
    steps = len(HOST_STEPS)
    assert f"{steps} of its {steps} steps would run: live-bootstrap, preflight" in said, said
    status = doit(clone, "list", "--status")
    assert status.code == 0, status.err
    for group in ("all", "host", "mirror"):
        assert re.search(rf"^R {group} ", status.out, re.M), status.out


@pytest.mark.parametrize("value", ["gust", "host"])
def test_a_bad_platform_is_answered_in_two_lines(clone: Path, value: str) -> None:
    r = doit(clone, "list", env={"AZL_PLATFORM": value})
    said = plain(r)
    assert r.code != 0 and len(said.strip().splitlines()) <= 2, said
    assert f"AZL_PLATFORM={value}" in said and "sandbox or guest" in said, said
    if value == "host":
        assert "`doit host` runs them" in said, said
    else:
        assert "did you mean guest?" in said, said


def test_a_closed_pipe_ends_the_list_quietly(clone: Path) -> None:
    proc = subprocess.run(
        f"{sys.executable} -m doit list --all | head -2",
        shell=True,
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert len(proc.stdout.splitlines()) == 2
    assert proc.stderr == "", proc.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("dumpdb",), "doit dumpdb cannot read this project's state"),
        (("strace", "grep"), "doit strace cannot trace this project's steps"),
        (("-n", "-1", "grep"), "-n -1: the number of steps to run at once must be 1 or more"),
        (("--bogus",), "doit: option --bogus not recognized; `doit help run` lists its options"),
        (("list", "--bogus"), "doit list: option --bogus not recognized"),
    ],
)
def test_what_cannot_be_done_is_said_in_one_line(
    clone: Path, args: tuple[str, ...], says: str
) -> None:
    r = doit(clone, *args)
    said = plain(r)
    assert r.code != 0, said
    assert says in said and len(said.strip().splitlines()) == 1, said
    assert "!!" not in said and r.ran == [], said  # nothing was run


def test_help(clone: Path) -> None:
    r = doit(clone, "-h")
    said = plain(r)
    assert r.code == 0 and "doit info STEP        whether a step would run, and why" in said
    r = doit(clone, "help", "grep")
    said = plain(r)
    assert r.code == 0 and said.startswith("grep (a sandbox step, procedure V27"), said
    assert "doit info grep" in said and "doit clean grep" in said, said
    r = doit(clone, "host", "--help")
    said = plain(r)
    assert r.code == 0 and said.startswith("host (a group): every host step"), said
    assert r.ran == [], said


@pytest.mark.parametrize(
    ("step", "says"),
    [
        ("go-tools", "go-tools: removed nothing here: it is made in the guest VM"),
        ("toolchain", "toolchain: removed nothing here: it is made in the guest VM"),
        ("lb-image", "lb-image: removed nothing (it was not made)"),
        ("preflight", "preflight: removed nothing (this step keeps no output"),
        ("live-bootstrap", "live-bootstrap: removed nothing (it was not checked out)"),
        ("host", f"host: a group of {len(HOST_STEPS)} steps"),
    ],
)
def test_every_clean_says_what_it_removed(clone: Path, step: str, says: str) -> None:
    r = doit(clone, "clean", step)
    said = plain(r)
    assert r.code == 0 and said.startswith(says), said


def test_list_groups_steps_by_platform_and_phase_in_pipeline_order(clone: Path) -> None:
    r = doit(clone, "list")
    assert r.code == 0, r.err
    heads = [ln for ln in r.out.splitlines() if ln.startswith("# ")]
    assert [h.split(":")[0] for h in heads] == [
        "# host",  # H1-H7
        "# host",  # the toolkit's downloads (A3), fetched on the host
        "# sandbox",
        "# guest",
        "# guest",
        "# groups and tools",
    ], heads
    names = [ln.split()[0] for ln in r.out.splitlines() if ln and not ln.startswith("#")]
    order = ["preflight", "live-bootstrap", "lb-image", "dropbear", "grep", "iproute2"]
    assert [names.index(n) for n in order] == sorted(names.index(n) for n in order), names
    guest = doit(clone, "list", env={"AZL_PLATFORM": "guest"})
    assert guest.code == 0, guest.err
    line = next(ln for ln in guest.out.splitlines() if ln.startswith("guest-setup "))
    assert " 0 " not in line and "V1" in line, line  # no version, not "0"


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_graph_draws_ordering_edges_and_the_platforms(tmp_path: Path, clone: Path) -> None:
    root = tmp_path / "g"
    shutil.copytree(clone, root)
    r = doit(root, "graph")
    assert r.code == 0, r.out + r.err
    dot = (root / "cache" / "graph.dot").read_text()
    for platform in ("host", "sandbox", "guest"):
        assert f'subgraph "cluster_{platform}"' in dot
    # the ISO stage only runs after rpm and cdrkit (task_dep), which the picture shows
    assert '"guest/iso" -> "guest/rpm" [style=dashed];' in dot
    assert '"guest/iso" -> "guest/cdrkit" [style=dashed];' in dot
    assert '"grep" -> "pcre2";' in dot  # a file edge: grep reads pcre2's manifest


GIT = REPO.parent / "shared" / "git"
MISSING = ("stage0-posix-x86", "mescc-tools", "M2libc")


@pytest.mark.skipif(
    not (GIT / "live-bootstrap.bundle").is_file(), reason="no ../shared/git bundles"
)
def test_offline_pins_name_the_mirror_options_and_every_missing_repository(
    tmp_path: Path, clone: Path
) -> None:
    """Without network (a stand-in: a proxy on a closed port, so the URLs cannot be reached)
    and with some bundles missing from the local mirror, one run lists them all."""
    mirror = tmp_path / "gitmirror"
    mirror.mkdir()
    for bundle in GIT.glob("*.bundle"):
        if bundle.stem not in MISSING:
            (mirror / bundle.name).symlink_to(bundle)
    root = tmp_path / "p"
    shutil.copytree(clone, root)
    (root / "azl-bootstrap.toml").write_text(
        f'platform = "sandbox"\nmirrors = [{json.dumps(str(mirror))}]\n'
    )
    no_net = {"https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}
    r = doit(root, "live-bootstrap", env=no_net)
    said = r.out + r.err
    assert r.code != 0, said
    assert (
        "live-bootstrap: 6 repositories of the pinned checkout are in no local git mirror" in said
    )
    for repo in ("seed/stage0-posix/x86:", "seed/stage0-posix/mescc-tools:"):
        assert f"live-bootstrap/{repo} commit" in said, said
    assert said.count("M2libc: commit") == 4, said  # stage0-posix's and its tools' copies
    assert "cannot be reached (no network?)" in said, said
    assert "`mirrors` of azl-bootstrap.toml" in said and "AZL_GIT_MIRRORS" in said, said
    assert str(mirror) in said, said
    assert not (root / "cache" / "live-bootstrap").exists()
    # with every bundle the checkout is made, and its clean says it deletes it
    for name in MISSING:
        (mirror / f"{name}.bundle").symlink_to(GIT / f"{name}.bundle")
    r = doit(root, "live-bootstrap", env=no_net)
    assert r.code == 0, r.out + r.err
    r = doit(root, "clean", "live-bootstrap")
    assert r.code == 0 and r.out.startswith(
        "live-bootstrap: removed cache/live-bootstrap, cache/checkouts/live-bootstrap.json; "
        "that was the pinned checkout"
    ), r.out
    assert not (root / "cache" / "live-bootstrap").exists()


def test_single_runs_every_step_named(tmp_path: Path) -> None:
    """``doit -s a b`` runs a and b (in that order) and not b's other dependency c. doit 0.37
    alone ran a only and exited 0: the e2e rehearsal's ``doit -s azurelinux <stage>`` ran the
    tree and never the stage."""
    (tmp_path / "dodo.py").write_text(
        "def task_a():\n    return {'actions': ['echo A > a'], 'targets': ['a']}\n"
        "def task_b():\n    return {'actions': ['echo B > b'], 'file_dep': ['a'],"
        " 'targets': ['b'], 'task_dep': ['c']}\n"
        "def task_c():\n    return {'actions': ['echo C > c']}\n"
    )
    r = subprocess.run([sys.executable, "-m", "doit", "-s", "a", "b"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [".", "a", ".", "b"], r.stdout
    assert (tmp_path / "b").read_text() == "B\n" and not (tmp_path / "c").exists()
