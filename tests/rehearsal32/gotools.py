"""Part (d) of the 32-bit rehearsal (tests/rehearsal32/root.py): the go-tools stage of the real
toolkit, in the i386 root on the 64-bit kernel, with the go1.23 that part (b) builds there
(``GOHOSTARCH=386``, tests/rehearsal32/go.py) and no network.

1. The toolkit's Go modules (``toolkit/tools/go.mod``, ``go.sum`` of the pinned tree, from
   ``../shared/azurelinux/toolkit-6a8b54d4.tar.gz``) are fetched through the Go module proxy
   into the checkout's ``mirror/go-modules`` (tasks/sources/gomodules.py) by that go1.23 (the
   root has the machine's network) and checked against go.sum (``gomodules.verify``).
2. The toolkit is unpacked in the root (``TREE``) and the stage runs there as the guest runs
   it: the engine's own ``StageAction`` built from ``recipes/go-tools.toml`` (its make line,
   env, PATH, ``fresh`` paths, retry, one log per attempt), the modules from the mirror
   (``GOPROXY=file://``, read only), under ``unshare --net`` (nothing but a loopback).
   A stand-in manifest of the ``go`` package points ``${GO_BIN}`` at the root's go1.23. The
   toolkit's tests (make runs them before each build) need rpm, rpmspec and zstd (Debian's
   stand in for the guest's, see root.PACKAGES) and the licence checker's test data
   ``all_docs_20240522.json``, which the shared tarball lacks: ``stand_in_all_docs``.
3. The same without ``GOARCH`` in the env: Go's default GOARCH=386 must fail with the seed's
   ``imagecustomizer.go:888`` error, on the first attempt, not retried.

``python -m tests.rehearsal32 gotools`` prints the result; tests/test_gotools_real.py asserts it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.rehearsal32.go import GO_DIR, ensure_go
from tests.rehearsal32.packages import VENV, ensure_venv
from tests.rehearsal32.root import INSIDE, RehearsalError, entered

TOOLKIT = "azurelinux/toolkit-6a8b54d4.tar.gz"  # under ../shared
TREE = "/root/azl-gotools/tree"  # the pinned tree's toolkit/, unpacked inside the root
RUN = "/root/azl-gotools/project"  # the stage's project inside: cache/ (logs, manifests), mirror
RESULT = "/root/azl-gotools/result.json"
SRPMPACKER = "/root/azl-gotools/srpmpacker"  # the stage's srpmpacker, kept for srpm_check
SEED_ERROR = (
    "imagecustomizer.go:888:16: invalid operation: stat.Frsize * int64(stat.Blocks) "
    "(mismatched types int32 and int64)"
)

# Run inside the root by its Python (the venv of part (a), the checkout on PYTHONPATH): the
# stage's own action, as doit would call it, its outcome written to RESULT.
DRIVER = """
import dataclasses, json, os, sys, time
from pathlib import Path
from tasks.engine.recipeset import parse_recipe
from tasks.kinds.stage import StageAction
from tasks.model.config import Paths
from tasks.model.platform import Platform

drop = sys.argv[1:]  # env variables of the recipe left out
recipe, errors = parse_recipe(Path("{inside}/recipes/go-tools.toml"))
assert recipe is not None, errors
stage = recipe.spec
stage = dataclasses.replace(stage, env={{k: v for k, v in stage.env.items() if k not in drop}})
paths = Paths(Path("{run}"))
target = "i686-unknown-linux-musl"
platform = Platform("guest", target, "/", "/usr", f"/usr/lib/{{target}}", os.cpu_count() or 1)
action = StageAction(stage, paths, platform, Path("{tree}"), "go",
                     paths.cache / "stages" / "go-tools.json", offline=True)
start = time.monotonic()
failed = action.execute(out=sys.stdout)
logs = sorted(p.name for p in paths.logs.glob("go-tools.*.log"))
Path("{result}").write_text(json.dumps({{
    "ok": failed is None, "message": "" if failed is None else str(failed),
    "seconds": time.monotonic() - start, "logs": logs,
    "max_attempts": stage.max_attempts, "env": stage.env,
}}))
"""


@dataclass
class StageRun:
    ok: bool
    message: str
    seconds: float
    logs: list[str]  # go-tools.<n>.log of this run: one per attempt
    env: dict[str, str]
    log_text: str = ""  # the last attempt's log


@dataclass
class GoToolsResult:
    modules: int = 0
    verified_files: int = 0
    fetch_seconds: float = 0.0
    go_build_seconds: float = 0.0  # go1.23's make.bash; 0 when the root had it
    max_attempts: int = 0
    amd64: StageRun | None = None
    default: StageRun | None = None  # without GOARCH
    tools: dict[str, str] = field(default_factory=dict)  # tool: its ELF machine
    stand_in_docs: int = 0  # entries of the licence checker's stand-in test data

    def summary(self) -> str:
        lines = [
            f"{self.modules} modules fetched in {self.fetch_seconds:.0f} s, "
            f"{self.verified_files} files verified by go.sum"
        ]
        if self.go_build_seconds:
            lines.append(f"go1.23 make.bash {self.go_build_seconds:.0f} s")
        for label, r in (("with the stage's env", self.amd64), ("without GOARCH", self.default)):
            if r:
                state = "built" if r.ok else "failed"
                lines.append(
                    f"{label}: {state} in {r.seconds:.0f} s, attempts {len(r.logs)} "
                    f"of {self.max_attempts} ({', '.join(r.logs)})"
                )
                if not r.ok:  # its first line is the exception's name
                    lines += ["  " + ln for ln in r.message.splitlines()[1:4]]
                    seed = [ln for ln in r.log_text.splitlines() if "imagecustomizer.go:888" in ln]
                    lines += ["  " + ln for ln in seed[:1]]
        if self.stand_in_docs:
            lines.append(f"licence checker's stand-in test data: {self.stand_in_docs} doc files")
        machines = sorted(set(self.tools.values()))
        lines.append(f"{len(self.tools)} tools in toolkit/out/tools: {', '.join(machines)}")
        return "\n".join(lines)


def elf_machine(path: Path) -> str:
    """The ELF machine of a file: x86-64, i386, or what else it says."""
    head = path.read_bytes()[:20]
    if head[:4] != b"\x7fELF":
        return "not ELF"
    machine = int.from_bytes(head[18:20], "little")
    return {62: "x86-64", 3: "i386"}.get(machine, f"machine {machine}")


def unpack_toolkit(project: Path, root: Path) -> Path:
    """The pinned toolkit/ at ``TREE`` inside the root (unpacked once)."""
    tree = root / TREE.lstrip("/")
    if (tree / "toolkit/Makefile").is_file():
        return tree
    tarball = project.parent / "shared" / TOOLKIT
    if not tarball.is_file():
        raise RehearsalError(f"{tarball}: not found (the pinned toolkit, see its README)")
    part = tree.with_name("tree.part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    subprocess.run(["tar", "-xzf", str(tarball), "-C", str(part)], check=True)
    (top,) = part.iterdir()  # azurelinux-6a8b54d4/
    shutil.rmtree(tree, ignore_errors=True)
    top.rename(tree)
    part.rmdir()
    return tree


ALL_DOCS = "toolkit/tools/pkg/licensecheck/testdata/all_docs_20240522.json"


def stand_in_all_docs(root: Path, tree: Path) -> int:
    """A stand-in for the licence checker's test data ``ALL_DOCS``, which the shared tarball
    lacks (its README says so) and TestAgainstKnownDocs reads: the same format, listing the
    root's own documentation files (/usr/share/doc/<package>/..., copyright and licence
    files left out), which the checker must not take for licences. Returns the entries."""
    entries = []
    for path in sorted((root / "usr/share/doc").glob("*/*")):
        if path.is_file() and not re.search(r"(?i)copyright|licen[cs]e|copying", path.name):
            entries.append({"Pkg": path.parent.name, "Path": f"/{path.relative_to(root)}"})
    data = {
        "UniqueFiles": len(entries),
        "UniquePackages": len({e["Pkg"] for e in entries}),
        "TestDataEntries": entries,
    }
    (tree / ALL_DOCS).write_text(json.dumps(data, indent=1) + "\n")
    return len(entries)


def _stage_project(project: Path, root: Path) -> Path:
    """The stage's project inside the root: the checkout's mirror, a stand-in ``go`` manifest."""
    run = root / RUN.lstrip("/")
    (run / "cache" / "manifests").mkdir(parents=True, exist_ok=True)
    mirror = run / "mirror"
    if not mirror.is_symlink():
        mirror.symlink_to(f"{INSIDE}/mirror")
    # stands in for the go package's manifest (tasks/toolkit/action.py go_bin): the root's go1.23
    go = {"files": {f"{GO_DIR.lstrip('/')}/bin/go": {"type": "file"}}}
    (run / "cache" / "manifests" / "go.json").write_text(json.dumps(go))
    return run


def gotools_check(project: Path, root: Path, without_goarch: bool = True) -> GoToolsResult:
    from tasks.sources import gomodules

    result = GoToolsResult()
    log = root.parent / "gotools.log"
    log.write_text("")
    tree = unpack_toolkit(project, root)
    result.stand_in_docs = stand_in_all_docs(root, tree)
    _stage_project(project, root)
    cache = project / "mirror" / gomodules.DEFAULT_DIR
    tools_inside = f"{TREE}/toolkit/tools"
    with entered(root, project) as run:
        result.go_build_seconds = ensure_go(project, root, run, log)
        ensure_venv(project, root, run, log)
        if gomodules.problem(tree / "toolkit/tools", cache):
            start = time.monotonic()
            run(
                f"cd {INSIDE} && {VENV}/bin/python -m tasks.sources.gomodules {tools_inside} "
                f"{INSIDE}/mirror/{gomodules.DEFAULT_DIR}",
                log,
                {"GO": f"{GO_DIR}/bin/go", "PYTHONPATH": INSIDE, "PYTHONDONTWRITEBYTECODE": "1"},
            )
            result.fetch_seconds = time.monotonic() - start
        record = json.loads((cache / gomodules.RECORD).read_text())
        result.modules = len(record["modules"])
        result.verified_files, problems = gomodules.verify(tree / "toolkit/tools", cache)
        if problems:
            raise RehearsalError(f"{cache} does not match go.sum: {'; '.join(problems[:5])}")
        result.amd64 = _stage(project, root, run, log, ())
        out = tree / "toolkit/out/tools"
        result.tools = {p.name: elf_machine(p) for p in sorted(out.iterdir()) if p.is_file()}
        if (out / "srpmpacker").is_file():  # kept for srpm_check: the next run removes out/
            shutil.copy2(out / "srpmpacker", root / SRPMPACKER.lstrip("/"))
        if without_goarch:
            result.default = _stage(project, root, run, log, ("GOARCH",))
    data = json.loads((root / RESULT.lstrip("/")).read_text())
    result.max_attempts = data["max_attempts"]
    return result


def _stage(project: Path, root: Path, run, log: Path, drop: tuple[str, ...]) -> StageRun:
    driver = root / "root/azl-gotools/driver.py"
    driver.write_text(DRIVER.format(inside=INSIDE, run=RUN, tree=TREE, result=RESULT))
    result = root / RESULT.lstrip("/")
    result.unlink(missing_ok=True)
    env = {"PYTHONPATH": INSIDE, "PYTHONDONTWRITEBYTECODE": "1", "HOME": "/root"}
    try:
        run(f"{VENV}/bin/python /root/azl-gotools/driver.py {' '.join(drop)}", log, env,
            network=False)  # fmt: skip
    except RehearsalError:
        if not result.is_file():  # the driver itself broke, not the stage
            raise
    data = json.loads(result.read_text())
    logs_dir = root / RUN.lstrip("/") / "cache/logs"
    last = (logs_dir / data["logs"][-1]).read_text(errors="replace") if data["logs"] else ""
    return StageRun(data["ok"], data["message"], data["seconds"], data["logs"], data["env"], last)


SPECS = "azurelinux/specs-6a8b54d4.tar.gz"  # under ../shared
SRPM_PORT = 8321  # the stand-in source server, on the loopback of the run's own namespace


@dataclass
class SrpmRun:
    code: int
    output: str  # srpmpacker's output and log
    srpms: list[str]


def srpm_check(project: Path, root: Path) -> dict[str, SrpmRun]:
    """The toolkit's own srpmpacker (built by the go-tools stage: ``SRPMPACKER``) packs the real tree's
    SPECS/debootstrap, as the ISO stage's input-srpms does, once as pinned ("orig") and once
    with the tree's fix (recipes/azurelinux/debootstrap-spec.patch, "fixed"), offline, with
    a stand-in for the toolkit's SOURCE_URL: an HTTP server on the loopback serving the
    checkout's mirror/. Debian's rpm in the root stands in for the guest's."""
    work = root / "root/azl-gotools/srpm"
    shutil.rmtree(work, ignore_errors=True)
    tarball = project.parent / "shared" / SPECS
    for variant in ("orig", "fixed"):
        (work / variant).mkdir(parents=True)
        subprocess.run(["tar", "-xzf", str(tarball), "-C", str(work / variant),
                        "--strip-components=1", "--wildcards", "*/SPECS/debootstrap/*"],
                       check=True)  # fmt: skip
    patch = project / "recipes" / "azurelinux" / "debootstrap-spec.patch"
    subprocess.run(["patch", "-p1", "--forward", "--batch", "-i", str(patch)],
                   cwd=work / "fixed", check=True, capture_output=True)  # fmt: skip
    tool = SRPMPACKER
    inside = "/root/azl-gotools/srpm"
    script = (
        f"cd {inside} || exit 1; "
        f"python3 -m http.server -d {INSIDE}/mirror -b 127.0.0.1 {SRPM_PORT} >server.log 2>&1 & "
        f"server=$!; sleep 2; "
        f"for v in orig fixed; do {tool} --dir=$v/SPECS --output-dir=$v/out "
        f"--source-url=http://127.0.0.1:{SRPM_PORT} --dist-tag=.azl3 --build-dir=$v/build "
        f"--signature-handling=enforce --pack-list=debootstrap --log-file=$v/srpmpacker.log "
        f">$v/output 2>&1; echo $? >$v/code; done; kill $server"
    )
    with entered(root, project) as run:
        run(script, root.parent / "gotools.log", {"HOME": "/root"}, network=False)
    result = {}
    for variant in ("orig", "fixed"):
        d = work / variant
        text = (d / "output").read_text(errors="replace")
        if (d / "srpmpacker.log").is_file():
            text += (d / "srpmpacker.log").read_text(errors="replace")
        srpms = (
            sorted(p.name for p in (d / "out").glob("*.src.rpm")) if (d / "out").is_dir() else []
        )
        result[variant] = SrpmRun(int((d / "code").read_text()), text, srpms)
    return result
