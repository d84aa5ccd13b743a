"""Push a directory tree to the guest over the link, sending only what changed.

Content-compared, not clock-compared: the host hashes its files (xxh3, through the engine's
digest cache ``tasks.store.checker``, so an unchanged tree hashes nothing twice), and the guest
keeps ``<dest>/.azl-push.json``: for each file pushed, its digest and the size and mtime it
had right after extraction. Before a push the guest reports the entries whose file is still
exactly as pushed (a file changed in the guest since then counts as absent), the host sends
one ``tar`` stream over ssh with the files whose digest differs, plus the list of files it
pushed before and no longer has, and the guest then removes those and records the new
manifest atomically. A push cut in the middle leaves the old manifest: what was half-written
has another stat, so the next push sends it again.

The guest needs only ``sh``, ``tar`` and its ``python3`` (stdlib: json, os) — no rsync,
no xxhash. Files the guest made itself (``cache/``, build results) are never touched: only
paths a previous push recorded can be deleted.
"""

from __future__ import annotations

import fnmatch
import io
import json
import os
import subprocess
import tarfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tasks.guest.link import Endpoint, LinkError, quote
from tasks.store import checker

MANIFEST = ".azl-push.json"
INCOMING = ".azl-push.incoming.json"
# never pushed from a project: host-only state, the mirror (pushed on its own), host config,
# the ISO copied out (out/). A pattern starting with "/" matches at the top of the tree only
# (tasks/build/ is the engine's, not a build directory); the others match a name anywhere.
PROJECT_EXCLUDE = (
    "/.git", "/.venv", "/cache", "/mirror", "__pycache__", "*.egg-info", ".pytest_cache",
    ".ruff_cache", "/build", "/out", "/azl-bootstrap.toml", MANIFEST, INCOMING, "*.part",
)  # fmt: skip
MIRROR_EXCLUDE = ("*.part", "*.bad", MANIFEST, INCOMING)

# In the guest: print {path: digest} of the manifest's files still exactly as pushed.
_LIST = """
import json, os, sys
try:
    m = json.load(open(".azl-push.json"))
except (OSError, ValueError):
    m = {}
out = {}
for rel, (digest, size, mtime) in m.items():
    try:
        st = os.lstat(rel)
    except OSError:
        continue
    if st.st_size == size and st.st_mtime_ns == mtime:
        out[rel] = digest
json.dump(out, sys.stdout)
"""

# In the guest, after tar: delete what the host no longer has, record the new manifest.
_FINISH = """
import json, os
inc = json.load(open(".azl-push.incoming.json"))
for rel in inc["delete"]:
    try:
        os.unlink(rel)
    except OSError:
        pass
m = {}
for rel, digest in inc["files"].items():
    try:
        st = os.lstat(rel)
    except OSError:
        continue
    m[rel] = [digest, st.st_size, st.st_mtime_ns]
with open(".azl-push.json.part", "w") as f:
    json.dump(m, f)
    f.flush()
    os.fsync(f.fileno())
os.replace(".azl-push.json.part", ".azl-push.json")
os.unlink(".azl-push.incoming.json")
"""


@dataclass
class PushResult:
    files: int  # files in the tree
    sent: int  # files sent
    deleted: int
    bytes: int  # bytes of the tar stream sent over ssh
    seconds: float


def _excluded(rel: str, patterns: Iterable[str]) -> bool:
    """``rel`` (a path relative to the tree) matches a pattern: ``/pattern`` the whole path
    from the top, any other the last name."""
    name = os.path.basename(rel)
    return any(
        fnmatch.fnmatch(rel, p[1:]) if p.startswith("/") else fnmatch.fnmatch(name, p)
        for p in patterns
    )


def local_manifest(tree: Path, exclude: Iterable[str] = ()) -> dict[str, str]:
    """``{relative path: xxh3}`` of the regular files and symlinks under ``tree`` (a
    symlink's digest is of its target text), skipping paths matching ``exclude``
    (``_excluded``)."""
    exclude = tuple(exclude)
    out: dict[str, str] = {}
    for top, dirs, files in os.walk(tree):
        here = os.path.relpath(top, tree)
        prefix = "" if here == "." else here + "/"
        dirs[:] = sorted(d for d in dirs if not _excluded(prefix + d, exclude))
        for name in sorted(files):
            rel = prefix + name
            if _excluded(rel, exclude):
                continue
            path = os.path.join(top, name)
            st = os.lstat(path)
            if os.path.islink(path):
                out[rel] = "link:" + os.readlink(path)
            elif os.path.isfile(path):
                out[rel] = f"{checker.file_digest(path, st)}:{st.st_mode & 0o777:o}"
    return out


class _Counter(io.RawIOBase):
    def __init__(self, raw: io.RawIOBase | io.BufferedIOBase):
        self.raw, self.count = raw, 0

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.raw.write(b)
        self.count += len(b)
        return len(b)


def remote_manifest(link: Endpoint, dest: str, python: str = "python3") -> dict[str, str]:
    """What the guest holds at ``dest`` exactly as the last push left it."""
    r = link.run(f"mkdir -p {quote([dest])} && cd {quote([dest])} && {python} -c {quote([_LIST])}")
    if r.returncode:
        raise LinkError(
            f"cannot read the guest's push manifest in {dest}: exit {r.returncode}: "
            f"{r.stderr.decode(errors='replace').strip()}"
        )
    return json.loads(r.stdout)


def push(
    link: Endpoint,
    tree: Path,
    dest: str,
    exclude: Iterable[str] = (),
    python: str = "python3",
    only: set[str] | None = None,
) -> PushResult:
    """Make the guest's ``dest`` hold ``tree``'s files (see the module docstring); with
    ``only``, just those relative paths of it (the rest counts as absent)."""
    start = time.monotonic()
    have = local_manifest(tree, exclude)
    if only is not None:
        have = {rel: d for rel, d in have.items() if rel in only}
    there = remote_manifest(link, dest, python)
    send = [rel for rel, digest in have.items() if there.get(rel) != digest]
    delete = sorted(set(there) - set(have))
    if not send and not delete:
        return PushResult(len(have), 0, 0, 0, time.monotonic() - start)
    incoming = json.dumps({"files": have, "delete": delete}).encode()
    d = quote([dest])
    command = f"cd {d} && tar -xf - && {python} -c {quote([_FINISH])}"
    proc = subprocess.Popen(link.ssh_argv(command), stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    counter = _Counter(proc.stdin)
    try:
        with tarfile.open(fileobj=counter, mode="w|", format=tarfile.GNU_FORMAT) as tar:
            for rel in send:
                info = tar.gettarinfo(str(tree / rel), arcname=rel)
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                if info.isreg():
                    with open(tree / rel, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
            info = tarfile.TarInfo(INCOMING)
            info.size, info.mtime = len(incoming), int(time.time())
            tar.addfile(info, io.BytesIO(incoming))
        proc.stdin.close()
    except BrokenPipeError:
        pass
    err = proc.stderr.read() if proc.stderr else b""
    if proc.wait():
        raise LinkError(
            f"push of {tree} to the guest's {dest} failed (exit {proc.returncode}): "
            f"{err.decode(errors='replace').strip()}"
        )
    return PushResult(len(have), len(send), len(delete), counter.count, time.monotonic() - start)
