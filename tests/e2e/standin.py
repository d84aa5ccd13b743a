"""A STAND-IN for live-bootstrap's finished image, made from Debian i386 (issue 16, item 7).

live-bootstrap's own image cannot be built on this machine (its 248 distfiles are not all
to be had), so the end-to-end rehearsal boots this instead. Each piece says what it stands
in for (docs/e2e.md says what that does not prove):

- the userland: a Debian bookworm i386 minbase root made by debootstrap (as the 32-bit
  rehearsal's, ``tests/rehearsal32/root.py``), with gcc/make, git, kexec-tools, dhcpcd and kbd's
  ``openvt`` (what live-bootstrap's ``/init`` calls), ``/usr/sbin`` made a link to ``bin``
  as live-bootstrap's ``improve: merged_usr`` does;
- ``python3``: Debian's CPython 3.11 with ``_sqlite3``, ``_bz2``, ``_dbm`` and ``_gdbm``
  removed and no ``EXTERNALLY-MANAGED`` marker, standing in for live-bootstrap's 3.11.1
  (``tasks/guest/wheelhouse.py`` lists what that one has);
- ``/steps``: the pinned checkout's ``steps/``, with ``bootstrap.cfg`` written by the
  checkout's own ``rootfs.py`` (``create_configuration_file``, with the options ``doit
  lb-image`` passes) plus what ``jump: move_disk`` and ``improve: finalize_job_count``
  append, and ``env`` as ``improve: update_env`` and ``improve: musl_target`` leave it;
- ``/init``: the one ``improve: make_bootable`` writes (read from the checkout), then the
  project's after-step (``recipes/lb-image/90-azl-automation.sh``, placed by
  ``tasks.host.lbinputs.place_after_step``) run by the lines of ``improve: after``'s loop,
  in a chroot on the host (live-bootstrap runs it in its VM; after.sh's power-off part is not
  run: on the host it would remount ``/`` read-only);
- the disk: live-bootstrap's layout after ``jump: move_disk`` (an MBR whose one partition
  starts at sector 2097152, ext4 made by ``mkfs.ext4 -F -F``), filled with ``mkfs.ext4 -d``;
- the boot: Debian's 686 kernel and its initrd started by qemu directly (``[vm] kernel``,
  ``initrd``, ``append``) instead of live-bootstrap's grub, with grub's command line;
- ``/boot/vmlinuz``, what the kexec loads: this machine's Debian amd64 kernel standing in
  for the kernel64 recipe's, with a small initramfs (busybox and the AHCI/ext4/e1000 modules,
  as ``tests/vmimage.py`` makes) that the kernel64 kernel does not need; ``kexec`` in the
  image is a wrapper adding ``--initrd`` for it (the real one is ``kexec.debian``);
- ``dhcpcd``: Debian's dhcpcd 9.4.1 needs udev (live-bootstrap's has no udev plugin), and
  after the kexec no udevd has run, so there a wrapper sets the address qemu's user network
  would hand out (the real one is ``dhcpcd.debian`` and runs under the 686 kernel).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tasks.host.lbinputs import Layout, Spec, ensure_key, place_after_step, rootfs_args
from tasks.model.config import Paths
from tests.rehearsal32.root import RehearsalError, _rmtree_root, _run, entered
from tests.vmimage import _busybox, _copy_modules, _script, kernel_release

SUITE = "bookworm"
PACKAGES = (
    "linux-image-686", "kexec-tools", "python3", "python3-dev", "python3-pip", "gcc", "make",
    "libc6-dev", "bzip2", "xz-utils", "zlib1g-dev", "pkgconf", "dhcpcd-base", "kbd",
    "iproute2", "procps", "golang-go", "ca-certificates", "git", "patch",
)  # fmt: skip
# git: Debian's stands in for the guest plan's git package, which the tree's checkout runs and
# the rehearsal does not build (its `doit -s azurelinux` skips the package order)
READY = ".azl-e2e-root"
SECTOR0 = 2097152  # move_disk.sh: "2097152;" | sfdisk -uS -S32 -H64 (1 GiB)
PY_REMOVED = ("_sqlite3", "_bz2", "_dbm", "_gdbm")
INIT64 = """#!/bin/busybox sh
# stand-in initramfs of the stand-in 64-bit kernel: the kernel64 recipe's kernel has AHCI, ext4
# and e1000 built in and needs none
/bin/busybox --install -s /bin
mount -t devtmpfs dev /dev; mount -t proc proc /proc
{insmods}
for i in $(seq 100); do [ -b /dev/sda1 ] && break; sleep 0.1; done
mount -t ext4 -o rw /dev/sda1 /newroot || {{ echo "initramfs: cannot mount /dev/sda1"; poweroff -f; }}
init=/sbin/init
for w in $(cat /proc/cmdline); do case "$w" in init=*) init=${{w#init=}};; esac; done
umount /proc; mount --move /dev /newroot/dev  # the kernel mounts no devtmpfs on a switched root
exec switch_root /newroot "$init"
"""
KEXEC_WRAPPER = """#!/bin/sh
# STAND-IN (tests/e2e/standin.py): Debian's amd64 kernel at /boot/vmlinuz stands in for the
# kernel64 recipe's, and needs its initramfs; the real kexec-tools binary is kexec.debian
exec /usr/bin/kexec.debian --initrd=/boot/initrd-standin64.img "$@"
"""
DHCPCD_WRAPPER = """#!/bin/sh
# STAND-IN (tests/e2e/standin.py): Debian's dhcpcd (dhcpcd.debian) waits for udev to
# initialise the NIC, and after the kexec no udevd has run ("no valid interfaces found"; without
# its udev plugin it segfaults instead). So after the kexec the address qemu's user network
# hands out by DHCP (10.0.2.15/24, gateway 10.0.2.2) is set by hand; under the 686 kernel,
# whose initramfs ran udev, the real one runs
if [ "$(uname -m)" != x86_64 ]; then exec /usr/bin/dhcpcd.debian "$@"; fi
for dev in /sys/class/net/*; do
  n=${dev##*/}
  [ "$n" = lo ] && continue
  ip link set lo up
  ip link set "$n" up && ip addr add 10.0.2.15/24 dev "$n" && ip route add default via 10.0.2.2 &&
    echo "dhcpcd (stand-in): $n 10.0.2.15/24 via 10.0.2.2" && exit 0
done
echo "dhcpcd (stand-in): no network interface" >&2
exit 1
"""


@dataclass
class StandIn:
    image: Path
    kernel: Path  # Debian's 686 kernel, booted directly
    initrd: Path
    append: str
    size: str
    host_key: str
    seconds: dict[str, float]


def e2e_dir(repo: Path) -> Path:
    """Where the rehearsal keeps its root, image and project copy: ``cache/e2e``."""
    return repo / "cache" / "e2e"


def make_root(work: Path, archive: str) -> Path:
    """The pristine i386 root (``<work>/root``), made once with debootstrap."""
    root = work / "root"
    if (root / READY).is_file():
        have = set((root / READY).read_text().split())
        if more := [p for p in PACKAGES if p not in have]:  # a root of an older package list
            with entered(root, work) as run:
                run(f"apt-get install -y --no-install-recommends {' '.join(more)}",
                    work / "debootstrap.log")  # fmt: skip
            (root / READY).write_text("\n".join(PACKAGES) + "\n")
        return root
    part = root.with_name("root.part")
    log = root.with_name("debootstrap.log")
    if part.exists():
        _rmtree_root(part)
    part.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    _run(
        ["nice", "-n", "19", "debootstrap", "--arch=i386", "--variant=minbase"]
        + [f"--include={','.join(PACKAGES)}", SUITE, str(part), archive],
        log,
    )
    (part / READY).write_text("\n".join(PACKAGES) + "\n")
    os.replace(part, root)
    return root


def bootstrap_cfg(checkout: Path, argv: list[str]) -> str:
    """``/steps/bootstrap.cfg`` as the pinned checkout's rootfs.py writes it for ``argv``
    (``doit lb-image``'s options; stopped right after it wrote the file), plus the lines
    ``jump: move_disk`` and ``improve: finalize_job_count`` append in the guest."""
    code = (
        "import os, runpy, sys\n"
        "sys.path.insert(0, sys.argv[1]); import lib.target\n"
        "class Stop(Exception): pass\n"
        "def stop(*a, **k): raise Stop\n"
        "lib.target.Target = stop\n"
        "sys.argv = ['rootfs.py'] + sys.argv[2:]\n"
        "try:\n"
        "    runpy.run_path(os.path.join(sys.path[0], 'rootfs.py'), run_name='__main__')\n"
        "except Stop:\n"
        "    pass\n"
    )
    work = checkout.parent / "e2e-cfg"
    shutil.rmtree(work, ignore_errors=True)
    (work / "steps").mkdir(parents=True)
    r = subprocess.run(
        [sys.executable, "-c", code, str(checkout), *argv], cwd=work, capture_output=True,
        text=True,
    )  # fmt: skip
    if r.returncode:
        raise RehearsalError(f"rootfs.py {' '.join(argv)}: exit {r.returncode}: {r.stderr}")
    text = (work / "steps" / "bootstrap.cfg").read_text()
    shutil.rmtree(work)
    final_jobs = re.search(r"^FINAL_JOBS=(.*)$", text, re.M)
    assert final_jobs, "rootfs.py wrote no FINAL_JOBS"
    return text + "DISK=sda1\n" + f"JOBS={final_jobs.group(1)}\n"


def steps_env(checkout: Path) -> str:
    """``/steps/env`` as the steps leave it: the checkout's ``steps/env``, then
    ``update_env.sh``'s here-document, then ``musl_target.sh``'s edit."""
    text = (checkout / "steps/env").read_text()
    update = (checkout / "steps/improve/update_env.sh").read_text()
    text += update.split("<<- 'EOF'\n", 1)[1].split("\nEOF\n", 1)[0].replace("\t", "") + "\n"
    musl = (checkout / "steps/improve/musl_target.sh").read_text()
    target = re.search(r"^TARGET=(\S+)$", musl, re.M)
    assert target, "musl_target.sh names no TARGET"
    lines = [ln for ln in text.splitlines() if not ln.startswith("LIBDIR")]
    lines += [f"LIBDIR=/usr/lib/{target.group(1)}", f"TARGET={target.group(1)}"]
    return "\n".join(lines) + "\n"


def make_bootable_init(checkout: Path) -> str:
    """The ``/init`` that ``improve: make_bootable`` writes."""
    text = (checkout / "steps/improve/make_bootable.sh").read_text()
    return text.split("cat > /init <<- 'EOF'\n", 1)[1].split("\nEOF\n", 1)[0] + "\n"


def after_loop(checkout: Path) -> str:
    """The lines of ``improve: after`` that run the after-scripts (not its power-off)."""
    text = (checkout / "steps/improve/after.sh").read_text()
    start = text.index("if [ -d /steps/after ]")
    end = text.index("\nfi\n", start) + 4
    return ". /steps/bootstrap.cfg\n. /steps/env\n" + text[start:end]


def _python_standin(stage: Path) -> list[str]:
    """Take out of Debian's CPython what live-bootstrap's lacks; the files removed."""
    removed = []
    for so in sorted((stage / "usr/lib/python3.11/lib-dynload").glob("*.so")):
        if so.name.split(".")[0] in PY_REMOVED:
            so.unlink()
            removed.append(so.name)
    marker = stage / "usr/lib/python3.11/EXTERNALLY-MANAGED"
    if marker.exists():
        marker.unlink()
        removed.append(marker.name)
    return removed


def _merged_usr(stage: Path) -> None:
    """live-bootstrap's ``improve: merged_usr``: ``/usr/sbin`` is a link to ``bin``."""
    sbin = stage / "usr/sbin"
    if sbin.is_symlink():
        return
    for f in sbin.iterdir():
        dest = stage / "usr/bin" / f.name
        if not dest.exists() and not dest.is_symlink():
            os.rename(f, dest)
    shutil.rmtree(sbin)
    sbin.symlink_to("bin")


def _initrd64(stage: Path, work: Path) -> str:
    """This machine's amd64 kernel into the image as ``/boot/vmlinuz`` and its stand-in
    initramfs as ``/boot/initrd-standin64.img``; the kernel release."""
    release = kernel_release()
    if not release:
        raise RehearsalError("no readable /boot/vmlinuz-* with /lib/modules (the amd64 kernel)")
    shutil.copy(f"/boot/vmlinuz-{release}", stage / "boot/vmlinuz")
    tree = work / "initramfs64"
    shutil.rmtree(tree, ignore_errors=True)
    _busybox(tree)
    mods = _copy_modules(
        release,
        ("crc32c_generic", "crct10dif_generic", "crc64_rocksoft_generic", "ahci", "sd_mod")
        + ("ext4", "e1000"),
        tree,
    )
    _script(tree / "init", INIT64.format(insmods="\n".join(f"insmod {m}" for m in mods)))
    files = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
    with open(stage / "boot/initrd-standin64.img", "wb") as out:
        subprocess.run(
            ["cpio", "-o", "-H", "newc", "--quiet", "-R", "0:0"],
            cwd=tree, input="\n".join(files).encode(), stdout=out, check=True,
        )  # fmt: skip
    shutil.rmtree(tree)
    return release


def make_disk(image: Path, stage: Path, size: str) -> None:
    """live-bootstrap's disk after ``move_disk``: one MBR partition from sector 2097152 to
    the end, ext4 (``mkfs.ext4 -F -F``), here filled from ``stage``."""
    part = image.with_name(image.name + ".part")
    part.unlink(missing_ok=True)
    _run(["truncate", "-s", size, str(part)])
    r = subprocess.run(
        ["sfdisk", "-q", "--force", str(part)], input=f"{SECTOR0};\n", text=True,
        capture_output=True,
    )  # fmt: skip
    if r.returncode:
        raise RehearsalError(f"sfdisk {part}: {r.stderr.strip()}")
    blocks = (part.stat().st_size - SECTOR0 * 512) // 4096
    _run(
        ["mkfs.ext4", "-q", "-F", "-F", "-b", "4096", "-E", f"offset={SECTOR0 * 512}"]
        + ["-d", str(stage), str(part), str(blocks)]
    )
    os.replace(part, image)


def lb_spec(project: Path) -> Spec:
    """``recipes/lb-image.toml`` of ``project``, checked."""
    from tasks.engine.recipeset import parse_recipe

    recipe, errors = parse_recipe(project / "recipes" / "lb-image.toml")
    if recipe is None or errors:
        raise RehearsalError(f"recipes/lb-image.toml: {errors}")
    return recipe.spec


def make_standin(
    work: Path, project: Path, checkout: Path, archive: str, size: str = "8G", cores: int = 2
) -> StandIn:
    """Make the stand-in image for ``project`` (see the module docstring) in ``work``. The client key is the project's (``cache/host/ssh/id_ed25519``, made if
    missing); the host key the after-step printed is recorded as ``host_key.pub`` beside it,
    as ``doit lb-image`` does. The debootstrap root is kept; the rest is made every time."""
    seconds: dict[str, float] = {}
    t = time.monotonic()
    root = make_root(work, archive)
    seconds["debootstrap"] = time.monotonic() - t
    t = time.monotonic()
    stage = work / "stage"
    if stage.exists():
        _rmtree_root(stage)
    _run(["cp", "-a", "--reflink=auto", str(root), str(stage)])
    (stage / READY).unlink()
    _python_standin(stage)
    _merged_usr(stage)
    os.rename(stage / "usr/bin/kexec", stage / "usr/bin/kexec.debian")
    _script(stage / "usr/bin/kexec", KEXEC_WRAPPER)
    os.rename(stage / "usr/bin/dhcpcd", stage / "usr/bin/dhcpcd.debian")
    _script(stage / "usr/bin/dhcpcd", DHCPCD_WRAPPER)
    _initrd64(stage, work)
    # /steps as rootfs.py copies it in, with the files it and the steps write
    spec = lb_spec(project)
    lay = Layout(Paths(project), str(stage))  # place_after_step's "checkout": the stage
    decisions = {"sizes": {"qemu_cores": cores, "qemu_ram_mib": 4096, "image_size": size}}
    # rootfs.py serves a file:// mirror as http://127.0.0.1:<port>; any port will do here
    argv = rootfs_args(spec, decisions, lay, ["http://127.0.0.1:40000"])
    shutil.copytree(checkout / "steps", stage / "steps", ignore=shutil.ignore_patterns(".git*"))
    (stage / "steps/bootstrap.cfg").write_text(bootstrap_cfg(checkout, argv))
    (stage / "steps/env").write_text(steps_env(checkout))
    init = stage / "init"
    init.write_text(make_bootable_init(checkout))
    init.chmod(0o755)
    (stage / "etc/hostname").unlink(missing_ok=True)  # live-bootstrap writes none
    ensure_key(lay)
    place_after_step(spec, lay)
    log = work / "after.log"
    log.write_text("")
    with entered(stage, project) as run:
        run(after_loop(checkout), log)
    out = log.read_text()
    if "AZL-AFTER: done" not in out or "AZL-AFTER: FAILED" in out:
        raise RehearsalError(f"the after-step did not finish; see {log}")
    host_key = next(
        ln.split("AZL-HOSTKEY: ", 1)[1].strip() for ln in out.splitlines() if "AZL-HOSTKEY: " in ln
    )
    (lay.ssh / "host_key.pub").write_text(host_key + "\n")
    seconds["stage"] = time.monotonic() - t
    t = time.monotonic()
    boot = work / "boot"
    boot.mkdir(exist_ok=True)
    kernel = max((stage / "boot").glob("vmlinuz-*-686"))
    initrd = stage / "boot" / kernel.name.replace("vmlinuz-", "initrd.img-")
    shutil.copy(kernel, boot / "vmlinuz-686")
    shutil.copy(initrd, boot / "initrd-686.img")
    image = work / "standin.img"
    make_disk(image, stage, size)
    _rmtree_root(stage)
    seconds["disk"] = time.monotonic() - t
    # grub's line in make_bootable.sh: root=/dev/${DISK} rootwait rw, then the boot's own
    # command line (rootfs.py's non-interactive one has console=ttyS0 and init=/init)
    append = "root=/dev/sda1 rootwait rw console=ttyS0 init=/init"
    return StandIn(
        image, boot / "vmlinuz-686", boot / "initrd-686.img", append, size, host_key, seconds
    )
