"""Part (c) of the 32-bit rehearsal (tests/rehearsal32/root.py): the sudo/runuser shim and the
toolkit stages' environment, as the toolkit calls them, in the i386 root on the 64-bit kernel.

The checks are the project's own tests, run inside the root by its i386 Python (pytest from
Debian's i386 ``python3-pytest``, installed into the root when missing; doit from the venv of
:func:`tests.rehearsal32.packages.ensure_venv`):

- ``tests/test_sudo.py``: ``recipes/sudo/sudo`` as ``sudo`` and ``runuser`` under the root's
  bash and dash, switching to a throwaway user made in the root with the root's i386
  ``useradd`` and coreutils ``chroot --userspec``, with the toolkit's exact command lines;
- ``tests/test_stage_env.py``: what the go-tools and raw-toolchain stages' make sees when
  ``doit`` runs with the package builds' variables in its environment.

Their ``network`` test (a real util-linux configure) is left out: it is a test of the recipe's
flags, not of the root. pytest writes its report to ``/root/toolkit-check.xml`` in the root and
nothing into the checkout (no cache, no bytecode).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from tests.rehearsal32.packages import VENV, ensure_venv
from tests.rehearsal32.root import INSIDE, RehearsalError, entered

TESTS = ("tests/test_sudo.py", "tests/test_stage_env.py")
REPORT = "/root/toolkit-check.xml"


@dataclass
class ToolkitResult:
    passed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # test: its message's first line
    skipped: dict[str, str] = field(default_factory=dict)  # test: the reason
    machine: str = ""  # `uname -m; dpkg --print-architecture` inside

    def summary(self) -> str:
        lines = [
            f"{len(self.passed)} passed, {len(self.failed)} failed, {len(self.skipped)} "
            f"skipped in the root ({self.machine})"
        ]
        lines += [f"  FAILED {t}: {why}" for t, why in self.failed.items()]
        lines += [f"  skipped {t}: {why}" for t, why in self.skipped.items()]
        return "\n".join(lines)


def toolkit_check(project: Path, root: Path) -> ToolkitResult:
    """Run ``TESTS`` inside the root; a failing test is in the result, not an exception."""
    log = root.parent / "toolkit.log"
    log.write_text("")
    report = root / REPORT.lstrip("/")
    report.unlink(missing_ok=True)
    result = ToolkitResult()
    with entered(root, project) as run:
        ensure_venv(project, root, run, log)
        run("dpkg -s python3-pytest >/dev/null 2>&1 || apt-get install -y -q python3-pytest", log)
        run("{ uname -m; dpkg --print-architecture; } > /root/toolkit-machine", log)
        result.machine = " ".join((root / "root/toolkit-machine").read_text().split())
        pytest = (
            f"cd {INSIDE} && {VENV}/bin/python -m pytest -p no:cacheprovider -rs "
            f"-m 'not network and not slow' --junitxml={REPORT} {' '.join(TESTS)}"
        )
        try:
            # the engine as the packages run has it: the checkout on the path (doit in tests)
            run(pytest, log, {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": INSIDE})
        except RehearsalError:
            if not report.is_file():  # pytest itself could not run
                raise
    for case in ET.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        outcomes = [c for c in case if c.tag in ("skipped", "failure", "error")]
        if not outcomes:
            result.passed.append(name)
        elif outcomes[0].tag == "skipped":
            result.skipped[name] = outcomes[0].get("message", "")
        else:
            why = outcomes[0].get("message") or outcomes[0].tag
            result.failed[name] = (why.splitlines() or [""])[0][:200]
    return result
