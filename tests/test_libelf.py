"""recipes/libelf, proven: elfutils' libelf built alone (no configure) is a working static
libelf that pkg-config hands out, and the kernel's objtool (which every x86_64 kernel build
makes; see the recipe for why no config avoids it) builds against it and does its work.

Default run: the engine builds the recipe in a throw-away sandbox project with this machine's
gcc; a program built with ``pkg-config --cflags --libs libelf`` lists an object's sections as
readelf does and reads its zlib-compressed debug sections back to their full size.

Slow: the recipe's phases with musl-gcc (static, no glibc: libelf, zlib, objtool), then the
kernel's own make (Debian's linux .orig, recipes/kernel64's config) builds tools/objtool
against that libelf and runs it on the objects it compiles, which get objtool's sections (ORC
unwind tables, static-call, retpoline and return sites); objtool flags a bad object; and a
32-bit objtool as the guest builds it (i686 musl, static: a musl built with ``gcc -m32``)
rewrites those x86_64 objects byte for byte like the 64-bit one and the kernel build itself.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import kernel64_proof
from tests import libelf_proof as proof
from tests.conftest import real_project, run

# lists each section (decompressing SHF_COMPRESSED ones first) as "name size"
SECTIONS_C = r"""
#include <fcntl.h>
#include <gelf.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    size_t shstrndx;
    Elf_Scn *scn = NULL;
    GElf_Shdr shdr;
    Elf *elf;

    if (argc != 2 || elf_version(EV_CURRENT) == EV_NONE)
        return 2;
    elf = elf_begin(open(argv[1], O_RDONLY), ELF_C_READ, NULL);
    if (elf == NULL || elf_getshdrstrndx(elf, &shstrndx) != 0)
        goto fail;
    while ((scn = elf_nextscn(elf, scn)) != NULL) {
        if (gelf_getshdr(scn, &shdr) == NULL)
            goto fail;
        if ((shdr.sh_flags & SHF_COMPRESSED)
            && (elf_compress(scn, 0, 0) != 1 || gelf_getshdr(scn, &shdr) == NULL))
            goto fail;
        printf("%s %lu\n", elf_strptr(elf, shstrndx, shdr.sh_name), (unsigned long)shdr.sh_size);
    }
    elf_end(elf);
    return 0;
fail:
    fprintf(stderr, "libelf: %s\n", elf_errmsg(-1));
    return 1;
}
"""

SECTION_LINE = re.compile(
    r"^\s*\[\s*\d+\]\s+(\S+)\s+\S+\s+[0-9a-f]+\s+[0-9a-f]+\s+([0-9a-f]+)", re.M
)


def readelf_sections(obj: Path) -> list[tuple[str, int, bool]]:
    """(name, size, compressed) of every section but the null one, as readelf -SW shows."""
    out = run("readelf", "-SW", obj).stdout
    rows = []
    for line in out.splitlines():
        m = SECTION_LINE.match(line)
        if m and m.group(1) != "NULL":
            rest = line[m.end() :].split()  # ES [Flg] Lk Inf Al
            flags = rest[1] if len(rest) == 5 else ""
            rows.append((m.group(1), int(m.group(2), 16), "C" in flags))
    return rows


@pytest.mark.network
def test_libelf_builds_in_the_sandbox_and_reads_elf(tmp_path: Path, archive: str) -> None:
    project = real_project(tmp_path / "proj", "libelf")
    r = project.doit("libelf", timeout=900)
    assert r.code == 0, r.out + r.err
    assert r.packages_ran() == ["libelf"]
    usr = project.installed("")
    for rel in ("lib/libelf.a", "include/libelf.h", "include/gelf.h", "include/nlist.h"):
        assert (usr / rel).is_file(), rel
    assert not list((usr / "lib").glob("libelf.so*"))  # static only

    # pkg-config as objtool's Makefile asks it, seeing only the sandbox (not Debian's libelf)
    pc_env = {"PATH": "/usr/bin:/bin", "PKG_CONFIG_LIBDIR": str(usr / "lib" / "pkgconfig")}
    flags = run("pkg-config", "--cflags", "--libs", "libelf", env=pc_env).stdout.split()
    assert f"-I{usr / 'include'}" in flags and f"-L{usr / 'lib'}" in flags
    assert flags[-2:] == ["-lelf", "-lz"]  # zlib in Libs: a plain --libs links the static lib
    assert run("pkg-config", "--modversion", "libelf", env=pc_env).stdout.strip() == "0.188"

    source = tmp_path / "sections.c"
    source.write_text(SECTIONS_C)
    prog = tmp_path / "sections"
    run("gcc", "-O2", "-o", prog, source, *flags)
    assert "libelf" not in run("ldd", prog).stdout  # linked from libelf.a

    plain, packed = tmp_path / "plain.o", tmp_path / "packed.o"
    run("gcc", "-g", "-c", "-o", plain, source)
    run("objcopy", "--compress-debug-sections=zlib-gabi", plain, packed)
    expected = [(name, size) for name, size, _ in readelf_sections(plain)]
    listed = [tuple(ln.split()) for ln in run(prog, plain).stdout.splitlines()]
    assert [(n, int(s)) for n, s in listed] == expected
    compressed = {n: s for n, s, c in readelf_sections(packed) if c}
    assert ".debug_info" in compressed and compressed[".debug_info"] < dict(expected)[".debug_info"]
    # libelf inflates them (zlib): the same listing as the uncompressed object
    assert run(prog, packed).stdout == run(prog, plain).stdout


def test_libelf_sh_names_what_is_missing(tmp_path: Path) -> None:
    """Bad input stops the script with a message naming it, before anything is written."""
    script = proof.recipe().files_dir / "libelf.sh"
    env = proof.base_env(CC="gcc", CPPFLAGS="", LDFLAGS="")
    r = subprocess.run(
        ["sh", script, "compile"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert r.returncode == 1 and "no config.h: run 'libelf.sh config' first" in r.stderr
    r = subprocess.run(
        ["sh", script, "config"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert r.returncode == 1
    assert f"no configure.ac here ({tmp_path}): not an elfutils source tree" in r.stderr
    tree = {"configure.ac": "AC_INIT([elfutils],[0.188],[x],,[y])\n",
            "libelf/Makefile.am": "", "config/libelf.pc.in": ""}  # fmt: skip
    for rel, text in tree.items():
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_text(text)
    env["CC"] = "gcc -nostdinc"  # a compiler that finds no zlib.h
    r = subprocess.run(
        ["sh", script, "config"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert r.returncode == 1 and "gcc -nostdinc finds no zlib" in r.stderr
    r = subprocess.run(
        ["sh", script, "install"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert r.returncode == 1 and "libelf.sh install: DESTDIR is not set" in r.stderr
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files == sorted(tree)  # nothing written: no config.h, no conftest leftovers


# ----------------------------------------------------------------------------- slow proof

OBJECTS = (
    "kernel/fork.o",
    "lib/string.o",
    "arch/x86/kernel/process_64.o",
    "arch/x86/lib/usercopy_64.o",
)
# what objtool adds to an object (the compiler makes none of these)
OBJTOOL_SECTIONS = {".orc_unwind", ".orc_unwind_ip"}
FORK_SECTIONS = {".static_call_sites", ".retpoline_sites", ".return_sites"}
BAD_S = """\
	.text
	.globl	bad
	.type	bad, @function
bad:
	ret
	.size	bad, .-bad
"""


def _tools() -> None:
    missing = [
        t for t in ("musl-gcc", "gcc", "pkg-config", "bc", "flex", "bison") if not shutil.which(t)
    ]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (setup.sh installs them)")
    if not kernel64_proof.gcc_links_32bit_static():
        pytest.skip("gcc cannot link 32-bit static programs (apt-get install gcc-multilib)")


def _sections(obj: Path) -> set[str]:
    return {name for name, _, _ in readelf_sections(obj)}


@pytest.mark.slow
@pytest.mark.network
def test_kernel_objtool_builds_with_musl_against_this_libelf_and_checks_objects(
    tmp_path: Path, archive: str
) -> None:
    _tools()
    elfutils = kernel64_proof.fetch_source(proof.libelf_source(), archive)
    zlib_tarball = kernel64_proof.fetch_source(proof.ZLIB, archive)
    kernel = kernel64_proof.fetch_tarball(archive)

    # libelf with musl, static: the recipe's phases, against a musl zlib
    musl = tmp_path / "musl"
    musl.mkdir()
    zlib = proof.build_zlib(zlib_tarball, musl, "musl-gcc")
    stage, seconds = proof.build_libelf(elfutils, musl, "musl-gcc", zlib)
    print(f"libelf (musl-gcc): {seconds:.1f} s")
    config_h = (musl / "elfutils-src" / "config.h").read_text()
    assert "#define HAVE_ERR_H 1" in config_h  # musl's answers to the probes: no error.h,
    assert "#define HAVE_DECL_RAWMEMCHR 0" in config_h  # no rawmemchr
    lib = stage / "usr" / "lib"
    assert (lib / "libelf.a").is_file() and (lib / "pkgconfig" / "libelf.pc").is_file()

    # the kernel tree, recipes/kernel64's config, host programs built with musl, static
    tree = proof.configure_kernel(kernel, tmp_path, zlib)
    src, out, log, host, hostcc = tree.src, tree.out, tree.log, tree.host, tree.hostcc
    config = (out / ".config").read_text()
    assert "CONFIG_OBJTOOL=y\n" in config and "CONFIG_UNWINDER_ORC=y\n" in config

    made = proof.kernel_make(src, out, log, [*host, "V=1", "-j2", *OBJECTS], libelf_stage=stage)
    objtool = out / "tools" / "objtool" / "objtool"
    link = next(ln for ln in made.splitlines() if ln.rstrip().endswith(f"-o {objtool}"))
    assert hostcc in link and f"-L{lib} -lelf -lz" in link  # pkg-config's: this libelf
    assert "INTERP" not in run("readelf", "-lW", objtool).stdout  # static, musl's crt (musl-gcc)
    ran = re.findall(r"tools/objtool/objtool (.*?) (\S+\.o)$", made, re.M)
    assert {o for _, o in ran} == set(OBJECTS), made[-3000:]  # the build ran it on each
    args = ran[0][0].split()
    assert {"--orc", "--static-call", "--uaccess", "--retpoline", "--rethunk"} <= set(args)
    for obj in OBJECTS:
        assert _sections(out / obj) >= OBJTOOL_SECTIONS, obj
    assert _sections(out / "kernel" / "fork.o") >= FORK_SECTIONS

    # its checks: a function returning with a bare `ret` in a return-thunk build
    bad = tmp_path / "bad.o"
    (tmp_path / "bad.S").write_text(BAD_S)
    run("gcc", "-c", "-o", bad, tmp_path / "bad.S")
    r = subprocess.run([objtool, *args, bad], capture_output=True, text=True)
    assert "bad+0x0: 'naked' return found in RETHUNK build" in r.stdout + r.stderr

    # a 32-bit objtool, as the guest builds it: i686 musl, static (libelf, zlib, objtool)
    i686 = tmp_path / "i686"
    i686.mkdir()
    cc32 = str(proof.build_musl_i386(kernel64_proof.fetch_source(proof.MUSL, archive), i686))
    zlib32 = proof.build_zlib(zlib_tarball, i686, cc32)
    stage32, _ = proof.build_libelf(elfutils, i686, cc32, zlib32)
    hostcc32 = str(proof.musl_cc(i686, tree.uapi, cc32))
    out32 = tmp_path / "out32"
    out32.mkdir()
    shutil.copy(out / ".config", out32 / ".config")
    host32 = [f"HOSTCC={hostcc32}", "HOSTLD=ld -m elf_i386",
              f"HOSTLDFLAGS=-static -L{zlib32 / 'lib'}"]  # fmt: skip
    made32 = proof.kernel_make(src, out32, log, [*host32, "V=1", "-j2", "olddefconfig",
                                                 "tools/objtool"], stage32)  # fmt: skip
    objtool32 = out32 / "tools" / "objtool" / "objtool"
    link32 = next(ln for ln in made32.splitlines() if ln.rstrip().endswith(f"-o {objtool32}"))
    assert hostcc32 in link32 and f"-L{stage32 / 'usr' / 'lib'} -lelf -lz" in link32
    header = run("readelf", "-hlW", objtool32).stdout
    assert "Intel 80386" in header and "INTERP" not in header

    # the same objects without objtool, then each objtool on its own copy: byte-identical to
    # each other and to what the kernel build made
    built = {obj: (out / obj).read_bytes() for obj in OBJECTS}
    proof.kernel_make(src, out, log, [*host, "-j2", "OBJECT_FILES_NON_STANDARD=y", *OBJECTS], stage)
    for obj in OBJECTS:
        assert not OBJTOOL_SECTIONS & _sections(out / obj), obj  # objtool did not run
        copies = []
        for tool in (objtool, objtool32):
            copy = tmp_path / f"{Path(obj).stem}.{len(copies)}.o"
            shutil.copy(out / obj, copy)
            run(tool, *args, copy)
            copies.append(copy.read_bytes())
        assert copies[0] == copies[1] == built[obj], obj


def test_kernel64_stops_early_when_pkg_config_finds_no_libelf(tmp_path: Path) -> None:
    """kernel64's prepare names the missing libelf before any kernel work (objtool would
    otherwise fail minutes later with `-lelf` not found)."""
    from tasks.engine.recipeset import parse_recipe

    recipe, errors = parse_recipe(kernel64_proof.REPO / "recipes" / "kernel64.toml")
    assert recipe is not None, errors
    assert "libelf" in recipe.depends
    env = proof.base_env(PKG_CONFIG_PATH=str(tmp_path), PKG_CONFIG_LIBDIR=str(tmp_path))
    env["FILESDIR"] = str(recipe.files_dir)
    r = subprocess.run(
        ["sh", "-e", "-c", recipe.script["prepare"]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1
    assert f"kernel64: pkg-config finds no libelf.pc (PKG_CONFIG_PATH={tmp_path})" in r.stderr
    assert "recipes/libelf.toml" in r.stderr
    assert list(tmp_path.iterdir()) == []  # kconfig64.sh never ran
