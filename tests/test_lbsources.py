"""live-bootstrap's distfile list (tasks/sources/lbsources.py) on the real list of the pinned commit
(tests/data/live-bootstrap-1296c44b.sources, made by tests/data/make_lb_sources.py), read again
from a real checkout of the pin (from the bundles in ../shared/git), its counts checked against
live-bootstrap's own reader (``lib/generator.py`` at the pin, run on its own ``steps/``), and
Debian's byte-identical copies fetched from the real archive."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tasks.sources.download import fetch, sha256_file
from tasks.sources.lbsources import (
    Entry,
    SourcesError,
    distfiles,
    entries,
    parse_line,
    read_checkout,
    read_commit,
)

DATA = Path(__file__).resolve().parent / "data" / "live-bootstrap-1296c44b.sources"


def rows() -> list[list[str]]:
    return [line.split("\t") for line in DATA.read_text().splitlines() if not line.startswith("#")]


def data_entries() -> list[Entry]:
    return [Entry(r[0], int(r[2]), parse_line(r[3], f"{DATA.name}:{r[0]}"), r[1]) for r in rows()]


def test_the_real_list_counts_and_duplicates() -> None:
    items = data_entries()
    assert len(items) == 297  # sources lines in 120 steps/*/sources files
    assert len({e.step for e in items}) == 120
    files = distfiles(items)
    assert len(files) == 248  # distinct distfiles: the same file in several steps is one
    counts = Counter(e.source.file for e in items)
    assert counts["gnulib-8f4538a5.tar.gz"] == 2  # autogen-5.18.16 and grep-3.7
    assert Counter(e.use for e in files) == {"build": 177, "early": 71}
    by_name = {e.source.file: e.source for e in files}
    bash = by_name["bash-5.2.15.tar.gz"]
    assert bash.sha256 == "13720965b5f4fc3a0d4b61dd37e7565c741da9a5be24edc2ae00182fc1b3588c"
    assert bash.urls == ("http://mirrors.kernel.org/gnu/bash/bash-5.2.15.tar.gz",)
    gnulib = by_name["gnulib-8f4538a5.tar.gz"]  # a git snapshot with no download URL
    assert (gnulib.git, gnulib.ref, gnulib.urls) == (
        "git://git.savannah.gnu.org/gnulib.git",
        "8f4538a5",
        (),
    )
    assert gnulib.git_prefix() == "gnulib-8f4538a5"  # as mirror.sh names its top directory
    flex = by_name["d160f0247ba1611aa59d28f027d6292ba24abb50.tar.gz"]  # the URL's last part
    assert flex.git == "https://github.com/westes/flex"  # git://github.com is cloned over https
    assert by_name["UnicodeData-15.0.0.txt"].urls == (
        "http://ftp.unicode.org/Public/15.0.0/ucd/UnicodeData.txt",
    )
    assert sum(1 for s in by_name.values() if s.git) == 27
    assert sum(1 for s in by_name.values() if not s.urls) == 18  # only as git snapshots


def test_debian_column_names_byte_identical_origs() -> None:
    matched = {parse_line(r[3], "").file: r[4] for r in rows() if r[4] != "-"}
    assert len(matched) == 16  # of 248: what this machine can fetch (its only reachable archive)
    assert matched["bzip2-1.0.8.tar.gz"] == "main/b/bzip2/bzip2_1.0.8.orig.tar.gz"
    assert all(p.startswith("main/") and ".orig." in p for p in matched.values())


def test_same_name_with_two_sha256_is_an_error_naming_both_lines() -> None:
    a, b = "a" * 64, "b" * 64
    items = entries({"one-1": f"http://x/f.tar.gz {a}\n", "two-2": f"http://y/f.tar.gz {b}\n"}, "")
    with pytest.raises(SourcesError) as e:
        distfiles(items)
    assert str(e.value) == (
        f"f.tar.gz: two sha256: {a} (steps/one-1/sources:1) and {b} (steps/two-2/sources:1)"
    )


def test_same_file_twice_is_one_distfile_with_both_urls_and_the_earliest_use() -> None:
    sha = "c" * 64
    manifest = "build: one-1\nimprove: get_network\nbuild: two-2\n"
    items = entries(
        {"two-2": f"http://x/f.tar.gz {sha}\n", "one-1": f"http://y/f.tar.gz {sha}\n"}, manifest
    )
    [only] = distfiles(items)
    assert only.use == "early" and set(only.source.urls) == {
        "http://x/f.tar.gz",
        "http://y/f.tar.gz",
    }


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("http://x/f.tar.gz 1234", "sha256: expected 64 lowercase hex digits, got '1234'"),
        (f"_ {'d' * 64}", "file: missing: a source without URL (_) must name its file"),
        (f"git://host/repo {'_'} {'d' * 64} f.tar.gz", "git source: expected git://<repo>~<ref>"),
        ("http://x/f.tar.gz", "expected '<url> <sha256> [<file>]'"),
        (f"http://x/f.tar.gz {'d' * 64} ../f", "file: must be a plain file name, got '../f'"),
    ],
)
def test_bad_lines_name_file_line_and_field(line: str, message: str) -> None:
    with pytest.raises(SourcesError) as e:
        entries({"s-1": f"# comment\n\n{line}\n"}, "")
    assert str(e.value).startswith("steps/s-1/sources:3: ")
    assert message in str(e.value)


def test_the_data_is_what_the_real_checkout_says(tmp_path: Path) -> None:
    from tasks.sources.gitpin import checkout
    from tests.test_gitpin import LB, real_mirror

    mirrors = real_mirror("fosslinux+live-bootstrap")
    checkout(LB, tmp_path / "lb", mirrors=mirrors, network=False)
    real = read_checkout(tmp_path / "lb")
    key = lambda e: (e.step, e.line)  # noqa: E731
    assert sorted(real, key=key) == sorted(data_entries(), key=key)


# live-bootstrap's own reading, in a child: lib/generator.py at the pin imports requests at the
# top (only its downloads use it), so a stand-in module lets it import without it
_GENERATOR = """
import json, sys, types
requests = types.ModuleType("requests")
requests.HTTPError = OSError
sys.modules["requests"] = requests
sys.path.insert(0, sys.argv[1] + "/lib")
from generator import Generator
print(json.dumps({"early": Generator.get_source_manifest(True),
                  "all": Generator.get_source_manifest(False)}))
"""


def test_the_counts_are_what_live_bootstraps_own_generator_reads(tmp_path: Path) -> None:
    """71 distfiles before the network and 177 after it, as rootfs.py's Generator lists them at
    the pin (the files it fetches up front, and the rest): the classifier, the data file and
    lb-image's up-front list all agree with it, file by file and sha256 by sha256."""
    import json
    import subprocess
    import sys

    from tasks.host.lbinputs import upfront_distfiles
    from tasks.sources.gitpin import fetch_commit, git, local_sources
    from tests.test_gitpin import LB, real_mirror

    gitdir = tmp_path / "lb.git"
    git("init", "--quiet", "--bare", gitdir)
    [bundle] = local_sources(LB.url, real_mirror("fosslinux+live-bootstrap"))
    fetch_commit(gitdir, str(bundle), LB.commit, LB.ref)
    tree = tmp_path / "lb"
    tree.mkdir()
    archive = subprocess.run(
        ["git", f"--git-dir={gitdir}", "archive", LB.commit, "lib", "steps"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", tree], input=archive, check=True)
    out = subprocess.run(
        [sys.executable, "-c", _GENERATOR, str(tree)], capture_output=True, text=True, check=True
    ).stdout
    theirs = json.loads(out)  # entries: [sha256, directory, url, file name]
    early = {e[3]: e[0] for e in theirs["early"]}
    later = {e[3]: e[0] for e in theirs["all"] if e[3] not in early}
    assert (len(early), len(later)) == (71, 177)

    ours = distfiles(entries(*read_commit(gitdir, LB.commit)))
    assert {e.source.file: e.source.sha256 for e in ours if e.use == "early"} == early
    assert {e.source.file: e.source.sha256 for e in ours if e.use == "build"} == later
    assert not [e for e in ours if e.use == "unused"]
    data = distfiles(data_entries())
    assert {(e.source.file, e.use) for e in data} == {(e.source.file, e.use) for e in ours}
    assert {s.file: s.sha256 for s in upfront_distfiles(tree)} == early


@pytest.mark.network
def test_a_debian_match_is_byte_identical_on_the_real_archive(archive: str, tmp_path: Path) -> None:
    [row] = [r for r in rows() if r[4] == "main/libm/libmd/libmd_1.1.0.orig.tar.xz"]
    source = parse_line(row[3], "")
    dest = tmp_path / source.file
    fetch([f"{archive}/pool/{row[4]}"], dest, source.sha256, timeout=(10, 60))
    assert sha256_file(dest) == source.sha256
