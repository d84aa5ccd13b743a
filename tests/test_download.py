"""Tests of tasks.sources.download against a real local HTTP server (tests/httpserver.py)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tasks.sources.download import FetchError, debian_archive_uri, fetch, make_session, sha256_file
from tests.httpserver import serve

DATA = os.urandom(300_000)
SHA = hashlib.sha256(DATA).hexdigest()
FAST = {"timeout": (5.0, 5.0)}


def gets(srv) -> list:
    return [r for r in srv.requests if r.method == "GET"]


def test_cut_mid_transfer_is_resumed_with_range(tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    with serve({"f.bin": DATA}, cut_after=100_000) as srv:
        assert fetch([srv.url("f.bin")], dest, SHA, **FAST) == srv.url("f.bin")
        assert [r.range for r in gets(srv)] == [None, "bytes=100000-"]
    assert dest.read_bytes() == DATA
    assert not Path(f"{dest}.part").exists()


def test_range_ignored_skips_the_held_bytes(tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    notes: list[str] = []
    with serve({"f.bin": DATA}, cut_after=100_000, ignore_range=True) as srv:
        fetch([srv.url("f.bin")], dest, SHA, notes=notes, **FAST)
        assert [r.range for r in gets(srv)] == [None, "bytes=100000-"]
    assert dest.read_bytes() == DATA
    assert any("server ignored Range 1 times" in n for n in notes)


def test_range_ignored_and_held_bytes_differ_refetches_from_there(tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    Path(f"{dest}.part").write_bytes(DATA[:5000] + b"x" * 95_000)
    notes: list[str] = []
    with serve({"f.bin": DATA}, ignore_range=True) as srv:
        fetch([srv.url("f.bin")], dest, SHA, notes=notes, **FAST)
        assert [r.range for r in gets(srv)] == ["bytes=100000-"]
    assert dest.read_bytes() == DATA
    assert "the server's file differs from the held f.bin.part at byte 5000" in "\n".join(notes)


def test_stale_part_with_range_ignored_is_truncated(tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    Path(f"{dest}.part").write_bytes(b"garbage" * 1000)
    with serve({"f.bin": DATA}, ignore_range=True) as srv:
        fetch([srv.url("f.bin")], dest, SHA, **FAST)
    assert dest.read_bytes() == DATA


def test_503_then_200_is_retried(tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    notes: list[str] = []
    with serve({"f.bin": DATA}, fail_first=[503, 503]) as srv:
        fetch([srv.url("f.bin")], dest, SHA, notes=notes, **FAST)
        assert len(gets(srv)) == 3
    assert notes == ["HTTP 503 2 times before it answered"]
    assert dest.read_bytes() == DATA


def test_404_on_first_url_uses_second(tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    notes: list[str] = []
    with serve({"gone/f.bin": DATA, "f.bin": DATA}) as srv:
        srv.set_fault("gone/f.bin", status=404)
        urls = [srv.url("missing/f.bin"), srv.url("gone/f.bin"), srv.url("f.bin")]
        assert fetch(urls, dest, SHA, notes=notes, **FAST) == urls[2]
    assert notes == [f"{u}: HTTP 404 Not Found (next URL tried)" for u in urls[:2]]
    assert dest.read_bytes() == DATA


def test_wrong_bytes_everywhere_raises_and_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    bad = hashlib.sha256(bytes(255 - b for b in DATA)).hexdigest()
    with serve({"f.bin": DATA}, corrupt=True) as a, serve({"f.bin": DATA}, corrupt=True) as b:
        urls = [a.url("f.bin"), b.url("f.bin")]
        with pytest.raises(FetchError) as err:
            fetch(urls, dest, SHA, **FAST)
    msg = str(err.value)
    for url in urls:
        assert f"{url}: sha256 mismatch: expected {SHA}, got {bad}" in msg
    assert not dest.exists()
    assert not Path(f"{dest}.part").exists()


def test_all_urls_failing_lists_each_reason(tmp_path: Path) -> None:
    with serve({}) as srv, pytest.raises(FetchError) as err:
        fetch([srv.url("a"), "file:///nonexistent/x"], tmp_path / "x", SHA, **FAST)
    assert f"{srv.url('a')}: HTTP 404" in str(err.value)
    assert "file:///nonexistent/x: " in str(err.value)


def test_existing_part_prefix_is_resumed(tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    Path(f"{dest}.part").write_bytes(DATA[:12345])
    with serve({"f.bin": DATA}) as srv:
        fetch([srv.url("f.bin")], dest, SHA, **FAST)
        assert [r.range for r in gets(srv)] == ["bytes=12345-"]
    assert dest.read_bytes() == DATA


def test_complete_part_answered_416_is_verified(tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    Path(f"{dest}.part").write_bytes(DATA)
    with serve({"f.bin": DATA}) as srv:
        fetch([srv.url("f.bin")], dest, SHA, **FAST)
        assert [r.range for r in gets(srv)] == [f"bytes={len(DATA)}-"]
    assert dest.read_bytes() == DATA


def test_wrong_stale_part_is_refetched_from_zero(tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    Path(f"{dest}.part").write_bytes(b"x" * 1000)
    with serve({"f.bin": DATA}) as srv:
        fetch([srv.url("f.bin")], dest, SHA, **FAST)
        assert [r.range for r in gets(srv)] == ["bytes=1000-", None]
    assert dest.read_bytes() == DATA


def test_tries_without_progress_give_up_and_keep_prefix(tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    Path(f"{dest}.part").write_bytes(DATA[:30_000])
    with serve({"f.bin": DATA}, cut_after=0, cut_times=99) as srv:
        with pytest.raises(FetchError) as err:
            fetch([srv.url("f.bin")], dest, SHA, attempts=3, **FAST)
        assert len(gets(srv)) == 3
    assert "transfer cut (connection closed before the end of the body)" in str(err.value)
    assert "3 tries in a row brought no new byte (30000 bytes kept in f.bin.part" in str(err.value)
    assert not dest.exists()
    assert Path(f"{dest}.part").read_bytes() == DATA[:30_000]


def test_cuts_with_progress_go_on_past_the_attempts(tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    with serve({"f.bin": DATA}, cut_after=10_000, cut_times=99) as srv:
        fetch([srv.url("f.bin")], dest, SHA, attempts=3, **FAST)
        assert len(gets(srv)) == 30
    assert dest.read_bytes() == DATA


def test_time_cap_gives_up(tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    gave_up = r"gave up after 0 s \(\d+ bytes kept in f.bin.part"
    with (
        serve({"f.bin": DATA}, cut_after=1_000, cut_times=999) as srv,
        pytest.raises(FetchError, match=gave_up),
    ):
        fetch([srv.url("f.bin")], dest, SHA, time_cap=0.3, **FAST)
    assert 0 < Path(f"{dest}.part").stat().st_size < len(DATA)


def test_read_timeout_mid_body_keeps_every_byte_received(tmp_path: Path) -> None:
    big = os.urandom(3 << 20)
    dest = tmp_path / "f.bin"
    with serve({"f.bin": big}, stall_after=(1 << 20) + 5000, stall_for=3) as srv:
        notes: list[str] = []
        fetch(
            [srv.url("f.bin")], dest, hashlib.sha256(big).hexdigest(), timeout=(5, 0.5), notes=notes
        )
        assert [r.range for r in gets(srv)] == [None, f"bytes={(1 << 20) + 5000}-"]
    assert dest.read_bytes() == big
    assert notes == ["transfer cut 1 times, resumed each time"]


def test_file_url_and_missing_directory(tmp_path: Path) -> None:
    src = tmp_path / "src dir" / "f.bin"
    src.parent.mkdir()
    src.write_bytes(DATA)
    dest = tmp_path / "new" / "deeper" / "f.bin"
    assert fetch([src.as_uri()], dest, SHA) == src.as_uri()
    assert dest.read_bytes() == DATA
    assert sha256_file(dest) == SHA


def test_progress_bar_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with serve({"f.bin": DATA}) as srv:
        fetch([srv.url("f.bin")], tmp_path / "f.bin", SHA, progress=True, **FAST)
        fetch([srv.url("f.bin")], tmp_path / "g.bin", SHA, progress=False, **FAST)
    err = capsys.readouterr().err
    assert "f.bin" in err and "g.bin" not in err


def test_make_session() -> None:
    s = make_session(retries=3)
    assert s.headers["Accept-Encoding"] == "identity"
    for prefix in ("http://", "https://"):
        retry = s.get_adapter(prefix + "x").max_retries
        assert retry.total == 3 and 503 in retry.status_forcelist and 429 in retry.status_forcelist


DEB822 = """\
# a comment
Types: deb
URIs: http://security.example/debian-security
Suites: trixie-security
Components: main

Types: deb deb-src
URIs: http://mirror.example/debian/
Suites: trixie trixie-updates
Components: main
"""


def test_debian_archive_uri_deb822(tmp_path: Path) -> None:
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(DEB822)
    (d / "other.list.disabled").write_text("deb http://other.example/debian trixie main\n")
    (tmp_path / "sources.list").write_text("deb http://late.example/debian trixie main\n")
    paths = (str(d), str(tmp_path / "sources.list"))
    assert debian_archive_uri(paths) == "http://mirror.example/debian"


def test_debian_archive_uri_one_line(tmp_path: Path) -> None:
    f = tmp_path / "sources.list"
    f.write_text(
        "# deb http://commented.example/debian trixie main\n"
        "deb http://security.example/debian-security trixie-security main\n"
        "deb-src http://src.example/debian trixie main\n"
        "deb [arch=amd64 signed-by=/x.gpg] http://mirror.example/debian/ trixie main\n"
    )
    assert debian_archive_uri([str(f)]) == "http://mirror.example/debian"


def test_debian_archive_uri_prefers_debian_and_none(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "a-vendor.list").write_text("deb https://vendor.example/apt stable main\n")
    (d / "b.list").write_text("deb http://mirror.example/debian trixie main\n")
    assert debian_archive_uri([str(d)]) == "http://mirror.example/debian"
    assert debian_archive_uri([str(tmp_path / "nothing")]) is None


REAL = {
    "pool/main/p/pcre2/pcre2_10.46.orig.tar.gz": (
        "8d28d7f2c3b970c3a4bf3776bcbb5adfc923183ce74bc8df1ebaad8c1985bd07"
    ),
    "pool/main/l/lua5.4/lua5.4_5.4.7.orig.tar.gz": (
        "9fbf5e28ef86c69858f6d3d34eccc32e911c1a28b4120ff3e84aaa70cfbf1e30"
    ),
}


@pytest.mark.network
@pytest.mark.parametrize("path", sorted(REAL), ids=lambda p: p.rsplit("/", 1)[1])
def test_real_archive(archive: str, path: str, tmp_path: Path) -> None:
    url = f"{archive}/{path}"
    dest = tmp_path / path.rsplit("/", 1)[1]
    assert fetch([url], dest, REAL[path], timeout=(10, 60)) == url
    assert sha256_file(dest) == REAL[path]


# ---------------------------------------------------------------- hostile links, 50 MB each

BIG = os.urandom(50 << 20)
BIG_SHA = hashlib.sha256(BIG).hexdigest()
CUT = 3 << 20  # every response is cut after 3 MB of body, forever
HOSTILE = {
    "cut every 3 MB after 8 x 503": dict(cut_after=CUT, cut_times=10**6, fail_first=[503] * 8),
    "Range honoured every other request": dict(cut_after=CUT, cut_times=10**6, range_every=2),
    "cut by TCP reset every 3 MB": dict(cut_after=CUT, cut_times=10**6, rst=True),
}


@pytest.mark.parametrize("faults", HOSTILE.values(), ids=list(HOSTILE))
def test_hostile_link_finishes_in_one_run(tmp_path: Path, faults: dict) -> None:
    dest = tmp_path / "big.bin"
    notes: list[str] = []
    with serve({"big.bin": BIG}, **faults) as srv:
        assert fetch([srv.url("big.bin")], dest, BIG_SHA, notes=notes, **FAST) == srv.url("big.bin")
        tries = len(gets(srv))
    assert sha256_file(dest) == BIG_SHA
    assert not Path(f"{dest}.part").exists()
    assert tries > 50 / 3  # the server really did cut it
    said = "\n".join(notes)
    assert "transfer cut" in said and "resumed" in said
    if "range_every" in faults:
        assert "server ignored Range" in said
    if "fail_first" in faults:
        assert "HTTP 503 8 times" in said
