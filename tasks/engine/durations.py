"""How long each step takes: this machine's earlier runs, else the seed's figures.

Recorded: the journal's ``seconds`` (``tasks.store.state.recorded_seconds``: packages and
toolkit stages store them), lb-image's record (``cache/host/lb-image.json``), and the guest's
own journal as ``doit status`` or the last ``doit guest`` read it over the link
(``cache/host/guest-state.json``). Shipped: the seed's run (../shared/reference/procedure.md:
live-bootstrap "several hours", about 6 h on an i7-9750H with KVM, H5; the raw toolchain and
the final toolchain about 5 h each, A3 and §4; the first ISO about 8 h, A5). Anything else
counts ``DEFAULT`` seconds. ``doit status`` and the progress bar's estimate use the same.
"""

from __future__ import annotations

import json
from pathlib import Path

from tasks.guest.run import GUEST_STATE
from tasks.store import state

HOUR = 3600.0
SEED_SECONDS: dict[str, float] = {
    "lb-image": 6 * HOUR,  # H5: "several hours" (about 6 h, i7-9750H, KVM)
    "raw-toolchain": 5 * HOUR,  # §4: the raw toolchain, about 5 h
    "toolchain": 5 * HOUR,  # A3: about 5 h
    "iso": 8 * HOUR,  # A5: the first ISO run, about 8 h
}
DEFAULT = 60.0  # a step nothing is known about: a package's minute, a fetch's


def recorded(cache: Path) -> dict[str, float]:
    """Seconds of every step this machine finished before, host and guest."""
    out: dict[str, float] = {}
    try:
        guest = json.loads((cache / "host" / GUEST_STATE).read_text())
        out.update({k: float(v) for k, v in guest.get("seconds", {}).items()})
    except (OSError, ValueError, AttributeError):
        pass
    out.update(state.recorded_seconds(cache / "state"))
    try:
        image = json.loads((cache / "host" / "lb-image.json").read_text())
        if isinstance(image.get("seconds"), int | float):
            out["lb-image"] = float(image["seconds"])
    except (OSError, ValueError):
        pass
    return out


def estimate(name: str, known: dict[str, float]) -> tuple[float, str]:
    """(seconds, where the figure comes from) for the step ``name``."""
    if name in known:
        return known[name], "this machine"
    if name in SEED_SECONDS:
        return SEED_SECONDS[name], "the seed's run"
    return DEFAULT, "a guess"
