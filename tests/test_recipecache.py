"""tasks.store.recipecache: recipes parsed once per change, never a changed recipe unvalidated."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from tasks.engine.recipeset import load_recipes
from tasks.model.recipe import RecipeErrors
from tasks.store import inputs, recipecache, statkey
from tests.conftest import Project


class Counting:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, recipes_dir: Path):  # noqa: ANN204
        self.calls += 1
        return load_recipes(recipes_dir)


@pytest.fixture
def proj(tmp_path: Path) -> Project:
    p = Project(tmp_path / "proj")
    p.recipe("a")
    p.recipe("b", deps=("a",))
    return p


def load(p: Project, parse: Counting):  # noqa: ANN201
    return recipecache.load(p.root / "recipes", p.root / "cache" / "state" / "recipes.cache", parse)


def settle(p: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the cache look written long after the files' last change (not racily clean)."""
    monkeypatch.setattr(statkey, "racy", lambda key, taken_ns: False)


def test_unchanged_recipes_are_parsed_once(proj: Project, monkeypatch) -> None:
    settle(proj, monkeypatch)
    parse = Counting()
    first = load(proj, parse)
    again = load(proj, parse)
    assert parse.calls == 1
    assert sorted(again) == ["a", "b"] and again["b"].depends == first["b"].depends


def test_edit_with_the_same_size_and_mtime_is_parsed_again(proj: Project, monkeypatch) -> None:
    settle(proj, monkeypatch)
    parse = Counting()
    load(proj, parse)
    path = proj.root / "recipes" / "b.toml"
    st = path.stat()
    path.write_text(path.read_text().replace('"a"', '"b"'))  # b depends on itself now
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime put back; ctime moves on
    with pytest.raises(RecipeErrors, match="cycle"):
        load(proj, parse)
    assert parse.calls == 2


def test_racily_clean_file_is_compared_by_content(proj: Project) -> None:
    """A file changed in the clock tick of the cache's write keeps its stat key: within
    the racy window of the write (tasks.store.statkey) the content decides (simulated by a cache holding another digest)."""
    parse = Counting()
    load(proj, parse)
    cache = proj.root / "cache" / "state" / "recipes.cache"
    data = pickle.loads(cache.read_bytes())
    key, _ = data["files"]["a.toml"]
    data["files"]["a.toml"] = (key, "0" * 32)  # what the file held when it was parsed
    cache.write_bytes(pickle.dumps(data))
    load(proj, parse)
    assert parse.calls == 2


@pytest.mark.parametrize("change", ["added recipe", "removed recipe", "added patch"])
def test_added_or_removed_files_are_parsed_again(proj: Project, monkeypatch, change: str) -> None:
    settle(proj, monkeypatch)
    parse = Counting()
    load(proj, parse)
    if change == "added recipe":
        proj.recipe("c")
    elif change == "removed recipe":
        (proj.root / "recipes" / "b.toml").unlink()
    else:
        (proj.root / "recipes" / "a").mkdir()
        (proj.root / "recipes" / "a" / "fix.patch").write_text("--- a\n")
    got = load(proj, parse)
    assert parse.calls == 2
    assert ("c" in got) == (change == "added recipe") and ("b" in got) != (
        change == "removed recipe"
    )


def test_invalid_recipes_are_never_cached(proj: Project, monkeypatch) -> None:
    settle(proj, monkeypatch)
    parse = Counting()
    (proj.root / "recipes" / "bad.toml").write_text("version = [\n")
    for _ in range(2):
        with pytest.raises(RecipeErrors, match="bad.toml"):
            load(proj, parse)
    assert parse.calls == 2
    assert not (proj.root / "cache" / "state" / "recipes.cache").exists()


def test_damaged_cache_costs_a_parse(proj: Project, monkeypatch) -> None:
    settle(proj, monkeypatch)
    parse = Counting()
    load(proj, parse)
    (proj.root / "cache" / "state" / "recipes.cache").write_bytes(b"\x80\x05garbage")
    assert sorted(load(proj, parse)) == ["a", "b"]
    assert parse.calls == 2


def test_a_changed_engine_parses_again(proj: Project, monkeypatch, tmp_path: Path) -> None:
    settle(proj, monkeypatch)
    engine = tmp_path / "engine"
    engine.mkdir()
    (engine / "kind.py").write_text("X = 1\n")
    monkeypatch.setattr(inputs, "ENGINE", engine)
    parse = Counting()
    load(proj, parse)
    (engine / "kind.py").write_text("X = 22\n")
    load(proj, parse)
    assert parse.calls == 2


def test_nothing_is_written_until_the_project_validated(proj: Project) -> None:
    """The loader saves only after the config and the plan validated too (a run stopped by
    a bad config changes nothing in the project)."""
    cache_file = proj.root / "cache" / "state" / "recipes.cache"
    cache = recipecache.RecipeCache(cache_file)
    assert sorted(cache.load(proj.root / "recipes", Counting())) == ["a", "b"]
    assert not cache_file.exists()
    cache.save()
    assert cache_file.exists()
