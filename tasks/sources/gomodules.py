"""Go modules without network: the module set a go.mod/go.sum names, fetched where the Go
module proxy is reachable (the host), carried with the mirror, used read-only in the guest.

The toolkit's go-tools stage runs ``go get -d ./...`` and ``go build`` in toolkit/tools; in the
guest there is no network. ``download`` runs ``go mod download -json all`` with ``GOMODCACHE``
set to a directory of the mirror (``mirror/go-modules``): its ``cache/download`` subdirectory
then has the layout of a module proxy (``<module>/@v/<version>.{info,mod,zip}``), which the
guest's Go reads through ``GOPROXY=file://...`` (``offline_env``). ``GOSUMDB=off`` is safe there:
go.sum still verifies every module and go.mod file Go reads (a changed zip fails with a
checksum mismatch); ``GOFLAGS=-mod=mod`` lets ``go get``/``go build`` resolve from the proxy.
The guest's own module cache (``$HOME/go/pkg/mod``) is filled from it; the proxy directory is
never written.

``download`` records what it fetched in ``<dir>/azl-go-modules.json``, keyed by the sha256 of
go.mod and go.sum; ``problem`` compares a tree's files with that record, so a stage can say
before it starts that the modules are absent or were fetched for another go.sum.

Host use: ``python3 -m tasks.sources.gomodules <tree>/toolkit/tools mirror/go-modules``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

RECORD = "azl-go-modules.json"
DEFAULT_DIR = "go-modules"  # under the mirror


class DownloadError(RuntimeError):
    """``go mod download`` failed (no proxy, a module that is gone, a checksum mismatch)."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def proxy_dir(cache: Path) -> Path:
    """The module-proxy layout inside a module cache."""
    return cache / "cache" / "download"


def offline_env(cache: Path) -> dict[str, str]:
    """The Go environment that resolves every module from ``cache`` and nothing else."""
    return {
        "GOPROXY": f"file://{proxy_dir(cache).absolute()}",
        "GOSUMDB": "off",  # go.sum still verifies every module and go.mod read
        "GOFLAGS": "-mod=mod",
        # nothing bypasses the proxy or the checksums
        "GOPRIVATE": "",
        "GONOPROXY": "",
        "GONOSUMDB": "",
        "GOINSECURE": "",
    }


def _escape(path: str) -> str:
    """Go's module path escaping for the proxy layout (upper case -> !lower)."""
    return "".join(f"!{c.lower()}" if c.isupper() else c for c in path)


def download(go: str, module_dir: Path, cache: Path, env: dict[str, str] | None = None) -> int:
    """Fetch every module of ``module_dir``'s build list into ``cache`` (its GOMODCACHE) and
    record it; returns the number of modules. ``env`` is the base environment (PATH, HOME,
    GOPROXY of the upstream proxy ...)."""
    module_dir, cache = module_dir.absolute(), cache.absolute()
    for name in ("go.mod", "go.sum"):
        if not (module_dir / name).is_file():
            raise DownloadError(f"{module_dir / name}: not found (a module directory is needed)")
    cache.mkdir(parents=True, exist_ok=True)
    full = {**(os.environ if env is None else env), "GOMODCACHE": str(cache)}
    full.setdefault("GOFLAGS", "-mod=mod")
    full["GOTOOLCHAIN"] = "local"
    r = subprocess.run([go, "mod", "download", "-json", "all"], cwd=module_dir, env=full,
                       capture_output=True, text=True)  # fmt: skip
    modules, errors = [], []
    decoder, text, pos = json.JSONDecoder(), r.stdout, 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        item, pos = decoder.raw_decode(text, pos)
        if item.get("Error"):
            errors.append(f"{item.get('Path')}@{item.get('Version')}: {item['Error']}")
        else:
            modules.append([item["Path"], item["Version"]])
    if r.returncode != 0 or errors:
        detail = "\n  ".join(errors) or r.stderr.strip()[-2000:]
        raise DownloadError(
            f"go mod download in {module_dir} failed (is the Go module proxy reachable from "
            f"here? GOPROXY={full.get('GOPROXY', 'the default, proxy.golang.org')}):\n  {detail}"
        )
    record = {
        "go.mod": _sha256(module_dir / "go.mod"),
        "go.sum": _sha256(module_dir / "go.sum"),
        "modules": sorted(modules),
    }
    part = cache / (RECORD + ".part")
    part.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(part, cache / RECORD)
    return len(modules)


def problem(module_dir: Path, cache: Path) -> str | None:
    """Why ``cache`` cannot serve ``module_dir`` offline, or None when it can."""
    how = (
        f"fetch them where the Go module proxy is reachable: python3 -m tasks.sources.gomodules "
        f"<tree>/toolkit/tools {cache} (then bring {cache} along with the mirror)"
    )
    try:
        record = json.loads((cache / RECORD).read_text())
    except FileNotFoundError:
        return f"no Go modules at {cache} ({RECORD} is missing): {how}"
    except (OSError, ValueError) as e:
        return f"{cache / RECORD}: unreadable ({e}): {how}"
    for name in ("go.mod", "go.sum"):
        if not (module_dir / name).is_file():
            return f"{module_dir / name}: not found"
        if record.get(name) != _sha256(module_dir / name):
            return f"the Go modules at {cache} were fetched for another {name}: {how}"
    missing = [
        f"{path}@{version}"
        for path, version in record.get("modules", [])
        if not (proxy_dir(cache) / _escape(path) / "@v" / f"{version}.mod").is_file()
    ]
    if missing:
        return f"{len(missing)} module(s) missing from {proxy_dir(cache)}: {', '.join(missing[:5])}"
    return None


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python3 -m tasks.sources.gomodules <module dir (toolkit/tools)> <cache dir>")
        return 2
    go = os.environ.get("GO", "go")
    try:
        n = download(go, Path(argv[0]), Path(argv[1]))
    except (DownloadError, OSError) as e:
        print(f"gomodules: {e}", file=sys.stderr)
        return 1
    print(f"gomodules: {n} module(s) in {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
