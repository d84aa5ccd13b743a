"""Engine benchmark: every figure as a ratio against its twin, measured in the same run.

    .venv/bin/python -m bench [--packages 300] [--mirror-mib 1024] [--rounds 5]
                              [--slope 150,600,1200] [--jobs-n 1,2,4]

A generated project (``bench.project``: N packages in 15 layers, fan-in up to 16, one mirror
file each) is built once with azl-bootstrap and once with stock doit (MD5 checker, json
backend, the same tasks); then twins are timed in interleaved rounds and the median of each
is compared:

- no-op ``doit`` against a Python process that only ``stat``s the same paths (the floor)
  and against stock doit's no-op; the no-op is replayed from its stamp (tasks/engine/noop.py), so
  the real check (the stamp removed first: what a no-op costs after any change) is timed
  against the floor too;
- the first run after ``touch`` of every mirror file, azl against stock doit;
- hashing a changed file (the engine's checker) against ``cat FILE > /dev/null``;
- ``doit list`` against ``doit list`` of a one-task dodo (bare doit);
- the peak of compile jobs running at once under ``doit -n K`` against the job budget, and
  the makespan of those jobs against the critical-path bound (``bounds``: whole jobs, one
  task at a time at ``-n 1``; the old bound, job-seconds over the budget, beside it) with
  the time in which fewer jobs than the budget ran;
- where the no-op goes (interpreter, imports, recipes, tasks, state read, run phase);
- the no-op per package at several project sizes (the slope).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import project as gen

PY = sys.executable
# Every command runs as a user's would: with its modules' bytecode cached. Stock doit's is in
# site-packages already; without this the engine's modules were compiled afresh on each run
# where PYTHONDONTWRITEBYTECODE is set (it made "import engine" ~4x too slow).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


LAST_CPU = [0.0]  # CPU seconds (user + system) of the last command run by ``wall``


def wall(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    """Wall seconds of a command (its CPU seconds in ``LAST_CPU``: on a shared machine the
    CPU figure is the steadier one)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(argv, cwd=cwd, env={**ENV, **(env or {})}, capture_output=True)
    dt = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    LAST_CPU[0] = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    if r.returncode:
        raise SystemExit(
            f"{' '.join(argv)} in {cwd}: exit {r.returncode}\n{r.stdout.decode()}{r.stderr.decode()}"
        )
    return dt


def doit(cwd: Path, *args: str, env: dict[str, str] | None = None) -> float:
    return wall([PY, "-m", "doit", *args], cwd, env)


def doit_out(cwd: Path, *args: str) -> str:
    r = subprocess.run([PY, "-m", "doit", *args], cwd=cwd, env=ENV, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(
            f"doit {' '.join(args)} in {cwd}: exit {r.returncode}\n{r.stdout}{r.stderr}"
        )
    return r.stdout


def interleaved(rounds: int, **twins: Callable[[], float]) -> dict[str, float]:
    """Median seconds of each callable, run in turn ``rounds`` times; ``<name>_cpu``: the
    median CPU seconds of the command each one ran."""
    times: dict[str, list[float]] = {k: [] for k in twins}
    cpu: dict[str, list[float]] = {k: [] for k in twins}
    for _ in range(rounds):
        for k, fn in twins.items():
            LAST_CPU[0] = 0.0
            times[k].append(fn())
            cpu[k].append(LAST_CPU[0])
    out = {k: statistics.median(v) for k, v in times.items()}
    out |= {f"{k}_cpu": statistics.median(v) for k, v in cpu.items()}
    return out


def row(figure: str, a: float, b: float, ratio: str, goal: str, cpu: str = "") -> None:
    print(f"  {figure:<44} {a * 1000:9.1f} ms {b * 1000:9.1f} ms  {ratio:>9}  {goal:<11} {cpu}")


def cpu_ratio(r: dict, a: str, b: str) -> str:
    return f"CPU {r[a + '_cpu'] * 1000:.0f}/{r[b + '_cpu'] * 1000:.0f} ms = {r[a + '_cpu'] / max(r[b + '_cpu'], 1e-6):.2f}x"


def stat_paths(root: Path) -> list[str]:
    """Every file_dep and target of the azl project's tasks (what a no-op must stat)."""
    cwd = os.getcwd()
    os.chdir(root)
    try:
        sys.path.insert(0, str(gen.REPO))
        from tasks.engine.plan import Project

        paths: set[str] = set()
        for t in Project(Path(".")).tasks():
            paths.update(t.file_dep)
            paths.update(t.targets)
        return sorted(paths)
    finally:
        os.chdir(cwd)


FLOOR = (
    "import os,sys\nfor p in open(sys.argv[1]).read().split('\\n'):\n    p and os.path.exists(p)\n"
)

BREAKDOWN = """\
import json, sys, time
t0 = time.process_time()
import doit.doit_cmd
t1 = time.process_time()
import tasks.engine.plan
t2 = time.process_time()
from pathlib import Path
project = tasks.engine.plan.Project(Path("."))
t3 = time.process_time()
from tasks.store import state
state.read_journal(project.paths.state / "journal")
t4 = time.process_time()
task_list = list(project.tasks())
t5 = time.process_time()
print(json.dumps({"import doit": t1 - t0, "import engine": t2 - t1, "recipes": t3 - t2,
                  "state read": t4 - t3, "tasks": t5 - t4, "modules": len(sys.modules)}))
"""


def measure_project(tmp: Path, n: int, mirror_bytes: int, rounds: int, full: bool) -> dict:
    azl, stock, bare = tmp / f"azl{n}", tmp / f"stock{n}", tmp / f"bare{n}"
    graph = gen.make_azl(azl, n, mirror_bytes)
    gen.make_stock(stock, azl, graph)
    env = {"AZL_PROJECT": str(azl)}
    t_build = doit(azl)
    t_stock_build = doit(stock, env=env)
    paths = stat_paths(azl)
    (tmp / f"paths{n}.txt").write_text("\n".join(paths))
    floor = [PY, "-c", FLOOR, str(tmp / f"paths{n}.txt")]
    res = {"n": n, "paths": len(paths), "build": t_build, "stock build": t_stock_build}
    res |= interleaved(
        rounds,
        noop=lambda: doit(azl),
        floor=lambda: wall(floor, azl),
        stock_noop=lambda: doit(stock, env=env),
    )
    if not full:
        return res
    stamp = azl / "cache" / "state" / "noop.stamp"
    res["stamped"] = stamp.exists()  # the no-ops above were replayed from it

    def checked() -> float:  # the real check: what a no-op costs after any change
        stamp.unlink(missing_ok=True)
        return doit(azl)

    res |= interleaved(rounds, noop_check=checked, floor2=lambda: wall(floor, azl))
    out = doit_out(azl)
    assert not [ln for ln in out.splitlines() if ln.startswith(".  ")], out  # a real no-op

    def touched(cwd: Path, e: dict[str, str] | None = None) -> float:
        gen.touch_all(azl / "mirror")
        return doit(cwd, env=e)

    res |= interleaved(
        rounds, touch_azl=lambda: touched(azl), touch_stock=lambda: touched(stock, env)
    )
    gen.touch_all(azl / "mirror")
    ran = [ln for ln in doit_out(azl).splitlines() if ln.startswith(".  p")]
    res["touch rebuilt"] = len(ran)

    bare.mkdir()
    (bare / "dodo.py").write_text("def task_x():\n    return {'actions': ['true']}\n")
    res |= interleaved(
        rounds, list_azl=lambda: doit(azl, "list"), list_bare=lambda: doit(bare, "list")
    )
    interp = interleaved(rounds, i=lambda: wall([PY, "-c", "pass"], azl))
    res["interp"], res["interp_cpu"] = interp["i"], interp["i_cpu"]
    parts = []
    for _ in range(rounds):
        r = subprocess.run([PY, "-c", BREAKDOWN], cwd=azl, env=ENV, capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(r.stderr)
        parts.append(json.loads(r.stdout))
    res["breakdown"] = {k: statistics.median(p[k] for p in parts) for k in parts[0]}
    return res


def hashing(tmp: Path, size: int, rounds: int) -> dict[str, float]:
    sys.path.insert(0, str(gen.REPO))
    from tasks.store import checker

    path = tmp / "hash.bin"
    gen._blob(path, size, "hash")

    def engine() -> float:
        checker._memo.clear()
        os.utime(path)  # a changed stat key: the checker must hash
        t0 = time.perf_counter()
        checker.file_digest(str(path))
        return time.perf_counter() - t0

    def cat() -> float:
        t0 = time.perf_counter()
        subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)
        return time.perf_counter() - t0

    engine(), cat()  # page cache warm for both
    return interleaved(rounds, engine=engine, cat=cat)


def jobs_peak(tmp: Path, ns: list[int], packages: int, objects: int) -> dict[int, dict]:
    """Per ``doit -n``: the peak of compile jobs at once, the makespan of the compile jobs
    (first start to last end), both bounds (``bounds``) and where the rest went (``idle``)."""
    template = tmp / "jobs-template"
    gen.make_jobs_project(template, packages, objects)
    out = {}
    for n in ns:
        shutil.rmtree(template / "cache", ignore_errors=True)  # every package builds again
        doit(template, "-n", str(n))
        probe = template / "probe"
        peaks = [int(x) for x in (probe / "peaks").read_text().split()]
        events = [ln.split() for ln in (probe / "times").read_text().splitlines()]
        starts = [float(t) for k, t in events if k == "start"]
        ends = [float(t) for k, t in events if k == "end"]
        makespan = max(ends) - min(starts)
        busy = sum(ends) - sum(starts)
        old, new = bounds(n, packages, objects, busy / len(starts), BUDGET)
        out[n] = {
            "peak": max(peaks),
            "makespan": makespan,
            "old": old,
            "new": new,
            "idle": idle(events, BUDGET),
        }
        (probe / "peaks").unlink()
        (probe / "times").unlink()
    return out


BUDGET = 2  # bench.project.CONFIG: jobs = 2


def bounds(n: int, packages: int, objects: int, job: float, budget: int) -> tuple[float, float]:
    """The makespan bounds of ``packages`` independent packages of ``objects`` jobs of
    ``job`` seconds each under ``doit -n n`` with ``budget`` job tokens:

    - old: job-seconds over the budget, as if any job could run in any free slot;
    - new, the critical-path bound max(longest chain of work, work over the budget) with
      whole jobs: a package's make cannot finish before ``ceil(objects / budget)`` rounds
      of its jobs, and at ``-n 1`` doit runs one task at a time, so the packages' compile
      windows follow each other (the chain is all of them); at ``-n 2`` and more, any
      package can fill the budget, so it is the larger of ``ceil(all jobs / budget)``
      rounds and one package's rounds."""
    old = packages * objects * job / budget
    per_package = math.ceil(objects / budget) * job
    if n <= 1:
        return old, packages * per_package
    return old, max(math.ceil(packages * objects / budget) * job, per_package)


def idle(events: list[list[str]], budget: int) -> dict[int, float]:
    """Seconds within the compile window during which only k < budget jobs ran (by k)."""
    timeline = sorted((float(t), 1 if k == "start" else -1) for k, t in events)
    out = {k: 0.0 for k in range(budget)}
    running, last = 0, timeline[0][0]
    for t, step in timeline:
        if running < budget:
            out[running] += t - last
        running, last = running + step, t
    return out


def report(
    main: dict, hashed: dict, jobs: dict, slope: list[dict], args: argparse.Namespace
) -> None:
    r = main
    print(
        f"\nproject: {r['n']} packages, depth 15, fan-in <= 16, {args.mirror_mib} MiB in mirror/, "
        f"{r['paths']} paths; medians of {args.rounds} interleaved rounds"
    )
    print(
        f"  first build: azl {r['build']:.1f} s, stock doit {r['stock build']:.1f} s; "
        f"no-op stamp (tasks/engine/noop.py) {'written' if r['stamped'] else 'NOT written'}\n"
    )
    print(f"  {'figure':<44} {'azl':>12} {'twin':>12}  {'ratio':>9}  goal")
    row(
        "no-op / stat floor",
        r["noop"],
        r["floor"],
        f"{r['noop'] / r['floor']:.1f}x",
        "<= 5x (3x)",
        cpu_ratio(r, "noop", "floor"),
    )
    row(
        "no-op without its stamp (real check) / floor",
        r["noop_check"],
        r["floor2"],
        f"{r['noop_check'] / r['floor2']:.1f}x",
        "",
        cpu_ratio(r, "noop_check", "floor2"),
    )
    row(
        "no-op / stock doit no-op",
        r["noop"],
        r["stock_noop"],
        f"{r['noop'] / r['stock_noop']:.2f}x",
        "< 1x",
        cpu_ratio(r, "noop", "stock_noop"),
    )
    row(
        f"after touch: stock / azl ({r['touch rebuilt']} rebuilt)",
        r["touch_azl"],
        r["touch_stock"],
        f"{r['touch_stock'] / r['touch_azl']:.2f}x",
        ">= 10x",
        cpu_ratio(r, "touch_stock", "touch_azl"),
    )
    thr = hashed["cat"] / hashed["engine"]
    row(
        f"hashing {args.hash_mib} MiB / cat throughput",
        hashed["engine"],
        hashed["cat"],
        f"{thr:.2f}x",
        ">= 0.8x",
    )
    row(
        "doit list / bare one-task doit list",
        r["list_azl"],
        r["list_bare"],
        f"{r['list_azl'] / r['list_bare']:.2f}x",
        "<= 1.5x",
        cpu_ratio(r, "list_azl", "list_bare"),
    )
    for n, j in jobs.items():
        peak, makespan = j["peak"], j["makespan"]
        print(
            f"  {'compile jobs at once, doit -n ' + str(n):<44} {peak:>9} {'':>3} "
            f"{'budget ' + str(BUDGET):>12}  {'ok' if peak <= BUDGET else 'OVER':>9}  <= budget"
        )
        print(
            f"  {'  makespan / bound, doit -n ' + str(n):<44} {makespan * 1000:9.1f} ms "
            f"{j['new'] * 1000:9.1f} ms  {makespan / j['new']:>8.2f}x  <= 1.15x      "
            f"old bound (job-s / budget) {j['old']:.2f} s = {makespan / j['old']:.2f}x; "
            + ", ".join(f"{k} job(s) running {v:.2f} s" for k, v in j["idle"].items())
        )
    b = r["breakdown"]
    interp, noop, check = r["interp_cpu"], r["noop_cpu"], r["noop_check_cpu"]
    known = interp + sum(v for k, v in b.items() if k != "modules")
    print("\n  no-op breakdown (CPU, ms):")
    print(
        f"    replayed: interpreter {interp * 1000:.0f}, import doit {b['import doit'] * 1000:.0f}"
        f", doit's command set-up + the stamp's stats and replay "
        f"{max(0.0, noop - interp - b['import doit']) * 1000:.0f}; total {noop * 1000:.0f}"
    )
    print(
        f"    real check: interpreter {interp * 1000:.0f}, "
        + ", ".join(f"{k} {v * 1000:.0f}" for k, v in b.items() if k != "modules")
        + f", run phase {max(0.0, check - known) * 1000:.0f}; total {check * 1000:.0f}"
        f"; {b['modules']:.0f} modules imported"
    )
    if slope:
        print("\n  per-package slope of the no-op (wall; CPU in brackets):")
        for s in slope:
            print(
                f"    {s['n']:>5} packages: no-op {s['noop'] * 1000:7.1f} ms "
                f"[{s['noop_cpu'] * 1000:.0f}], floor {s['floor'] * 1000:6.1f} ms "
                f"[{s['floor_cpu'] * 1000:.0f}], stock {s['stock_noop'] * 1000:7.1f} ms "
                f"[{s['stock_noop_cpu'] * 1000:.0f}], ratio {s['noop'] / s['floor']:.1f}x"
            )
        for a, c in zip(slope, slope[1:], strict=False):
            d = c["n"] - a["n"]

            def per(k: str, a: dict = a, c: dict = c, d: int = d) -> str:
                return f"{(c[k] - a[k]) / d * 1000:.3f}"

            print(
                f"    {a['n']}->{c['n']}: ms per package: azl {per('noop')} [{per('noop_cpu')}], "
                f"floor {per('floor')} [{per('floor_cpu')}], stock {per('stock_noop')} "
                f"[{per('stock_noop_cpu')}]"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packages", type=int, default=300)
    ap.add_argument("--mirror-mib", type=int, default=1024)
    ap.add_argument("--hash-mib", type=int, default=None, help="default: --mirror-mib")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--slope", default="150,600,1200", help="sizes, comma-separated; '' skips")
    ap.add_argument("--jobs-n", default="1,2,4", help="doit -n values for the job peak")
    ap.add_argument("--jobs-packages", type=int, default=4)
    ap.add_argument("--objects", type=int, default=6, help="compile jobs per package")
    args = ap.parse_args()
    args.hash_mib = args.hash_mib or args.mirror_mib
    with tempfile.TemporaryDirectory(prefix="azl-bench-") as t:
        tmp = Path(t)
        main_res = measure_project(tmp, args.packages, args.mirror_mib << 20, args.rounds, True)
        hashed = hashing(tmp, args.hash_mib << 20, args.rounds)
        ns = [int(x) for x in args.jobs_n.split(",") if x]
        jobs = jobs_peak(tmp, ns, args.jobs_packages, args.objects)
        slope = []
        for n in [int(x) for x in args.slope.split(",") if x]:
            # the no-op does not read the mirror: 64 KiB per package keeps this quick
            slope.append(measure_project(tmp, n, n << 16, args.rounds, False))
            print(f"  (slope: {n} packages measured)", file=sys.stderr)
        report(main_res, hashed, jobs, slope, args)
