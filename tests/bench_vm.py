"""Benchmark: boot-to-SSH time of the test guest (``tests/vmimage.py``) under TCG, and the
clean power-off, a few times.

    .venv/bin/python -m tests.bench_vm [runs]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from tasks.guest.vm import VM, VMSpec
from tests.vmimage import make_guest


def main(runs: int = 3) -> None:
    with tempfile.TemporaryDirectory(prefix="azl-bench-vm-") as tmp:
        guest = make_guest(Path(tmp) / "guest")
        for i in range(runs):
            spec = VMSpec(
                image=guest.disk, logs=Path(tmp) / "logs", state=Path(tmp) / "state",
                client_key=guest.client_key, host_key_pub=guest.host_key_pub,
                kernel=guest.kernel, initrd=guest.initrd, cores=1, memory_mb=512,
            )  # fmt: skip
            vm = VM(spec)
            with vm:
                stop = time.monotonic()
            took = time.monotonic() - stop
            load = os.getloadavg()[0]
            print(
                f"run {i + 1}: boot to SSH {vm.boot_seconds:5.1f} s, power-off {took:4.1f} s, load {load:.1f}"
            )


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
