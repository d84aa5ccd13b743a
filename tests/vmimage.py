"""A small bootable guest made from this machine's Debian packages, for the VM tests.

What the test's VM has, and the real live-bootstrap guest has too: a raw disk whose first
partition is an ext4 root (``/dev/sda1`` through qemu's AHCI controller), an e1000 NIC that
gets its address from qemu's user-network DHCP, and dropbear with a host key and an authorised
key generated here. The kernel is the installed ``linux-image-amd64`` (``/boot/vmlinuz-*``),
started with ``-kernel``/``-initrd``: the initramfs holds static busybox, the modules the disk
needs (ahci, sd_mod, ext4 and their dependencies from ``/lib/modules``) and an ``/init`` that
mounts ``/dev/sda1`` and switches to it. The disk's ``/sbin/init`` loads e1000, runs
``udhcpc`` and starts dropbear (with its libraries, found by ``ldd``); with ``ssh=False`` it
never does (the "guest that never comes up" test).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
DROPBEAR = Path("/usr/sbin/dropbear")
# for the disk: the rest are found through modules.dep; the crypto ones are soft dependencies
ROOT_MODULES = (
    "crc32c_generic",
    "crct10dif_generic",
    "crc64_rocksoft_generic",
    "ahci",
    "sd_mod",
    "ext4",
)


@dataclass
class TestGuest:
    disk: Path
    kernel: Path
    initrd: Path
    host_key_pub: Path  # the guest's host key (what the image recorded)
    client_key: Path  # private key whose public half is authorised in the guest


def missing_tools() -> list[str]:
    need = [BUSYBOX, DROPBEAR, Path("/usr/bin/dropbearkey"), Path("/usr/bin/qemu-system-x86_64")]
    need += [Path("/usr/bin/ssh"), Path("/usr/bin/ssh-keygen"), Path("/usr/sbin/mkfs.ext4")]
    missing = [str(p) for p in need if not p.exists()]
    if BUSYBOX.exists():
        ldd = subprocess.run(["ldd", BUSYBOX], capture_output=True, text=True)
        if "not a dynamic" not in ldd.stdout + ldd.stderr:
            missing.append(f"a static {BUSYBOX} (Debian: busybox-static)")
    if not kernel_release():
        missing.append("/boot/vmlinuz-* with /lib/modules/<release>")
    return missing


def kernel_release() -> str | None:
    for vmlinuz in sorted(Path("/boot").glob("vmlinuz-*"), reverse=True):
        release = vmlinuz.name.removeprefix("vmlinuz-")
        if (Path("/lib/modules") / release / "modules.dep").exists() and os.access(
            vmlinuz, os.R_OK
        ):
            return release
    return None


def _run(*argv: str | Path, **kw: object) -> str:
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kw)
    if r.returncode:
        raise RuntimeError(f"{argv}: exit {r.returncode}\n{r.stdout}{r.stderr}")
    return r.stdout


def module_order(release: str, names: tuple[str, ...]) -> list[str]:
    """Paths (relative to /lib/modules/<release>) of ``names`` and their dependencies, each
    after what it needs."""
    deps: dict[str, list[str]] = {}
    for line in (Path("/lib/modules") / release / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
    by_name = {re.sub(r"\.ko(\..*)?$", "", Path(m).name).replace("-", "_"): m for m in deps}
    order: list[str] = []

    def visit(mod: str) -> None:
        if mod in order:
            return
        for dep in reversed(deps[mod]):  # modules.dep lists the deepest dependency last
            visit(dep)
        order.append(mod)

    for name in names:
        visit(by_name[name.replace("-", "_")])
    return order


def _copy_modules(release: str, names: tuple[str, ...], root: Path) -> list[str]:
    mods = module_order(release, names)
    for rel in mods:
        dest = root / "lib/modules" / release / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path("/lib/modules") / release / rel, dest)
    return [f"/lib/modules/{release}/{m}" for m in mods]


def _busybox(root: Path) -> None:
    (root / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy(BUSYBOX, root / "bin/busybox")
    for d in ("dev", "proc", "sys", "tmp", "sbin", "etc", "root", "newroot"):
        (root / d).mkdir(exist_ok=True)


def _libraries(binary: Path, root: Path) -> None:
    """Copy ``binary``'s shared libraries and loader (from ``ldd``) into ``root``."""
    for path in re.findall(r"(/\S+) \(0x", _run("ldd", binary)):
        dest = root / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(path).resolve(), dest)


def _script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


INITRAMFS_INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t devtmpfs dev /dev; mount -t proc proc /proc; mount -t sysfs sys /sys
{insmods}
for i in $(seq 100); do [ -b /dev/sda1 ] && break; sleep 0.1; done
echo "initramfs: root is $(ls /dev/sda1)"
mount -t ext4 /dev/sda1 /newroot || {{ echo "initramfs: cannot mount /dev/sda1"; poweroff -f; }}
umount /proc /sys; mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
"""

DISK_INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mkdir -p /dev/pts; mount -t devpts pts /dev/pts
mount -o remount,rw /
{insmods}
ip link set lo up; ip link set eth0 up
udhcpc -i eth0 -s /sbin/udhcpc.script -q -n -t 20
echo "guest: eth0 is $(ip -4 -o addr show eth0)"
{ssh}
while :; do sleep 3600; done
"""

UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in bound|renew)
  ip addr flush dev "$interface"; ip addr add "$ip/$mask" dev "$interface"
  [ -n "$router" ] && ip route add default via "${router%% *}" dev "$interface";;
esac
"""


def make_guest(work: Path, *, ssh: bool = True) -> TestGuest:
    """Build the disk, kernel and initramfs of a test guest under ``work``."""
    release = kernel_release()
    assert release, "no readable /boot/vmlinuz-* with its modules"
    work.mkdir(parents=True, exist_ok=True)
    keys = work / "keys"
    keys.mkdir()
    host_key = keys / "dropbear_ed25519_host_key"
    _run("dropbearkey", "-t", "ed25519", "-f", host_key)
    pub = next(
        ln for ln in _run("dropbearkey", "-y", "-f", host_key).splitlines() if ln.startswith("ssh-")
    )
    (keys / "host_key.pub").write_text(pub + "\n")
    client = keys / "client"
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "azl-test", "-f", client)

    # the disk's root: busybox, dropbear, keys, the e1000 module, /sbin/init
    root = work / "diskroot"
    _busybox(root)
    (root / "etc/dropbear").mkdir()
    shutil.copy(host_key, root / "etc/dropbear" / host_key.name)
    shutil.copy(DROPBEAR, root / "sbin/dropbear")
    _libraries(DROPBEAR, root)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    (root / "etc/shells").write_text("/bin/sh\n")
    (root / "root/.ssh").mkdir(mode=0o700)
    shutil.copy(client.with_suffix(".pub"), root / "root/.ssh/authorized_keys")
    (root / "root/.ssh/authorized_keys").chmod(0o600)
    e1000 = _copy_modules(release, ("e1000",), root)
    start = "dropbear -R -E -p 22 -r /etc/dropbear/" + host_key.name if ssh else ""
    if not ssh:
        start = 'echo "guest: no ssh server in this image"'
    _script(
        root / "sbin/init",
        DISK_INIT.format(insmods="\n".join(f"insmod {m}" for m in e1000), ssh=start),
    )
    _script(root / "sbin/udhcpc.script", UDHCPC_SCRIPT)
    part = work / "part.ext4"
    _run("truncate", "-s", "64M", part)
    _run("mkfs.ext4", "-q", "-F", "-L", "azl-test", "-d", root, part)
    disk = work / "disk.img"
    _run("truncate", "-s", "66M", disk)
    _run("sfdisk", "-q", disk, input="label: dos\nstart=2048, type=83\n")
    _run("dd", f"if={part}", f"of={disk}", "bs=1M", "seek=1", "conv=notrunc,sparse", "status=none")
    part.unlink()

    # the initramfs: busybox, the disk's modules, /init
    initramfs = work / "initramfs"
    _busybox(initramfs)
    mods = _copy_modules(release, ROOT_MODULES, initramfs)
    _script(
        initramfs / "init", INITRAMFS_INIT.format(insmods="\n".join(f"insmod {m}" for m in mods))
    )
    initrd = _cpio(initramfs, work / "initrd.cpio")
    shutil.rmtree(initramfs)
    shutil.rmtree(root)
    return TestGuest(disk, Path(f"/boot/vmlinuz-{release}"), initrd, keys / "host_key.pub", client)


def _cpio(root: Path, initrd: Path) -> Path:
    """``root`` as a newc cpio archive (an initramfs), every file owned by root."""
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    with open(initrd, "wb") as out:
        subprocess.run(
            ["cpio", "-o", "-H", "newc", "--quiet", "-R", "0:0"],
            cwd=root, input="\n".join(files).encode(), stdout=out, check=True,
        )  # fmt: skip
    return initrd


def initramfs_guest(
    work: Path, init: str, modules: tuple[str, ...], files: dict[str, Path]
) -> tuple[Path, Path]:
    """A guest that is only an initramfs, for a test that needs a kernel with drivers this
    machine's kernel lacks: static busybox, ``modules`` with their dependencies (``init``'s
    ``{insmods}`` loads them, in order), ``files`` copied to their paths in it, ``init`` as
    /init. Returns the kernel and the initramfs; the guest ends with ``poweroff -f``."""
    release = kernel_release()
    assert release, "no readable /boot/vmlinuz-* with its modules"
    root = work / "initramfs"
    _busybox(root)
    mods = _copy_modules(release, modules, root)
    for rel, src in files.items():
        dest = root / rel.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dest)
    _script(root / "init", init.format(insmods="\n".join(f"insmod {m}" for m in mods)))
    initrd = _cpio(root, work / "initrd.cpio")
    shutil.rmtree(root)
    return Path(f"/boot/vmlinuz-{release}"), initrd


def boot_initramfs(kernel: Path, initrd: Path, timeout: float = 600) -> str:
    """Boot an ``initramfs_guest`` under TCG qemu until it powers off; its console output.
    qemu is stopped (by its PID) whatever happens."""
    cmd = [
        "qemu-system-x86_64", "-accel", "tcg", "-m", "256", "-smp", "1",
        "-kernel", str(kernel), "-initrd", str(initrd),
        "-append", "console=ttyS0 quiet panic=-1",
        "-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot",
    ]  # fmt: skip
    return console_of(cmd, timeout)


def console_of(cmd: list[str], timeout: float) -> str:
    """Run a qemu whose serial console is its stdout until it exits, or ``timeout``; what the
    console said. qemu is stopped (by its PID) whatever happens."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out.decode(errors="replace")
