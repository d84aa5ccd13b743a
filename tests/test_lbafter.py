"""The after-step ``recipes/lb-image/90-azl-automation.sh``, run for real.

Not in live-bootstrap's guest (whose image cannot be built here), but in a chroot whose root is
an overlay of this machine's (writes land in a scratch directory), in private mount and
network namespaces: the script builds dropbear from the real tarball with its own commands,
authorises the host's key, makes a host key and patches the pinned live-bootstrap's ``/init``;
then ``/usr/bin/azl-start-ssh`` (what ``/init`` runs) starts dropbear and the host logs in
with ``ssh``, checking the host key the script printed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import lbcheckout

REPO = Path(__file__).resolve().parent.parent
AFTER = REPO / "recipes/lb-image/90-azl-automation.sh"

HARNESS = """set -e
T={tmp}
mount -t overlay overlay -o lowerdir=/,upperdir=$T/upper,workdir=$T/work $T/m
mount -t proc proc $T/m/proc
mount -t tmpfs tmpfs $T/m/dev
for d in null zero random urandom tty; do touch $T/m/dev/$d; mount --bind /dev/$d $T/m/dev/$d; done
mount -t tmpfs tmpfs $T/m/tmp
mount -t tmpfs tmpfs $T/m/run
ip link set lo up
chroot $T/m /bin/bash /steps/after/90-azl-automation.sh > $T/after.out 2>&1
grep '^AZL-HOSTKEY: ' $T/after.out | sed 's/^AZL-HOSTKEY: /127.0.0.1 /' > $T/known_hosts
chroot $T/m /usr/bin/azl-start-ssh
trap 'kill $(cat $T/m/run/dropbear.pid)' EXIT
for i in 1 2 3 4 5 6 7 8 9 10; do
  ssh -F /dev/null -i $T/id_ed25519 -o IdentitiesOnly=yes -o BatchMode=yes \\
    -o UserKnownHostsFile=$T/known_hosts -o StrictHostKeyChecking=yes -o ConnectTimeout=5 \\
    root@127.0.0.1 'echo logged in as $(id -un); grep -c " /dev/pts " /proc/mounts' > $T/ssh.out 2>&1 && break
  sleep 1
done
"""


@pytest.mark.network
def test_after_step_builds_dropbear_and_lets_the_host_in(
    tmp_path: Path, dropbear_tarball: Path
) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root, unshare and ip (mount and network namespaces)")
    lb = tmp_path / "lb"
    lbcheckout.live_bootstrap(lb)
    upper = tmp_path / "upper"
    for d in ("work", "m", "upper/steps/after/azl"):
        (tmp_path / d).mkdir(parents=True)
    # what live-bootstrap leaves before improve: after (the /init of make_bootable.sh)
    bootable = (lb / "steps/improve/make_bootable.sh").read_text()
    init = bootable.split("cat > /init <<- 'EOF'\n", 1)[1].split("\nEOF\n", 1)[0] + "\n"
    (upper / "init").write_text(init)
    triplet = subprocess.run(["gcc", "-dumpmachine"], capture_output=True, text=True).stdout.strip()
    (upper / "steps/bootstrap.cfg").write_text("CHROOT=True\n")
    (upper / "steps/env").write_text(
        f"PREFIX=/usr\nLIBDIR=/usr/lib/{triplet}\nTARGET={triplet}\nMAKEJOBS=-j2\n"
    )
    # what lb-image puts into steps/after (tasks/lbinputs.place_after_step)
    azl = upper / "steps/after/azl"
    shutil.copy(dropbear_tarball, azl)
    sha = subprocess.run(
        ["sha256sum", dropbear_tarball.name], cwd=azl, capture_output=True, text=True
    )
    (azl / "dropbear.sha256").write_text(sha.stdout)
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (azl / "authorized_keys").write_text(key.with_suffix(".pub").read_text())
    shutil.copy(AFTER, upper / "steps/after")
    (tmp_path / "harness.sh").write_text(HARNESS.format(tmp=tmp_path))
    r = subprocess.run(
        [
            "unshare",
            "--mount",
            "--net",
            "--propagation",
            "private",
            "bash",
            str(tmp_path / "harness.sh"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    after = (tmp_path / "after.out").read_text() if (tmp_path / "after.out").exists() else ""
    assert r.returncode == 0, r.stdout + r.stderr + after[-3000:]
    assert "AZL-AFTER: start" in after and after.rstrip().endswith("AZL-AFTER: done"), after[-3000:]
    assert "FAILED" not in after
    # the host got in with its key, checking the host key the script printed
    assert (tmp_path / "ssh.out").read_text().split() == ["logged", "in", "as", "root", "1"]
    host_key = (tmp_path / "known_hosts").read_text()
    assert host_key.startswith("127.0.0.1 ssh-ed25519 ") and host_key.count("\n") == 1
    # what the script left in the system
    assert {"/bin/sh", "/bin/bash", "/usr/bin/bash"} <= set(
        (upper / "etc/shells").read_text().split()
    )
    assert (upper / "root/.ssh/authorized_keys").read_text() == key.with_suffix(".pub").read_text()
    assert oct((upper / "root/.ssh/authorized_keys").stat().st_mode & 0o777) == "0o600"
    assert (upper / "usr/sbin/dropbear").exists() and (upper / "usr/bin/dropbearkey").exists()
    lines = (upper / "init").read_text().splitlines()
    at = lines.index("/usr/bin/azl-start-ssh")
    assert "openvt" in lines[at + 1]
