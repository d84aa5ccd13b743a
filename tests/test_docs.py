"""The documentation a user reads first stays true to the code: every recipe's step id has its
row in docs/procedure.md, every page the README links to exists, and the README stays short."""

from __future__ import annotations

import re

from tasks.engine.recipeset import load_recipes
from tests.conftest import REPO

ROW = re.compile(r"^\| ([HVA])(\d+)(?:[–-]([HVA])?(\d+))? \|", re.M)


def procedure_steps() -> set[str]:
    steps = set()
    for letter, first, _, last in ROW.findall((REPO / "docs" / "procedure.md").read_text()):
        steps.update(f"{letter}{n}" for n in range(int(first), int(last or first) + 1))
    return steps


def test_every_recipe_step_has_its_row_in_the_procedure() -> None:
    documented = procedure_steps()
    assert {"H1", "H7", "V1", "V45", "A1", "A5"} <= documented
    missing = {
        f"{r.step} ({r.path.name})"
        for r in load_recipes(REPO / "recipes").values()
        if r.step and r.step not in documented
    }
    assert not missing, f"steps named by recipes but not in docs/procedure.md: {sorted(missing)}"


def test_the_readme_is_short_and_its_links_lead_somewhere() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    links = re.findall(r"\]\(((?:docs/)?[\w./-]+\.md)\)", readme)
    assert "docs/procedure.md" in links
    missing = sorted({link for link in links if not (REPO / link).is_file()})
    assert not missing, f"README links to pages that do not exist: {missing}"
    for page in (REPO / "docs").glob("*.md"):
        for link in re.findall(r"\]\(([\w./-]+\.md)\)", page.read_text()):
            assert (page.parent / link).is_file(), f"{page.name} links to missing {link}"
