"""Real upstream sources, real compilers: the repository's own recipes built in a sandbox.

Sources are fetched through the engine's own fetch tasks from Debian's archive (byte-identical
``.orig`` tarballs, base URI from the machine's apt sources). The tests skip only when the
archive cannot be reached at all.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import real_project

pytestmark = pytest.mark.network


def test_pcre2_grep_chain(tmp_path, archive: str) -> None:
    project = real_project(tmp_path / "proj", "pcre2", "grep")
    r = project.doit()
    assert r.code == 0, r.out + r.err
    assert r.packages_ran() == ["pcre2", "grep"]

    grep = project.installed("bin/grep")
    out = subprocess.run(
        [grep, "-oP", r"\d+(?=bar)"], input="foo123bar\n", capture_output=True, text=True
    )
    assert out.stdout == "123\n", out.stderr
    # linked against the sandbox's libpcre2, not a system copy
    ldd = subprocess.run(["ldd", grep], capture_output=True, text=True).stdout
    line = next(ln for ln in ldd.splitlines() if "libpcre2-8" in ln)
    assert str(project.sandbox_root.resolve()) in line, ldd
    # the seed's flags reached configure: the 16- and 32-bit libraries exist
    for lib in ("libpcre2-16.so", "libpcre2-32.so"):
        assert project.installed(f"lib/{lib}").exists()
    pcre2grep = json.loads(project.manifest("pcre2").read_text())["files"]
    assert "usr/bin/pcre2grep" in pcre2grep

    r = project.doit()
    assert r.code == 0 and r.ran == [], r.out

    # clean one package: only it is rebuilt, from the mirror, without network
    r = project.doit("clean", "grep")
    assert r.code == 0, r.err
    assert not project.manifest("grep").exists()
    r = project.doit()
    assert r.code == 0, r.out + r.err
    assert r.ran == ["grep"]


def test_lua_and_popt(tmp_path, archive: str) -> None:
    project = real_project(tmp_path / "proj", "lua", "popt")
    r = project.doit()
    assert r.code == 0, r.out + r.err
    assert sorted(r.packages_ran()) == ["lua", "popt"]
    lua = project.installed("bin/lua")
    out = subprocess.run(
        [lua, "-e", "print(string.format('%d', 6*7))"], capture_output=True, text=True
    )
    assert out.stdout == "42\n"
    assert project.installed("lib/liblua.a").exists()
    assert project.installed("include/popt.h").exists()
    # popt is the marked substitute in the sandbox, and its log says so
    log = (project.root / "cache" / "logs" / "popt.log").read_text()
    assert "substitute" in log
    assert list(project.sandbox_root.glob("usr/lib/libpopt.so*"))
