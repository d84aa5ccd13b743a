"""The engine's declared dependencies (pyproject.toml ``[project] dependencies``, also what the
guest's wheelhouse installs) are the ones its code imports, at versions it works with."""

from __future__ import annotations

import ast
import importlib.metadata
import sys

from tasks.guest.wheelhouse import engine_requirements, requirement_name
from tests.conftest import REPO


def imported_top_modules() -> dict[str, str]:
    """Every top-level module the engine (tasks/) imports that is neither the standard
    library nor the project: module -> the first file importing it."""
    found: dict[str, str] = {}
    for path in sorted((REPO / "tasks").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "tasks":
                    found.setdefault(top, str(path.relative_to(REPO)))
    return found


def test_every_third_party_import_of_the_engine_is_declared() -> None:
    """A module that only comes with another dependency (urllib3 with requests) may come at a
    version the engine cannot use: tasks/sources/download.py broke on urllib3 1.26 in the 32-bit
    rehearsal, with requests >= 2.28 declared and urllib3 not."""
    declared = {requirement_name(r) for r in engine_requirements(REPO / "pyproject.toml")}
    dists = importlib.metadata.packages_distributions()
    missing = {}
    for module, where in imported_top_modules().items():
        names = {d.lower() for d in dists.get(module, [module])}
        if not names & declared:
            missing[module] = where
    assert "requests" in imported_top_modules()  # the scan sees the engine's imports
    assert not missing, f"imported by the engine but not in pyproject's dependencies: {missing}"


def test_urllib3_is_declared_at_a_version_with_read1() -> None:
    (req,) = [
        r for r in engine_requirements(REPO / "pyproject.toml") if requirement_name(r) == "urllib3"
    ]
    assert ">=2" in req.replace(" ", ""), req
    import urllib3

    assert hasattr(urllib3.HTTPResponse, "read1")  # what tasks/sources/download.py's _stream calls
