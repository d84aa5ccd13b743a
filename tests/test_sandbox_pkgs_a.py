"""Real builds of procedure steps V2-V18 (dropbear ... parted) in throw-away sandbox projects.

The fast test (in the default run) builds zstd from Debian's +dfsg repack, the sandbox's
substitute for Azure Linux's 1.5.5, and checks that the installed ``zstd`` round-trips a file
through the sandbox's own shared libzstd. The slow tests (``-m slow``) share one throw-away
project, so every package and what it depends on is built once; each builds one recipe (with
its dependencies, as ``doit <pkg>`` does) and checks one real thing it does.

Not here: oniguruma and pigz are guest-only recipes (their tarballs are not obtainable from
the sandbox; see their descriptions), so the sandbox's jq is built without oniguruma.

Sources come through the engine's fetch tasks: the repository's ``mirror/`` (when earlier runs
filled it) as a local mirror, then Debian's archive (base URI from the machine's apt sources).
The tests skip only when the archive cannot be reached at all.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import (
    AZL_SPECS,
    Project,
    azurelinux_spec_files,
    links_into_sandbox,
    real_project,
    run,
    sandbox_version,
)
from tests.httpserver import serve

pytestmark = pytest.mark.network

# every recipe of this module; a slow test's project has them all, and builds what it asks for
# (oniguruma is guest-only, but jq names it: the sandbox plan drops that dependency)
RECIPES = (
    "dropbear", "git", "cmake", "attr", "acl", "libcap", "bzip2", "cdrkit", "oniguruma", "jq",
    "zstd", "wget", "rsync", "util-linux", "parted",
)  # fmt: skip


# ----------------------------------------------------------------------------- default run


def test_zstd_round_trips_through_the_sandbox_libzstd(tmp_path: Path, archive: str) -> None:
    project = real_project(tmp_path / "proj", "zstd")
    r = project.doit("zstd", timeout=900)
    assert r.code == 0, r.out + r.err
    assert r.packages_ran() == ["zstd"]
    log = (project.root / "cache" / "logs" / "zstd.log").read_text()
    assert "is a substitute" in log  # Debian's +dfsg2 repack stands in for 1.5.5

    zstd = project.installed("bin/zstd")
    data = tmp_path / "data.txt"
    data.write_bytes(b"".join(b"line %d of azl-bootstrap's zstd test\n" % i for i in range(20000)))
    packed, unpacked = tmp_path / "data.txt.zst", tmp_path / "back.txt"
    run(zstd, "-q", "-19", data, "-o", packed)
    assert packed.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"  # a zstd frame
    assert packed.stat().st_size < data.stat().st_size // 20
    run(zstd, "-q", "-d", packed, "-o", unpacked)
    assert unpacked.read_bytes() == data.read_bytes()
    version = sandbox_version("zstd").split("+")[0]  # 1.5.4+dfsg2 -> 1.5.4
    assert f"v{version}" in run(zstd, "-V").stdout
    # the tool is the shared-library build, and it loads the sandbox's libzstd
    links_into_sandbox(project, zstd, "libzstd.so.1")
    assert project.installed(f"lib/libzstd.so.{version}").is_file()
    assert project.installed("include/zstd.h").is_file()


# ----------------------------------------------------------------------------- slow builds


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, archive: str) -> Project:
    """One throw-away project for every slow test: each package is built once. cdrkit's
    patches come from the pinned Azure Linux tree (its URLs name GitHub, which this machine
    cannot reach): ../shared's copy of the tree's SPECS/cdrkit is a local mirror, whose files
    the fetch verifies by the recipe's sha256 as it would the downloads."""
    work = tmp_path_factory.mktemp("pkgs_a")
    tree = work / "azurelinux-SPECS-cdrkit"
    if AZL_SPECS.is_file():  # else only the cdrkit test skips
        azurelinux_spec_files(tree, "cdrkit")
    return real_project(work / "proj", *RECIPES, mirrors=(tree,) if tree.is_dir() else ())


def build(project: Project, name: str, timeout: float = 3600) -> None:
    """``doit <name>``: builds it and whatever it depends on that is not built yet."""
    r = project.doit(name, timeout=timeout)
    assert r.code == 0, r.out + r.err
    assert project.manifest(name).exists(), r.out


@pytest.mark.slow
def test_bzip2_shared_library_links_a_program(shared: Project, tmp_path: Path) -> None:
    build(shared, "bzip2")
    lib = shared.installed("lib/libbz2.so")
    assert lib.is_symlink() and lib.resolve().name == f"libbz2.so.{sandbox_version('bzip2')}"
    src = tmp_path / "bz.c"
    src.write_text(
        "#include <bzlib.h>\n#include <stdio.h>\n#include <string.h>\n"
        "int main(void) {\n"
        "  char in[4096], z[8192], out[4096]; unsigned zn = sizeof z, on = sizeof out;\n"
        "  memset(in, 'a', sizeof in);\n"
        "  if (BZ2_bzBuffToBuffCompress(z, &zn, in, sizeof in, 9, 0, 0) != BZ_OK) return 1;\n"
        "  if (BZ2_bzBuffToBuffDecompress(out, &on, z, zn, 0, 0) != BZ_OK) return 2;\n"
        '  printf("%u %u %s\\n", zn, on, BZ2_bzlibVersion());\n'
        "  return !(on == sizeof in && memcmp(in, out, on) == 0);\n"
        "}\n"
    )
    exe = tmp_path / "bz"
    libdir = lib.parent
    run("cc", "-I", shared.installed("include"), src, "-o", exe, "-L", libdir,
        f"-Wl,-rpath,{libdir}", "-lbz2")  # fmt: skip
    zn, on, version = run(exe).stdout.split(maxsplit=2)  # version: "1.0.8, 13-Jul-2019"
    assert int(zn) < 200 and on == "4096", (zn, on)
    assert version.startswith(sandbox_version("bzip2") + ","), version
    links_into_sandbox(shared, exe, "libbz2.so.1.0")


@pytest.mark.slow
def test_attr_sets_and_reads_an_extended_attribute(shared: Project, tmp_path: Path) -> None:
    build(shared, "attr")
    setfattr, getfattr = shared.installed("bin/setfattr"), shared.installed("bin/getfattr")
    assert run(getfattr, "--version").stdout.split()[-1] == sandbox_version("attr")
    f = tmp_path / "file"
    f.write_text("x")
    try:
        run(setfattr, "-n", "user.azl", "-v", "42", f)
    except AssertionError as e:
        if "Operation not supported" in str(e):
            pytest.skip(f"{tmp_path} does not support user extended attributes")
        raise
    assert run(getfattr, "-n", "user.azl", "--only-values", f).stdout == "42"
    # getfattr/setfattr call the kernel directly; `attr` goes through the sandbox's libattr
    attr = shared.installed("bin/attr")
    assert run(attr, "-q", "-g", "azl", f).stdout == "42"
    links_into_sandbox(shared, attr, "libattr.so.1")


@pytest.mark.slow
def test_acl_setfacl_grants_a_user(shared: Project, tmp_path: Path) -> None:
    build(shared, "acl")
    setfacl, getfacl = shared.installed("bin/setfacl"), shared.installed("bin/getfacl")
    f = tmp_path / "file"
    f.write_text("x")
    try:
        run(setfacl, "-m", "u:12345:rw", f)
    except AssertionError as e:
        if "Operation not supported" in str(e):
            pytest.skip(f"{tmp_path} does not support POSIX ACLs")
        raise
    assert "user:12345:rw-" in run(getfacl, "-n", f).stdout
    # the toolkit's use: strip every ACL, recursively
    run(setfacl, "-bnR", tmp_path)
    assert "user:12345" not in run(getfacl, "-n", f).stdout
    links_into_sandbox(shared, setfacl, "libacl.so.1")


@pytest.mark.slow
def test_libcap_capsh_prints_the_capabilities(shared: Project) -> None:
    build(shared, "libcap")
    capsh = shared.installed("sbin/capsh")
    out = run(capsh, "--print").stdout
    assert out.startswith("Current:") and "Bounding set =" in out, out
    links_into_sandbox(shared, capsh, "libcap.so.2")
    pc = shared.installed("lib/pkgconfig/libcap.pc").read_text()
    assert f"Version: {sandbox_version('libcap')}" in pc
    assert os.access(shared.installed("sbin/getcap"), os.X_OK)


@pytest.mark.slow
def test_dropbear_generates_a_host_key(shared: Project, tmp_path: Path) -> None:
    build(shared, "dropbear")
    key = tmp_path / "dropbear_ed25519_host_key"
    run(shared.installed("bin/dropbearkey"), "-t", "ed25519", "-f", key)
    public = run(shared.installed("bin/dropbearkey"), "-y", "-f", key).stdout
    assert re.search(r"^ssh-ed25519 AAAA\S+ ", public, re.M), public
    # scp is built on request; the server reports the sandbox's version
    assert os.access(shared.installed("bin/scp"), os.X_OK)
    assert os.access(shared.installed("bin/dbclient"), os.X_OK)
    version = run(shared.installed("sbin/dropbear"), "-V")
    assert f"Dropbear v{sandbox_version('dropbear')}" in version.stdout + version.stderr


@pytest.mark.slow
def test_jq_evaluates_an_expression(shared: Project) -> None:
    build(shared, "jq")
    jq = shared.installed("bin/jq")
    out = run(jq, "-c", "[.a[] * 2] | {sum: add, n: length}", input='{"a": [1, 2, 3]}').stdout
    assert out == '{"sum":12,"n":3}\n'
    # the tag archive's version is restored for `jq --version`
    assert run(jq, "--version").stdout.strip() == "jq-" + sandbox_version("jq").split("-")[0]


@pytest.mark.slow
def test_wget_downloads_a_file(shared: Project, tmp_path: Path) -> None:
    build(shared, "wget")
    wget = shared.installed("bin/wget")
    version = run(wget, "--version").stdout
    assert version.startswith(f"GNU Wget {sandbox_version('wget')} "), version
    assert "+https" in version  # openssl, as the toolkit downloads over https
    data = os.urandom(100_000)
    dest = tmp_path / "sources"
    urls = tmp_path / "wget-list"
    with serve({"f.bin": data}) as srv:
        urls.write_text(srv.url("f.bin") + "\n")
        # the toolkit's own command line (bypass_container.sh)
        argv = ["-nv", "--no-clobber", "--timeout=30", "--continue", f"--input-file={urls}"]
        run(wget, *argv, "-P", dest)
    assert (dest / "f.bin").read_bytes() == data


@pytest.mark.slow
def test_rsync_copies_a_tree(shared: Project, tmp_path: Path) -> None:
    build(shared, "rsync")
    rsync = shared.installed("bin/rsync")
    assert f"version {sandbox_version('rsync')} " in run(rsync, "--version").stdout
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_text("hello\n")
    os.symlink("d/f", src / "link")
    run(rsync, "-a", f"{src}/", dst)
    assert (dst / "d" / "f").read_text() == "hello\n"
    assert os.readlink(dst / "link") == "d/f"


@pytest.mark.slow
def test_git_commits(shared: Project, tmp_path: Path) -> None:
    build(shared, "git")
    git = shared.installed("bin/git")
    assert run(git, "--version").stdout.strip() == f"git version {sandbox_version('git')}"
    repo = tmp_path / "repo"
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1"}
    run(git, "init", "-q", repo, env=env)
    (repo / "a.txt").write_text("azl\n")
    run(git, "-C", repo, "add", "a.txt", env=env)
    ident = ["-c", "user.name=azl", "-c", "user.email=azl@example.invalid"]
    run(git, "-C", repo, *ident, "commit", "-qm", "first", env=env)
    assert run(git, "-C", repo, "log", "--format=%s", env=env).stdout == "first\n"
    # sub-commands come from the sandbox's exec-path
    exec_path = run(git, "--exec-path", env=env).stdout.strip()
    assert Path(exec_path).resolve().is_relative_to(shared.sandbox_root.resolve())


@pytest.mark.slow
def test_util_linux_without_pam_programs_and_libuuid(shared: Project) -> None:
    build(shared, "util-linux")
    # the same programs as in the guest, which has no PAM: runuser and sudo are recipes/sudo
    for program in ("sbin/runuser", "bin/su", "bin/login", "bin/setpriv", "bin/chsh"):
        assert not shared.installed(program).exists(), program
    uuid = run(shared.installed("bin/uuidgen")).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", uuid), uuid
    links_into_sandbox(shared, shared.installed("bin/uuidgen"), "libuuid.so.1")
    assert sandbox_version("util-linux") in run(shared.installed("sbin/blkid"), "-V").stdout
    links_into_sandbox(shared, shared.installed("sbin/losetup"), "libsmartcols.so.1")


@pytest.mark.slow
def test_parted_partitions_a_disk_image(shared: Project, tmp_path: Path) -> None:
    build(shared, "parted")
    parted = shared.installed("sbin/parted")
    version = run(parted, "--version").stdout
    assert version.startswith(f"parted (GNU parted) {sandbox_version('parted')}\n"), version
    links_into_sandbox(shared, parted, "libuuid.so.1")  # util-linux's, not the host's
    links_into_sandbox(shared, parted, "libblkid.so.1")
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(8 << 20)
    run(parted, "-s", img, "mklabel", "gpt", "mkpart", "azl", "1MiB", "7MiB")
    table = run(parted, "-s", "-m", img, "unit", "MiB", "print").stdout
    assert re.search(r"^1:1\.00MiB:7\.00MiB:6\.00MiB::azl:;$", table, re.M), table


@pytest.mark.slow
def test_cmake_builds_a_project(shared: Project, tmp_path: Path) -> None:
    build(shared, "cmake", timeout=7200)
    cmake = shared.installed("bin/cmake")
    first = run(cmake, "--version").stdout.splitlines()[0]
    assert first == f"cmake version {sandbox_version('cmake')}"
    src, out = tmp_path / "hello", tmp_path / "build"
    src.mkdir()
    (src / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.10)\nproject(hello C)\nadd_executable(hello hello.c)\n"
    )
    (src / "hello.c").write_text('#include <stdio.h>\nint main(void) { puts("hello"); }\n')
    run(cmake, "-S", src, "-B", out)
    run(cmake, "--build", out)
    assert run(out / "hello").stdout == "hello\n"


@pytest.mark.slow
def test_cdrkit_genisoimage_writes_an_iso(shared: Project, tmp_path: Path) -> None:
    if not AZL_SPECS.is_file():
        pytest.skip(f"{AZL_SPECS} is missing: cdrkit's patches come from the pinned tree")
    build(shared, "cdrkit", timeout=7200)
    genisoimage = shared.installed("bin/genisoimage")
    version = run(genisoimage, "-version")
    assert f"genisoimage {sandbox_version('cdrkit')}" in version.stdout + version.stderr
    links_into_sandbox(shared, genisoimage, "libbz2.so.1.0")  # V10's library
    tree = tmp_path / "tree"
    (tree / "boot").mkdir(parents=True)
    (tree / "boot" / "hello.txt").write_text("azl\n")
    iso = tmp_path / "x.iso"
    run(genisoimage, "-quiet", "-R", "-J", "-V", "AZLTEST", "-o", iso, tree)
    head = iso.read_bytes()[0x8000:0x8800]
    assert head[1:6] == b"CD001"  # ISO 9660 primary volume descriptor
    assert head[40:47] == b"AZLTEST"
    efi_iso_has_a_uefi_boot_entry(shared, tmp_path)


def efi_iso_has_a_uefi_boot_entry(project: Project, tmp_path: Path) -> None:
    """Azure Linux's build of cdrkit (tree patches, mkisofs link) makes the ISO builder's
    ISO: its exact mkisofs options (isomaker.go, with BIOS boot) around a 3 MiB FAT
    efiboot.img made as isomaker makes it (dd, mkdosfs) holding EFI/BOOT/BOOTX64.EFI, read
    back with xorriso's El Torito report and mtools."""
    if not shutil.which("xorriso") or not shutil.which("mkfs.vfat") or not shutil.which("mcopy"):
        pytest.fail("xorriso, mkfs.vfat and mcopy are needed (setup.sh installs them)")
    mkisofs = project.installed("bin/mkisofs")
    assert mkisofs.is_symlink() and os.readlink(mkisofs) == "genisoimage"
    tree = tmp_path / "isotree"
    (tree / "isolinux").mkdir(parents=True)
    (tree / "boot" / "grub2").mkdir(parents=True)
    (tree / "isolinux" / "isolinux.bin").write_bytes(b"\xfa" * 2048)  # a stand-in loader
    efiboot = tree / "boot" / "grub2" / "efiboot.img"
    run("dd", "if=/dev/zero", f"of={efiboot}", "bs=1048576", "count=3", "status=none")
    run("mkfs.vfat", efiboot)
    loader = tmp_path / "BOOTX64.EFI"
    loader.write_bytes(b"MZ azl-bootstrap stand-in for shim\n")
    run("mmd", "-i", efiboot, "::/EFI", "::/EFI/BOOT")
    run("mcopy", "-i", efiboot, loader, "::/EFI/BOOT/BOOTX64.EFI")
    iso = tmp_path / "efi.iso"
    run(mkisofs, "-R", "-l", "-D", "-o", iso, "-V", "CDROM",
        "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat", "-no-emul-boot",
        "-boot-load-size", "4", "-boot-info-table",
        "-eltorito-alt-boot", "-e", "boot/grub2/efiboot.img", "-no-emul-boot", tree)  # fmt: skip
    report = run("xorriso", "-indev", iso, "-report_el_torito", "plain").stdout
    entries = re.findall(r"^El Torito boot img :\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+\S+\s+\S+"
                         r"\s+(\d+)\s+(\d+)", report, re.M)  # fmt: skip
    paths = dict(re.findall(r"^El Torito img path :\s+(\d+)\s+(\S+)", report, re.M))
    # N, platform, bootable, emulation, load size (512-byte sectors), LBA
    assert [e[:4] for e in entries] == [("1", "BIOS", "y", "none"), ("2", "UEFI", "y", "none")], (
        report
    )
    assert paths == {"1": "/isolinux/isolinux.bin", "2": "/boot/grub2/efiboot.img"}, report
    assert int(entries[1][4]) == 3 * 1024 * 1024 // 512, report  # the whole efiboot.img
    # the catalogue points at the image's bytes: the FAT image with the loader, unchanged
    lba = int(entries[1][5])
    with open(iso, "rb") as f:
        f.seek(lba * 2048)
        assert f.read(efiboot.stat().st_size) == efiboot.read_bytes()
    out = tmp_path / "back.efi"
    run("mcopy", "-i", f"{iso}@@{lba * 2048}", "::/EFI/BOOT/BOOTX64.EFI", out)
    assert out.read_bytes() == loader.read_bytes()
