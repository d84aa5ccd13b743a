"""The pinned live-bootstrap checkout for tests, made by ``tasks.sources.gitpin`` from local git
mirrors (``AZL_GIT_MIRRORS`` or a ``.mirror`` directory above the repository), offline, with
the pin of ``recipes/live-bootstrap.toml`` (commit, tree, submodules, skipped paths)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from tasks.sources import gitpin

REPO = Path(__file__).resolve().parent.parent
_RECIPE = tomllib.loads((REPO / "recipes" / "live-bootstrap.toml").read_text())
LB_COMMIT: str = _RECIPE["commit"]


def live_bootstrap(dst: Path) -> bool:
    """The pinned checkout at ``dst``; False when no local mirror has the commit."""
    pin = gitpin.Pin(
        _RECIPE["url"],
        _RECIPE["commit"],
        _RECIPE["tree"],
        _RECIPE.get("ref"),
        _RECIPE.get("submodules", {}),
        tuple(_RECIPE.get("skip", ())),
    )
    mirrors = gitpin.mirror_dirs(REPO)
    if not mirrors or gitpin.offline_missing(pin, mirrors):
        return False
    gitpin.checkout(pin, dst, mirrors=mirrors, network=False)
    return True
