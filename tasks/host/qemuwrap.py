"""The ``--qemu-cmd`` that ``lb-image`` gives live-bootstrap's ``rootfs.py``.

rootfs.py always starts qemu with ``-enable-kvm -machine kernel-irqchip=split`` (both need
KVM) and, non-interactive, ``-nographic``, so the guest's serial console would go to
rootfs.py's stdout. This wrapper rewrites that command line and execs qemu (so its pid is
qemu's):

- accel ``tcg`` (preflight found KVM unusable): ``-enable-kvm`` becomes ``-accel tcg`` and
  ``-machine kernel-irqchip=split`` is dropped;
- the serial console goes to a file (``-serial file:LOG``), the monitor nowhere
  (``-monitor none``); ``-nographic`` stays, since it also makes SeaBIOS copy its and
  builder-hex0's BIOS text output to that serial port;
- ``-pidfile`` so the task can find, and stop, exactly this qemu.

Run as ``python qemuwrap.py SETTINGS.json QEMU-ARGS...``; SETTINGS holds ``qemu``, ``accel``,
``serial`` and ``pidfile``. Standalone (stdlib only): rootfs.py runs it from its checkout.
"""

from __future__ import annotations

import json
import os
import sys


def rewrite(args: list[str], accel: str, serial: str, pidfile: str) -> list[str]:
    """rootfs.py's qemu arguments as this machine must run them."""
    out: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "-enable-kvm" and accel != "kvm":
            out += ["-accel", accel]
        elif (
            a == "-machine"
            and i + 1 < len(args)
            and args[i + 1] == "kernel-irqchip=split"
            and accel != "kvm"
        ):
            i += 1
        else:
            out.append(a)
        i += 1
    return out + ["-serial", f"file:{serial}", "-monitor", "none", "-pidfile", pidfile]


def main(argv: list[str]) -> None:
    with open(argv[0]) as f:
        s = json.load(f)
    cmd = [s["qemu"], *rewrite(argv[1:], s["accel"], s["serial"], s["pidfile"])]
    sys.stdout.write("qemu: " + " ".join(cmd) + "\n")
    sys.stdout.flush()
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main(sys.argv[1:])
