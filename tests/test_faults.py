"""The fault suite's quick part (the default run): hostile tarballs in bulk, fuzzed bad recipes,
corrupted state and a full disk at each step, each through the engine's real code (the disk
through the real ``doit`` on a small tmpfs), and the fault bench's counting. The kill storm
over a real build is ``-m faults`` (a short one, which CI runs after the default suite;
``tests/bench_faults.py`` runs the long one and prints the table of every fault class)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tasks.build import unpack as unpack_mod
from tasks.build.unpack import UnsafeArchive, unpack
from tasks.engine.recipeset import parse_recipe
from tasks.model.recipe import RecipeError
from tests.conftest import Project
from tests.hostile import bombs, tarballs
from tests.test_engine import ok, pkg, share

# --------------------------------------------------------------------------- hostile tarballs


def snapshot(top: Path) -> dict[str, bytes | str]:
    """Every path under ``top`` with its content (files) or its kind."""
    out: dict[str, bytes | str] = {}
    for p in sorted(top.rglob("*")):
        rel = str(p.relative_to(top))
        out[rel] = p.read_bytes() if p.is_file() and not p.is_symlink() else str(p.lstat().st_mode)
    return out


def test_hostile_tarballs_in_bulk_are_rejected_and_write_nothing_outside(
    tmp_path: Path, record_property
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("mine\n")
    before = snapshot(outside)
    kinds: dict[str, int] = {}
    for i, h in enumerate(tarballs(64, seed=10)):
        archive = tmp_path / h.name
        archive.write_bytes(h.data)
        dest = outside / "build" / str(i)  # a build tree inside the watched directory
        with pytest.raises(UnsafeArchive) as err:
            unpack(archive, dest, strip_components=1)
        assert str(archive) in str(err.value), (h.kind, err.value)
        shutil.rmtree(outside / "build")
        assert snapshot(outside) == before, h.kind
        kinds[h.kind] = kinds.get(h.kind, 0) + 1
    assert len(kinds) == 8 and min(kinds.values()) == 8, kinds
    record_property("cases", sum(kinds.values()))  # tests/bench_faults.py counts them


def test_bombs_are_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record_property
) -> None:
    monkeypatch.setattr(unpack_mod, "BOMB_FLOOR", 2 << 20)  # the rule, on a smaller scale
    tried = 0
    for h in bombs(8 << 20):
        tried += 1
        archive = tmp_path / h.name
        archive.write_bytes(h.data)
        with pytest.raises(UnsafeArchive, match="decompression bomb"):
            unpack(archive, tmp_path / "dest", strip_components=1)
        total = sum(p.stat().st_size for p in (tmp_path / "dest").rglob("*") if p.is_file())
        assert total <= 2 << 20, h.kind
        shutil.rmtree(tmp_path / "dest")
    record_property("cases", tried)


def test_too_many_members_are_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unpack_mod, "MAX_MEMBERS", 1000)
    h = next(b for b in bombs(1 << 20) if b.kind == "huge member count")  # 2048 members
    (tmp_path / h.name).write_bytes(h.data)
    with pytest.raises(UnsafeArchive, match="more than 1000 members"):
        unpack(tmp_path / h.name, tmp_path / "dest", strip_components=1)


def test_a_real_size_gzip_bomb_fails_the_build_clearly(project: Project) -> None:
    bomb = next(bombs(300 << 20))  # 300 MiB of zeros in a ~300 KB gzip: over the floor
    recipe = pkg(project, "a")
    archive = project.root / "mirror" / "a-1.0.tar.gz"
    archive.write_bytes(bomb.data)
    text = recipe.read_text()
    old_sha = text.split('sha256 = "')[1][:64]
    recipe.write_text(text.replace(old_sha, hashlib.sha256(bomb.data).hexdigest()))
    r = project.doit()
    assert r.code != 0
    assert "decompression bomb" in r.out + r.err and "Traceback" not in r.out + r.err
    assert not project.manifest("a").exists()


# --------------------------------------------------------------------------- fuzzed recipes

VALID = """\
version = "1.0"
description = "a package"
depends = []
build_system = "autotools"
configure_args = ["--disable-nls"]
[versions."1.0"]
sources = [{ file = "a-1.0.tar.gz", sha256 = "%s", urls = ["https://example.org/a.tar.gz"] }]
""" % ("0" * 64)

_WRONG = st.one_of(
    st.integers(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(), max_size=3),
)
_NOT_A_LIST = st.one_of(st.integers(), st.booleans(), st.text(max_size=5))
_BAD_SHA = st.one_of(
    st.text(alphabet="0123456789abcdef", max_size=63),
    st.text(alphabet="0123456789ABCDEF", min_size=64, max_size=64).filter(lambda s: s != s.lower()),
    st.text(alphabet="ghijklmnopqrstuvwxyz", min_size=64, max_size=64),
)


def toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return repr(v)


SOURCE = "versions.1.0.sources[0]"


def broken(field: str, old: str, new: str, values: st.SearchStrategy) -> st.SearchStrategy:
    """(the field an error must name exactly, the recipe text with ``old`` replaced by ``new``
    formatted with a drawn value)."""
    return values.map(lambda v: (field, VALID.replace(old, new.format(v))))


# one broken field each, by kind of mistake: (the field the error names, the recipe text)
MUTATIONS = {
    "version": broken("version", 'version = "1.0"', "version = {}", _WRONG.map(toml_value)),
    "description": broken(
        "description",
        'description = "a package"',
        "description = {}",
        st.one_of(st.integers(), st.booleans()).map(toml_value),
    ),
    "depends": broken("depends", "depends = []", "depends = {}", _NOT_A_LIST.map(toml_value)),
    "build_system": broken(
        "build_system",
        'build_system = "autotools"',
        "build_system = {}",
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=12)
        .filter(lambda s: s not in ("autotools", "meson", "cmake", "make", "script"))
        .map(toml_value),
    ),
    "configure_args": broken(
        "configure_args",
        'configure_args = ["--disable-nls"]',
        "configure_args = {}",
        _NOT_A_LIST.map(toml_value),
    ),
    "sha256": broken(f"{SOURCE}.sha256", "0" * 64, "{}", _BAD_SHA),
    "file": broken(
        f"{SOURCE}.file",
        'file = "a-1.0.tar.gz"',
        "file = {}",
        st.sampled_from(["../evil.tar.gz", ".hidden", "a/b.tar.gz"]).map(toml_value),
    ),
    # the unknown key itself is the field named
    "unknown key": st.text(alphabet="qxzjkw", min_size=3, max_size=10).map(
        lambda k: (k, VALID.replace("depends = []", f"depends = []\n{k} = 1"))
    ),
    # appended after [versions."1.0"]: that version's env
    "env": _WRONG.map(
        lambda v: ("versions.1.0.env.X", VALID + f"env = {{ X = {toml_value(v)} }}\n")
    ),
}


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_fuzzed_bad_recipes_are_rejected_with_file_and_field(
    tmp_path: Path, data: st.DataObject, record_property
) -> None:
    kind = data.draw(st.sampled_from(sorted(MUTATIONS)))
    field, text = data.draw(MUTATIONS[kind])
    path = tmp_path / "a.toml"
    path.write_text(text)
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        assume(False)  # the mutation must stay valid TOML to test the fields
    record_property("cases", 1)  # one fuzzed recipe (tests/bench_faults.py counts them)
    before = sorted(tmp_path.rglob("*"))
    recipe, errors = parse_recipe(path)
    assert errors, (kind, text)
    for e in errors:
        assert isinstance(e, RecipeError) and str(e).startswith(f"{path}: ")
    said = {e.field: str(e) for e in errors}
    assert field in said, (kind, field, list(said.values()))
    assert said[field].startswith(f"{path}: {field}: "), said[field]
    if kind == "unknown key":
        assert said[field].startswith(f"{path}: {field}: unknown key")
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


def test_bad_recipe_through_doit_writes_nothing(project: Project) -> None:
    pkg(project, "a")
    (project.root / "recipes" / "b.toml").write_text(VALID.replace("0" * 64, "F" * 64))
    before = sorted(p.relative_to(project.root) for p in project.root.rglob("*"))
    r = project.doit()
    assert r.code == 3, r.out + r.err
    assert "recipes/b.toml: versions.1.0.sources[0].sha256: expected 64 lowercase" in r.err
    assert "Traceback" not in r.err
    assert sorted(p.relative_to(project.root) for p in project.root.rglob("*")) == before


# --------------------------------------------------------------------------- corrupted state


@pytest.mark.parametrize(
    "damage",
    [
        "journal torn",
        "journal garbage",
        "digest cache garbage",
        "recipe cache garbage",
        "stale lock",
    ],
)
def test_corrupted_state_is_said_and_survived(project: Project, damage: str) -> None:
    pkg(project, "a")
    pkg(project, "b", ("a",))
    ok(project.doit())
    state = project.root / "cache" / "state"
    root_before = snapshot(project.sandbox_root)
    journal = state / "journal"
    if damage == "journal torn":  # b's record cut in the middle (a kill during its write)
        data = journal.read_bytes()
        journal.write_bytes(data[: data.rindex(b'"b"') + 5])
    elif damage == "journal garbage":  # garbage in the middle, good records after it
        lines = journal.read_bytes().splitlines(keepends=True)
        journal.write_bytes(b"".join(lines[:-1]) + os.urandom(200) + b"\n" + lines[-1])
    elif damage == "digest cache garbage":
        (state / "digests.json").write_bytes(b"\x00garbage{[")
    elif damage == "recipe cache garbage":
        (state / "recipes.cache").write_bytes(os.urandom(500))
    else:
        (state / "lock").write_text("pid 999999, since 2020-01-01 00:00:00: doit\n")
    r = ok(project.doit())
    assert "Traceback" not in r.out + r.err
    if damage == "journal garbage":
        assert "damaged state journal" in r.err, r.err
    # whatever was lost is checked again: a finished build is adopted, never rebuilt
    for name in r.packages_ran():
        log = (project.root / "cache" / "logs" / f"{name}.log").read_text()
        assert "adopted, not rebuilt" in log, (name, r.out)
    assert snapshot(project.sandbox_root) == root_before
    assert ok(project.doit()).ran == []


# --------------------------------------------------------------------------- disk full


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[callable]:
    """``mount(dir, kib)``: a tmpfs of ``kib`` KiB on ``dir``; ``grow(dir)`` makes it large.
    Needs root (the suite's CI runs as root); skips where mounting is impossible."""
    mounted: list[Path] = []

    def mount(where: Path, kib: int) -> None:
        where.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(where)],
            capture_output=True,
            text=True,
        )
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(where)

    def grow(where: Path) -> None:
        subprocess.run(["mount", "-o", "remount,size=256m", str(where)], check=True)

    mount.grow = grow  # type: ignore[attr-defined]
    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


BIG = 'head -c 3000000 /dev/urandom > "$DESTDIR$PREFIX/share/big.bin"'


@pytest.mark.parametrize("step", ["unpack", "build", "merge"])
def test_disk_full_fails_clearly_and_the_next_run_succeeds(
    project: Project, small_disk, step: str
) -> None:
    files = {"data.txt": "a 1.0\n", "blob.bin": os.urandom(3_000_000)} if step == "unpack" else None
    pkg(project, "a", extra=BIG if step != "unpack" else "", files=files)
    where = {
        "unpack": project.root / "cache" / "build",
        "build": project.root / "cache" / "stage",
        "merge": project.sandbox_root,
    }[step]
    small_disk(where, 1024)
    r = project.doit()
    assert r.code != 0, r.out
    said = r.out + r.err
    assert "Traceback" not in said
    if step == "unpack":
        assert f"no space left on the device of {where.resolve()}" in said, said
    elif step == "merge":
        assert "no space left on the device of" in said and "share/big.bin" in said, said
    else:
        assert "No space left on device" in said, said
    assert not project.manifest("a").exists()
    assert not list(project.sandbox_root.rglob("*.azl-new"))
    small_disk.grow(where)
    r = ok(project.doit())
    assert r.packages_ran() == ["a"]
    assert share(project, "a") == "a 1.0\n"


def test_disk_full_during_download(project: Project, small_disk) -> None:
    from tests.httpserver import serve
    from tests.test_mirror import tarball, write_recipe

    src = tarball("a", blob=3_000_000)
    small_disk(project.root / "mirror", 1024)
    with serve({src.file: src.data}, no_length=True) as srv:  # no length: found out mid-way
        write_recipe(project, "a", [dict(file=src.file, sha256=src.sha, urls=[srv.url(src.file)])])
        r = project.doit("mirror")
        assert r.code != 0
        said = r.out + r.err
        assert f"no space left on the device of {(project.root / 'mirror').resolve()}" in said, said
        assert "kept to resume once there is room" in said and "Traceback" not in said
        assert not (project.root / "mirror" / src.file).exists()
        small_disk.grow(project.root / "mirror")
        ok(project.doit("mirror"))
    assert (project.root / "mirror" / src.file).read_bytes() == src.data


# --------------------------------------------------------------------------- kill storms (opt-in)


STORM_CHAIN = ("attr", "acl")  # two small real packages, acl linking attr's libattr


@pytest.mark.faults
@pytest.mark.network
def test_kill_storm_over_the_real_chain(tmp_path: Path, archive: str) -> None:
    """A short storm, CI's (``tests/bench_faults.py`` runs the long one over pcre2 -> grep):
    SIGTERM and SIGINT under -n 2, SIGKILL at random times, log lines and engine points of
    attr -> acl; then one run to the end equals a clean build made afterwards, no finished
    package was built twice, and every class had trials whose signal was delivered."""
    import json
    import random

    from tests.bench_faults import Row, finish, plan, storm
    from tests.conftest import real_project

    sources = real_project(tmp_path / "sources", *STORM_CHAIN)
    ok(sources.doit("mirror", timeout=600))  # the sources only: the storm builds from them
    project = real_project(tmp_path / "storm", *STORM_CHAIN)
    config = (
        f'platform = "sandbox"\njobs = 2\nmirrors = [{json.dumps(str(sources.root / "mirror"))}]\n'
    )
    project.config(config)
    rows: dict[str, Row] = {}
    rng = random.Random(int(os.environ.get("SEED", "1")))
    storm(project, rows, plan(kills=4, terms=1), rng, STORM_CHAIN)
    final = Row("final")
    finish(project, config, final, STORM_CHAIN)
    assert set(rows) == {"SIGTERM -n 2", "SIGINT -n 2", "kill -9"}
    for row in rows.values():
        assert row.tries >= 1, row  # a storm whose signals all came too late proves nothing
        assert (row.survived, row.work_lost, row.notes) == (row.tries, 0, []), row
    assert final.bad_files == 0, final.notes


# --------------------------------------------------------------------------- the bench's counts


def test_the_bench_counts_a_trial_only_once_its_signal_was_delivered(project: Project) -> None:
    """``tests/bench_faults.py``'s tries: a kill at an engine point the run reaches is a trial
    (survived); one at a point the run never reaches delivers nothing and is not counted, though
    the build ran."""
    import random
    import signal

    from tests.bench_faults import Row, complete, one_trial, storm

    pkg(project, "a")
    chain, rng = ("a",), random.Random(1)
    hit = one_trial(project, rng, "point:unpacked", signal.SIGKILL, [], chain)
    assert (hit.delivered, hit.survived) == (True, True), hit
    rows: dict[str, Row] = {}
    storm(project, rows, [("kill -9", signal.SIGKILL, "point:nowhere", [])], rng, chain)
    assert complete(project, "a")  # the run went to its end: no signal reached it
    assert (rows["kill -9"].tries, rows["kill -9"].survived) == (0, 0), rows
    storm(project, rows, [("kill -9", signal.SIGKILL, "point:unpacked", [])] * 2, rng, chain)
    assert (rows["kill -9"].tries, rows["kill -9"].survived) == (2, 2), rows


def test_the_bench_counts_cases_not_pytest_tests() -> None:
    """A row from a pytest run counts the cases each test records: 64 hostile tarballs in one
    test are 64 tries."""
    from tests.bench_faults import pytest_row

    row = pytest_row("hostile tarballs", ["tests/test_faults.py", "-k", "tarballs_in_bulk"])
    assert (row.tries, row.survived) == (64, 64), row
