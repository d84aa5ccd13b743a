"""recipes/cdrkit.toml against the pinned Azure Linux tree's SPECS/cdrkit (../shared's copy):
the patches it fetches are the tree's files, applied in the spec's order by the recipe's own
``prepare``, and the spec's ``mkisofs`` link is made. The real build, an ISO with ``-e`` and
its El Torito catalogue read by xorriso are in tests/test_sandbox_pkgs_a.py (slow: it builds
cmake first).
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path

from tasks.engine.recipeset import parse_recipe
from tests.conftest import REPO, azurelinux_spec_files, run

RECIPE = REPO / "recipes" / "cdrkit.toml"


def spec_patches(spec: str) -> list[str]:
    """The spec's patch files in the order %prep applies them (``%patch N`` / ``%patchN``)."""
    declared = dict(re.findall(r"^Patch(\d+):\s*(\S+)", spec, re.M))
    applied = re.findall(r"^%patch\s*-?P?\s*(\d+)", spec, re.M)
    return [declared[n] for n in applied]


def patch_sources() -> list:
    recipe, errors = parse_recipe(RECIPE)
    assert recipe is not None, errors
    version = recipe.for_platform("guest").version
    return [s for s in version.sources if s.file.endswith(".patch")]


def test_the_patches_are_the_pinned_trees_files(tmp_path: Path) -> None:
    files = azurelinux_spec_files(tmp_path, "cdrkit")
    commit = tomllib.loads((REPO / "recipes" / "azurelinux.toml").read_text())["commit"]
    wanted = spec_patches(files["cdrkit.spec"].read_text())
    assert wanted == ["cdrkit-1.1.9-efi-boot.patch", "cdrkit-fix-format-security.patch"]
    sources = patch_sources()
    assert [s.file for s in sources] == wanted
    for s in sources:
        assert s.sha256 == hashlib.sha256(files[s.file].read_bytes()).hexdigest(), s.file
        assert not s.unpack, f"{s.file} is a patch, not an archive to unpack"
        assert s.urls and all(f"/{commit}/SPECS/cdrkit/{s.file}" in u for u in s.urls), s.urls


def test_prepare_applies_them_in_the_specs_order_and_install_links_mkisofs(
    tmp_path: Path,
) -> None:
    spec = azurelinux_spec_files(tmp_path, "cdrkit")["cdrkit.spec"].read_text()
    script = tomllib.loads(RECIPE.read_text())["script"]
    applied = re.findall(r'patch -p1 .*-i "\$BUILDDIR/([^"]+)"', script["prepare"])
    assert applied == spec_patches(spec)
    assert re.search(r"^ln -s\s+genisoimage\s+%\{buildroot\}%\{_prefix\}/bin/mkisofs$", spec, re.M)
    assert script["post_install"] == 'ln -sf genisoimage "$DESTDIR$PREFIX/bin/mkisofs"'


def test_prepare_patches_the_real_source_so_genisoimage_has_e(tmp_path: Path, archive: str) -> None:
    """The recipe's ``prepare``, run as the build runs it (in the unpacked source, the
    patches copied to $BUILDDIR), on the real tarball (Debian's byte-identical .orig): the
    source then declares genisoimage's -e option and the UEFI platform id."""
    from tasks.build.unpack import unpack
    from tasks.sources.download import fetch

    recipe, _ = parse_recipe(RECIPE)
    assert recipe is not None
    tarball = recipe.for_platform("guest").version.sources[0]
    build = tmp_path / "build"
    src = build / "src"
    src.mkdir(parents=True)
    dest = tmp_path / tarball.file
    fetch([f"{archive}/pool/{tarball.debian}"], dest, tarball.sha256, progress=False)
    unpack(dest, src, strip_components=1)
    for name, path in azurelinux_spec_files(tmp_path / "tree", "cdrkit").items():
        (build / name).write_bytes(path.read_bytes())
    before = (src / "genisoimage" / "genisoimage.c").read_text(errors="replace")
    assert '"efi-boot"' not in before
    prepare = tomllib.loads(RECIPE.read_text())["script"]["prepare"]
    run("sh", "-ec", prepare, cwd=src, env={"BUILDDIR": str(build), "PATH": "/usr/bin:/bin"})
    after = (src / "genisoimage" / "genisoimage.c").read_text(errors="replace")
    assert re.search(r'\{\{"efi-boot", required_argument, NULL, .e.\}', after), "no -e"
    assert "EL_TORITO_ARCH_EFI" in (src / "genisoimage" / "iso9660.h").read_text()
