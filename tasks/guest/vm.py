"""The guest VM: the finished live-bootstrap image booted with qemu, reachable over SSH.

The machine is the seed's libvirt VM in qemu words: an i440fx PC with an AHCI (SATA)
controller holding the raw image as its first disk (so live-bootstrap's ``root=/dev/sda1``
holds), an e1000 NIC on qemu's user network with the guest's SSH port forwarded to a free port
on 127.0.0.1 only (nothing else can reach the guest), KVM when preflight found it usable and
TCG (``-accel tcg``) otherwise. The serial console goes to ``cache/logs/vm.console.log`` (the
previous one is kept as ``.1``), qemu's own messages to ``vm.qemu.log``.

qemu runs under ``tasks.build.supervise`` as the leader of its own process group, with a pipe from
this process as its stdin: when the ``doit`` that started it ends in any way (even SIGKILL),
the supervisor reads EOF and kills the group, so no qemu outlives it. ``VM.stop`` is the clean
way: ``sync`` and power off through the guest, wait for qemu to exit, and only then signal it.

Use it as a context manager::

    with VM(spec, endpoint_keys...) as vm:    # boots, waits for SSH (the recorded host key)
        vm.link.run("uname -a")
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tasks.build import supervise
from tasks.build.action import kill_group
from tasks.guest.link import Endpoint, LinkError

TAIL_LINES = 25
# the seed's clean shutdown (procedure H6); poweroff -f where there is no sysrq
POWEROFF = (
    "sync; sync; if [ -w /proc/sysrq-trigger ]; then echo u > /proc/sysrq-trigger;"
    " echo o > /proc/sysrq-trigger; fi; poweroff -f"
)


class VMError(Exception):
    """The VM could not be started or did not come up; the message has the console's tail."""


@dataclass
class VMSpec:
    """What to boot and how; the sizes come from the config and preflight."""

    image: Path  # raw disk image
    logs: Path  # cache/logs
    state: Path  # private known_hosts and the like
    client_key: Path
    host_key_pub: Path
    size: int = 0  # grow the image to this many bytes (sparse) before booting; 0: as it is
    cores: int = 2
    memory_mb: int = 2048
    kvm: bool = False  # preflight found a KVM that works
    guest_port: int = 22
    boot_timeout: float = 300.0
    stop_timeout: float = 60.0
    kernel: Path | None = None  # direct kernel boot (tests); None: the image's bootloader
    initrd: Path | None = None
    append: str = "console=ttyS0 root=/dev/sda1 rootwait rw"
    extra: list[str] = field(default_factory=list)

    @property
    def console_log(self) -> Path:
        return self.logs / "vm.console.log"


def grow_image(image: Path, size: int) -> bool:
    """Make the raw ``image`` ``size`` bytes long, sparse (no blocks are written); never
    shrink it. True if it grew."""
    have = image.stat().st_size
    if size <= have:
        return False
    os.truncate(image, size)
    return True


DISK_TOOLS = {"sfdisk": "fdisk (Debian; util-linux elsewhere)", "e2fsck": "e2fsprogs",
              "resize2fs": "e2fsprogs", "dumpe2fs": "e2fsprogs"}  # fmt: skip


def _tool(name: str, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([name, *args], input=input, capture_output=True, text=True)
    except FileNotFoundError:
        raise VMError(
            f"growing the guest's disk needs {name} (package {DISK_TOOLS[name]}); install it "
            "and run again, or set [vm] size to the image's size"
        ) from None


def _fs_geometry(device: str) -> tuple[int, int] | None:
    """(size, bytes per block group) of the ext2/3/4 filesystem at ``device``
    (``file?offset=N``), None if there is none."""
    r = _tool("dumpe2fs", "-h", device)
    if r.returncode:
        return None
    head = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in r.stdout.splitlines())}
    try:
        bs = int(head["Block size"])
        return int(head["Block count"]) * bs, int(head["Blocks per group"]) * bs
    except (KeyError, ValueError):
        return None


def grow_root(image: Path) -> str | None:
    """Grow the image's last partition (live-bootstrap's ``sda1``) to the end of the image
    and its ext4 to fill it, on the host before the guest boots (the image must not be in
    use): live-bootstrap made both fit its own image size, so a grown image alone leaves the
    guest the old size. The partition table is edited with ``sfdisk``; the filesystem is
    checked with ``e2fsck -f -p``, grown with ``resize2fs`` and checked again with ``e2fsck
    -f -n`` (all through e2fsprogs' ``file?offset=N``: no loop device, no root needed).
    Nothing is done when both fill the disk already or the image has no partition table;
    what was done is returned."""
    with open(image, "rb") as f:
        f.seek(510)
        if f.read(2) != b"\x55\xaa":
            return None  # no MBR (nor protective MBR): a bare filesystem, or nothing known
    r = _tool("sfdisk", "-J", str(image))
    if r.returncode:
        return None
    table = json.loads(r.stdout)["partitiontable"]
    parts = table.get("partitions") or []
    if not parts:
        return None
    sector = int(table.get("sectorsize", 512))
    last = max(parts, key=lambda p: p["start"])
    number = parts.index(last) + 1
    done = []
    disk_sectors = image.stat().st_size // sector
    if table.get("label") == "gpt":
        _tool("sfdisk", "--relocate", "gpt-bak-std", str(image))  # the backup header to the end
        disk_sectors -= 33
    if last["start"] + last["size"] < disk_sectors - 2048:  # more than alignment slack left
        r = _tool("sfdisk", "-q", "--no-reread", "-N", str(number), str(image), input=", +\n")
        if r.returncode:
            raise VMError(
                f"sfdisk could not grow partition {number} of {image}: {r.stderr.strip()}"
            )
        table = json.loads(_tool("sfdisk", "-J", str(image)).stdout)["partitiontable"]
        last = table["partitions"][number - 1]
        done.append(f"partition {number} to {last['size'] * sector / 2**30:.1f} GiB")
    device = f"{image}?offset={last['start'] * sector}"
    part_bytes = last["size"] * sector
    geometry = _fs_geometry(device)
    if geometry is None:
        return "grew " + ", ".join(done) if done else None
    have, group = geometry
    # whole block groups only: resize2fs cuts a regular file to the new filesystem's size,
    # not counting the offset (the file is made whole again below); a full last group ends
    # in data blocks, which the grown filesystem has not written yet
    new = part_bytes - part_bytes % group
    if new > have:
        r = _tool("e2fsck", "-f", "-p", device)
        if r.returncode > 1:  # 1: errors corrected; more: not fixed
            raise VMError(
                f"e2fsck found errors it did not fix in partition {number} of {image} "
                f"(exit {r.returncode}); the disk was not grown:\n{(r.stdout + r.stderr)[-2000:]}"
            )
        size = image.stat().st_size
        r = _tool("resize2fs", device, f"{new // 1024}K")
        if image.stat().st_size < size:
            os.truncate(image, size)
        if r.returncode:
            raise VMError(
                f"resize2fs could not grow {device}: {(r.stdout + r.stderr).strip()[-2000:]}"
            )
        r = _tool("e2fsck", "-f", "-n", device)
        if r.returncode:
            raise VMError(
                f"after resize2fs, e2fsck -f -n finds errors in {device} (exit {r.returncode}):"
                f"\n{(r.stdout + r.stderr)[-2000:]}\nRun e2fsck -f -y on it before the next boot."
            )
        done.append(f"its ext4 from {have / 2**30:.1f} to {new / 2**30:.1f} GiB")
    return "grew " + ", ".join(done) if done else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def qemu_command(spec: VMSpec, port: int) -> list[str]:
    """The qemu command line of the VM with the guest's SSH port forwarded to ``port``."""
    accel = ["-accel", "kvm", "-cpu", "host"] if spec.kvm else ["-accel", "tcg", "-cpu", "max"]
    cmd = [
        "qemu-system-x86_64",
        "-machine", "pc",
        *accel,
        "-smp", str(spec.cores),
        "-m", str(spec.memory_mb),
        "-nodefaults", "-display", "none",  # a guest reboot reboots, as under libvirt
        "-serial", f"file:{spec.console_log}",
        "-device", "ahci,id=ahci",
        "-drive", f"if=none,id=d0,file={spec.image},format=raw",
        "-device", "ide-hd,drive=d0,bus=ahci.0",
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:{spec.guest_port}",
        "-device", "e1000,netdev=n0",
    ]  # fmt: skip
    if spec.kernel:
        cmd += ["-kernel", str(spec.kernel), "-append", spec.append]
        if spec.initrd:
            cmd += ["-initrd", str(spec.initrd)]
    return cmd + spec.extra


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        text = path.read_bytes()[-64 * 1024 :].decode(errors="replace")
    except OSError:
        return "(no console output)"
    return "\n".join(text.splitlines()[-lines:]) or "(no console output)"


class VM:
    """A running guest; see the module docstring."""

    def __init__(self, spec: VMSpec):
        self.spec = spec
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.link: Endpoint | None = None
        self.boot_seconds = 0.0
        self.started = 0.0
        self.disk_note: str | None = None  # what grow_root did before this boot

    def __enter__(self) -> VM:
        self.start()
        try:
            self.wait_ssh()
        except BaseException:
            self.kill()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _rotate_logs(self) -> None:
        self.spec.logs.mkdir(parents=True, exist_ok=True)
        log = self.spec.console_log
        if log.exists():
            os.replace(log, log.with_name(log.name + ".1"))

    def start(self) -> None:
        """Grow the image and start qemu (not waiting for the guest)."""
        spec = self.spec
        if not spec.image.is_file():
            raise VMError(f"no VM image at {spec.image}")
        grow_image(spec.image, spec.size)
        self._rotate_logs()
        self.disk_note = grow_root(spec.image) if spec.size else None
        if self.disk_note:  # kept: the image's history
            with open(spec.logs / "vm.disk.log", "a") as f:
                f.write(f"{spec.image}: {self.disk_note}\n")
        self.port = free_port()
        self.started = time.monotonic()
        qemu_log = open(spec.logs / "vm.qemu.log", "wb")  # noqa: SIM115 - the child's
        with qemu_log:
            # our end of its stdin closes when we die: the supervisor kills qemu
            self.proc = supervise.start(
                qemu_command(spec, self.port), stdout=qemu_log, stderr=subprocess.STDOUT
            )
        self.link = Endpoint(self.port, spec.client_key, spec.host_key_pub, spec.state)

    def why_dead(self) -> str | None:
        """Why the guest cannot answer any more (qemu exited, with the console's tail), or
        None while it runs."""
        return self._why_dead()

    def _why_dead(self) -> str | None:
        if self.proc is None or self.proc.poll() is None:
            return None
        qemu = tail(self.spec.logs / "vm.qemu.log", 10)
        return (
            f"qemu exited ({self.proc.returncode}) before the guest answered on SSH\n"
            f"--- qemu ---\n{qemu}\n--- last lines of {self.spec.console_log} ---\n"
            f"{tail(self.spec.console_log)}"
        )

    def wait_ssh(self) -> float:
        """Wait until the guest answers on SSH with the recorded host key; the seconds from
        start. A guest that does not within the boot timeout is stopped and reported with
        the console's last lines."""
        assert self.link is not None
        try:
            self.link.wait_up(self.spec.boot_timeout, alive=self._why_dead)
        except LinkError as e:
            self.kill()
            if self._why_dead() and str(e).startswith("qemu exited"):
                raise VMError(str(e)) from None
            raise VMError(
                f"the VM did not come up: {e}\n"
                f"--- last lines of {self.spec.console_log} ---\n{tail(self.spec.console_log)}"
            ) from None
        self.boot_seconds = time.monotonic() - self.started
        return self.boot_seconds

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Power the guest off through SSH (after ``sync``), wait for qemu to exit; signal
        it only if it does not within the stop timeout."""
        if not self.running():
            return
        assert self.link is not None and self.proc is not None
        with contextlib.suppress(subprocess.TimeoutExpired, LinkError):
            self.link.run(POWEROFF, timeout=30)  # the connection drops as the guest goes
        try:
            self.proc.wait(timeout=self.spec.stop_timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """Stop qemu now (its whole process group)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            kill_group(self.proc)
        if self.proc.stdin:
            self.proc.stdin.close()  # the supervisor's cue, should it still run
        self.proc.wait()
        wait_group_gone(self.proc.pid)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_group_gone(pgid: int, timeout: float = 10.0) -> None:
    """Wait until no process of group ``pgid`` is left (qemu may outlive its supervisor by
    a moment); SIGKILL what is left after ``timeout``."""
    deadline = time.monotonic() + timeout
    while group_alive(pgid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
        time.sleep(0.05)
