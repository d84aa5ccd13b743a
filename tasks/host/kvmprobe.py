"""Does KVM really work? Tried, not assumed: ``/dev/kvm`` can exist and still hang a guest.

Two steps, each in a child process with a hard timeout (killed, never waited on forever):

1. open ``/dev/kvm`` and ask ``KVM_GET_API_VERSION`` / ``KVM_CREATE_VM`` (ioctls via fcntl);
2. boot a real, tiny guest under ``qemu-system-x86_64 -accel kvm``: SeaBIOS, then a 512-byte
   boot sector that writes 1 to an ``isa-debug-exit`` port, so qemu exits with status 3
   only if guest code really ran. It normally takes well under a second; a KVM that hangs
   (on the machine this was written on, SeaBIOS stops in an option ROM) is killed at the
   timeout and reported unusable, and the run falls back to TCG.

The same guest under ``-accel tcg`` is the TCG check, and the yardstick: the machine this was
written on has a KVM that sometimes hangs and sometimes finishes the tiny guest in 2.8 s, ten
times slower than TCG (0.3 s), and then hangs a real guest. A KVM whose tiny guest is slower
than ``SLOWER_THAN_TCG`` times the TCG one (and than ``FAST_ENOUGH`` seconds) is not usable.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

KVM_DEVICE = "/dev/kvm"
# mov al, 1; out 0xf4, al; hlt; jmp $-1 -- isa-debug-exit makes qemu exit with (1 << 1) | 1
_BOOT_CODE = bytes([0xB0, 0x01, 0xE6, 0xF4, 0xF4, 0xEB, 0xFD])
_EXIT_OK = 3
SLOWER_THAN_TCG = 2.0
FAST_ENOUGH = 1.0  # s: below this a KVM guest is fine whatever TCG does

_IOCTL_CHILD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CLOEXEC)
version = fcntl.ioctl(fd, 0xAE00)   # KVM_GET_API_VERSION
vm = fcntl.ioctl(fd, 0xAE01, 0)     # KVM_CREATE_VM
print(version)
"""


@dataclass
class Probe:
    """The outcome of one try: ``ok``, why not (``reason``), and how long it took."""

    ok: bool
    reason: str
    seconds: float
    api_version: int | None = None


def boot_sector() -> bytes:
    """The probe guest's disk: one MBR sector with the exit code and the 0x55AA signature."""
    sector = bytearray(512)
    sector[: len(_BOOT_CODE)] = _BOOT_CODE
    sector[510:] = b"\x55\xaa"
    return bytes(sector)


def _run(cmd: list[str], timeout: float) -> tuple[int | None, str, float]:
    """Run ``cmd`` in its own session; kill its group at ``timeout``. (status|None, stderr, s)."""
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, (out + err).decode(errors="replace"), time.monotonic() - start
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.communicate()
        return None, "", time.monotonic() - start


def ioctl_probe(device: str = KVM_DEVICE, timeout: float = 3.0) -> Probe:
    """Open the device and create a VM in a child process."""
    if not os.path.exists(device):
        return Probe(False, f"{device} does not exist (no KVM module, or not passed through)", 0)
    if not os.access(device, os.R_OK | os.W_OK):
        return Probe(False, f"{device} is not readable and writable by this user", 0)
    code, out, secs = _run([sys.executable, "-c", _IOCTL_CHILD, device], timeout)
    if code is None:
        return Probe(False, f"opening {device} hung for {timeout:g} s", secs)
    if code != 0:
        last = out.strip().splitlines()[-1:] or ["?"]
        return Probe(False, f"{device}: {last[0]}", secs)
    version = int(out.split()[0])
    if version != 12:
        return Probe(False, f"{device}: KVM API version {version}, expected 12", secs, version)
    return Probe(True, f"{device}: API version 12, VM created", secs, version)


def guest_probe(qemu: str, accel: str, timeout: float = 3.0) -> Probe:
    """Boot the tiny guest under ``-accel <accel>``; ok when it exits through the port."""
    with tempfile.TemporaryDirectory(prefix="azl-kvmprobe-") as tmp:
        disk = Path(tmp) / "boot.img"
        disk.write_bytes(boot_sector())
        cmd = [
            qemu,
            "-accel",
            accel,
            "-display",
            "none",
            "-nodefaults",
            "-no-reboot",
            "-m",
            "16",
            "-drive",
            f"file={disk},format=raw,if=ide",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=1",
        ]
        try:
            code, out, secs = _run(cmd, timeout)
        except OSError as e:
            return Probe(False, f"cannot run {qemu}: {e.strerror}", 0)
    if code is None:
        return Probe(False, f"a tiny {accel} guest hung: killed after {timeout:g} s", secs)
    if code != _EXIT_OK:
        lines = [ln for ln in out.splitlines() if "warning" not in ln][-1:] or [f"exit {code}"]
        return Probe(False, f"the tiny {accel} guest failed: {lines[0]}", secs)
    return Probe(True, f"a tiny {accel} guest booted and exited in {secs:.2f} s", secs)


def kvm_usable(
    qemu: str | None,
    device: str = KVM_DEVICE,
    timeout: float = 3.0,
    tcg: Probe | None = None,
) -> Probe:
    """Both steps; the first failure is the answer. ``seconds`` is their total. With ``tcg``
    (the same tiny guest under TCG, succeeded) a KVM that crawls is unusable too."""
    first = ioctl_probe(device, timeout=min(timeout, 3.0))
    if not first.ok:
        return first
    if qemu is None:
        return Probe(False, "qemu-system-x86_64 not found: cannot try a guest", first.seconds)
    second = guest_probe(qemu, "kvm", timeout)
    if (
        second.ok
        and tcg is not None
        and tcg.ok
        and second.seconds > max(FAST_ENOUGH, SLOWER_THAN_TCG * tcg.seconds)
    ):
        second = Probe(
            False,
            f"a tiny kvm guest took {second.seconds:.2f} s, {second.seconds / tcg.seconds:.0f}x "
            f"the same guest under TCG ({tcg.seconds:.2f} s): this KVM crawls or hangs",
            second.seconds,
        )
    second.seconds += first.seconds
    second.api_version = first.api_version
    return second
