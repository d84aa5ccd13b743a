"""``doit status``: where the pipeline stands, on the host, also while another doit runs it.

Each phase of ``doit iso`` (docs/pipeline.md) is *not started*, *running* (with the current
live-bootstrap step from lb-image's state, or the guest's current task), *done* or *failed*
(with its log), from what the steps leave behind: ``cache/host/preflight.json``, the
checkout's record, ``cache/host/lb-image.state.json``, the journal, the mirror (the guest's
inputs), ``out/`` (the ISO), and the guest's own journal and run log. While the VM is up
(``cache/vm/vm.json`` names its qemu and port) those are read over the link and kept in
``cache/host/guest-state.json`` for when it is down. Then the time since the pipeline
started and an estimate of what remains (``tasks.engine.durations``: this machine's earlier
runs, else the seed's figures). It takes no lock and changes nothing but that state file.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.engine import durations
from tasks.guest.run import GUEST_STATE
from tasks.store import state


@dataclass
class Phase:
    name: str
    state: str = "not started"  # running, partly done (a group, nothing running), done, failed
    detail: str = ""
    log: str = ""
    since: float | None = None  # when it started running (epoch seconds)
    estimate: float = 0.0  # seconds, when not done
    source: str = ""  # where the estimate comes from


@dataclass
class Status:
    phases: list[Phase] = field(default_factory=list)
    started: float | None = None
    guest: str = ""  # how the guest's state was read

    def remaining(self, now: float) -> float:
        left = 0.0
        for p in self.phases:
            if p.state in ("done",):
                continue
            spent = now - p.since if p.state == "running" and p.since else 0.0
            left += max(p.estimate - spent, 0.0)
        return left


def hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _alive(pid: Any) -> bool:
    return isinstance(pid, int) and Path(f"/proc/{pid}").exists()


def read_guest(project: Path, out: Any = None) -> dict[str, Any]:
    """The guest's state over the link while the VM runs (saved to
    ``cache/host/guest-state.json``); else what was saved last (``{}`` if never)."""
    from tasks.guest.vm import RUNNING_FILE

    saved_path = project / "cache" / "host" / GUEST_STATE
    vm = _json(project / "cache" / "vm" / RUNNING_FILE)
    if not _alive(vm.get("pid")):
        saved = _json(saved_path)
        if saved:
            saved["how"] = (
                f"VM down; as read at {time.strftime('%H:%M', time.localtime(saved.get('time', 0)))}"
            )
        return saved
    from tasks.guest.drive import vm_settings
    from tasks.guest.link import Endpoint
    from tasks.guest.run import save_guest_state
    from tasks.model.config import CONFIG_NAME, load_config

    s = vm_settings(load_config(project).vm, project / CONFIG_NAME)
    link = Endpoint(int(vm["port"]), project / s.client_key, project / s.host_key,
                    project / "cache" / "vm", host="127.0.0.1")  # fmt: skip
    got = save_guest_state(link, s.dest, s.python, saved_path)
    if not got:
        saved = _json(saved_path)
        saved["how"] = "VM up, not answering (booting?)"
        return saved
    got["how"] = "VM up, read over the link"
    return got


def _guest_run(lines: list[str]) -> tuple[str, list[str], set[str]]:
    """The current task of a guest doit's output, the tasks it says failed, and those it
    found up to date (``-- kexec``: a checkpoint or session step that was never run, or whose
    run the kexec ended, has no journal entry)."""
    current = ""
    failed: list[str] = []
    uptodate: set[str] = set()
    for line in lines:
        m = re.match(r"^\.  (\S+)", line)
        if m:
            current = m.group(1)
        m = re.match(r"^-- (\S+)", line)
        if m:
            uptodate.add(m.group(1))
        m = re.match(r"^(?:FAILED|####) (\S+)", line)
        if m and m.group(1) not in failed:
            failed.append(m.group(1))
    return current, failed, uptodate


def collect(plan: Any, now: float | None = None) -> Status:
    """The pipeline's phases for the plan on the host (``tasks.engine.plan.Project``)."""
    from tasks.host.lbimage import read_state

    now = time.time() if now is None else now
    project, paths = plan.paths.project, plan.paths
    cache = paths.cache
    known = durations.recorded(cache)
    st = Status()
    pre = cache / "host" / "preflight.json"
    st.started = pre.stat().st_mtime if pre.exists() else None

    def phase(name: str, done: bool, **kw: Any) -> Phase:
        est, src = durations.estimate(name, known)
        p = Phase(name, "done" if done else "not started", estimate=est, source=src, **kw)
        st.phases.append(p)
        return p

    phase("preflight", pre.exists(), log="cache/host/preflight.json")
    lb = plan.build_of("live-bootstrap")
    if lb is not None:
        phase("live-bootstrap", (cache / "checkouts" / f"{lb.name}.json").exists())
    image = read_state(paths)
    p = phase("lb-image", image.get("state") == "finished", log="cache/logs/lb-image.log")
    if p.source == "the seed's run" and _json(pre).get("accel") == "tcg":
        p.source += " with KVM; TCG takes several times that"
    if image.get("state") == "running":
        p.state, p.since = "running", image.get("started")
        p.detail = f"live-bootstrap step: {image.get('step') or 'starting'}"
    elif image.get("state") in ("failed", "stopped"):
        p.state = "failed"
        p.detail = f"{image['state']} at {image.get('step')}" + (
            f" ({image['why']})" if image.get("why") else ""
        )
    journal = state.TaskStateDB(str(paths.state))
    journal._read()
    ran = set(journal.task_ids())
    try:
        from tasks.guest.inputs import missing
        from tasks.kinds.guest import guest_reads

        reads = guest_reads(plan)
        absent = missing(reads, project, paths.mirror) if reads else ["the guest plan"]
    except Exception as e:  # noqa: BLE001
        absent = [str(e)]
    p = phase("guest-inputs", not absent)
    if absent and any(n.startswith("guest-inputs") for n in ran):
        p.detail = f"{len(absent)} missing, e.g. {absent[0]}"
    phase("push", "push" in ran, log="cache/logs/guest.log")

    guest = read_guest(project)
    st.guest = guest.get("how", "never read (the VM has not run)")
    lines = guest.get("tail", [])
    if not lines:  # the host's copy of the guest's output
        log = cache / "logs" / "guest.log"
        text = log.read_text(errors="replace").splitlines()[-2000:] if log.exists() else []
        starts = [i for i, ln in enumerate(text) if ln.startswith("azl: guest doit")]
        lines = text[starts[-1] :] if starts else text
    current, failed, uptodate = _guest_run(lines)
    done = set(guest.get("done", [])) | uptodate  # the journal, or up to date in the last run
    running = bool(guest.get("running"))
    try:
        gplan = plan.for_platform("guest")
        order = list(gplan.order)
        kinds = {n: gplan.builds[n].recipe.kind for n in order}
    except Exception:  # noqa: BLE001
        order, kinds = [], {}
    groups: list[tuple[str, list[str]]] = [("guest packages", [])]
    for n in order:
        if kinds[n] in ("stage", "checkpoint", "tree"):
            groups.append((n, [n]))
        else:
            groups[0][1].append(n)
    for name, members in groups:
        left = [m for m in members if m not in done]
        est = sum(durations.estimate(m, known)[0] for m in left)
        now_at = (
            "done" if not left else "partly done" if len(left) < len(members) else "not started"
        )
        p = Phase(name, now_at if members else "not started", estimate=est,
                  source="recorded/seed/guess")  # fmt: skip
        if name == "guest packages":
            p.detail = f"{len(members) - len(left)} of {len(members)} done"
        for m in members:
            if m in failed and m not in done:
                p.state, p.log = (
                    "failed",
                    f"the guest's cache/logs/{m}.log (and cache/logs/guest.log)",
                )
            elif m == current and m not in done and running:
                p.state, p.detail = "running", f"{p.detail}; now {m}".lstrip("; ")
        st.phases.append(p)
    iso = sorted((project / "out").glob("*.iso")) if (project / "out").is_dir() else []
    shown = [i for i in iso if (i.parent / f"{i.name}.sha256").exists()]
    phase("ISO in out/", bool(shown), detail=", ".join(str(i.relative_to(project)) for i in shown))
    st.phases[-1].estimate = 0.0
    return st


def render(st: Status, now: float | None = None) -> str:
    now = time.time() if now is None else now
    lines = [
        f"azl-bootstrap: the pipeline to an ISO (doit iso) at {time.strftime('%Y-%m-%d %H:%M')}"
    ]
    width = max(len(p.name) for p in st.phases)
    for p in st.phases:
        what = p.state
        if p.state == "running" and p.since:
            what += f" for {hms(now - p.since)}"
        if p.detail:
            what += f": {p.detail}"
        if p.state == "failed" and p.log:
            what += f"  (log: {p.log})"
        elif p.state != "done" and p.estimate:
            what += f"  (~{hms(p.estimate)}, {p.source})"
        lines.append(f"  {p.name:<{width}}  {what}")
    if st.started:
        lines.append(f"elapsed: {hms(now - st.started)} since doit preflight")
    lines.append(
        f"remaining: about {hms(st.remaining(now))} (this machine's runs, else the seed's figures)"
    )
    lines.append(f"guest: {st.guest}")
    return "\n".join(lines) + "\n"


def main(project: Path) -> str:
    from tasks.engine.plan import Project

    return render(collect(Project(project)))
