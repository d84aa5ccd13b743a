"""The guest link: the host's OpenSSH ``ssh`` to the guest, without the user's ssh setup.

Every connection uses a generated client key and a private known_hosts holding the host key
recorded when the image was made (``HostKeyAlias``, so the forwarded port may change between
runs), with ``-F /dev/null`` (no user config), ``BatchMode`` (never a prompt) and
``StrictHostKeyChecking=yes`` (a different host key is an error, not a question).

``Endpoint.run`` runs one command; ``Endpoint.stream`` runs one and passes its output on line by
line as it comes. ``Endpoint.wait_up`` waits until the guest answers. Pushing files and
driving the guest's ``doit`` are ``tasks.guest.push`` and ``tasks.guest.run``.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ALIAS = "azl-guest"
SSH_FAILED = 255  # ssh's own exit status: no connection, auth or host key failure
HOST_KEY_CHANGED = ("REMOTE HOST IDENTIFICATION HAS CHANGED", "Host key verification failed")


class LinkError(Exception):
    """The guest cannot be reached, or refused us; the message says why."""


@dataclass(frozen=True)
class Endpoint:
    """Where the guest's SSH server is and how we prove who we are and who it is."""

    port: int
    client_key: Path  # private key; its .pub is authorised in the guest
    host_key_pub: Path  # the guest's public host key, one line "ssh-ed25519 AAAA..."
    state_dir: Path  # holds the private known_hosts
    host: str = "127.0.0.1"
    user: str = "root"
    connect_timeout: int = 10

    def known_hosts(self) -> Path:
        """The private known_hosts: the recorded host key under the alias."""
        line = self.host_key_pub.read_text().strip()
        if not line.startswith(("ssh-", "ecdsa-")) or len(line.split()) < 2:
            raise LinkError(f"{self.host_key_pub}: not a public host key: {line[:60]!r}")
        path = self.state_dir / "known_hosts"
        text = f"{ALIAS} {' '.join(line.split()[:2])}\n"
        if not path.exists() or path.read_text() != text:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return path

    def options(self) -> list[str]:
        """ssh/scp options shared by every connection (no host, no command)."""
        return [
            "-F", "/dev/null",
            "-i", str(self.client_key),
            "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts()}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", f"HostKeyAlias={ALIAS}",
            "-o", f"ConnectTimeout={self.connect_timeout}",
            "-o", "ServerAliveInterval=5",
            "-o", "ServerAliveCountMax=4",
            "-o", "LogLevel=ERROR",
        ]  # fmt: skip

    def ssh_argv(self, command: str) -> list[str]:
        return ["ssh", *self.options(), "-p", str(self.port), f"{self.user}@{self.host}", command]

    def run(
        self, command: str, *, input: bytes | None = None, timeout: float | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``command`` (a shell line) in the guest; its output captured."""
        return subprocess.run(
            self.ssh_argv(command),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
        )

    def stream(self, command: str, out: Callable[[str], None]) -> int:
        """Run ``command`` in the guest, giving each line of its output (stdout and stderr
        merged) to ``out`` as it arrives; its exit status (255: the connection failed)."""
        proc = subprocess.Popen(
            self.ssh_argv(command),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert proc.stdout is not None
        for raw in proc.stdout:
            out(raw.decode(errors="replace").rstrip("\n"))
        return proc.wait()

    def check_key_error(self, stderr: bytes) -> None:
        """Raise if ssh failed for good: the guest's host key is not the recorded one, or
        the guest refused our key (waiting longer would not help)."""
        text = stderr.decode(errors="replace")
        if any(marker in text for marker in HOST_KEY_CHANGED):
            raise LinkError(
                f"the guest's host key is not the one recorded in {self.host_key_pub}; "
                f"refusing to connect:\n{text.strip()}"
            )
        if "Permission denied" in text:
            raise LinkError(
                f"the guest refused our key {self.client_key}: is {self.client_key}.pub in "
                f"its /root/.ssh/authorized_keys?\n{text.strip()}"
            )

    def banner(self, timeout: float = 3.0) -> bool:
        """Whether an SSH server greets us on the port now (a cheap probe: qemu's forwarded
        port accepts connections long before the guest's server listens)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout) as s:
                s.settimeout(timeout)
                return s.recv(4).startswith(b"SSH-")
        except OSError:
            return False

    def wait_up(
        self, timeout: float, alive: Callable[[], str | None] = lambda: None, poll: float = 0.5
    ) -> float:
        """Wait until ``true`` succeeds in the guest; the seconds it took. ``alive`` returns
        why waiting is pointless (e.g. "qemu exited"), or None. Raises LinkError on timeout,
        a wrong host key or a dead guest."""
        start = time.monotonic()
        last = b""
        while True:
            gone = alive()
            if gone:
                raise LinkError(gone)
            if not self.banner():
                if time.monotonic() - start > timeout:
                    raise LinkError(
                        f"no SSH answer from {self.host}:{self.port} within {timeout:.0f} s "
                        f"(no SSH banner)"
                    )
                time.sleep(poll)
                continue
            try:
                r = self.run("true", timeout=self.connect_timeout + 5)
            except subprocess.TimeoutExpired:
                r = subprocess.CompletedProcess([], SSH_FAILED, b"", b"ssh timed out")
            if r.returncode == 0:
                return time.monotonic() - start
            self.check_key_error(r.stderr)
            last = r.stderr or last
            if time.monotonic() - start > timeout:
                why = last.decode(errors="replace").strip() or f"exit {r.returncode}"
                raise LinkError(
                    f"no SSH answer from {self.host}:{self.port} within {timeout:.0f} s "
                    f"(last: {why})"
                )
            time.sleep(poll)


def quote(words: Sequence[str]) -> str:
    """A shell line for the guest's ``sh`` from ``words``."""
    import shlex

    return " ".join(shlex.quote(w) for w in words)
