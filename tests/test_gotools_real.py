"""The go-tools stage of the real toolkit (the pinned ``toolkit/`` from ../shared/azurelinux),
in the 32-bit rehearsal's Debian i386 root on this 64-bit kernel, with the go1.23.1 built
there with ``GOHOSTARCH=386`` (tests/rehearsal32/go.py), the stage's own action and settings
(recipes/go-tools.toml, tasks/kinds/stage.py) and no network: the Go modules come from the
checkout's ``mirror/go-modules``, fetched through the Go module proxy and checked against
go.sum first (tests/rehearsal32/gotools.py says how). Slow: the root is a debootstrap,
go1.23's make.bash and the 27 tools with their tests are minutes each on 2 cores.

The first test is cheap and in the default suite: which failures the stage's retry allows.
"""

from __future__ import annotations

import os
import re
import shutil
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.rehearsal32 import root as rehearsal32
from tests.rehearsal32.gotools import SEED_ERROR

RECIPE = tomllib.loads((REPO / "recipes" / "go-tools.toml").read_text())
TOOLS = sorted(Path(p).name for p in RECIPE["outputs"])


def in_the_root(test):
    """Slow, needs the network (debootstrap, the module proxy) and root."""
    for mark in (
        pytest.mark.slow,
        pytest.mark.network,
        pytest.mark.skipif(os.geteuid() != 0, reason="debootstrap, chroot and mounts need root"),
        pytest.mark.skipif(shutil.which("debootstrap") is None, reason="debootstrap not installed"),
    ):
        test = mark(test)
    return test


def test_only_failures_of_the_machine_are_retried() -> None:
    """The seed's 386 errors and a failing test are the code's: one attempt. A killed
    compiler (the OOM killer) or the network while modules come from it: another, bounded."""
    retry = RECIPE["retry"]
    assert 1 < retry["max_attempts"] <= 3

    def retried(text: str) -> bool:
        return any(re.search(p, text) for p in retry["patterns"])

    assert not retried(f"../pkg/imagecustomizerlib/{SEED_ERROR}")
    assert not retried("panic: unknown GOARCH detected (386)")  # srpmpacker, procedure §7.1
    assert not retried("--- FAIL: TestParseSpec (0.00s)\nFAIL\tgithub.com/x/y\t0.01s")
    assert retried("/usr/lib/go/pkg/tool/linux_386/compile: signal: killed")
    assert retried("fatal error: runtime: out of memory")
    assert retried("dial tcp 1.2.3.4:443: i/o timeout")


@pytest.fixture(scope="module")
def result(archive: str):
    from tests.rehearsal32.gotools import gotools_check

    root = rehearsal32.make_root(REPO, archive)
    r = gotools_check(REPO, root)
    print(r.summary())
    return r


@in_the_root
def test_the_stage_builds_every_tool_for_amd64_offline(result) -> None:
    assert result.modules == 77 and result.verified_files == 154  # go.sum checked them all
    r = result.amd64
    assert r.ok, f"{r.message}\n{r.log_text[-3000:]}"
    assert r.env["GOARCH"] == "amd64"
    assert len(r.logs) <= result.max_attempts  # attempts are bounded, one log each
    assert "Go modules from" in r.log_text and "(read only, offline)" in r.log_text
    assert "make go-tools REBUILD_TOOLS=y" in r.log_text
    assert sorted(result.tools) == TOOLS  # the 27 of tools.mk's go_tool_list, nothing else
    assert set(result.tools.values()) == {"x86-64"}, result.tools


@in_the_root
def test_without_goarch_it_fails_as_the_seed_did_on_the_first_attempt(result) -> None:
    r = result.default
    assert r is not None and not r.ok
    assert "GOARCH" not in r.env
    assert SEED_ERROR in r.log_text, r.log_text[-3000:]
    assert r.logs == ["go-tools.1.log"]  # deterministic: not retried
    assert "not retried: the make output matches no retryable pattern" in r.message


FIXED_SOURCE = "debootstrap_1.0.128+nmu2+deb12u2.tar.gz"
FIXED_SHA = "c5ff2803461978d1b5fd965ae64ea5aabef94c3126793a58e8f9a4a92c00db96"


@in_the_root
def test_the_toolkits_srpmpacker_packs_debootstrap_only_with_the_fix(result, archive) -> None:
    """The ISO stage's packer, as built above, on the real SPECS/debootstrap (the tree's
    debootstrap fix, tests/test_debootstrap_fix.py): offline, with the mirror served as the
    toolkit's SOURCE_URL (a stand-in for Azure Linux's source server), the pinned spec cannot
    be packed and the fixed one can."""
    from tasks.sources.download import fetch
    from tests.rehearsal32.gotools import srpm_check

    pool = f"{archive}/pool/main/d/debootstrap"
    fetch([f"{pool}/{FIXED_SOURCE}"], REPO / "mirror" / FIXED_SOURCE, FIXED_SHA, progress=False)
    runs = srpm_check(REPO, rehearsal32.root_dir(REPO))
    orig, fixed = runs["orig"], runs["fixed"]
    assert orig.code != 0 and orig.srpms == [], orig.output[-3000:]
    assert "unable to hydrate files" in orig.output, orig.output[-3000:]
    assert "debootstrap_1.0.128+nmu2.tar.gz" in orig.output
    assert fixed.code == 0, fixed.output[-3000:]
    assert fixed.srpms == ["debootstrap-1.0.128+nmu2+deb12u2-1.azl3.src.rpm"], fixed.output[-3000:]
