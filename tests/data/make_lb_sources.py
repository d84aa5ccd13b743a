#!/usr/bin/env python3
"""Regenerate ``live-bootstrap-<commit>.sources``: every ``steps/*/sources`` line of
live-bootstrap at a commit, read from a git directory that has it, with the Debian source
package file that is byte-identical (same sha256) where one exists.

    tests/data/make_lb_sources.py GIT_DIR [--commit C] [--debian-cache DIR] [--suites ...]

Columns (tab-separated): step, use ("early": needed before live-bootstrap has a network,
"build": later, "unused": not in steps/manifest), line number, the sources line verbatim,
the Debian pool path (as a recipe's ``debian`` field) or ``-``, and the suite it was found in;
only pool files the archive still serves (a HEAD request) are kept.
Debian's ``Sources.xz`` indexes (main) of the given suites (bookworm and newer, then bullseye,
whose pool files are still on the archive: the suite column says where each was found) are downloaded into the cache
directory once; the archive's address is read from this machine's apt sources.
"""

from __future__ import annotations

import argparse
import lzma
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tasks.sources.download import debian_archive_uri  # noqa: E402
from tasks.sources.lbsources import entries, read_commit  # noqa: E402

COMMIT = "1296c44bb345ef5d54ecffd7688f9813d46a032a"
SUITES = ["bookworm", "bookworm-updates", "bookworm-backports", "trixie", "trixie-backports",
          "forky", "sid", "experimental", "bullseye"]  # fmt: skip
HERE = Path(__file__).resolve().parent


def debian_index(archive: str, suites: list[str], cache: Path) -> dict[str, tuple[str, str]]:
    """sha256 -> (pool path, suite) of every file of every source package in ``suites``."""
    found: dict[str, tuple[str, str]] = {}
    cache.mkdir(parents=True, exist_ok=True)
    for suite in suites:
        path = cache / f"{suite}_main_Sources.xz"
        if not path.exists():
            url = f"{archive}/dists/{suite}/main/source/Sources.xz"
            print(f"fetching the {suite} source index", file=sys.stderr)
            with urllib.request.urlopen(url, timeout=60) as r:
                path.with_suffix(".part").write_bytes(r.read())
            path.with_suffix(".part").rename(path)
        with lzma.open(path, "rt", encoding="utf-8", errors="replace") as fh:
            for stanza in fh.read().split("\n\n"):  # Directory comes after the checksums
                directory, sums, in_sums = "", [], False
                for line in stanza.splitlines():
                    if line.startswith("Directory:"):
                        directory = line.split(":", 1)[1].strip().removeprefix("pool/")
                    in_sums = line.startswith("Checksums-Sha256:") or (in_sums and line[:1] == " ")
                    if in_sums and line[:1] == " ":
                        sums.append(line.split())
                for sha, _size, name in sums:
                    found.setdefault(sha, (f"{directory}/{name}", suite))
    return found


def served(archive: str, pool: str) -> bool:
    """Whether the archive still has the pool file (an old suite's index may outlive its
    files: bullseye's does)."""
    request = urllib.request.Request(f"{archive}/pool/{pool}", method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status == 200
    except OSError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("gitdir")
    ap.add_argument("--commit", default=COMMIT)
    ap.add_argument("--debian-cache", type=Path, default=Path("cache/debian-sources"))
    ap.add_argument("--suites", nargs="*", default=SUITES)
    ap.add_argument("--no-debian", action="store_true", help="no Debian columns (all -)")
    ap.add_argument(
        "--toml",
        action="store_true",
        help="also print the [debian] table of recipes/lb-mirror.toml",
    )
    args = ap.parse_args()
    sources, manifest = read_commit(Path(args.gitdir), args.commit)
    items = entries(sources, manifest)
    out = HERE / f"live-bootstrap-{args.commit[:8]}.sources"
    index: dict[str, tuple[str, str]] = {}
    if not args.no_debian:
        archive = debian_archive_uri()
        if not archive:
            sys.exit("no Debian archive in this machine's apt sources")
        index = debian_index(archive, args.suites, args.debian_cache)
        wanted = {e.source.sha256 for e in items}
        index = {h: v for h, v in index.items() if h in wanted and served(archive, v[0])}
    lines = [
        f"# live-bootstrap {args.commit}: every steps/*/sources line (facts only).",
        "# Regenerate: tests/data/make_lb_sources.py <git dir that has the commit>",
        f"# Debian: byte-identical source package files (same sha256), suites {' '.join(args.suites)}",
        "# step\tuse\tline\tsources line\tdebian pool path\tsuite",
    ]
    for e in items:
        text = sources[e.step].splitlines()[e.line - 1].strip()
        pool, suite = index.get(e.source.sha256, ("-", "-"))
        lines.append(f"{e.step}\t{e.use}\t{e.line}\t{text}\t{pool}\t{suite}")
    out.write_text("\n".join(lines) + "\n")
    matched = len({e.source.file for e in items if e.source.sha256 in index})
    if args.toml:
        table = {
            e.source.file: index[e.source.sha256][0] for e in items if e.source.sha256 in index
        }
        print("[debian]\n" + "".join(f'"{f}" = "{p}"\n' for f, p in sorted(table.items())))
    print(f"{out.name}: {len(items)} lines, {len({e.source.file for e in items})} files, "
          f"{matched} byte-identical in Debian", file=sys.stderr)  # fmt: skip


if __name__ == "__main__":
    main()
