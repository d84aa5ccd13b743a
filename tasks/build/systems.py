"""Build-system templates: the commands of each phase, so no recipe repeats them.

A command is an argv list (run without a shell, each recipe argument stays one word) or a
string (a recipe's ``[script]`` phase, run with ``sh -e -c``). Every phase runs in SRCDIR.
"""

from __future__ import annotations

from dataclasses import replace

from tasks.model.recipe import PHASES, Build, expand

Command = list[str] | str


def _autotools(b: Build, v: dict[str, str]) -> dict[str, list[Command]]:
    configure = [
        "./configure",
        f"--prefix={v['PREFIX']}",
        f"--libdir={v['LIBDIR']}",
        f"--build={v['TARGET']}",
    ]
    return {
        "configure": [configure + b.configure_args],
        "compile": [["make"] + b.make_args],  # parallel through the jobserver (MAKEFLAGS)
        "install": [["make", f"DESTDIR={v['DESTDIR']}", "install"] + b.install_args],
    }


def _meson(b: Build, v: dict[str, str]) -> dict[str, list[Command]]:
    setup = ["meson", "setup", "_build", f"--prefix={v['PREFIX']}", f"--libdir={v['LIBDIR']}"]
    return {
        "configure": [setup + ["--buildtype=release", "--wrap-mode=nodownload"] + b.configure_args],
        "compile": [["ninja", "-C", "_build", f"-j{v['JOBS']}"] + b.make_args],
        "install": [
            ["meson", "install", "-C", "_build", f"--destdir={v['DESTDIR']}"] + b.install_args
        ],
    }


def _cmake(b: Build, v: dict[str, str]) -> dict[str, list[Command]]:
    configure = [
        "cmake", "-S", ".", "-B", "_build",
        f"-DCMAKE_INSTALL_PREFIX={v['PREFIX']}",
        f"-DCMAKE_INSTALL_LIBDIR={v['LIBDIR']}",
        "-DCMAKE_BUILD_TYPE=Release",
    ]  # fmt: skip
    return {
        "configure": [configure + b.configure_args],
        "compile": [["cmake", "--build", "_build", "-j", v["JOBS"]] + b.make_args],
        "install": [["cmake", "--install", "_build"] + b.install_args],  # DESTDIR from env
    }


def _make(b: Build, v: dict[str, str]) -> dict[str, list[Command]]:
    return {
        "compile": [["make"] + b.make_args],  # parallel through the jobserver (MAKEFLAGS)
        "install": [
            ["make", f"DESTDIR={v['DESTDIR']}", f"PREFIX={v['PREFIX']}", "install"] + b.install_args
        ],
    }


TEMPLATES = {
    "autotools": _autotools,
    "meson": _meson,
    "cmake": _cmake,
    "make": _make,
    "script": lambda b, v: {},
}


def phases(build: Build, variables: dict[str, str]) -> list[tuple[str, list[Command]]]:
    """``[(phase, commands)]`` in order: the template's, with ``[script]`` phases replacing
    the template's phase of the same name; ``${VARS}`` in recipe arguments expanded."""
    expanded = replace(
        build,
        configure_args=[expand(a, variables) for a in build.configure_args],
        make_args=[expand(a, variables) for a in build.make_args],
        install_args=[expand(a, variables) for a in build.install_args],
    )
    steps = TEMPLATES[build.recipe.build_system](expanded, variables)
    for phase, text in build.recipe.script.items():
        steps[phase] = [text]
    return [(p, steps[p]) for p in PHASES if steps.get(p)]
