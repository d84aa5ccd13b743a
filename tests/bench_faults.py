"""The fault suite with figures (not a test: it prints a table; `-m faults` runs a short kill
storm as a test).

    .venv/bin/python tests/bench_faults.py [--kills 50] [--terms 10] [--seed 1] [--work DIR]

Fault classes, each a row: tries / survived / work lost / bad files admitted.

- **kill -9**: the real sandbox chain pcre2 -> grep (``-m faults`` in CI: attr -> acl, smaller) (the repository's recipes, sources from a
  local mirror made first by a clean build, itself fetched from Debian's archive) is started
  again and again and SIGKILLed at random moments: after a random time, on a random log line
  of the package being built (unpack, configure, compile, install, merge), or at an exact
  engine point (``AZL_FAULT``: unpacked, merged, manifest-written). Each kill is followed by
  the next start; at the end one run goes to completion. *Survived*: after the kill no state
  file is damaged and no build process is left; *work lost*: a package that was complete
  (manifest and ROOT) when the run started and was built again; *bad files*: root and
  manifests that differ from the clean build at the end.
- **SIGTERM / SIGINT** under ``-n 2``: the same, and doit must exit by itself within 30 s.

A trial counts (``tries``) only once its signal was delivered: a doit that finished before its
moment came, or an engine point never reached, is reported and not counted.
- **disk full**, **corrupted state**, **bad recipes (hypothesis)**, **hostile tarballs**,
  **hostile downloads**: the quick suite's cases (``test_faults.py``, ``test_download.py``),
  counted from their pytest run: a test counts the cases it records (``record_property("cases",
  n)``: each fuzzed recipe, each hostile tarball), else one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import Project, real_project  # noqa: E402

CHAIN = ("pcre2", "grep")
LINES = ("unpack ", "checking for", "config.status", "CC ", "Making all")


@dataclass
class Row:
    fault: str
    tries: int = 0
    survived: int = 0
    work_lost: int = 0
    bad_files: int = 0
    notes: list[str] = field(default_factory=list)


def snapshot(top: Path, same: tuple[bytes, bytes] = (b"", b"")) -> dict[str, str]:
    """Path -> content digest / link target / 'dir' for everything under ``top``; with
    ``same = (path, other)`` (two project paths of one length) the project's path inside
    files and links is read as the other's: builds record their prefix."""
    import hashlib

    old, new = same
    out: dict[str, str] = {}
    if not top.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(top))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p).replace(old.decode(), new.decode())
            elif p.is_dir():
                out[rel] = "dir"
            else:
                data = p.read_bytes()
                out[rel] = hashlib.sha256(data.replace(old, new) if old else data).hexdigest()
    return out


def manifest_shape(path: Path) -> dict[str, tuple]:
    """A manifest's entries without their sha256 (compared through ``snapshot``)."""
    files = json.loads(path.read_text())["files"]
    return {k: (v["type"], v.get("mode"), v.get("target")) for k, v in files.items()}


def reuse(root: Path, chain: tuple[str, ...] = CHAIN) -> Project:
    """The project at ``root``, made with the chain's recipes if it does not exist yet."""
    if (root / "dodo.py").exists():
        project = Project.__new__(Project)
        project.root = root
        return project
    return real_project(root, *chain)


def complete(project: Project, name: str) -> bool:
    """The package's build finished: manifest written and the installed record matches."""
    try:
        done = json.loads(project.manifest(name).read_text())["files"]
        inst = json.loads((project.root / "cache" / "installed" / f"{name}.json").read_text())
    except (OSError, ValueError, KeyError):
        return False
    return done == inst["files"]


def log_id(project: Project, name: str) -> int | None:
    try:
        return (project.root / "cache" / "logs" / f"{name}.log").stat().st_ino
    except OSError:
        return None


def damaged_states(project: Project) -> list[str]:
    """Damaged lines of the state journal (a record cut short at the end is not damage)."""
    from tasks.store.state import read_journal

    journal = project.root / "cache" / "state" / "journal"
    return [str(journal)] if read_journal(journal)[3] else []


def leftovers(project: Project) -> list[int]:
    """Processes whose working directory is inside the project (builds that outlived doit)."""
    root, found = str(project.root.resolve()), []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        try:
            if os.readlink(p / "cwd").startswith(root + "/cache"):
                found.append(int(p.name))
        except OSError:
            pass
    return found


def wait_gone(project: Project, limit: float = 15) -> list[int]:
    deadline = time.monotonic() + limit
    while (left := leftovers(project)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def building(project: Project) -> str | None:
    """The package whose log was written last."""
    logs = sorted(
        (project.root / "cache" / "logs").glob("*.log"), key=lambda p: p.stat().st_mtime_ns
    )
    return logs[-1].stem if logs else None


@dataclass
class Trial:
    """One start of doit hit by a signal: whether the signal reached it (``delivered``: a doit
    that finished first, or an engine point never reached, proves nothing), whether it
    survived, how many finished packages were built again, and what happened."""

    delivered: bool
    survived: bool
    rebuilt: int
    what: str


def one_trial(
    project: Project,
    rng: random.Random,
    how: str,
    sig: int,
    jobs: list[str],
    chain: tuple[str, ...] = CHAIN,
) -> Trial:
    """Start doit, hit it with ``sig`` at a random moment."""
    before = {n: (complete(project, n), log_id(project, n)) for n in chain}
    pending = [n for n in chain if not before[n][0]] or list(chain)
    env: dict[str, str] = {}
    if how.startswith("point:"):
        point = f"{how.split(':', 1)[1]}:{pending[0]}"
        env["AZL_FAULT"] = f"kill:{point}"
        what = f"at {point}"
    proc = project.popen(*jobs, env=env)
    if how == "time":
        delay = rng.uniform(0.3, 15)
        what = f"after {delay:.1f} s"
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=delay)
    elif how == "line":
        pattern = rng.choice(LINES)
        what = f"on a log line with {pattern!r}"
        deadline = time.monotonic() + 900
        while proc.poll() is None and time.monotonic() < deadline:
            name = building(project)
            log = project.root / "cache" / "logs" / f"{name}.log"
            fresh = name and log.exists() and log.stat().st_ino != before.get(name, (0, 0))[1]
            if fresh and pattern in log.read_text(errors="replace"):
                break
            time.sleep(0.1)
    point = how.startswith("point:")
    delivered = False
    if proc.poll() is None and not point:
        os.kill(proc.pid, sig)
        delivered = True
    try:
        proc.communicate(timeout=3600 if point else 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return Trial(delivered, False, 0, what + ": doit did not exit within 30 s")
    if point:  # the engine killed itself there, or never reached the point
        delivered = proc.returncode == -signal.SIGKILL
    if not delivered:
        what += f": no signal delivered (doit exited first, status {proc.returncode})"
    left = wait_gone(project)
    if left:  # reported, never left running
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    bad = damaged_states(project)
    rebuilt = sum(
        1 for n in chain if before[n][0] and log_id(project, n) not in (None, before[n][1])
    )
    ok = not left and not bad
    note = what + (f"; left running: {left}" if left else "") + (f"; damaged: {bad}" if bad else "")
    return Trial(delivered, ok, rebuilt, note)


def plan(kills: int, terms: int) -> list[tuple[str, int, str, list[str]]]:
    """(row, signal, how, doit args) in order: SIGTERM and SIGINT under -n 2 while pcre2 is
    being built, then SIGKILLs (random times, log lines, the `unpacked` point); halfway, a kill
    at pcre2's `manifest-written` point (its build completes there), so that the second half
    hits grep's build with pcre2 finished (``storm`` cleans grep whenever both are done); last
    a kill at grep's `manifest-written`."""
    out = [("SIGTERM -n 2", signal.SIGTERM, "time", ["-n", "2"])] * terms
    out += [("SIGINT -n 2", signal.SIGINT, "time", ["-n", "2"])] * terms
    for i in range(kills):
        if i == kills // 2:
            out.append(("kill -9", signal.SIGKILL, "point:manifest-written", []))
        how = "point:unpacked" if i % 10 == 9 else ("time" if i % 2 else "line")
        out.append(("kill -9", signal.SIGKILL, how, []))
    out.append(("kill -9", signal.SIGKILL, "point:manifest-written", []))
    return out


def storm(
    project: Project,
    rows: dict[str, Row],
    steps: list,
    rng: random.Random,
    chain: tuple[str, ...] = CHAIN,
) -> None:
    """Run the trials; whenever the chain is complete, ``doit clean <last>`` so that the next
    kills hit the last build with the first finished (which must then never be rebuilt). A
    trial whose signal was not delivered is printed and not counted."""
    for i, (fault, sig, how, jobs) in enumerate(steps):
        if all(complete(project, n) for n in chain):
            r = project.doit("clean", chain[-1])
            assert r.code == 0, r.out + r.err
        row = rows.setdefault(fault, Row(fault))
        t = one_trial(project, rng, how, sig, jobs, chain)
        row.tries += t.delivered
        row.survived += t.delivered and t.survived
        row.work_lost += t.rebuilt
        if not t.survived:  # a failure is never hidden, signal or not
            row.notes.append(t.what)
        verdict = ("ok" if t.survived else "FAILED") if t.delivered else "not counted"
        state = " ".join(f"{n}:{'done' if complete(project, n) else '-'}" for n in chain)
        print(f"  #{i + 1} {fault}: {t.what}: {verdict}"
              f"{f', {t.rebuilt} finished package(s) rebuilt' if t.rebuilt else ''}  [{state}]",
              flush=True)  # fmt: skip


def finish(project: Project, config: str, row: Row, chain: tuple[str, ...] = CHAIN) -> None:
    """One run to the end; then ROOT and the manifests must equal those of a clean build made
    afterwards at the same path (builds record their path: ELF build-ids differ elsewhere)."""
    r = project.doit(timeout=3600)
    if r.code != 0:
        row.notes.append(f"final run failed: {r.out[-500:]}{r.err[-500:]}")
        row.bad_files += 1
        return
    done = project.root.with_name(project.root.name + ".done")
    shutil.rmtree(done, ignore_errors=True)
    project.root.rename(done)
    ref = real_project(project.root, *chain)
    ref.config(config)
    r = ref.doit(timeout=3600)
    assert r.code == 0, r.out + r.err
    want, got = snapshot(ref.sandbox_root), snapshot(done / "cache" / "sandbox" / "root")
    diff = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
    for name in chain:
        mine = done / "cache" / "manifests" / f"{name}.json"
        if mine.read_bytes() != ref.manifest(name).read_bytes():
            diff.append(f"manifest {name}")
    row.bad_files += len(diff)
    if diff:
        row.notes.append("differs from the clean build: " + ", ".join(diff[:10]))


def pytest_row(fault: str, args: list[str]) -> Row:
    """A row from a pytest run, counted in cases: each test's recorded ``cases`` property
    (summed; one if it records none), those of passed tests survived."""
    import tempfile
    import xml.etree.ElementTree as ET

    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        r = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "",
             f"--junitxml={xml}", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
        )  # fmt: skip
        cases = ET.parse(xml).getroot().iter("testcase") if xml.exists() else []
        row = Row(fault)
        for case in cases:
            if case.find("skipped") is not None:
                continue
            n = sum(
                int(p.get("value", 0)) for p in case.iter("property") if p.get("name") == "cases"
            )
            n = n or 1
            row.tries += n
            if case.find("failure") is None and case.find("error") is None:
                row.survived += n
    if r.returncode not in (0, 1) or row.tries == 0:
        row.notes.append(f"pytest exit {r.returncode}: {r.stdout[-800:]}{r.stderr[-400:]}")
    elif row.survived < row.tries:
        row.notes.append(r.stdout[-800:])
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--terms", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work", type=Path, default=Path("/tmp/azl-faults"))
    ap.add_argument("--skip-quick", action="store_true", help="only the kill/term storms")
    args = ap.parse_args()
    # a script started in the background (`cmd &`) inherits SIGINT ignored, and so would
    # every doit it starts (Python keeps an ignored SIGINT ignored): restore the default
    signal.signal(signal.SIGINT, signal.default_int_handler)
    rng = random.Random(args.seed)
    args.work.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []

    clean = reuse(args.work / "clean")
    if not all(clean.manifest(n).exists() for n in CHAIN):
        t = time.monotonic()
        r = clean.doit(timeout=3600)
        assert r.code == 0, r.out + r.err
        print(f"clean build: {time.monotonic() - t:.0f} s", flush=True)
    mirror = f"mirrors = [{json.dumps(str(clean.root / 'mirror'))}]\n"

    for old in ("storm", "storm.done"):  # every storm starts from nothing
        shutil.rmtree(args.work / old, ignore_errors=True)
    project = real_project(args.work / "storm", *CHAIN)
    config = 'platform = "sandbox"\njobs = 2\n' + mirror
    project.config(config)
    storm_rows: dict[str, Row] = {}
    storm(project, storm_rows, plan(args.kills, args.terms), rng)
    final = Row("final")
    finish(project, config, final)
    for row in storm_rows.values():
        row.bad_files, row.notes = final.bad_files, row.notes + final.notes
        rows.append(row)

    if not args.skip_quick:
        rows.append(pytest_row("disk full", ["tests/test_faults.py", "-k", "disk_full"]))
        rows.append(pytest_row("corrupted state", ["tests/test_faults.py", "-k", "corrupted"]))
        rows.append(
            pytest_row("bad recipes (300 fuzzed)", ["tests/test_faults.py", "-k", "recipe"])
        )
        rows.append(
            pytest_row(
                "hostile tarballs (64 + bombs)",
                ["tests/test_faults.py", "-k", "tarball or bomb or members"],
            )
        )
        rows.append(pytest_row("hostile downloads", ["tests/test_download.py", "tests/test_mirror.py", "-k", "hostile or cut or 503 or 404 or range or wrong or damaged"]))  # fmt: skip

    print(f"\n{'fault class':32} {'tries':>6} {'survived':>9} {'work lost':>10} {'bad files':>10}")
    for row in rows:
        print(
            f"{row.fault:32} {row.tries:>6} {row.survived:>9} {row.work_lost:>10} {row.bad_files:>10}"
        )
        for n in row.notes:
            print(f"    {n}")


if __name__ == "__main__":
    main()
