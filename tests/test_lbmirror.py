"""Pinned checkouts and live-bootstrap's distfiles through ``doit`` as a user types it
(kinds "git" and "distfiles": tasks/kinds/git.py, tasks/kinds/distfiles.py), in a project
whose live-bootstrap is a real git repository made by the test (steps/manifest, steps/*/sources,
a submodule) and whose distfiles a local HTTP server serves, one of them only as a Debian
pool file. And the Azure Linux tree pinned by commit, from a tree-verified snapshot."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tasks.sources.gitpin import GIT_ENV, make_snapshot
from tests.conftest import Project, Result
from tests.httpserver import Server, serve
from tests.test_mirror import targz


def git(cwd: Path, *args: str) -> str:
    r = subprocess.run(
        ["git", "-c", "init.defaultBranch=main", "-c", "protocol.file.allow=always", *args],
        cwd=cwd, env=GIT_ENV, capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0, f"git {args}: {r.stderr}"
    return r.stdout.strip()


def ok(r: Result) -> Result:
    assert r.code == 0, f"exit {r.code}\n{r.out}\n{r.err}"
    return r


@dataclass
class Lb:
    project: Project
    srv: Server
    origin: Path  # bare repository of the stand-in live-bootstrap
    work: Path  # its working clone
    files: dict[str, bytes]  # distfile -> bytes
    stage0: str  # the submodule commit

    @property
    def checkout(self) -> Path:
        return self.project.root / "cache" / "live-bootstrap"

    def head(self) -> str:
        return git(self.work, "rev-parse", "HEAD")

    def pin(self, commit: str | None = None) -> None:
        """recipes/live-bootstrap.toml pinned to ``commit`` (default: the work clone's HEAD)."""
        commit = commit or self.head()
        tree = git(self.work, "rev-parse", f"{commit}^{{tree}}")
        (self.project.root / "recipes" / "live-bootstrap.toml").write_text(
            f'kind = "git"\nstep = "H2"\nplatforms = ["host"]\ndescription = "stand-in"\n'
            f'url = "{self.origin}"\ncommit = "{commit}"\ntree = "{tree}"\n'
            f'ref = "refs/pull/1/head"\n[submodules]\n"seed/stage0" = "{self.stage0}"\n'
        )

    def doit(self, *args: str) -> Result:
        return self.project.doit(*args)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def lb(project: Project, tmp_path: Path) -> Iterator[Lb]:
    files = {
        "a-1.0.tar.gz": targz("a-1.0", {"a.c": "int a;\n"}),
        "b-2.0.tar.gz": targz("b-2.0", {"b.c": "int b;\n"}),
        "UnicodeData-15.0.0.txt": b"0041;LATIN CAPITAL LETTER A\n",
    }
    with serve({}) as srv:
        srv.files["up/a-1.0.tar.gz"] = files["a-1.0.tar.gz"]  # type: ignore[index]
        srv.files["up/UnicodeData.txt"] = files["UnicodeData-15.0.0.txt"]  # type: ignore[index]
        # b is not upstream (404): only Debian's archive has a byte-identical .orig
        srv.files["debian/pool/main/b/b/b_2.0.orig.tar.gz"] = files["b-2.0.tar.gz"]  # type: ignore[index]
        root = tmp_path / "upstream"
        root.mkdir()
        git(root, "init", "-q", "--bare", "stage0.git")
        git(root, "clone", "-q", str(root / "stage0.git"), "stage0")
        (root / "stage0" / "hex0.hex0").write_text("31 c0\n")
        git(root / "stage0", "add", "-A")
        git(root / "stage0", "commit", "-q", "-m", "seed")
        git(root / "stage0", "push", "-q", "origin", "HEAD:refs/heads/main")
        stage0 = git(root / "stage0", "rev-parse", "HEAD")
        git(root, "init", "-q", "--bare", "live-bootstrap.git")
        work = root / "live-bootstrap"
        git(root, "clone", "-q", str(root / "live-bootstrap.git"), str(work))
        steps = {
            "manifest": "build: a-1.0\nimprove: get_network\nbuild: b-2.0\nbuild: u-1.0\n",
            "a-1.0/sources": f"{srv.url('up/a-1.0.tar.gz')} {sha(files['a-1.0.tar.gz'])}\n",
            "b-2.0/sources": f"{srv.url('up/b-2.0.tar.gz')} {sha(files['b-2.0.tar.gz'])}\n",
            "u-1.0/sources": (  # the same file again, and one named by its third field
                f"{srv.url('up/a-1.0.tar.gz')} {sha(files['a-1.0.tar.gz'])}\n"
                f"{srv.url('up/UnicodeData.txt')} {sha(files['UnicodeData-15.0.0.txt'])} UnicodeData-15.0.0.txt\n"
            ),
        }
        for rel, text in steps.items():
            (work / "steps" / rel).parent.mkdir(parents=True, exist_ok=True)
            (work / "steps" / rel).write_text(text)
        (work / "rootfs.py").write_text("print('stand-in')\n")
        git(work, "submodule", "add", "-q", "../stage0.git", "seed/stage0")
        git(work, "add", "-A")
        git(work, "commit", "-q", "-m", "stand-in live-bootstrap")
        git(work, "push", "-q", "origin", "HEAD:refs/pull/1/head")  # on no branch
        project.config(f'platform = "sandbox"\njobs = 2\ndebian_archive = "{srv.url("debian")}"\n')
        lbt = Lb(project, srv, root / "live-bootstrap.git", work, files, stage0)
        lbt.pin()
        (project.root / "recipes" / "lb-mirror.toml").write_text(
            'kind = "distfiles"\nstep = "H3"\nplatforms = ["host"]\ndescription = "stand-in"\n'
            'depends = ["live-bootstrap"]\ncheckout = "live-bootstrap"\n'
            '[debian]\n"b-2.0.tar.gz" = "main/b/b/b_2.0.orig.tar.gz"\n'
        )
        project.recipe("pkg")
        yield lbt


def test_lb_mirror_checks_out_fetches_and_lays_out_then_nothing(lb: Lb) -> None:
    lb.srv.set_fault("up/a-1.0.tar.gz", cut_after=40)  # cut mid-body once: resumed
    lb.srv.set_fault("up/UnicodeData.txt", fail_first=[503])  # busy once: retried
    r = ok(lb.doit("lb-mirror"))
    a_gets = [q for q in lb.srv.requests if q.method == "GET" and q.path == "up/a-1.0.tar.gz"]
    assert [q.range for q in a_gets] == [None, "bytes=40-"]
    assert [q.path for q in lb.srv.requests].count("up/UnicodeData.txt") >= 2
    fetched = sorted(t for t in r.ran if t.startswith("mirror:"))
    assert fetched == [f"mirror:{f}" for f in sorted(lb.files)]  # a-1.0 once, not twice
    assert r.ran.index("live-bootstrap") < r.ran.index("lb-mirror")
    assert git(lb.checkout, "rev-parse", "HEAD") == lb.head()
    assert git(lb.checkout / "seed" / "stage0", "rev-parse", "HEAD") == lb.stage0
    mirror = lb.project.root / "mirror"
    for name, data in lb.files.items():  # where rootfs.py reads them, the same inode
        laid = lb.checkout / "distfiles" / name
        assert laid.read_bytes() == data and os.path.samefile(laid, mirror / name)
    assert "debian/pool/main/b/b/b_2.0.orig.tar.gz" in r.out  # the summary names the origin
    sums = (mirror / "SHA256SUMS").read_text()
    assert all(f"{sha(d)}  {n}\n" in sums for n, d in lb.files.items())
    subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=mirror, check=True)
    assert git(lb.checkout, "status", "--porcelain") == "?? distfiles/"  # nothing else changed
    again = ok(lb.doit("lb-mirror"))
    assert again.ran == [] and "lb-mirror" in again.uptodate
    record = json.loads((lb.project.root / "cache/checkouts/live-bootstrap.json").read_text())
    assert record["commit"] == lb.head() and record["origin"] == str(lb.origin)


def test_a_moved_branch_changes_nothing_a_new_pin_fetches_the_new_distfile(lb: Lb) -> None:
    ok(lb.doit("lb-mirror"))
    first = lb.head()
    c = targz("c-3.0", {"c.c": "int c;\n"})
    lb.srv.files["up/c-3.0.tar.gz"] = c  # type: ignore[index]
    (lb.work / "steps" / "c-3.0").mkdir()
    (lb.work / "steps" / "c-3.0" / "sources").write_text(
        f"{lb.srv.url('up/c-3.0.tar.gz')} {sha(c)}\n"
    )
    with (lb.work / "steps" / "manifest").open("a") as f:
        f.write("build: c-3.0\n")
    git(lb.work, "add", "-A")
    git(lb.work, "commit", "-q", "-m", "c")
    git(lb.work, "push", "-q", "--force", "origin", "HEAD:refs/pull/1/head")  # the ref moves
    r = ok(lb.doit("lb-mirror"))
    assert r.ran == []  # still pinned to the first commit
    assert git(lb.checkout, "rev-parse", "HEAD") == first
    lb.pin()  # the recipe now pins the new commit
    r = ok(lb.doit("lb-mirror"))
    assert sorted(r.ran) == ["lb-mirror", "live-bootstrap", "mirror:c-3.0.tar.gz"]
    assert f"{sha(c)}  c-3.0.tar.gz\n" in (lb.project.root / "mirror" / "SHA256SUMS").read_text()
    assert git(lb.checkout, "rev-parse", "HEAD") == lb.head() != first
    assert (lb.checkout / "distfiles" / "c-3.0.tar.gz").read_bytes() == c


def test_the_sandbox_build_does_not_touch_the_host_half(lb: Lb) -> None:
    r = ok(lb.doit())
    assert r.packages_ran() == ["pkg"]
    assert sorted(t for t in r.ran if t.startswith("mirror:")) == [
        "mirror:SHA256SUMS", "mirror:pkg-1.0.tar.gz"
    ]  # fmt: skip
    assert not lb.checkout.exists() and not lb.srv.requests  # no distfile was asked for
    assert "a-1.0.tar.gz" not in (lb.project.root / "mirror" / "SHA256SUMS").read_text()


def test_offline_lists_every_missing_distfile_with_its_urls(lb: Lb) -> None:
    ok(lb.doit("live-bootstrap"))
    lb.project.config(
        f'platform = "sandbox"\noffline = true\ndebian_archive = "{lb.srv.url("debian")}"\n'
    )
    r = lb.doit("lb-mirror")
    assert r.code != 0 and "Nothing was built." in r.out
    assert "offline, and 3 source(s) of this run are not in the mirror" in r.out
    assert re.search(r"^b-2.0.tar.gz \(for lb-mirror\): not in mirror/", r.out, re.M)
    assert lb.srv.url("debian/pool/main/b/b/b_2.0.orig.tar.gz") in r.out
    assert not lb.srv.requests  # nothing was fetched


def test_a_tampered_pin_fails_naming_both_tree_ids_and_keeps_nothing(lb: Lb) -> None:
    text = (lb.project.root / "recipes" / "live-bootstrap.toml").read_text()
    tree = re.search(r'tree = "([0-9a-f]{40})"', text)[1]  # type: ignore[index]
    (lb.project.root / "recipes" / "live-bootstrap.toml").write_text(text.replace(tree, "1" * 40))
    r = lb.doit("live-bootstrap")
    assert r.code != 0
    assert f"expected tree {'1' * 40} (pinned), found tree {tree}" in r.out + r.err
    assert not lb.checkout.exists() and not (lb.project.root / "cache/live-bootstrap.part").exists()


def test_clean_removes_the_checkout_never_the_mirror(lb: Lb) -> None:
    ok(lb.doit("lb-mirror"))
    ok(lb.doit("clean", "live-bootstrap"))
    assert not lb.checkout.exists()
    assert not (lb.project.root / "cache/checkouts/live-bootstrap.json").exists()
    assert all((lb.project.root / "mirror" / f).exists() for f in lb.files)
    r = ok(lb.doit("lb-mirror"))
    assert sorted(r.ran) == ["lb-mirror", "live-bootstrap"]  # the distfiles were kept


def test_a_fresh_machine_reads_the_list_from_the_new_checkout(lb: Lb, tmp_path: Path) -> None:
    """The repository is reached by a URL no git directory of this machine mirrors: the list
    is not known when the tasks are made, so lb-mirror reads it from the checkout it follows
    and fetches the files itself; the next run has them as tasks, verified and up to date."""
    text = (lb.project.root / "recipes" / "live-bootstrap.toml").read_text()
    url = lb.origin.as_uri()
    (lb.project.root / "recipes" / "live-bootstrap.toml").write_text(
        text.replace(f'"{lb.origin}"', f'"{url}"')
    )
    r = ok(lb.doit("lb-mirror"))
    assert sorted(r.ran) == ["lb-mirror", "live-bootstrap"]
    assert all((lb.checkout / "distfiles" / f).read_bytes() == d for f, d in lb.files.items())
    asked = len(lb.srv.requests)
    again = ok(lb.doit("lb-mirror"))
    assert "lb-mirror" not in again.ran and "live-bootstrap" not in again.ran
    # now tasks: each file found in mirror/ and verified there, nothing downloaded again
    assert sorted(t for t in again.ran if t.startswith("mirror:")) == [
        f"mirror:{f}" for f in sorted(lb.files)
    ]
    assert len(lb.srv.requests) == asked
    assert ok(lb.doit("lb-mirror")).ran == []


# ------------------------------------------------------------------ the Azure Linux tree pin


def test_the_tree_comes_from_a_tree_verified_snapshot_offline(
    project: Project, tmp_path: Path
) -> None:
    from tests.test_azurelinux import make_azl

    azl = make_azl(project, tmp_path)
    repo = tmp_path / "upstream" / "azurelinux"
    recipe = project.root / "recipes" / "azurelinux.toml"
    recipe.write_text(
        recipe.read_text().replace(
            f'url = "{repo}"', 'url = "https://unreachable.invalid/microsoft/azurelinux"'
        )
    )
    text = (project.root / "azl-bootstrap.toml").read_text()
    project.config(text + "offline = true\n")
    r = project.doit("azurelinux")  # nothing local has the commit: the preflight says so
    assert r.code != 0 and "Nothing was built." in r.out
    assert "1 pinned git checkout(s) of this run are in no local mirror" in r.out
    assert f"azurelinux: commit {azl.ref} of https://unreachable.invalid/" in r.out
    assert not (project.root / "cache" / "manifests").exists()  # not even the packages ran
    tarball = project.root / "mirror" / f"azurelinux-{azl.ref}.tar.gz"
    make_snapshot(repo / ".git", azl.ref, tarball, f"azurelinux-{azl.ref}")
    r = ok(project.doit("azurelinux"))
    assert "azurelinux" in r.ran
    assert (azl.tree / "toolkit" / "Makefile").is_file()
    log = (project.root / "cache" / "logs" / "azurelinux.1.log").read_text()
    assert f"verified: commit {azl.ref}" in log and str(tarball) in log
    # a tampered snapshot is refused naming both tree ids
    subprocess.run(["tar", "-xzf", str(tarball), "-C", str(tmp_path)], check=True)
    (tmp_path / f"azurelinux-{azl.ref}" / "toolkit" / "Makefile").write_text("changed\n")
    subprocess.run(
        ["tar", "-czf", str(tarball), "-C", str(tmp_path), f"azurelinux-{azl.ref}"], check=True
    )
    recipe.write_text(
        recipe.read_text().replace('name = "coredns"', 'name = "coredns2"')
    )  # rerun it
    r = project.doit("azurelinux")
    assert r.code != 0 and f"expected tree {git(repo, 'rev-parse', 'HEAD^{tree}')}" in r.out + r.err
    assert "found tree" in r.out + r.err
    assert (azl.tree / "toolkit" / "Makefile").is_file()  # the previous tree is kept


def test_the_real_recipes_check_out_live_bootstrap_and_list_its_248_distfiles(
    project: Project,
) -> None:
    """The repository's own live-bootstrap recipes, where a local git mirror has the commit:
    `doit live-bootstrap`, then the plan has one fetch task per real distfile."""
    from tests.test_gitpin import STAGE0, real_mirror

    mirrors = real_mirror("fosslinux+live-bootstrap")
    repo_recipes = Path(__file__).resolve().parent.parent / "recipes"
    for name in ("live-bootstrap.toml", "lb-mirror.toml"):
        (project.root / "recipes" / name).write_text((repo_recipes / name).read_text())
    env = {"AZL_GIT_MIRRORS": ":".join(map(str, mirrors))}
    r = project.doit("live-bootstrap", env=env)
    assert r.code == 0, r.out + r.err
    checkout = project.root / "cache" / "live-bootstrap"
    assert git(checkout, "rev-parse", "HEAD") == "1296c44bb345ef5d54ecffd7688f9813d46a032a"
    assert git(checkout / "seed/stage0-posix/x86", "rev-parse", "HEAD") == STAGE0["x86"]
    listed = project.doit("list", "--all", env=env)
    fetches = re.findall(r"^mirror:(\S+)", listed.out, re.M)
    assert len([f for f in fetches if f != "SHA256SUMS"]) == 248
    assert "musl-1.2.5.tar.gz" in fetches and "gnulib-8f4538a5.tar.gz" in fetches
