"""Part (b) of the 32-bit rehearsal (tests/rehearsal32/root.py): in the i386 root on the 64-bit
kernel, go1.23 is built with ``GOHOSTARCH=386`` from Debian's i386 golang-1.22 (as the guest's
chain builds its last link), then a program that computes ``stat.Frsize *
int64(stat.Blocks)`` from ``syscall.Statfs_t`` as the toolkit's imagecustomizer does
(toolkit/tools/pkg/imagecustomizerlib/imagecustomizer.go:888 at 6a8b54d4, there through
x/sys/unix, whose Statfs_t has the same int32 Frsize on 386) is built twice:

- with the go-tools stage's environment (recipes/go-tools.toml ``[env]``:
  GOARCH=amd64, GOTOOLCHAIN=local): it must compile and run (an amd64 binary, on the 64-bit
  kernel, from the 32-bit userland);
- without it: the Go defaults to GOARCH=386 and must fail with the seed's
  ``mismatched types int32 and int64``.
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.rehearsal32.root import BOOTSTRAP_GO, INSIDE, RehearsalError, entered

GO_DIR = "/root/go1.23"  # inside the root; kept between runs
PROGRAM = """package main

import (
	"fmt"
	"runtime"
	"syscall"
)

func main() {
	var stat syscall.Statfs_t
	if err := syscall.Statfs("/", &stat); err != nil {
		panic(err)
	}
	totalBytes := stat.Frsize * int64(stat.Blocks) // imagecustomizer.go:888
	fmt.Printf("statfs GOARCH=%s totalBytes=%d\\n", runtime.GOARCH, totalBytes)
}
"""


@dataclass
class GoResult:
    go_version: str = ""
    build_seconds: float = 0.0  # of go1.23's make.bash; 0 when reused
    default_goarch: str = ""
    stage_env: dict[str, str] = field(default_factory=dict)
    stage_output: str = ""  # what the program built with the stage's env printed
    default_error: str = ""  # the compiler's message without it

    def summary(self) -> str:
        return (
            f"{self.go_version} (GOHOSTARCH=386, make.bash {self.build_seconds:.0f} s); "
            f"default GOARCH={self.default_goarch}\n"
            f"with {self.stage_env}: {self.stage_output}\n"
            f"without: {self.default_error}"
        )


def go_source(project: Path) -> Path:
    """The sandbox's go1.23 source tarball in mirror/ (fetched from Debian if missing)."""
    from tasks.engine.recipeset import parse_recipe
    from tasks.sources.download import debian_archive_uri, fetch, sha256_file

    recipe, errors = parse_recipe(project / "recipes" / "go.toml")
    assert recipe is not None, errors
    src = recipe.for_platform("sandbox").version.sources[0]
    dest = project / "mirror" / src.file
    if not (dest.is_file() and sha256_file(dest) == src.sha256):
        archive = debian_archive_uri()
        urls = list(src.urls) + ([f"{archive}/pool/{src.debian}"] if archive else [])
        fetch(urls, dest, src.sha256, progress=False)
    return dest


def stage_env(project: Path) -> dict[str, str]:
    """The [env] the go-tools stage adds (recipes/go-tools.toml)."""
    data = tomllib.loads((project / "recipes/go-tools.toml").read_text())
    return {k: str(v) for k, v in data["env"].items()}


def ensure_go(project: Path, root: Path, run: Callable[..., None], log: Path) -> float:
    """go1.23 at ``GO_DIR`` inside the root, built with ``GOHOSTARCH=386`` when missing (``run``
    is :func:`tests.rehearsal32.root.entered`'s); the seconds make.bash took, 0 if kept."""
    if (root / GO_DIR.lstrip("/") / "bin/go").exists():
        return 0.0
    tarball = go_source(project)
    inside_tarball = f"{INSIDE}/{tarball.relative_to(project)}"
    start = time.monotonic()
    run(
        f"rm -rf {GO_DIR} {GO_DIR}.part && mkdir -p {GO_DIR}.part && "
        f"tar -xzf {inside_tarball} -C {GO_DIR}.part --strip-components=1 && "
        f"cd {GO_DIR}.part/src && ./make.bash && mv {GO_DIR}.part {GO_DIR}",
        log,
        env={"GOHOSTARCH": "386", "GOROOT_BOOTSTRAP": BOOTSTRAP_GO[1]},
    )
    return time.monotonic() - start


def go_check(project: Path, root: Path) -> GoResult:
    result = GoResult(stage_env=stage_env(project))
    log = root.parent / "go.log"
    log.write_text("")
    go = f"{GO_DIR}/bin/go"
    with entered(root, project) as run:
        result.build_seconds = ensure_go(project, root, run, log)
        prog = root / "root/statfs"
        prog.mkdir(parents=True, exist_ok=True)
        (prog / "main.go").write_text(PROGRAM)
        (prog / "go.mod").write_text("module statfs\n\ngo 1.23\n")
        out = root / "root/statfs/out"
        base = {"HOME": "/root", "GOCACHE": "/root/.cache/go-build", "GOTOOLCHAIN": "local"}
        out.mkdir(exist_ok=True)
        run(
            f"cd /root/statfs && {go} version > out/version && {go} env GOARCH > out/goarch",
            log,
            base,
        )
        result.go_version = (out / "version").read_text().strip()
        result.default_goarch = (out / "goarch").read_text().strip()
        run(
            f"cd /root/statfs && {go} build -o out/statfs-stage . && ./out/statfs-stage > out/stage",
            log,
            {**base, **result.stage_env},
        )
        result.stage_output = (out / "stage").read_text().strip()
        try:
            run(f"cd /root/statfs && {go} build -o out/statfs-default . 2> out/default", log, base)
        except RehearsalError:
            result.default_error = (out / "default").read_text().strip()
        else:
            raise RehearsalError("the Statfs program compiled without the stage's GOARCH")
    return result
