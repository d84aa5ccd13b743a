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
before it starts that the modules are absent or were fetched for another go.sum. ``verify``
checks every module's zip and go.mod against go.sum's ``h1:`` hashes without Go (as Go does
when it reads them), so a damaged mirror is found on the host, before it is pushed;
``mirror_files`` names the files a guest needs (the proxy layout, not the extracted sources).

Host use: ``python3 -m tasks.sources.gomodules <tree>/toolkit/tools mirror/go-modules``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile
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
            f"here? GOPROXY={full.get('GOPROXY', 'unset: the default')}):\n  {detail}"
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


def _h1(files: list[tuple[str, bytes]]) -> str:
    """Go's ``dirhash.Hash1``: sha256 over "<sha256 hex>  <name>\\n" of every file, sorted by
    name, base64 — the ``h1:`` hashes of go.sum."""
    summary = hashlib.sha256()
    for name, data in sorted(files):
        summary.update(f"{hashlib.sha256(data).hexdigest()}  {name}\n".encode())
    return "h1:" + base64.b64encode(summary.digest()).decode()


def _zip_h1(path: Path) -> str:
    with zipfile.ZipFile(path) as z:
        return _h1([(i.filename, z.read(i)) for i in z.infolist() if not i.is_dir()])


def go_sum(module_dir: Path) -> dict[tuple[str, str], str]:
    """go.sum's hashes: (module path, version) -> h1, and (path, version + "/go.mod") -> h1."""
    sums: dict[tuple[str, str], str] = {}
    for n, line in enumerate((module_dir / "go.sum").read_text().splitlines(), 1):
        fields = line.split()
        if len(fields) != 3 or not fields[2].startswith("h1:"):
            raise DownloadError(f"{module_dir / 'go.sum'}:{n}: not a go.sum line: {line!r}")
        sums[(fields[0], fields[1])] = fields[2]
    return sums


def verify(module_dir: Path, cache: Path) -> tuple[int, list[str]]:
    """Check every module file of ``cache``'s record against ``module_dir``'s go.sum, as Go
    would before using it (without Go): returns the number of files checked and the problems
    (a file whose hash differs, a module of the record that go.sum does not name or whose
    files are missing)."""
    why = problem(module_dir, cache)
    if why:
        return 0, [why]
    record = json.loads((cache / RECORD).read_text())
    sums = go_sum(module_dir)
    checked, problems = 0, []
    for path, version in record.get("modules", []):
        where = proxy_dir(cache) / _escape(path) / "@v"
        for kind, key, file in (
            ("go.mod", (path, f"{version}/go.mod"), where / f"{version}.mod"),
            ("zip", (path, version), where / f"{version}.zip"),
        ):
            want = sums.get(key)
            if want is None:
                if kind == "go.mod":
                    problems.append(f"{path}@{version}: go.sum has no {kind} hash")
                continue  # a module whose packages are never built: go.sum holds its go.mod only
            if not file.is_file():
                problems.append(f"{path}@{version}: {file} is missing")
                continue
            got = _h1([("go.mod", file.read_bytes())]) if kind == "go.mod" else _zip_h1(file)
            checked += 1
            if got != want:
                problems.append(f"{path}@{version}: {file.name} has {got}, go.sum says {want}")
    return checked, problems


def mirror_files(mirror: Path) -> set[str]:
    """The files of the mirror's module cache a guest needs (relative to the mirror): the
    record and the proxy layout's list/info/mod/zip files; not the extracted sources
    (``pkg/mod``), the checksum database's tiles (``GOSUMDB=off`` there) or lock files."""
    cache = mirror / DEFAULT_DIR
    if not (cache / RECORD).is_file():
        return set()
    files = {f"{DEFAULT_DIR}/{RECORD}"}
    download = proxy_dir(cache)
    for path in download.rglob("*"):
        rel = path.relative_to(download)
        if path.is_file() and rel.parts[0] != "sumdb" and path.suffix != ".lock":
            files.add(path.relative_to(mirror).as_posix())
    return files


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
    checked, problems = verify(Path(argv[0]), Path(argv[1]))
    if problems:
        print(f"gomodules: {argv[1]} does not match go.sum:\n  " + "\n  ".join(problems),
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"gomodules: {n} module(s) in {argv[1]}, {checked} file(s) verified by go.sum")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
