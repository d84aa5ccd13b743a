"""The pinned live-bootstrap checkout for tests, made by ``tasks.sources.gitpin`` from the git
bundles in ``../shared/git`` (a mirror directory of ``<name>.bundle`` files), offline, with the
pin of ``recipes/live-bootstrap.toml`` (commit, tree, submodules, skipped paths)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from tasks.sources import gitpin
from tests.conftest import shared_git

REPO = Path(__file__).resolve().parent.parent
_RECIPE = tomllib.loads((REPO / "recipes" / "live-bootstrap.toml").read_text())
LB_COMMIT: str = _RECIPE["commit"]


def pin() -> gitpin.Pin:
    """The recipe's pin of live-bootstrap."""
    return gitpin.Pin(
        _RECIPE["url"],
        _RECIPE["commit"],
        _RECIPE["tree"],
        _RECIPE.get("ref"),
        _RECIPE.get("submodules", {}),
        tuple(_RECIPE.get("skip", ())),
    )


def live_bootstrap(dst: Path) -> None:
    """The pinned checkout at ``dst``, from the bundles (a missing bundle fails the test)."""
    mirrors = [shared_git("live-bootstrap", "stage0-posix", "builder-hex0")]
    gitpin.checkout(pin(), dst, mirrors=mirrors, network=False)
