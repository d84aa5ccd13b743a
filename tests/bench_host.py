"""Host-half benchmark: prints figures (not a test; timings are not asserted).

    .venv/bin/python tests/bench_host.py [--runs 3]

1. ``preflight`` end to end (tools, figures, KVM probe, TCG probe when KVM is unusable), in a
   throw-away project, best and worst of ``--runs``.
2. The KVM probe alone (``tasks.host.kvmprobe.kvm_usable``): on a machine whose KVM hangs, this is
   the hard timeout plus the ioctl check; where KVM works, well under a second.
3. The TCG tiny guest alone (SeaBIOS to the boot sector's exit port).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from tasks.host import kvmprobe, preflight

REPO = Path(__file__).resolve().parent.parent


def timed(fn, runs: int) -> tuple[float, float, object]:
    times, last = [], None
    for _ in range(runs):
        start = time.monotonic()
        last = fn()
        times.append(time.monotonic() - start)
    return min(times), max(times), last


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    runs = ap.parse_args().runs
    qemu = shutil.which("qemu-system-x86_64")
    with tempfile.TemporaryDirectory(prefix="azl-bench-host-") as tmp:
        tools = preflight.load_tools(REPO / "recipes")
        lo, hi, res = timed(lambda: preflight.run(Path(tmp), {}, tools), runs)
        facts = res[0]  # type: ignore[index]
        print(
            f"preflight          {lo:6.2f} s best, {hi:6.2f} s worst  (accel {facts.accel}, ok {facts.ok})"
        )
    lo, hi, probe = timed(lambda: kvmprobe.kvm_usable(qemu), runs)
    print(f"KVM probe          {lo:6.2f} s best, {hi:6.2f} s worst  ({probe.reason})")  # type: ignore[union-attr]
    if qemu:
        lo, hi, probe = timed(lambda: kvmprobe.guest_probe(qemu, "tcg"), runs)
        print(f"TCG tiny guest     {lo:6.2f} s best, {hi:6.2f} s worst  ({probe.reason})")  # type: ignore[union-attr]


if __name__ == "__main__":
    main()
