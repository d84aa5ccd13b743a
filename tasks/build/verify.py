"""``doit verify`` / ``doit verify:PKG``: is the installed build reproducible?

live-bootstrap checks its packages against ``SHA256SUMS.pkgs``; here the reference is the
package's own manifest. ``verify:PKG`` builds the package again from the same recipe, sources
and ROOT, in a fresh build tree and stage at the paths a build uses (``cache/build/PKG`` and
``cache/stage/PKG``, whose old contents are replaced: compilers record the build path, and
some builds record the stage path, DESTDIR, too: Tcl's Makefile puts it into libtcl's
``tcl::pkgconfig`` table, so another path would differ), with its own log
(``cache/verify/PKG/log``), scans that stage as a build would, and compares the result with
the installed manifest. It never touches ROOT, the manifest or the package's state; the
build tree is removed afterwards, the stage too when it equals the manifest, else it is moved
to ``cache/verify/PKG/stage`` to be compared with ROOT. It fails listing every file that
differs (content, mode, type, link target, only in one of the two). The package is built
first if it is not yet.

A run that only verifies (``doit verify``, ``doit -n 2 verify:grep verify:git``) goes on
after a package that differs (doit's ``--continue``, set by ``dodo.py`` through
``only_verify``): one non-reproducible package does not hide the verdict on the others. The
run ends with one line, ``verify: N of M packages reproducible``, naming those that are not
(``tasks.engine.report``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import IO, Any

from doit.exceptions import TaskError, TaskFailed

from tasks.build import manifest
from tasks.build.action import BuildAction
from tasks.model.config import Paths
from tasks.model.platform import Platform
from tasks.model.recipe import Build
from tasks.store.fsutil import safe_rmtree


def differences(
    installed: dict[str, dict[str, Any]], rebuilt: dict[str, dict[str, Any]]
) -> list[str]:
    """One line per path whose entry differs between two manifests' file lists."""
    out = []
    for rel in sorted(installed.keys() | rebuilt.keys()):
        a, b = installed.get(rel), rebuilt.get(rel)
        if a == b:
            continue
        if a is None:
            out.append(f"{rel}: only in the rebuild")
        elif b is None:
            out.append(f"{rel}: only in the installed package")
        else:
            what = ", ".join(
                f"{k} {a.get(k)} -> {b.get(k)}"
                for k in sorted(a.keys() | b.keys())
                if a.get(k) != b.get(k)
            )
            out.append(f"{rel}: {what}")
    return out


class VerifyAction(BuildAction):
    """A ``BuildAction`` at a build's paths that stops before the merge and compares; its log
    and a stage that differs go to ``cache/verify/PKG/``."""

    def __init__(self, build: Build, platform: Platform, paths: Paths, isolate_network: bool):
        super().__init__(
            build,
            platform,
            paths,
            keep_build=False,
            checkpoint=True,  # no merge, no manifest, no adoption
            isolate_network=isolate_network,
        )

    def __str__(self) -> str:
        return f"verify {self.build.name} {self.build.version.version} ({self.platform.name})"

    def _dirs(self) -> tuple[Path, Path, Path]:
        # the build tree and stage at the paths of a real build: compilers record the tree
        # (autoconf's default -g puts it in the debug info, __FILE__ in the code), some
        # Makefiles the stage (DESTDIR), so other paths would differ
        build_dir, stage, _ = super()._dirs()
        return build_dir, stage, self._kept().parent / "log"

    def _kept(self) -> Path:
        """Where the rebuild's stage stays when it differs."""
        return (self.paths.cache / "verify" / self.build.name / "stage").resolve()

    def execute(
        self, out: IO[str] | None = None, err: IO[str] | None = None
    ) -> TaskFailed | TaskError | None:
        name = self.build.name
        installed = self.paths.manifest(name)
        if not installed.exists():
            return TaskFailed(f"verify {name}: {installed} is missing: build {name} first")
        build_dir, stage, log = self._dirs()
        diff: list[str] = []
        kept = self._kept()
        safe_rmtree(kept)  # an earlier verify's: it would be taken for this one's
        failed = super().execute(out, err)
        try:
            if failed is not None:
                return failed
            try:
                rebuilt = manifest.scan_stage(stage, self.platform.root)
            except manifest.StageError as e:
                return TaskFailed(f"verify {name}: {e}")
            diff = differences(manifest.read(installed), rebuilt)
        finally:
            safe_rmtree(build_dir)
            if diff:
                os.replace(stage, kept)  # the stage path is a build's: keep it elsewhere
            else:
                safe_rmtree(stage)
        if diff:
            shown = "\n".join(f"  {d}" for d in diff)
            return TaskFailed(
                f"verify {name}: not reproducible, {len(diff)} of {len(rebuilt)} entries differ "
                f"from {installed} (log: {log}; the rebuild's files stay in {kept} to compare "
                f"with ROOT):\n{shown}"
            )
        sys.stderr.write(
            f"verify {name}: reproducible ({len(rebuilt)} entries equal the installed manifest)\n"
        )
        return None


def only_verify(argv: list[str]) -> bool:
    """Whether a ``doit`` command line (without the program) names verify tasks and no other
    task: ``verify``, ``verify:PKG``, with options (``-n 2``, ``--continue``) and the ``run``
    command around them. Then the run should go on after a failure."""
    words = [a for a in argv if not a.startswith("-") and not a.isdigit()]
    if words[:1] == ["run"]:
        words = words[1:]
    return bool(words) and all(w == "verify" or w.startswith("verify:") for w in words)


def verify_tasks(project: Any) -> list[dict[str, Any]]:
    """``verify:PKG`` for every package of ``project`` (a ``tasks.engine.plan.Project``) that has a
    build (doit subtasks of the function ``task_verify`` in ``dodo.py``)."""
    out = []
    for name in project.order:
        build = project.builds[name]
        if build.recipe.kind != "package" or build.version.unconfirmed:
            continue
        action = VerifyAction(build, project.platform, project.paths, project.isolate)
        out.append(
            {
                "name": name,
                "actions": [action],
                "task_dep": [name],
                "uptodate": [False],
                "doc": f"rebuild {name} apart and compare with its installed manifest",
            }
        )
    return out
