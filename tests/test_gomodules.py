"""tasks/sources/gomodules.py: Go modules fetched on the host, used read-only and offline in the guest.

The test makes a small module world with this machine's Go: an "upstream" module proxy laid
out as a file:// GOPROXY (standing in for the Go module proxy, with an upper-case module path
as github.com/Azure/... has), and a main module like toolkit/tools whose go.sum Go writes. The
host step fetches into a module cache; the guest step runs the toolkit's own commands (tools.mk:
``go get -d ./...``, then ``go build``) against that cache only, read-only, with the upstream
gone, a fresh HOME and (as root) no network; a tampered module fails go.sum's check.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from tasks.sources import gomodules
from tests.conftest import find_go

GO = find_go()
pytestmark = pytest.mark.skipif(
    GO is None, reason="no Go here (./setup.sh --with-go installs Debian's golang-1.22-go)"
)

MODULES = {
    ("example.com/greet", "v1.0.0"): {
        "go.mod": "module example.com/greet\n\ngo 1.20\n",
        "greet.go": 'package greet\n\nfunc Hello() string { return "hello from greet" }\n',
    },
    ("example.com/Azure/sdk", "v1.2.0"): {
        "go.mod": "module example.com/Azure/sdk\n\ngo 1.20\n\nrequire example.com/greet v1.0.0\n",
        "sdk.go": 'package sdk\n\nimport "example.com/greet"\n\n'
        'func Name() string { return "azure sdk + " + greet.Hello() }\n',
    },
}


def module_zip(path: str, version: str, files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in sorted(files.items()):
            z.writestr(f"{path}@{version}/{name}", text)
    return buf.getvalue()


def make_upstream(root: Path) -> Path:
    """A module proxy in the file:// layout: <escaped path>/@v/{list,<v>.info,<v>.mod,<v>.zip}."""
    for (path, version), files in MODULES.items():
        d = root / gomodules._escape(path) / "@v"
        d.mkdir(parents=True)
        (d / "list").write_text(version + "\n")
        (d / f"{version}.info").write_text(json.dumps({"Version": version,
                                                       "Time": "2024-01-01T00:00:00Z"}))  # fmt: skip
        (d / f"{version}.mod").write_text(files["go.mod"])
        (d / f"{version}.zip").write_bytes(module_zip(path, version, files))
    return root


def go_env(home: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "GOCACHE": str(home / "gocache"),
        "GOTOOLCHAIN": "local",
        "CGO_ENABLED": "0",
        **extra,
    }


def go(args: list[str], cwd: Path, env: dict[str, str], ok: bool = True, net: bool = True):
    argv = [GO, *args]
    if not net and os.geteuid() == 0 and shutil.which("unshare"):
        argv = ["unshare", "-n", *argv]  # no network at all, as in the guest's builds
    r = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if ok:
        assert r.returncode == 0, f"{argv}\n{r.stdout}{r.stderr}"
    return r


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The upstream proxy, a main module with its go.sum, and the host's fetched cache."""
    tmp = tmp_path_factory.mktemp("gomod")
    upstream = make_upstream(tmp / "upstream")
    tools = tmp / "toolkit" / "tools"
    (tools / "cmd").mkdir(parents=True)
    (tools / "go.mod").write_text(
        "module example.com/toolkit/tools\n\ngo 1.20\n\nrequire example.com/Azure/sdk v1.2.0\n"
    )
    (tools / "cmd" / "main.go").write_text(
        'package main\n\nimport (\n\t"fmt"\n\n\t"example.com/Azure/sdk"\n)\n\n'
        "func main() { fmt.Println(sdk.Name()) }\n"
    )
    up = {"GOPROXY": f"file://{upstream}", "GOSUMDB": "off", "GOFLAGS": "-mod=mod"}
    env = go_env(tmp / "home0", GOMODCACHE=str(tmp / "scratch"), **up)
    go(["mod", "tidy"], tools, env)  # writes go.sum, as the toolkit's is committed
    assert "example.com/greet v1.0.0 h1:" in (tools / "go.sum").read_text()
    # the host step: fetch from "upstream" into the mirror's module cache
    cache = tmp / "mirror" / gomodules.DEFAULT_DIR
    host = go_env(tmp / "home1", GOPROXY=f"file://{upstream}", GOSUMDB="off")
    n = gomodules.download(GO, tools, cache, env=host)
    assert n == 2
    subprocess.run(["chmod", "-R", "u+w", str(tmp / "scratch")], check=True)
    return {"tmp": tmp, "upstream": upstream, "tools": tools, "cache": cache}


def test_the_guest_builds_from_the_read_only_cache_alone(world: dict[str, Path]) -> None:
    tmp, tools, cache = world["tmp"], world["tools"], world["cache"]
    assert gomodules.problem(tools, cache) is None
    # upper-case module paths are escaped as the proxy protocol says
    assert (
        gomodules.proxy_dir(cache) / "example.com" / "!azure" / "sdk" / "@v" / "v1.2.0.zip"
    ).is_file()
    guest_tools = tmp / "guest" / "toolkit" / "tools"
    shutil.copytree(tools, guest_tools)
    hidden = world["upstream"].rename(world["upstream"].with_name("upstream-gone"))
    subprocess.run(["chmod", "-R", "a-w", str(cache)], check=True)
    try:
        env = go_env(tmp / "guest-home", **gomodules.offline_env(cache))
        # tools.mk's got_go_deps.flag, then the build, both offline
        r = go(["get", "-d", "./..."], guest_tools, env, net=False)
        go(["build", "-o", str(tmp / "tool"), "./cmd"], guest_tools, env, net=False)
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(cache)], check=True)
        hidden.rename(world["upstream"])
    out = subprocess.run([str(tmp / "tool")], capture_output=True, text=True).stdout
    assert out == "azure sdk + hello from greet\n", r.stderr
    # the guest's own module cache was filled; the mirror's was not written
    assert (tmp / "guest-home" / "go" / "pkg" / "mod" / "example.com" / "greet@v1.0.0").is_dir()


def tampered_copy(cache: Path, dest: Path) -> Path:
    """A copy of ``cache`` whose example.com/greet zip has other code in it."""
    shutil.copytree(cache, dest)
    subprocess.run(["chmod", "-R", "u+w", str(dest)], check=True)
    zpath = gomodules.proxy_dir(dest) / "example.com" / "greet" / "@v" / "v1.0.0.zip"
    files = dict(MODULES[("example.com/greet", "v1.0.0")])
    files["greet.go"] = files["greet.go"].replace("hello", "HACKED")
    zpath.write_bytes(module_zip("example.com/greet", "v1.0.0", files))
    return dest


def test_a_tampered_module_fails_go_sum(world: dict[str, Path]) -> None:
    """GOSUMDB=off is safe: go.sum still checks what the proxy hands out."""
    tmp = world["tmp"]
    bad = tampered_copy(world["cache"], tmp / "bad-cache")
    env = go_env(tmp / "bad-home", **gomodules.offline_env(bad))
    r = go(["build", "-o", str(tmp / "bad-tool"), "./cmd"], world["tools"], env, ok=False,
           net=False)  # fmt: skip
    assert r.returncode != 0
    assert "checksum mismatch" in r.stderr, r.stderr
    assert not (tmp / "bad-tool").exists()


def test_the_stage_says_what_is_missing_before_it_starts(world: dict[str, Path]) -> None:
    tmp, tools = world["tmp"], world["tools"]
    absent = tmp / "nowhere" / "go-modules"
    why = gomodules.problem(tools, absent)
    assert why and f"no Go modules at {absent}" in why
    assert "python3 -m tasks.sources.gomodules" in why  # how to fetch them where the proxy is
    other = tmp / "other-tools"
    shutil.copytree(tools, other)
    with open(other / "go.sum", "a") as f:
        f.write("example.com/extra v0.1.0/go.mod h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n")
    why = gomodules.problem(other, world["cache"])
    assert why and "fetched for another go.sum" in why
    # a module file lost from the cache
    copy = tmp / "lossy"
    shutil.copytree(world["cache"], copy)
    subprocess.run(["chmod", "-R", "u+w", str(copy)], check=True)
    (gomodules.proxy_dir(copy) / "example.com" / "greet" / "@v" / "v1.0.0.mod").unlink()
    why = gomodules.problem(tools, copy)
    assert why and "example.com/greet@v1.0.0" in why


def test_download_without_a_proxy_says_so(world: dict[str, Path], tmp_path: Path) -> None:
    """As on this machine: the proxy cannot be reached (here: a closed local port)."""
    env = go_env(tmp_path / "home", GOPROXY="http://127.0.0.1:9/", GOSUMDB="off")
    with pytest.raises(gomodules.DownloadError) as e:
        gomodules.download(GO, world["tools"], tmp_path / "cache", env=env)
    assert "is the Go module proxy reachable from here?" in str(e.value)
    assert "GOPROXY=http://127.0.0.1:9/" in str(e.value)
    assert not (tmp_path / "cache" / gomodules.RECORD).exists()


def test_verify_checks_the_cache_against_go_sum_without_go(world: dict[str, Path]) -> None:
    """``verify`` recomputes go.sum's h1: hashes (each module's zip and go.mod) in Python,
    the check Go makes when it reads a module, so a damaged mirror is found on the host."""
    tmp, tools = world["tmp"], world["tools"]
    assert gomodules.verify(tools, world["cache"]) == (4, [])  # 2 zips, 2 go.mod files
    bad = tampered_copy(world["cache"], tmp / "verify-bad")
    checked, problems = gomodules.verify(tools, bad)
    assert checked == 4
    assert len(problems) == 1 and problems[0].startswith("example.com/greet@v1.0.0: v1.0.0.zip")
    assert "go.sum says h1:" in problems[0]
    # what the guest gets pushed: the proxy layout, never the extracted sources
    files_pushed = gomodules.mirror_files(world["cache"].parent)
    assert f"{gomodules.DEFAULT_DIR}/{gomodules.RECORD}" in files_pushed
    assert f"{gomodules.DEFAULT_DIR}/cache/download/example.com/greet/@v/v1.0.0.zip" in files_pushed
    assert not any("@v1.0.0/" in f or f.endswith(".lock") for f in files_pushed)
