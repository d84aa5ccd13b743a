"""Copy a stage's finished files (the ISO) out of the guest to the host's ``out/``.

The guest's stage records each globbed output (``cache/stages/<stage>.json``, paths relative
to the tree). Each file is streamed over the link into ``out/<name>.part``, hashed on the way,
compared with the sha256 the guest computes of its own copy, and only then renamed; its
``out/<name>.sha256`` (``sha256sum -c`` format) is written beside it. A file already in
``out/`` whose ``.sha256`` matches the guest's is not copied again.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from tasks.guest.link import Endpoint, LinkError, quote

_SHA256 = (
    "import hashlib, sys\n"
    "h = hashlib.sha256()\n"
    "with open(sys.argv[1], 'rb') as f:\n"
    "    for b in iter(lambda: f.read(1 << 20), b''):\n"
    "        h.update(b)\n"
    "print(h.hexdigest())\n"
)


def guest_sha256(link: Endpoint, path: str, python: str = "python3") -> str:
    r = link.run(f"{python} -c {quote([_SHA256])} {quote([path])}")
    if r.returncode:
        raise LinkError(f"cannot hash {path} in the guest: {r.stderr.decode(errors='replace')}")
    return r.stdout.decode().strip()


def copy_outputs(
    link: Endpoint,
    record: str,
    tree: str,
    out_dir: Path,
    say: Callable[[str], None],
    python: str = "python3",
) -> list[Path]:
    """Copy every file the guest's stage ``record`` lists (relative to ``tree``) into
    ``out_dir``, verified by sha256; the host paths."""
    r = link.run(f"cat {quote([record])}")
    if r.returncode:
        raise LinkError(f"the guest has no record {record}: the stage did not finish")
    doc = json.loads(r.stdout)
    out_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for rel in sorted(doc):
        src, name = f"{tree}/{rel}", Path(rel).name
        dest, sums = out_dir / name, out_dir / f"{name}.sha256"
        want = guest_sha256(link, src, python)
        if dest.is_file() and sums.is_file() and sums.read_text().split()[:1] == [want]:
            say(f"azl: {dest} is already the guest's {rel} (sha256 {want[:12]}...)")
            copied.append(dest)
            continue
        part = dest.with_name(name + ".part")
        h, size = hashlib.sha256(), 0
        proc = subprocess.Popen(link.ssh_argv(f"cat {quote([src])}"), stdout=subprocess.PIPE)
        stream = proc.stdout
        assert stream is not None
        with open(part, "wb") as f:
            while block := stream.read(1 << 20):
                h.update(block)
                f.write(block)
                size += len(block)
        if proc.wait() or h.hexdigest() != want:
            part.unlink(missing_ok=True)
            raise LinkError(
                f"copying {src} out of the guest failed (exit {proc.returncode}, sha256 "
                f"{h.hexdigest()} against the guest's {want}); run the step again to retry"
            )
        os.replace(part, dest)
        sums.write_text(f"{want}  {name}\n")
        say(f"azl: copied {rel} to {dest} ({size / 2**20:.1f} MiB), sha256 in {sums}")
        copied.append(dest)
    return copied
