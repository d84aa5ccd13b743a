"""From the host, run the guest plan inside the VM: boot, push, install, run, power off.

``drive(project, settings, args)`` is what a host task such as ``doit toolchain`` does:

1. boot the live-bootstrap image (``tasks.guest.vm``) and wait for SSH with the recorded host key;
2. push the project (``tasks.guest.push``: only what changed), its ``mirror/`` and the wheelhouse
   (``cache/wheelhouse``, made on the host once: ``tasks.guest.wheelhouse``);
3. install the engine's dependencies into the guest's Python offline, unless it imports them;
4. run the guest ``doit`` with the same task names and options (``tasks.guest.run``): its
   output live here, its exit code ours, followed across the kexec and dropped connections;
5. power the guest off (always, also on failure; a killed host ``doit`` takes qemu with it).

The settings come from the ``[vm]`` table of ``azl-bootstrap.toml`` (``vm_settings``); the
image, its host key and the client key are what the host-side image task produced.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from tasks.guest.link import Endpoint, quote
from tasks.guest.push import MIRROR_EXCLUDE, PROJECT_EXCLUDE, push
from tasks.guest.run import GuestRun
from tasks.guest.vm import VM, VMSpec
from tasks.guest.wheelhouse import engine_requirements, install_command, make_wheelhouse
from tasks.model.recipe import RecipeError

ENGINE_IMPORTS = "import doit, psutil, xxhash, requests, tqdm"


@dataclass
class GuestSettings:
    """``[vm]`` of the config; paths relative to the project."""

    image: str = "cache/host/lb-target/init.img"  # what `doit lb-image` made
    host_key: str = "cache/host/ssh/host_key.pub"  # recorded when the image was made
    client_key: str = "cache/host/ssh/id_ed25519"  # its .pub is authorised in the guest
    size: str = "400G"  # the disk grows to this (sparse) before the first boot
    cores: int = 2
    memory_mb: int = 4096
    kvm: bool = False  # preflight's verdict; TCG otherwise
    boot_timeout: int = 900
    dest: str = "/root/azl-bootstrap"  # the project's place in the guest
    python: str = "python3"
    setup: str = ""  # shell run before the guest doit (e.g. ". /etc/profile")
    address: str = ""  # "127.0.0.1:2222": a guest already running (your own VM); "": boot
    kernel: str = ""  # direct kernel boot instead of the image's bootloader (with initrd, append)
    initrd: str = ""
    append: str = ""


def parse_size(text: str) -> int:
    """``"400G"`` -> bytes (K, M, G, T: powers of 1024; a plain number is bytes)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = text.strip().upper().removesuffix("B")
    if text[-1:] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def vm_settings(table: dict[str, Any], config_file: Path) -> GuestSettings:
    """Validate the ``[vm]`` table; a mistake names the file and ``vm.<key>``."""
    known = {f.name: f.type for f in fields(GuestSettings)}
    types = {"str": str, "int": int, "bool": bool}
    for key, value in table.items():
        if key not in known:
            raise RecipeError(config_file, f"vm.{key}", f"unknown key (known: {', '.join(known)})")
        want = types[str(known[key])]
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise RecipeError(config_file, f"vm.{key}", f"expected {want.__name__}")
    settings = GuestSettings(**table)
    try:
        parse_size(settings.size)
    except ValueError:
        raise RecipeError(config_file, "vm.size", f"not a size: {settings.size!r}") from None
    port = settings.address.rpartition(":")[2]
    if settings.address and not (port.isdigit() and 0 < int(port) < 65536):
        raise RecipeError(
            config_file, "vm.address", f"expected host:port, got {settings.address!r}"
        )
    return settings


def with_preflight(project: Path, s: GuestSettings, table: dict[str, Any]) -> GuestSettings:
    """Cores, RAM and the accelerator that ``doit preflight`` chose
    (``cache/host/preflight.json``), where ``[vm]`` does not set them."""
    import json

    try:
        pre = json.loads((project / "cache" / "host" / "preflight.json").read_text())
    except (OSError, ValueError):
        return s
    sizes = pre.get("sizes", {})
    if "cores" not in table and isinstance(sizes.get("qemu_cores"), int):
        s.cores = sizes["qemu_cores"]
    if "memory_mb" not in table and isinstance(sizes.get("qemu_ram_mib"), int):
        s.memory_mb = sizes["qemu_ram_mib"]
    if "kvm" not in table:
        s.kvm = pre.get("accel") == "kvm"
    return s


def vm_spec(project: Path, s: GuestSettings) -> VMSpec:
    return VMSpec(
        image=project / s.image,
        logs=project / "cache" / "logs",
        state=project / "cache" / "vm",
        client_key=project / s.client_key,
        host_key_pub=project / s.host_key,
        size=parse_size(s.size),
        cores=s.cores,
        memory_mb=s.memory_mb,
        kvm=s.kvm,
        boot_timeout=s.boot_timeout,
        kernel=project / s.kernel if s.kernel else None,
        initrd=project / s.initrd if s.initrd else None,
        **({"append": s.append} if s.append else {}),
    )


Connection = tuple[Endpoint, Callable[[], str | None]]  # the link, and why the guest is gone


@contextlib.contextmanager
def booted(project: Path, s: GuestSettings) -> Iterator[Connection]:
    """The VM, running for the duration of the block; with ``address`` set, the guest that
    already runs there (nothing is booted or powered off)."""
    if s.address:
        host, _, port = s.address.rpartition(":")
        link = Endpoint(
            int(port), project / s.client_key, project / s.host_key, project / "cache" / "vm",
            host=host or "127.0.0.1",
        )  # fmt: skip
        link.wait_up(s.boot_timeout)
        yield link, lambda: None
        return
    with VM(vm_spec(project, s)) as vm:
        assert vm.link is not None
        yield vm.link, vm.why_dead


def prepare(
    project: Path,
    link: Endpoint,
    s: GuestSettings,
    out: Callable[[str], None],
    mirror_files: set[str] | None = None,
) -> None:
    """Push the project, the mirror (``mirror_files`` of it, all if None) and the
    wheelhouse; install the engine's dependencies."""
    wheelhouse = project / "cache" / "wheelhouse"
    if not (wheelhouse / "requirements.txt").exists():
        out("azl: making the wheelhouse for the guest's Python (host network)")
        make_wheelhouse(wheelhouse, engine_requirements(project / "pyproject.toml"))
    for label, tree, dest, exclude, only in (
        ("project", project, s.dest, PROJECT_EXCLUDE, None),
        (
            "mirror",
            project / "mirror",
            f"{s.dest}/mirror",
            MIRROR_EXCLUDE,
            mirror_files,
        ),
        ("wheelhouse", wheelhouse, f"{s.dest}/cache/wheelhouse", (), None),
    ):
        if tree.is_dir():
            r = push(link, tree, dest, exclude, s.python, only)
            out(
                f"azl: pushed {label}: {r.sent} of {r.files} files changed, "
                f"{r.bytes / 1e6:.1f} MB in {r.seconds:.1f} s"
            )
    if link.run(quote([s.python, "-c", ENGINE_IMPORTS])).returncode != 0:
        out("azl: installing the engine's dependencies in the guest (offline)")
        r = link.run(install_command(s.python, f"{s.dest}/cache/wheelhouse"))
        if r.returncode:
            raise RuntimeError(
                "installing the wheelhouse in the guest failed:\n"
                + (r.stdout + r.stderr).decode(errors="replace")[-3000:]
            )


def drive(
    project: Path,
    s: GuestSettings,
    args: list[str] | None,
    out: Callable[[str], None] = print,
    connect: Callable[
        [Path, GuestSettings], contextlib.AbstractContextManager[Connection]
    ] = booted,
    mirror_files: set[str] | None = None,
    after: Callable[[Endpoint], None] | None = None,
) -> int:
    """Run ``doit ARGS`` in the guest (see the module docstring); its exit code. ``args``
    None: push and install only (a guest ready to build). ``after``: called with the link
    once the guest's doit succeeded, before the power-off (the ISO is copied out there)."""
    with connect(project, s) as (link, alive):
        prepare(project, link, s, out, mirror_files)
        if args is None:
            return 0
        run = GuestRun(
            link, s.dest, args, out, python=s.python, setup=s.setup,
            reconnect_timeout=s.boot_timeout, alive=alive,  # the kexec is a boot
            console=project / "cache" / "logs" / "vm.console.log" if not s.address else None,
        )  # fmt: skip
        code = run.drive()
        if code == 0 and after is not None:
            after(link)
        return code


def hold(project: Path, s: GuestSettings, out: Callable[[str], None] = print) -> int:
    """``doit vm``: boot the guest, say how to log in, keep it up until it powers itself
    off or the user interrupts (then it is powered off cleanly)."""
    with VM(vm_spec(project, s)) as vm:
        assert vm.link is not None and vm.proc is not None
        if vm.disk_note:
            out(f"azl: the disk: {vm.disk_note}")
        out(f"azl: the guest answers on SSH after {vm.boot_seconds:.0f} s; log in with")
        out("  " + quote(vm.link.ssh_argv("")[:-1]))
        out("azl: Ctrl-C powers it off")
        try:
            vm.proc.wait()
        except KeyboardInterrupt:
            out("azl: powering the guest off")
    return 0


def main(argv: list[str]) -> int:  # python -m tasks.guest.drive [--vm | doit args]
    from tasks.model.config import CONFIG_NAME, load_config

    project = Path.cwd()
    table = load_config(project).vm
    settings = with_preflight(project, vm_settings(table, project / CONFIG_NAME), table)
    if argv == ["--vm"]:
        return hold(project, settings, out=lambda line: print(line, flush=True))
    return drive(project, settings, argv, out=lambda line: print(line, flush=True))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
