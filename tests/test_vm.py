"""The VM task with a real qemu under TCG and a real guest made from Debian's packages
(``tests/vmimage.py``): SATA disk, e1000 NIC, user-net DHCP, dropbear with generated keys."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tasks.guest.link import Endpoint, LinkError
from tasks.guest.vm import VM, VMError, VMSpec, group_alive, tail
from tests.conftest import REPO
from tests.vmimage import make_guest, missing_tools

pytestmark = pytest.mark.skipif(bool(missing_tools()), reason=f"missing: {missing_tools()}")


def spec_for(tmp_path: Path, ssh: bool = True, **kw: object) -> VMSpec:
    guest = make_guest(tmp_path / "guest", ssh=ssh)
    return VMSpec(
        image=guest.disk,
        logs=tmp_path / "logs",
        state=tmp_path / "state",
        client_key=guest.client_key,
        host_key_pub=guest.host_key_pub,
        kernel=guest.kernel,
        initrd=guest.initrd,
        cores=1,
        memory_mb=512,
        **kw,  # type: ignore[arg-type]
    )


def group_gone(pgid: int) -> bool:
    return not group_alive(pgid)


def test_the_vm_boots_answers_over_ssh_and_powers_off(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, size=2 << 30, boot_timeout=180)
    with VM(spec) as vm:
        assert vm.link is not None
        print(f"boot to SSH under TCG: {vm.boot_seconds:.1f} s")
        r = vm.link.run(
            "grep ' / ' /proc/mounts; readlink /sys/class/net/eth0/device/driver;"
            " readlink -f /sys/block/sda/device; echo hello > /root/from-host; sync"
        )
        assert r.returncode == 0, r.stderr
        out = r.stdout.decode()
        assert "/dev/sda1 / ext4 rw" in out  # the SATA disk is the root, as in the real guest
        assert out.splitlines()[1].endswith("/e1000")  # the seed's NIC
        assert "/ata" in out.splitlines()[2]  # sda hangs off the AHCI (libata) controller
        # the root grew with the image (66 MiB made, 2 GiB configured): partition and ext4,
        # as the guest's df sees it (tasks.guest.vm.grow_root)
        df = vm.link.run("df -k /").stdout.decode().splitlines()[-1].split()
        assert int(df[1]) * 1024 > 1900 << 20, df
        print(f"the guest's df: {' '.join(df)}")

        # a guest with another host key is refused, not trusted on first use
        other = tmp_path / "other.pub"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", tmp_path / "other"])
        impostor = Endpoint(vm.port, spec.client_key, other, tmp_path / "state2")
        with pytest.raises(LinkError, match="not the one recorded"):
            impostor.wait_up(30)
        # a reboot in the guest (as after a crash, or like the kexec): qemu stays, the guest
        # comes back with a new boot id and the link reaches it again
        boot_id = "cat /proc/sys/kernel/random/boot_id"
        before = vm.link.run(boot_id).stdout
        vm.link.run("sync; reboot -f", timeout=30)
        vm.link.wait_up(180, alive=vm.why_dead)
        assert vm.link.run(boot_id).stdout not in (before, b"")
        pgid = vm.proc.pid
    # stopped cleanly: the guest powered itself off, qemu exited on its own
    assert vm.proc.returncode == 0
    assert "reboot: Power down" in spec.console_log.read_text()
    assert group_gone(pgid)
    # the image was grown sparsely to the configured size and the guest's write reached it
    st = spec.image.stat()
    assert st.st_size == 2 << 30
    assert st.st_blocks * 512 < 200 << 20
    assert b"hello\n" in spec.image.read_bytes()[: 66 << 20]


def test_a_guest_without_ssh_fails_within_the_timeout_with_the_console(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, ssh=False, boot_timeout=40)
    vm = VM(spec)
    start = time.monotonic()
    with pytest.raises(VMError) as err:
        vm.__enter__()
    took = time.monotonic() - start
    assert took < spec.boot_timeout + 40
    message = str(err.value)
    assert "the VM did not come up" in message
    assert "no SSH answer from 127.0.0.1" in message
    assert tail(spec.console_log) in message  # the console's last lines
    assert "Linux version" in spec.console_log.read_text()  # it did boot (just no SSH)
    assert vm.proc is not None and group_gone(vm.proc.pid)


def test_no_qemu_outlives_a_killed_doit(tmp_path: Path) -> None:
    spec = spec_for(tmp_path)
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from tasks.guest.vm import VM, VMSpec
        vm = VM(VMSpec(image=Path({str(spec.image)!r}), logs=Path({str(spec.logs)!r}),
                       state=Path({str(spec.state)!r}), client_key=Path("k"),
                       host_key_pub=Path("k.pub"), kernel=Path({str(spec.kernel)!r}),
                       initrd=Path({str(spec.initrd)!r}), cores=1, memory_mb=256))
        vm.start()
        print(vm.proc.pid, flush=True)
        time.sleep(600)
        """
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    pgid = int(holder.stdout.readline())
    try:
        time.sleep(2)
        assert not group_gone(pgid)  # qemu runs
        qemu = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout
        assert len(qemu.split()) >= 2, "no qemu in the supervisor's group"
        holder.send_signal(signal.SIGKILL)  # the doit that started it dies without a word
        holder.wait()
        for _ in range(50):
            if group_gone(pgid):
                break
            time.sleep(0.2)
        assert group_gone(pgid), "qemu outlived the process that started it"
    finally:
        holder.kill()
        if not group_gone(pgid):
            os.killpg(pgid, signal.SIGKILL)


def test_doit_vm_holds_the_guest_until_interrupted(tmp_path: Path) -> None:
    """``python -m tasks.guest.drive --vm`` (what ``doit vm`` runs): boots the guest from the
    project's ``[vm]`` config, prints a working ssh command, powers off on Ctrl-C."""
    guest = make_guest(tmp_path / "proj" / "guest")
    (tmp_path / "proj" / "azl-bootstrap.toml").write_text(
        "[vm]\n"
        f'image = "{guest.disk}"\nhost_key = "{guest.host_key_pub}"\n'
        f'client_key = "{guest.client_key}"\nkernel = "{guest.kernel}"\n'
        f'initrd = "{guest.initrd}"\nappend = "console=ttyS0 root=/dev/sda1"\n'
        'size = "1G"\ncores = 1\nmemory_mb = 512\nboot_timeout = 180\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "tasks.guest.drive", "--vm"],
        cwd=tmp_path / "proj",
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
        # Ctrl-C reaches it even when this test runs as a background job (SIGINT ignored)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stdout is not None
    try:
        lines = [proc.stdout.readline() for _ in range(4)]  # the disk grown, then the login
        assert lines[0].startswith("azl: the disk: grew partition 1"), lines
        assert lines[3].startswith("azl: Ctrl-C powers it off"), lines
        login = lines[2].strip()
        r = subprocess.run(f"{login} 'uname -m'", shell=True, capture_output=True, text=True)
        assert r.stdout == "x86_64\n", r.stderr
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=90) == 0
    finally:
        proc.kill()
    console = tmp_path / "proj" / "cache" / "logs" / "vm.console.log"
    assert "reboot: Power down" in console.read_text()
    assert guest.disk.stat().st_size == 1 << 30
