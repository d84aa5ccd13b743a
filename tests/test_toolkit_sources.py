"""The Azure Linux toolkit's own downloads through the mirror (kind "toolkitsources":
tasks/kinds/toolkitsources.py, tasks/sources/toolkitlist.py; the stages' ``toolkit_sources``:
tasks/kinds/stage.py, tasks/toolkit/sourceserver.py), as ``doit`` runs them.

The toolkit's source server cannot be reached from here: a local HTTP server on 127.0.0.1
(tests/httpserver.py) **stands in for it**, and for the upstream and Debian URLs. The tree is
a stand-in git repository laid out as the real one (toolkit/Makefile's ``SOURCE_URL ?=``,
toolchain-sha256sums, toolchain-remote-wget-list, bypass_container.sh's kernel line,
build_official_toolchain_rpms.sh, SPECS/<spec>/<spec>.signatures.json) whose stand-in
make targets fetch as the toolkit does: the raw toolchain's wget over ``$SOURCE_URL/<file>``
for every line of the sums, then ``sha256sum -c``; a stand-in srpmpacker that downloads each
signed source its SPEC directory lacks from ``$SOURCE_URL`` and checks its sha256. The real
lists are read from the pinned tree's ``toolkit/`` and SPECS in ``../shared/azurelinux``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tasks.sources.gitpin import make_snapshot
from tasks.sources.toolkitlist import SUMS, DirTree, read_lists
from tests.conftest import REPO, Project, Result
from tests.httpserver import Server, serve
from tests.test_azurelinux import git, pinned_tree
from tests.test_mirror import targz

RECIPES = REPO / "recipes"
SHARED = REPO.parent / "shared" / "azurelinux"
C = "toolkit/scripts/toolchain/container"
UNREACHABLE = "http://127.0.0.1:9"  # nothing listens on the discard port

# Stand-in toolkit/Makefile: SOURCE_URL as the real one sets it, and the toolkit's downloads.
MAKEFILE = """\
SOURCE_URL ?= {server}/sources/core
BUILD_DIR := $(abspath $(CURDIR)/../build)
OUT_DIR := $(abspath $(CURDIR)/../out)
LFS := $(BUILD_DIR)/toolchain/lfs
C := $(CURDIR)/scripts/toolchain/container
RAW := $(BUILD_DIR)/toolchain/toolchain_from_container.tar.gz
.PHONY: raw-toolchain iso
raw-toolchain: $(RAW)
# as create_toolchain_in_container.sh and bypass_container.sh fetch: every file of the sums
# from $(SOURCE_URL), failures ignored, the kernel's fallback, then sha256sum -c
$(RAW):
\tmkdir -p $(LFS)/sources
\tawk -v src=$(SOURCE_URL) '{{print src"/"$$2}}' $(C)/toolchain-sha256sums > $(BUILD_DIR)/wget-list
\twget -nv --no-clobber --timeout=30 --continue --input-file=$(BUILD_DIR)/wget-list \
--directory-prefix=$(LFS)/sources || true
\tcd $(LFS)/sources && {{ [ -f kernel-1.0.tar.gz ] || wget -nv --timeout=5 --tries=1 \
{unreachable}/kernel.tar.gz -O kernel-1.0.tar.gz || true; }}
\tcd $(LFS)/sources && sha256sum -c $(C)/toolchain-sha256sums
\techo "$(SOURCE_URL)" > $(BUILD_DIR)/toolchain/source_url
\ttar -czf $@ -C $(LFS) sources
iso:
\tpython3 $(CURDIR)/srpmpacker.py $(SOURCE_URL) $(CURDIR)/../SPECS $(BUILD_DIR)/SRPMS
\tmkdir -p $(OUT_DIR)/images/full && ls $(BUILD_DIR)/SRPMS > $(OUT_DIR)/images/full/full.iso
"""
# Stand-in srpmpacker: each signed source from the SPEC's directory, else from SOURCE_URL,
# its sha256 enforced (as srpmpacker's hydrateFiles with --signature-handling=enforce).
SRPMPACKER = """\
import hashlib, json, shutil, sys, urllib.request
from pathlib import Path
url, specs, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
for sig in sorted(specs.glob("*/*.signatures.json")):
    for name, sha in json.loads(sig.read_text())["Signatures"].items():
        dest = out / sig.parent.name / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if (sig.parent / name).exists():
            shutil.copy(sig.parent / name, dest)
        else:
            with urllib.request.urlopen(f"{url}/{name}", timeout=30) as r:
                dest.write_bytes(r.read())
        if hashlib.sha256(dest.read_bytes()).hexdigest() != sha:
            sys.exit(f"file ({dest}) has mismatching signature")
"""


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ok(r: Result) -> Result:
    assert r.code == 0, f"exit {r.code}\n--- out\n{r.out}\n--- err\n{r.err}"
    return r


@dataclass
class Toolkit:
    project: Project
    srv: Server
    tree: Path  # where the stand-in tree is checked out
    files: dict[str, bytes]  # file -> bytes, every download of the lists

    def doit(self, *args: str) -> Result:
        return self.project.doit(*args)

    @property
    def served(self) -> Path:
        return self.project.root / "cache" / "toolkit-sources" / "files"

    @property
    def lfs_sources(self) -> Path:
        return self.tree / "build" / "toolchain" / "lfs" / "sources"


@pytest.fixture
def tk(project: Project, tmp_path: Path) -> Toolkit:
    files = {
        "alpha-1.0.tar.gz": targz("alpha-1.0", {"a.c": "int a;\n"}),  # on the source server
        "beta-2.0.tar.gz": targz("beta-2.0", {"b.c": "int b;\n"}),  # only upstream
        "gamma-3.0.tar.gz": targz("gamma-3.0", {"g.c": "int g;\n"}),  # only Debian's .orig
        "kernel-1.0.tar.gz": targz("kernel-1.0", {"Makefile": "all:\n"}),  # server and SPEC
        "pkg-1.0.tar.gz": targz("pkg-1.0", {"p.c": "int p;\n"}),  # a SPEC's source
    }
    pool = "main/g/gamma/gamma_3.0.orig.tar.gz"
    content = {
        f"sources/core/{f}": b
        for f, b in files.items()
        if f not in ("beta-2.0.tar.gz", "gamma-3.0.tar.gz")
    }
    content["upstream/beta-2.0.tar.gz"] = files["beta-2.0.tar.gz"]
    content[f"debian/pool/{pool}"] = files["gamma-3.0.tar.gz"]
    with serve(content) as srv:
        base = srv.url("").rstrip("/")
        conf = b"CONFIG=y\n"
        tree_files = {
            "toolkit/Makefile": MAKEFILE.format(server=base, unreachable=UNREACHABLE),
            "toolkit/srpmpacker.py": SRPMPACKER,
            f"{C}/toolchain-sha256sums": "".join(
                f"{sha(files[f])}  {f}\n"
                for f in (
                    "alpha-1.0.tar.gz",
                    "beta-2.0.tar.gz",
                    "gamma-3.0.tar.gz",
                    "kernel-1.0.tar.gz",
                )
            ),
            f"{C}/toolchain-remote-wget-list": (
                f"{UNREACHABLE}/alpha-1.0.tar.gz\n{base}/upstream/beta-2.0.tar.gz\n"
                f"{UNREACHABLE}/gamma-3.0.tar.gz\n"
            ),
            f"{C}/bypass_container.sh": (
                "[ -f kernel-1.0.tar.gz ] || wget -nv --no-clobber --timeout=30 --continue "
                f"{UNREACHABLE}/kernel.tar.gz -O kernel-1.0.tar.gz --directory-prefix=$LFS/sources || true\n"
            ),
            "toolkit/scripts/toolchain/build_official_toolchain_rpms.sh": (
                "build_rpm_in_chroot_no_install pkg\n"
            ),
            "SPECS/pkg/pkg.spec": "Name: pkg\n",
            "SPECS/pkg/pkg.conf": conf.decode(),
            "SPECS/pkg/pkg.signatures.json": json.dumps(
                {
                    "Signatures": {
                        "pkg-1.0.tar.gz": sha(files["pkg-1.0.tar.gz"]),
                        "pkg.conf": sha(conf),
                    }
                }
            ),
            "SPECS/kernel/kernel.spec": "Name: kernel\n",
            "SPECS/kernel/kernel.signatures.json": json.dumps(
                {"Signatures": {"kernel-1.0.tar.gz": sha(files["kernel-1.0.tar.gz"])}}
            ),
            ".gitignore": "/build/\n/out/\n",
        }
        repo = tmp_path / "upstream" / "azurelinux"
        for rel, text in tree_files.items():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            (repo / rel).write_text(text)
        git(repo, "-c", "init.defaultBranch=main", "init", "-q")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "stand-in")
        ref = git(repo, "rev-parse", "HEAD").strip()
        recipes = project.root / "recipes"
        (recipes / "azurelinux.toml").write_text(pinned_tree(repo, ref, ""))
        real = (RECIPES / "toolkit-sources.toml").read_text()
        assert real.rstrip().splitlines()[-1].startswith('"'), "[debian] is the last table"
        (recipes / "toolkit-sources.toml").write_text(real + f'"gamma-3.0.tar.gz" = "{pool}"\n')
        for stage, outputs, fresh in (
            ("raw-toolchain", 'outputs = ["build/toolchain/toolchain_from_container.tar.gz"]',
             "build/toolchain"),
            ("iso", 'outputs_glob = "out/images/full/*.iso"', "out/images/full"),
        ):  # fmt: skip
            served = tomllib.loads((RECIPES / f"{stage}.toml").read_text())["toolkit_sources"]
            sets = json.dumps(served["sets"])
            (recipes / f"{stage}.toml").write_text(
                f'kind = "stage"\nstep = "A3"\nplatforms = ["guest"]\n'
                f'depends = ["azurelinux"]\nmake_target = "{stage}"\n'
                f'{outputs}\nfresh = ["{fresh}"]\n'
                f'toolkit_sources = {{ recipe = "{served["recipe"]}", sets = {sets} }}\n'
            )
        tree = tmp_path / "tree"
        project.config(
            f'platform = "sandbox"\njobs = 2\nazurelinux_stages = true\nazurelinux_tree = "{tree}"\n'
            f'debian_archive = "{base}/debian"\n'
        )
        yield Toolkit(project, srv, tree, files)


def test_the_host_fetches_the_lists_through_the_mirror_then_nothing(tk: Toolkit) -> None:
    r = ok(tk.doit("toolkit-sources"))
    mirror = tk.project.root / "mirror"
    for name, data in tk.files.items():
        assert (mirror / name).read_bytes() == data, name
        assert (tk.served / name).resolve() == (mirror / name).resolve(), name
    sums = (mirror / "SHA256SUMS").read_text()
    assert all(f"{sha(d)}  {n}\n" in sums for n, d in tk.files.items())
    # each from where it can be had: the source server, upstream, Debian's pool
    got = {q.path for q in tk.srv.requests if q.method == "GET"}
    assert "upstream/beta-2.0.tar.gz" in got
    assert "debian/pool/main/g/gamma/gamma_3.0.orig.tar.gz" in got
    assert "sources/core/alpha-1.0.tar.gz" in got
    record = json.loads(
        (tk.project.root / "cache/toolkit-sources/toolkit-sources.json").read_text()
    )
    assert sorted(record["files"]) == sorted(tk.files)  # pkg.conf is in its SPEC's directory
    assert record["files"]["kernel-1.0.tar.gz"]["sets"] == ["toolchain", "specs"]
    assert record["files"]["pkg-1.0.tar.gz"]["sets"] == ["toolchain-specs", "specs"]
    # the run's summary says where each came from
    assert f"beta-2.0.tar.gz  0.0 MiB  from {tk.srv.url('upstream/beta-2.0.tar.gz')}" in r.out
    again = ok(tk.doit("toolkit-sources"))
    assert "toolkit-sources" not in again.packages_ran(), again.out
    ok(tk.doit("clean", "toolkit-sources"))  # the links and the record; never the mirror
    assert not list(tk.served.iterdir())
    assert all((mirror / name).read_bytes() == data for name, data in tk.files.items())


def test_the_stages_get_every_file_from_the_mirror_and_no_network(tk: Toolkit) -> None:
    ok(tk.doit("toolkit-sources"))
    asked = len(tk.srv.requests)
    # the stand-in source server is gone for the stages: only the mirror can serve them
    if os.geteuid() == 0 and shutil.which("unshare"):
        r = netless(tk.project, "raw-toolchain", "iso")
    else:  # pragma: no cover - the CI runs as root
        r = tk.doit("raw-toolchain", "iso")
    ok(r)
    assert len(tk.srv.requests) == asked, "a stage reached the stand-in source server"
    for name in ("alpha-1.0.tar.gz", "beta-2.0.tar.gz", "gamma-3.0.tar.gz", "kernel-1.0.tar.gz"):
        assert (tk.lfs_sources / name).read_bytes() == tk.files[name], name
    source_url = (tk.tree / "build/toolchain/source_url").read_text().strip()
    assert source_url.startswith("http://127.0.0.1:") and tk.srv.url("") not in source_url + "/"
    srpm = tk.tree / "build/SRPMS/pkg/pkg-1.0.tar.gz"
    assert srpm.read_bytes() == tk.files["pkg-1.0.tar.gz"]
    log = (tk.project.root / "cache/logs/raw-toolchain.1.log").read_text()
    assert "4 toolkit sources (toolchain) are in" in log
    assert "served 4 toolkit source download(s) from the mirror" in log


def netless(project: Project, *args: str) -> Result:
    """``doit ARGS`` in a new network namespace with only its loopback up (as root)."""
    import sys

    script = f'ip link set lo up && exec "{sys.executable}" -m doit "$@"'
    proc = subprocess.run(
        ["unshare", "--net", "sh", "-c", script, "sh", *args],
        cwd=project.root, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    return Result(proc.returncode, proc.stdout, proc.stderr)


def test_offline_a_missing_file_stops_the_run_naming_it_and_its_urls(tk: Toolkit) -> None:
    ok(tk.doit("toolkit-sources"))
    (tk.project.root / "mirror" / "beta-2.0.tar.gz").unlink()
    conf = tk.project.root / "azl-bootstrap.toml"
    conf.write_text(conf.read_text() + "offline = true\n")
    r = tk.doit("raw-toolchain")
    assert r.code != 0
    text = r.out + r.err
    assert "beta-2.0.tar.gz (for toolkit-sources): not in mirror/" in text
    assert f"can be fetched from {tk.srv.url('')}sources/core/beta-2.0.tar.gz" in text
    assert f"can be fetched from {tk.srv.url('')}upstream/beta-2.0.tar.gz" in text
    assert "Nothing was built." in text
    assert not (tk.tree / "build").exists()


def test_a_stage_whose_file_is_gone_stops_before_make_naming_file_and_urls(tk: Toolkit) -> None:
    ok(tk.doit("toolkit-sources"))
    ok(tk.doit("azurelinux"))
    (tk.served / "gamma-3.0.tar.gz").unlink()
    r = tk.doit("-s", "raw-toolchain")  # this task alone: nothing lays the file out again
    assert r.code != 0
    text = r.out + r.err
    assert "1 of the toolkit's sources (toolchain) are not in the mirror" in text
    assert "gamma-3.0.tar.gz (toolkit/scripts/toolchain/container/toolchain-sha256sums:3)" in text
    assert "Debian's pool/main/g/gamma/gamma_3.0.orig.tar.gz" in text
    assert "make not started" in text
    assert not (tk.tree / "build").exists()


def test_the_guest_plan_lists_them_so_the_push_carries_them(tk: Toolkit) -> None:
    from tasks.engine.plan import Project as Plan
    from tasks.kinds.guest import guest_mirror_files

    ok(tk.doit("toolkit-sources"))
    conf = tk.project.root / "azl-bootstrap.toml"
    conf.write_text(conf.read_text().replace("azurelinux_stages = true\n", ""))
    host = Plan(tk.project.root)
    assert host.build_of("toolkit-sources") is not None  # a host step where the host is
    assert host.build_of("raw-toolchain") is None
    pushed = guest_mirror_files(host)
    assert pushed is not None and set(tk.files) <= pushed


@pytest.mark.parametrize("where", ["host", "guest"])
def test_without_the_tree_at_load_the_step_reads_it_when_it_runs(tk: Toolkit, where: str) -> None:
    """The host fetches the pinned commit into mirror/azurelinux.git (where the guest's
    checkout looks too); the guest (here the sandbox with the stages) reads its checked-out
    tree. Either way the step then fetches the files itself; the next run has their tasks."""
    tree_recipe = tk.project.root / "recipes" / "azurelinux.toml"
    text = tree_recipe.read_text()
    url = text.split('url = "', 1)[1].split('"', 1)[0]
    tree_recipe.write_text(text.replace(f'url = "{url}"', f'url = "file://{url}"'))
    if where == "host":  # no stages, no tree: toolkit-sources is a host step
        conf = tk.project.root / "azl-bootstrap.toml"
        conf.write_text(conf.read_text().replace("azurelinux_stages = true\n", ""))
    r = ok(tk.doit("toolkit-sources"))  # the list is not known when the tasks are made
    assert not [t for t in r.ran if t.startswith("mirror:")]
    mirror = tk.project.root / "mirror"
    assert (mirror / "azurelinux.git" / "HEAD").is_file() == (where == "host")
    for name, data in tk.files.items():
        assert (mirror / name).read_bytes() == data, name
        assert (tk.served / name).is_file(), name
    asked = len(tk.srv.requests)
    again = ok(tk.doit("toolkit-sources"))  # now known: the mirror's tasks, nothing to fetch
    assert f"0 file(s) fetched, 0.0 MiB; {len(tk.files)} re-verified in place" in again.out
    assert len(tk.srv.requests) == asked
    assert ok(tk.doit("toolkit-sources")).packages_ran() == []


def test_the_lists_are_read_from_a_snapshot_tarball_in_the_mirror(tk: Toolkit) -> None:
    """Where only a snapshot of the commit is at hand (the guest's push carries one): the
    list is known when the tasks are made, so the files are the mirror's tasks at once."""
    tree_recipe = tk.project.root / "recipes" / "azurelinux.toml"
    text = tree_recipe.read_text()
    url = text.split('url = "', 1)[1].split('"', 1)[0]
    commit = text.split('commit = "', 1)[1].split('"', 1)[0]
    make_snapshot(
        Path(url) / ".git",
        commit,
        tk.project.root / "mirror" / f"azurelinux-{commit}.tar.gz",
        f"azurelinux-{commit}",
    )
    tree_recipe.write_text(
        text.replace(f'url = "{url}"', f'url = "{UNREACHABLE}/microsoft/azurelinux"')
    )
    conf = tk.project.root / "azl-bootstrap.toml"
    conf.write_text(conf.read_text().replace("azurelinux_stages = true\n", ""))
    r = ok(tk.doit("toolkit-sources"))
    assert {f"mirror:{f}" for f in tk.files} <= set(r.ran), r.out
    assert not (tk.project.root / "mirror" / "azurelinux.git").exists()
    record = json.loads(
        (tk.project.root / "cache/toolkit-sources/toolkit-sources.json").read_text()
    )
    assert sorted(record["files"]) == sorted(tk.files)


def test_recipe_mistakes_name_file_and_field(tk: Toolkit) -> None:
    stage = tk.project.root / "recipes" / "raw-toolchain.toml"
    stage.write_text(stage.read_text().replace('"toolchain"]', '"toolchains"]'))
    r = tk.doit("list")
    assert r.code != 0
    assert "raw-toolchain.toml" in r.err and "toolkit_sources.sets[0]" in r.err
    assert "unknown 'toolchains'" in r.err


@pytest.mark.skipif(
    not (SHARED / "toolkit-6a8b54d4.tar.gz").is_file(),
    reason=f"no {SHARED}/toolkit-6a8b54d4.tar.gz",
)
def test_the_pinned_trees_own_lists(tmp_path: Path) -> None:
    for name in ("toolkit-6a8b54d4.tar.gz", "specs-6a8b54d4.tar.gz"):
        subprocess.run(["tar", "-xzf", str(SHARED / name), "-C", str(tmp_path)], check=True)
    root = tmp_path / "azurelinux-6a8b54d4"
    items = {i.source.file: i for i in read_lists(DirTree(root))}
    toolchain = [f for f, i in items.items() if "toolchain" in i.sets]
    assert len(toolchain) == 63  # the 62 of the wget list (openssl's version moved) + kernel
    assert len(toolchain) == len((root / SUMS).read_text().split("\n")) - 1
    kernel = items["kernel-6.6.96.2.tar.gz"]
    assert kernel.sets == ("toolchain", "specs")
    assert kernel.source.urls == (
        "https://azurelinuxsrcstorage.blob.core.windows.net/sources/core/kernel-6.6.96.2.tar.gz",
        "https://github.com/microsoft/CBL-Mariner-Linux-Kernel/archive/rolling-lts/mariner-3/6.6.96.2.tar.gz",
    )
    # the wget list names openssl 3.1.4, the sums 3.3.3: only the source server has it
    assert len(items["openssl-3.3.3.tar.gz"].source.urls) == 1
    assert items["elfutils-0.189.tar.bz2"].sets == ("toolchain", "toolchain-specs", "specs")
    assert items["cdrkit-1.1.11.tar.gz"].sets == ("specs",)
    assert "config" not in items and "cpupower" not in items  # in SPECS/kernel itself
    # every file the real recipe sends to Debian is one the tree lists, with that sha256
    debian = tomllib.loads((RECIPES / "toolkit-sources.toml").read_text())["debian"]
    assert set(debian) <= set(items)


def test_the_stages_server_serves_only_listed_files_of_the_mirror(tmp_path: Path) -> None:
    """tasks/toolkit/sourceserver.py through urllib: a listed file whole (GET and HEAD), a 404
    for a file the lists do not name and for a listed one that is not there, each noted."""
    import urllib.error
    import urllib.request

    from tasks.toolkit.sourceserver import serve as serve_sources

    (tmp_path / "a.tar.gz").write_bytes(b"A" * 100_000)
    (tmp_path / "secret").write_bytes(b"not listed")
    with serve_sources(tmp_path, {"a.tar.gz", "gone.tar.gz"}) as srv:
        assert srv.url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{srv.url}/a.tar.gz", timeout=10) as r:
            assert r.read() == b"A" * 100_000
        head = urllib.request.Request(f"{srv.url}/a.tar.gz", method="HEAD")
        with urllib.request.urlopen(head, timeout=10) as r:
            assert r.headers["Content-Length"] == "100000" and r.read() == b""
        for name in ("secret", "gone.tar.gz", "../a.tar.gz"):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(f"{srv.url}/{name}", timeout=10)
            assert e.value.code == 404, name
    assert srv.sent == ["a.tar.gz"]
    assert [r.split(" ", 1)[1] for r in srv.refused] == [
        "(not a listed toolkit source)",
        "(listed, but not in the mirror)",
        "(not a listed toolkit source)",
    ]
    with pytest.raises(OSError):  # stopped with the block
        urllib.request.urlopen(f"{srv.url}/a.tar.gz", timeout=2)
