"""End-to-end tests of the source mirror: the real ``doit`` on throw-away projects whose
recipes point at a real local HTTP server (``tests/httpserver.py``) and whose ``mirror/``
starts empty.

What a user of ``doit mirror`` / ``doit`` sees: which files land in ``mirror/`` and where they
came from (the summary), ``mirror/SHA256SUMS`` accepted by ``sha256sum -c``, no-op runs that
neither download nor hash, faults of the network survived (cut bodies resumed, 503 retried,
404 skipped to the next URL, wrong bytes refused), corrupted mirror files replaced, kill -9
mid-download resumed, configured mirrors tried first, offline runs that stop before any task,
git snapshots made as live-bootstrap's ``mirror.sh`` makes them, and Debian's archive itself.
The unit-level behaviour of ``tasks.sources.download.fetch`` is tested in ``test_download.py``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import tomllib
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, Project, Result
from tests.httpserver import Request, Server, serve
from tests.test_engine import ok, stop, wait_for

INSTALL = 'mkdir -p "$DESTDIR$PREFIX/share" && cp data.txt "$DESTDIR$PREFIX/share/$PKG.txt"'

# `doit` with the bytes hashed by the run printed at exit: sha256 (tasks.sources.download, what a fetch
# task reads to verify a file) and xxh3 (tasks.store.checker, what file_dep checks read).
COUNTING = """\
import atexit, sys
import tasks.sources.download as download
from tasks.store import checker
read = [0]
_prefix = download._hash_prefix
def counting(path):
    h, n = _prefix(path)
    read[0] += n
    return h, n
download._hash_prefix = counting
atexit.register(lambda: sys.stderr.write(f"\\nHASHED sha256={read[0]} xxh3={checker.hashed_bytes}\\n"))
from doit.doit_cmd import DoitMain
from doit.cmd_base import DodoTaskLoader
sys.exit(DoitMain(DodoTaskLoader()).run(sys.argv[1:]))
"""


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Src:
    """A source file: its name and its bytes."""

    file: str
    data: bytes

    @property
    def sha(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def targz(top: str, files: dict[str, str | bytes]) -> bytes:
    """A real .tar.gz with top directory ``top/``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for rel, content in sorted(files.items()):
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(f"{top}/{rel}")
            info.size, info.mode, info.mtime = len(data), 0o644, 1_000_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def tarball(name: str, version: str = "1.0", blob: int = 0) -> Src:
    """``<name>-<version>.tar.gz`` holding ``data.txt`` = ``"<name> <version>\\n"`` (and
    ``blob`` random bytes, to make the download long enough to cut)."""
    files: dict[str, str | bytes] = {"data.txt": f"{name} {version}\n"}
    if blob:
        files["blob.bin"] = os.urandom(blob)
    return Src(f"{name}-{version}.tar.gz", targz(f"{name}-{version}", files))


def toml_source(**fields: object) -> str:
    """One source as a TOML inline table (JSON strings, lists and booleans are valid TOML)."""
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in fields.items()) + " }"


def write_recipe(
    project: Project,
    name: str,
    sources: list[dict[str, object]],
    *,
    version: str = "1.0",
    deps: tuple[str, ...] = (),
    install: str = INSTALL,
) -> Path:
    """A ``script`` recipe whose sources are exactly ``sources`` (nothing is put in mirror/)."""
    path = project.root / "recipes" / f"{name}.toml"
    path.write_text(
        f'version = "{version}"\n'
        f"depends = {json.dumps(list(deps))}\n"
        'build_system = "script"\n'
        f"script.install = '''{install}'''\n"
        f'[versions."{version}"]\n'
        f"sources = [{', '.join(toml_source(**s) for s in sources)}]\n"
    )
    return path


def served(project: Project, srv: Server, name: str, *, blob: int = 0, **extra: object) -> Src:
    """A package ``name`` whose one tarball is served by ``srv`` only (mirror/ stays empty)."""
    src = tarball(name, blob=blob)
    srv.files[src.file] = src.data  # type: ignore[index]
    write_recipe(
        project, name, [dict(file=src.file, sha256=src.sha, urls=[srv.url(src.file)], **extra)]
    )
    return src


def origins(r: Result) -> dict[str, str]:
    """The run's mirror summary: file -> where it came from."""
    return dict(re.findall(r"^  (\S+)  [\d.]+ MiB  from (.+)$", r.out, re.M))


def fetched_count(r: Result) -> int | None:
    m = re.search(r"^mirror: (\d+) file\(s\) fetched", r.out, re.M)
    return int(m.group(1)) if m else None


def gets(srv: Server, path: str | None = None) -> list[Request]:
    return [r for r in srv.requests if r.method == "GET" and path in (None, r.path)]


def mirror_files(project: Project) -> list[str]:
    return sorted(p.name for p in (project.root / "mirror").iterdir())


def share(project: Project, name: str) -> str:
    return project.installed(f"share/{name}.txt").read_text()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def counting_doit(project: Project, *args: str) -> tuple[Result, int, int]:
    """Run ``doit`` and return (result, bytes read for sha256, bytes read for xxh3)."""
    proc = subprocess.run(
        [sys.executable, "-c", COUNTING, *args],
        cwd=project.root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    m = re.search(r"^HASHED sha256=(\d+) xxh3=(\d+)$", proc.stderr, re.M)
    assert m, proc.stderr
    return Result(proc.returncode, proc.stdout, proc.stderr), int(m.group(1)), int(m.group(2))


@pytest.fixture
def srv() -> Iterator[Server]:
    """An upstream HTTP server with no files yet (``served`` adds them)."""
    with serve({}) as s:
        yield s


# --------------------------------------------------------------------------- 1. doit mirror


def test_mirror_fetches_every_source_and_writes_sha256sums(project: Project, srv: Server) -> None:
    a = served(project, srv, "a")
    b = served(project, srv, "b")
    r = ok(project.doit("mirror"))
    assert fetched_count(r) == 2, r.out
    assert origins(r) == {a.file: srv.url(a.file), b.file: srv.url(b.file)}
    assert sorted(r.ran) == ["mirror:SHA256SUMS", f"mirror:{a.file}", f"mirror:{b.file}"]
    assert mirror_files(project) == sorted(["SHA256SUMS", a.file, b.file])
    for src in (a, b):
        assert (project.root / "mirror" / src.file).read_bytes() == src.data
    check = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"],
        cwd=project.root / "mirror",
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert sorted(check.stdout.splitlines()) == [f"{a.file}: OK", f"{b.file}: OK"]
    assert not project.manifest("a").exists()  # `doit mirror` builds nothing

    before = list(srv.requests)
    r, sha_bytes, xxh_bytes = counting_doit(project, "mirror")
    ok(r)
    assert srv.requests == before  # no download
    assert r.ran == [], r.out
    assert set(r.uptodate) == {"mirror:SHA256SUMS", f"mirror:{a.file}", f"mirror:{b.file}"}
    assert (sha_bytes, xxh_bytes) == (0, 0)  # stat only, nothing hashed
    assert fetched_count(r) is None, r.out  # nothing fetched: no summary


def test_touched_mirror_file_is_recognised_by_its_digest_without_sha256(
    project: Project, srv: Server
) -> None:
    a = served(project, srv, "a")
    ok(project.doit())
    path = project.root / "mirror" / a.file
    later = time.time_ns() + 5 * 10**9
    os.utime(path, ns=(later, later))  # stat changed, content not
    before = list(srv.requests)

    r, sha_bytes, xxh_bytes = counting_doit(project)
    ok(r)
    assert srv.requests == before
    assert r.ran == [], r.out  # not re-verified, nothing rebuilt
    assert sha_bytes == 0  # the xxh3 digest recorded at verification recognises it
    assert xxh_bytes == len(a.data)  # read once for the fetch task and the package
    assert path.read_bytes() == a.data

    r, sha_bytes, xxh_bytes = counting_doit(project)
    ok(r)
    assert r.ran == [] and (sha_bytes, xxh_bytes) == (0, 0), r.out


# --------------------------------------------------------------------------- 2. faults


def test_body_cut_mid_transfer_is_resumed_and_the_build_succeeds(
    project: Project, srv: Server
) -> None:
    a = served(project, srv, "a", blob=300_000)
    srv.set_fault(a.file, cut_after=100_000)
    r = ok(project.doit())
    assert [g.range for g in gets(srv)] == [None, "bytes=100000-"]
    assert "    recovered: transfer cut 1 times, resumed each time" in r.out
    assert origins(r) == {a.file: srv.url(a.file)}
    assert (project.root / "mirror" / a.file).read_bytes() == a.data
    assert not (project.root / "mirror" / f"{a.file}.part").exists()
    assert r.packages_ran() == ["a"]
    assert share(project, "a") == "a 1.0\n"


def test_503_then_200_is_retried(project: Project, srv: Server) -> None:
    a = served(project, srv, "a")
    srv.set_fault(a.file, fail_first=[503])
    r = ok(project.doit())
    assert len(gets(srv)) == 2
    assert origins(r) == {a.file: srv.url(a.file)}
    assert share(project, "a") == "a 1.0\n"


def test_50_mb_over_a_hostile_link_arrive_in_one_run(project: Project, srv: Server) -> None:
    """503s first, then every response cut by a TCP reset after 3 MB, Range honoured only on
    every other request: one `doit mirror` gets the file, and the summary says what it took."""
    a = served(project, srv, "a", blob=50 << 20)
    srv.set_fault(
        a.file, fail_first=[503] * 8, cut_after=3 << 20, cut_times=10**6, range_every=2, rst=True
    )
    r = ok(project.doit("mirror"))
    assert (project.root / "mirror" / a.file).read_bytes() == a.data
    assert len(gets(srv)) > 50 / 3
    for said in ("HTTP 503 8 times before it answered", "resumed each time", "ignored Range"):
        assert said in r.out, r.out


def test_404_on_the_first_url_uses_the_second(project: Project, srv: Server) -> None:
    a = tarball("a")
    with serve({a.file: a.data}) as second:
        urls = [srv.url(a.file), second.url(a.file)]  # srv has no such file: 404
        write_recipe(project, "a", [dict(file=a.file, sha256=a.sha, urls=urls)])
        r = ok(project.doit())
        assert [g.path for g in gets(srv)] == [a.file]
        assert len(gets(second)) == 1
    assert origins(r) == {a.file: urls[1]}
    assert f"    recovered: {urls[0]}: HTTP 404 Not Found (next URL tried)" in r.out
    assert (project.root / "mirror" / a.file).read_bytes() == a.data
    assert share(project, "a") == "a 1.0\n"


def test_wrong_bytes_from_the_only_url_fail_and_leave_nothing(
    project: Project, srv: Server
) -> None:
    a = served(project, srv, "a")
    srv.set_fault(a.file, corrupt=True)
    bad = hashlib.sha256(bytes(255 - x for x in a.data)).hexdigest()
    r = project.doit("mirror")
    assert r.code != 0, r.out
    msg = r.out + r.err
    assert srv.url(a.file) in msg
    assert a.sha in msg and bad in msg
    assert 'the sha256 is pinned by recipes/a.toml: versions."1.0".sources[0].sha256' in msg
    assert f"FAILED mirror:{a.file}" in r.out
    assert not (project.root / "mirror" / a.file).exists()
    assert not (project.root / "mirror" / f"{a.file}.part").exists()
    assert not project.manifest("a").exists()


def test_failed_fetch_is_reported_without_a_traceback(project: Project, srv: Server) -> None:
    a = served(project, srv, "a")
    srv.set_fault(a.file, corrupt=True)
    r = project.doit("mirror")
    assert r.code != 0
    assert f"could not fetch {a.file}:" in r.out
    assert "Traceback" not in r.out + r.err, r.out


def failing_fetch(project: Project, srv: Server, stall: float = 0) -> tuple[Src, Src]:
    """a's source arrives at once; b's (after ``stall`` seconds) comes with wrong bytes."""
    a = served(project, srv, "a")
    b = served(project, srv, "b")
    srv.set_fault(
        b.file, corrupt=True, **({"stall_after": 16, "stall_for": stall} if stall else {})
    )
    return a, b


def test_failed_fetch_stops_the_run_before_any_build(project: Project, srv: Server) -> None:
    a, b = failing_fetch(project, srv)
    r = project.doit()
    assert r.code != 0, r.out
    assert f"FAILED mirror:{b.file}" in r.out
    assert r.packages_ran() == [], r.out
    assert not project.manifest("a").exists()
    assert not project.installed("share/a.txt").exists()


def test_failed_fetch_in_a_parallel_run_builds_nothing_that_needs_it(
    project: Project, srv: Server
) -> None:
    """Under -n N a package waits for its own sources only (a serial run fetches all first):
    the failed fetch fails the run, the package that needed it is not built, and what was
    built is complete and stays done."""
    a, b = failing_fetch(project, srv, stall=3)  # a is fetched and may build meanwhile
    r = project.doit("-n", "2")
    assert r.code != 0, r.out
    assert f"FAILED mirror:{b.file}" in r.out
    assert "b" not in r.packages_ran()
    assert not project.manifest("b").exists()
    if "a" in r.packages_ran():
        assert project.installed("share/a.txt").is_file()
        assert "a" in project.doit("a").uptodate


# --------------------------------------------------------------------------- 3. bit rot


@pytest.mark.parametrize("damage", ["flipped-byte", "truncated", "deleted"])
def test_damaged_mirror_file_is_refetched_and_nothing_rebuilt(
    project: Project, srv: Server, damage: str
) -> None:
    a = served(project, srv, "a")
    ok(project.doit())
    manifest = project.manifest("a").read_bytes()
    path = project.root / "mirror" / a.file
    rotten = bytearray(a.data)
    if damage == "flipped-byte":
        rotten[len(rotten) // 2] ^= 0xFF  # same size
    else:
        del rotten[len(rotten) // 2 :]
    path.write_bytes(bytes(rotten))
    if damage == "deleted":
        path.unlink()
    before = len(gets(srv))

    r = ok(project.doit())
    assert len(gets(srv)) == before + 1  # fetched again
    assert path.read_bytes() == a.data
    bad = project.root / "mirror" / f"{a.file}.bad"
    if damage == "deleted":
        assert not bad.exists()
    else:  # the damaged copy is kept for inspection, under a name nothing uses
        assert bad.read_bytes() == bytes(rotten)
        assert f"kept as mirror/{a.file}.bad, fetched again" in r.out
    assert f"mirror:{a.file}" in r.ran
    assert origins(r) == {a.file: srv.url(a.file)}
    # the source's content is what the package was built from: nothing to rebuild
    assert r.packages_ran() == [], r.out
    assert "a" in r.uptodate, r.out
    assert project.manifest("a").read_bytes() == manifest
    assert ok(project.doit()).ran == []


def test_new_sha256_for_the_same_file_name_is_fetched(project: Project, srv: Server) -> None:
    a = served(project, srv, "a")
    ok(project.doit())
    assert share(project, "a") == "a 1.0\n"
    rerolled = Src(a.file, targz("a-1.0", {"data.txt": "a 1.0 re-rolled\n"}))
    srv.files[a.file] = rerolled.data  # type: ignore[index]
    write_recipe(project, "a", [dict(file=a.file, sha256=rerolled.sha, urls=[srv.url(a.file)])])

    r = ok(project.doit())
    assert sha256(project.root / "mirror" / a.file) == rerolled.sha, r.out
    assert f"mirror:{a.file}" in r.ran, r.out
    assert share(project, "a") == "a 1.0 re-rolled\n"
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=project.root / "mirror")
    assert check.returncode == 0


# --------------------------------------------------------------------------- 4. parallel


def test_two_fetches_run_in_parallel(project: Project, srv: Server) -> None:
    a = served(project, srv, "a")
    b = served(project, srv, "b")
    for src in (a, b):
        srv.set_fault(src.file, stall_after=16, stall_for=2)
    parts = [project.root / "mirror" / f"{s.file}.part" for s in (a, b)]
    proc = project.popen("-n", "2", "mirror")
    try:
        # both downloads are under way at the same time (each waits in its stall)
        wait_for(lambda: all(p.exists() for p in parts), proc, "both downloads to start")
        out, err = proc.communicate(timeout=60)
    finally:
        stop(proc)
    r = ok(Result(proc.returncode, out, err))
    assert origins(r) == {a.file: srv.url(a.file), b.file: srv.url(b.file)}
    for src in (a, b):
        assert sha256(project.root / "mirror" / src.file) == src.sha
    assert not any(p.exists() for p in parts)
    assert ok(project.doit("mirror")).ran == []


# --------------------------------------------------------------------------- 5. kill -9


def test_kill_9_mid_download_leaves_a_part_that_the_next_run_resumes(
    project: Project, srv: Server
) -> None:
    big = Src("big-1.0.bin", os.urandom(64 << 20))
    srv.files[big.file] = big.data  # type: ignore[index]
    write_recipe(
        project,
        "big",
        [dict(file=big.file, sha256=big.sha, urls=[srv.url(big.file)], unpack=False)],
        install="true",
    )
    srv.set_fault(big.file, stall_after=(5 << 20) + 1234, stall_for=30)
    dest = project.root / "mirror" / big.file
    part = project.root / "mirror" / f"{big.file}.part"
    proc = project.popen("mirror")
    try:
        wait_for(lambda: part.exists() and part.stat().st_size >= 1 << 20, proc, "bytes in .part")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
    finally:
        stop(proc)
    assert not dest.exists()  # nothing half-written under the final name
    have = part.stat().st_size
    assert 0 < have < len(big.data)
    assert part.read_bytes() == big.data[:have]

    r = ok(project.doit("mirror"))
    assert gets(srv)[-1].range == f"bytes={have}-"
    assert len(gets(srv)) == 2
    assert sha256(dest) == big.sha
    assert not part.exists()
    assert origins(r) == {big.file: srv.url(big.file)}


# --------------------------------------------------------------------------- 6. collisions


def test_same_file_name_with_two_sha256_is_refused(project: Project, srv: Server) -> None:
    one, two = Src("common-1.0.tar.gz", b"one"), Src("common-1.0.tar.gz", b"two")
    write_recipe(project, "a", [dict(file=one.file, sha256=one.sha, urls=[srv.url("x")])])
    write_recipe(project, "b", [dict(file=two.file, sha256=two.sha, urls=[srv.url("y")])])
    r = project.doit("list")
    assert r.code == 3, r.out + r.err
    msg = r.out + r.err
    assert "recipes/a.toml" in msg and "recipes/b.toml" in msg, msg
    assert one.sha in msg and two.sha in msg
    assert not (project.root / "cache" / "state" / "journal").exists()  # nothing was run


def test_same_file_name_collision_is_reported_like_any_recipe_error(
    project: Project, srv: Server
) -> None:
    one, two = Src("common-1.0.tar.gz", b"one"), Src("common-1.0.tar.gz", b"two")
    write_recipe(project, "a", [dict(file=one.file, sha256=one.sha, urls=[srv.url("x")])])
    write_recipe(project, "b", [dict(file=two.file, sha256=two.sha, urls=[srv.url("y")])])
    r = project.doit("list")
    assert r.code == 3
    msg = r.out + r.err
    assert "Traceback" not in msg, msg
    assert msg.startswith("ERROR: invalid recipes or config:\n"), msg


def test_same_file_with_the_same_sha256_is_fetched_once(project: Project, srv: Server) -> None:
    a = served(project, srv, "a")
    write_recipe(project, "b", [dict(file=a.file, sha256=a.sha, urls=[srv.url(a.file)])])
    r = ok(project.doit())
    assert len(gets(srv)) == 1
    assert r.ran.count(f"mirror:{a.file}") == 1
    assert share(project, "a") == share(project, "b") == "a 1.0\n"


# --------------------------------------------------------------------------- 7. mirrors


@pytest.mark.parametrize("kind", ["directory", "file-url", "http"])
def test_configured_mirror_is_tried_before_upstream(
    project: Project, srv: Server, tmp_path: Path, kind: str
) -> None:
    a = served(project, srv, "a")
    b = served(project, srv, "b")  # only upstream has b
    local = tmp_path / "local mirror"
    local.mkdir()
    (local / a.file).write_bytes(a.data)
    with serve(local) as http_mirror:
        base = {
            "directory": os.path.relpath(local, project.root),
            "file-url": local.as_uri(),
            "http": f"http://127.0.0.1:{http_mirror.port}",
        }[kind]
        project.config(f'platform = "sandbox"\njobs = 2\nmirrors = [{json.dumps(base)}]\n')
        r = ok(project.doit())
        mirror_gets = [g.path for g in gets(http_mirror)]
    expected_a = {
        "directory": (local / a.file).as_uri(),
        "file-url": (local / a.file).as_uri(),
        "http": f"{base}/{a.file}",
    }[kind]
    assert origins(r) == {a.file: expected_a, b.file: srv.url(b.file)}
    assert [g.path for g in gets(srv)] == [b.file]  # upstream: only the file the mirror lacks
    if kind == "http":
        assert sorted(mirror_gets) == sorted([a.file, b.file])  # b: 404 there first
    assert share(project, "a") == "a 1.0\n" and share(project, "b") == "b 1.0\n"


# --------------------------------------------------------------------------- 8. offline


def offline_config(project: Project, mirrors: list[str] | None = None) -> None:
    text = 'platform = "sandbox"\njobs = 2\noffline = true\n'
    if mirrors is not None:
        text += f"mirrors = {json.dumps(mirrors)}\n"
    project.config(text)


def test_offline_with_missing_sources_stops_before_any_task(
    project: Project, srv: Server, tmp_path: Path
) -> None:
    a = served(project, srv, "a")
    b = tarball("b")
    pool = "main/b/b/b_1.0.orig.tar.gz"
    with serve({b.file: b.data}) as other:
        urls = [other.url(b.file), srv.url(b.file)]
        source = dict(file=b.file, sha256=b.sha, urls=urls, debian=pool)
        write_recipe(project, "b", [source], deps=("a",))
        offline_config(project)
        with project.root.joinpath("azl-bootstrap.toml").open("a") as f:
            f.write(f"debian_archive = {json.dumps(srv.url('debian'))}\n")
        r = project.doit()
        assert other.requests == []
    assert r.code != 0, r.out
    msg = r.out + r.err
    assert r.ran == [], r.out
    assert "2 source(s)" in msg, msg
    assert f"{a.file} (for a)" in msg and f"{b.file} (for b)" in msg, msg
    assert f"can be fetched from {srv.url(a.file)}" in msg
    for url in [*urls, srv.url(f"debian/pool/{pool}")]:
        assert f"can be fetched from {url}" in msg
    assert srv.requests == []
    assert not (project.root / "cache" / "manifests").exists()
    assert not (project.root / "cache" / "build").exists()
    assert mirror_files(project) == []

    # one package asked for: the same check for its own sources
    r = project.doit("a")
    assert r.code != 0 and r.ran == [], r.out
    assert f"{a.file} (for a)" in r.out + r.err and b.file not in r.out + r.err

    # the files in a local mirror directory: the same offline run succeeds, no HTTP at all
    local = tmp_path / "usb stick"
    local.mkdir()
    for src in (a, b):
        (local / src.file).write_bytes(src.data)
    offline_config(project, [str(local)])
    r = ok(project.doit())
    assert srv.requests == []
    assert origins(r) == {s.file: (local / s.file).as_uri() for s in (a, b)}
    assert r.packages_ran() == ["a", "b"]
    assert share(project, "b") == "b 1.0\n"


def test_offline_run_uses_a_mirror_copied_from_an_online_machine(
    tmp_path: Path, srv: Server
) -> None:
    online, offline = Project(tmp_path / "online"), Project(tmp_path / "offline")
    for project in (online, offline):
        served(project, srv, "a")
        served(project, srv, "b")
    ok(online.doit("mirror"))
    before = list(srv.requests)
    shutil.copytree(online.root / "mirror", offline.root / "mirror", dirs_exist_ok=True)
    offline_config(offline)
    r = ok(offline.doit())
    assert srv.requests == before
    assert "mirror: 0 file(s) fetched, 0.0 MiB; 2 re-verified in place" in r.out
    assert r.packages_ran() == ["a", "b"]
    assert ok(offline.doit()).ran == []


# --------------------------------------------------------------------------- 9. git


def git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
        "GIT_AUTHOR_DATE": "2001-09-09T01:46:40Z",
        "GIT_COMMITTER_DATE": "2001-09-09T01:46:40Z",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, check=True)
    return proc.stdout.decode().strip()


def git_repo(path: Path, files: dict[str, str]) -> str:
    """A real repository at ``path`` with one commit of ``files``, tagged v1.0; the commit."""
    path.mkdir(parents=True)
    git(path, "init", "--quiet", "--initial-branch=main")
    for rel, text in files.items():
        (path / rel).write_text(text)
    git(path, "add", ".")
    git(path, "commit", "--quiet", "-m", "one")
    git(path, "tag", "v1.0")
    return git(path, "rev-parse", "HEAD")


def snapshot(repo: Path, ref: str, prefix: str) -> bytes:
    """``git archive --format=tar --prefix=<prefix>/ <ref> | gzip -n``, made by the test."""
    tar = subprocess.run(
        ["git", "-C", str(repo), "archive", "--format=tar", f"--prefix={prefix}/", ref],
        capture_output=True,
        check=True,
    ).stdout
    return subprocess.run(["gzip", "-n"], input=tar, capture_output=True, check=True).stdout


@pytest.mark.parametrize("use_tag", [False, True], ids=["commit", "tag"])
def test_git_source_is_snapshotted_verified_and_built(
    project: Project, tmp_path: Path, use_tag: bool
) -> None:
    repo = tmp_path / "repos" / "tool"
    commit = git_repo(repo, {"data.txt": "tool from git\n"})
    ref = "v1.0" if use_tag else commit
    prefix = "tool-1.0" if use_tag else f"tool-{commit}"  # v1.0 -> 1.0, as mirror.sh names it
    data = snapshot(repo, ref, prefix)
    file = f"tool-{ref}.tar.gz"
    write_recipe(
        project,
        "tool",
        [dict(file=file, sha256=hashlib.sha256(data).hexdigest(), git=repo.as_uri(), ref=ref)],
    )
    r = ok(project.doit())
    assert origins(r) == {file: f"git {repo.as_uri()} {ref}"}
    assert (project.root / "mirror" / file).read_bytes() == data
    with tarfile.open(project.root / "mirror" / file) as tar:
        assert f"{prefix}/data.txt" in tar.getnames()
    assert r.packages_ran() == ["tool"]
    assert share(project, "tool") == "tool from git\n"
    assert ok(project.doit()).ran == []


def test_git_source_pinned_to_a_new_commit_is_fetched_into_the_cached_clone(
    project: Project, tmp_path: Path
) -> None:
    repo = tmp_path / "repos" / "tool"
    first = git_repo(repo, {"data.txt": "one\n"})
    data = snapshot(repo, first, f"tool-{first}")
    source = dict(file=f"tool-{first}.tar.gz", sha256=hashlib.sha256(data).hexdigest())
    write_recipe(project, "tool", [dict(**source, git=repo.as_uri(), ref=first)])
    ok(project.doit())
    assert share(project, "tool") == "one\n"

    (repo / "data.txt").write_text("two\n")
    git(repo, "commit", "--quiet", "-am", "two")
    second = git(repo, "rev-parse", "HEAD")
    data = snapshot(repo, second, f"tool-{second}")
    source = dict(file=f"tool-{second}.tar.gz", sha256=hashlib.sha256(data).hexdigest())
    write_recipe(project, "tool", [dict(**source, git=repo.as_uri(), ref=second)])
    r = ok(project.doit())
    assert origins(r) == {source["file"]: f"git {repo.as_uri()} {second}"}
    assert r.packages_ran() == ["tool"]
    assert share(project, "tool") == "two\n"


def test_git_source_with_a_wrong_sha256_fails_and_leaves_nothing(
    project: Project, tmp_path: Path
) -> None:
    repo = tmp_path / "repos" / "tool"
    commit = git_repo(repo, {"data.txt": "tool from git\n"})
    got = hashlib.sha256(snapshot(repo, commit, f"tool-{commit}")).hexdigest()
    wrong = "0" * 64
    file = f"tool-{commit}.tar.gz"
    write_recipe(project, "tool", [dict(file=file, sha256=wrong, git=repo.as_uri(), ref=commit)])
    r = project.doit()
    assert r.code != 0, r.out
    msg = r.out + r.err
    assert f"FAILED mirror:{file}" in r.out
    assert repo.as_uri() in msg and wrong in msg and got in msg, msg
    assert mirror_files(project) == []
    assert not project.manifest("tool").exists()


@pytest.mark.parametrize("pool_has_it", [True, False], ids=["debian-pool", "git-snapshot"])
def test_sources_are_tried_mirror_upstream_debian_then_git(
    project: Project, srv: Server, tmp_path: Path, pool_has_it: bool
) -> None:
    repo = tmp_path / "repos" / "tool"
    commit = git_repo(repo, {"data.txt": "tool from git\n"})
    data = snapshot(repo, commit, f"tool-{commit}")
    file, pool = f"tool-{commit}.tar.gz", "main/t/tool/tool_1.0.orig.tar.gz"
    if pool_has_it:
        srv.files[f"debian/pool/{pool}"] = data  # type: ignore[index]
    project.config(
        'platform = "sandbox"\njobs = 2\n'
        f"mirrors = [{json.dumps(srv.url('m'))}]\n"
        f"debian_archive = {json.dumps(srv.url('debian'))}\n"
    )
    source = dict(file=file, sha256=hashlib.sha256(data).hexdigest(), urls=[srv.url(f"up/{file}")])
    write_recipe(project, "tool", [dict(**source, debian=pool, git=repo.as_uri(), ref=commit)])
    r = ok(project.doit())
    assert [g.path for g in gets(srv)] == [f"m/{file}", f"up/{file}", f"debian/pool/{pool}"]
    used = srv.url(f"debian/pool/{pool}") if pool_has_it else f"git {repo.as_uri()} {commit}"
    assert origins(r) == {file: used}
    assert (project.root / "cache" / "git").exists() is not pool_has_it  # cloned only if needed
    assert share(project, "tool") == "tool from git\n"


# --------------------------------------------------------------------------- 10. network


def _host_resolves(url: str) -> bool:
    try:
        socket.getaddrinfo(urllib.parse.urlsplit(url).hostname, 443)
    except OSError:
        return False
    return True


@pytest.mark.network
def test_real_recipes_are_fetched_from_debians_archive(project: Project, archive: str) -> None:
    sources = []  # (file, sha256, upstream URLs, pool URL) of what the sandbox builds
    for name in ("pcre2", "grep"):
        recipe = shutil.copy(REPO / "recipes" / f"{name}.toml", project.root / "recipes")
        with open(recipe, "rb") as f:
            data = tomllib.load(f)
        version = data.get("platform", {}).get("sandbox", {}).get("version", data["version"])
        for s in data["versions"][version]["sources"]:
            assert s.get("debian"), f"{name} {version}: {s['file']} has no Debian pool path"
            sources.append((s["file"], s["sha256"], s.get("urls", []), s["debian"]))
    r = ok(project.doit("mirror"))
    got = origins(r)
    assert fetched_count(r) == len(sources) >= 2, r.out
    for file, sha, upstream, pool in sources:
        # the recipe's own URLs come first; where they are out of reach, the pool is used
        allowed = {f"{archive}/pool/{pool}"} | {u for u in upstream if _host_resolves(u)}
        assert got.get(file) in allowed, r.out
        assert sha256(project.root / "mirror" / file) == sha
    assert not project.manifest("pcre2").exists()
    assert ok(project.doit("mirror")).ran == []


# --------------------------------------------------------------------------- a full disk


@pytest.fixture
def small_mirror(project: Project) -> Iterator[Path]:
    """mirror/ on a real 1 MiB tmpfs (needs root); unmounted afterwards."""
    mirror = project.root / "mirror"
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mirror)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mirror
    finally:
        subprocess.run(["umount", str(mirror)], check=True)


@pytest.mark.parametrize("length_known", [True, False], ids=["refused-up-front", "disk-fills"])
def test_full_disk_is_a_clear_error_and_leaves_no_file(
    project: Project, srv: Server, small_mirror: Path, length_known: bool
) -> None:
    big = served(project, srv, "big", blob=3 << 20)  # random: does not compress below 1 MiB
    if not length_known:  # no Content-Length: the writes run into the full disk
        srv.set_fault(big.file, no_length=True)
    r = project.doit("mirror")
    assert r.code != 0, r.out
    out = r.out + r.err
    assert "Traceback" not in out, out
    assert big.file in out
    assert ("free in" in out) if length_known else ("no space left" in out), out
    assert not (small_mirror / big.file).exists()  # never under its final name
    assert "a" not in r.packages_ran()
