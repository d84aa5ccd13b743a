"""Generated projects for the benchmark: the azl project, its stock-doit twin and a small
``make`` project whose fake compiler counts the compile jobs running at once."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import tarfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIG = 'platform = "sandbox"\njobs = 2\n'


def layered_graph(
    n: int, depth: int = 15, fan_in: int = 16, seed: int = 11
) -> dict[str, list[str]]:
    """``n`` packages in ``depth`` layers; each package of layer L > 0 needs one package of
    layer L-1 (so the graph is ``depth`` deep) and up to ``fan_in`` of any earlier layer."""
    rnd = random.Random(seed)
    layers: list[list[str]] = [[] for _ in range(depth)]
    for i in range(n):
        layers[min(depth - 1, i * depth // n)].append(f"p{i:04d}")
    graph: dict[str, list[str]] = {}
    earlier: list[str] = []
    for level, names in enumerate(layers):
        for name in names:
            deps: set[str] = set()
            if level:
                deps.add(rnd.choice(layers[level - 1]))
                k = rnd.randint(0, min(fan_in, len(earlier)) - 1)
                deps.update(rnd.sample(earlier, k))
            graph[name] = sorted(deps)
        earlier += names
    return graph


def _blob(path: Path, size: int, tag: str) -> str:
    """A file of ``size`` bytes unique to ``tag`` (a repeated random block); its sha256."""
    block = random.Random(tag).randbytes(1 << 20)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        head = tag.encode().ljust(64, b"\0")
        f.write(head)
        h.update(head)
        left = size - len(head)
        while left > 0:
            chunk = block[: min(left, len(block))]
            f.write(chunk)
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def make_azl(root: Path, n: int, mirror_bytes: int) -> dict[str, dict]:
    """The azl project at ``root``: the repository's dodo.py, ``n`` script recipes, one
    mirror file each (``mirror_bytes`` in total). Returns the graph with files and sha256."""
    (root / "recipes").mkdir(parents=True)
    (root / "mirror").mkdir()
    shutil.copy(REPO / "dodo.py", root / "dodo.py")
    (root / "azl-bootstrap.toml").write_text(CONFIG)
    graph = layered_graph(n)
    out: dict[str, dict] = {}
    for name, deps in graph.items():
        file = f"{name}-1.0.bin"
        sha = _blob(root / "mirror" / file, max(64, mirror_bytes // n), name)
        (root / "recipes" / f"{name}.toml").write_text(
            textwrap.dedent(
                f"""\
                version = "1.0"
                depends = {json.dumps(deps)}
                build_system = "script"
                script.install = 'mkdir -p "$DESTDIR$PREFIX/share" && echo $PKG > "$DESTDIR$PREFIX/share/$PKG.txt"'
                [versions."1.0"]
                sources = [{{ file = "{file}", sha256 = "{sha}", unpack = false, urls = ["file:///nonexistent/{file}"] }}]
                """
            )
        )
        out[name] = {"deps": deps, "file": file, "sha256": sha}
    return out


STOCK_DODO = '''\
"""Stock doit with the same tasks as the azl project: MD5 checker, json backend."""
import hashlib, json, os

DOIT_CONFIG = {"backend": "json", "dep_file": ".doit.json", "check_file_uptodate": "md5",
               "default_tasks": ["all"], "verbosity": 0}
AZL = os.environ["AZL_PROJECT"]
GRAPH = json.load(open("graph.json"))


def verify(path, sha256):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest() == sha256


def build(name):
    os.makedirs("manifests", exist_ok=True)
    with open(f"manifests/{name}.json", "w") as f:
        json.dump({"name": name}, f)


def task_all():
    for name, g in GRAPH.items():
        src = f"{AZL}/mirror/{g['file']}"
        yield {"name": f"mirror:{g['file']}", "actions": [(verify, [src, g["sha256"]])],
               "file_dep": [src]}
        yield {"name": name, "actions": [(build, [name])],
               "file_dep": [f"{AZL}/recipes/{name}.toml", src]
               + [f"manifests/{d}.json" for d in g["deps"]],
               "targets": [f"manifests/{name}.json"]}
'''


def make_stock(root: Path, azl: Path, graph: dict[str, dict]) -> None:
    """The stock-doit twin at ``root``, reading the azl project's recipes and mirror."""
    root.mkdir(parents=True)
    (root / "dodo.py").write_text(STOCK_DODO)
    (root / "graph.json").write_text(json.dumps(graph))


PROBE = """\
#!/bin/sh
# a fake compile job: note how many run now, work a while, leave
d="$1"
echo "start $(date +%s.%N)" >> "$d/times"
touch "$d/run.$$"
ls "$d" | grep -c '^run\\.' >> "$d/peaks"
sleep 0.3
rm -f "$d/run.$$"
echo "end $(date +%s.%N)" >> "$d/times"
"""


def make_jobs_project(root: Path, packages: int, objects: int) -> Path:
    """``packages`` independent ``make`` packages of ``objects`` fake compile jobs each; the
    probe directory where each job records how many ran at once (file ``peaks``)."""
    (root / "recipes").mkdir(parents=True)
    (root / "mirror").mkdir()
    probe_dir = root / "probe"
    probe_dir.mkdir()
    probe = root / "cc-probe.sh"
    probe.write_text(PROBE)
    probe.chmod(0o755)
    shutil.copy(REPO / "dodo.py", root / "dodo.py")
    (root / "azl-bootstrap.toml").write_text(CONFIG)
    objs = " ".join(f"o{i}.o" for i in range(objects))
    makefile = (
        f".PHONY: all install\nall: {objs}\n%.o:\n\t{probe} {probe_dir}\n\ttouch $@\n"
        "install:\n\tmkdir -p $(DESTDIR)$(PREFIX)/share\n\ttouch $(DESTDIR)$(PREFIX)/share/$(PKG)\n"
    )
    for i in range(packages):
        name = f"m{i}"
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            data = makefile.replace("$(PKG)", name).encode()
            info = tarfile.TarInfo(f"{name}-1.0/Makefile")
            info.size, info.mtime = len(data), 1_000_000_000
            tar.addfile(info, io.BytesIO(data))
        (root / "mirror" / f"{name}-1.0.tar.gz").write_bytes(buf.getvalue())
        sha = hashlib.sha256(buf.getvalue()).hexdigest()
        (root / "recipes" / f"{name}.toml").write_text(
            textwrap.dedent(
                f"""\
                version = "1.0"
                build_system = "make"
                [versions."1.0"]
                sources = [{{ file = "{name}-1.0.tar.gz", sha256 = "{sha}", urls = ["file:///nonexistent/{name}.tar.gz"] }}]
                """
            )
        )
    return probe_dir


def touch_all(directory: Path) -> None:
    for p in directory.iterdir():
        if p.is_file():
            os.utime(p)
