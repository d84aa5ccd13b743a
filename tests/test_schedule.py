"""The order of ready packages: each build records its time, and the next run starts the
package with the longest remaining chain first (doit offers ready tasks in the order of the
``all`` group's dependencies)."""

from __future__ import annotations

from tasks.store.state import recorded_seconds
from tests.conftest import Project


def test_the_slow_package_is_started_first_after_its_time_was_recorded(
    project: Project,
) -> None:
    slow = 'sleep 1.5; mkdir -p "$DESTDIR$PREFIX/share" && echo $PKG > "$DESTDIR$PREFIX/share/$PKG.txt"'
    quick = slow.replace("sleep 1.5; ", "")
    a = project.recipe("aquick", install=quick)
    z = project.recipe("zslow", install=slow)
    r = project.doit("-n", "1")
    assert r.code == 0, r.out + r.err
    assert r.packages_ran() == ["aquick", "zslow"]  # nothing known yet: by name
    seconds = recorded_seconds(project.root / "cache" / "state")
    assert seconds["zslow"] >= 1.5 > seconds["aquick"]

    for recipe in (a, z):  # both change: both rebuild
        recipe.write_text(recipe.read_text().replace("echo $PKG", "echo $PKG again"))
    r = project.doit("-n", "1")
    assert r.code == 0, r.out + r.err
    assert r.packages_ran() == ["zslow", "aquick"]  # the long one first
