"""A real OpenSSH server on 127.0.0.1 standing in for the guest.

Keys are generated per server (host key, client key authorised through a private
``AuthorizedKeysFile``); nothing of the machine's own ssh setup is used or changed, except that
sshd needs its privilege-separation directory ``/run/sshd`` (created if missing: an empty
directory on a tmpfs). Started and stopped by PID; ``kill_sessions`` kills the per-connection
children only (a dropped connection), ``stop``/``start`` the whole server (a guest that goes
away and comes back, as across the kexec).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from tasks.guest.link import Endpoint
from tasks.guest.vm import free_port

SSHD = Path("/usr/sbin/sshd")


def missing() -> str | None:
    if not SSHD.exists():
        return f"no {SSHD} (Debian: openssh-server)"
    if os.geteuid() != 0 and not Path("/run/sshd").is_dir():
        return "sshd needs /run/sshd, and we are not root to create it"
    return None


class Sshd:
    def __init__(self, work: Path):
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        host_key = work / "host_ed25519"
        self.client_key = work / "client"
        for key in (host_key, self.client_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
        self.host_key_pub = host_key.with_suffix(".pub")
        authorized = work / "authorized_keys"
        authorized.write_text(self.client_key.with_suffix(".pub").read_text())
        self.config = work / "sshd_config"
        self.config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
            f"PidFile {work / 'sshd.pid'}\nAuthorizedKeysFile {authorized}\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            "PermitRootLogin yes\nStrictModes no\nLogLevel ERROR\n"
        )
        self.proc: subprocess.Popen | None = None

    def endpoint(self) -> Endpoint:
        return Endpoint(self.port, self.client_key, self.host_key_pub, self.work / "link")

    def start(self) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", self.config],
            stderr=open(self.work / "sshd.log", "ab"),  # noqa: SIM115 - the child's
        )
        for _ in range(100):
            if self.endpoint().banner(timeout=0.5):
                return
            time.sleep(0.05)
        raise RuntimeError(f"sshd did not start: {(self.work / 'sshd.log').read_text()}")

    def sessions(self) -> list[int]:
        """PIDs of the per-connection sshd children."""
        if not self.proc:
            return []
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        try:
            return [int(p) for p in children.read_text().split()]
        except OSError:
            return []

    def kill_sessions(self) -> int:
        pids = self.sessions()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    def stop(self) -> None:
        """Stop the server and every session (the guest vanishes)."""
        if self.proc and self.proc.poll() is None:
            self.kill_sessions()
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None
