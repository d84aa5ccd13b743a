"""recipes/sudo/sudo (installed as ``sudo`` and ``runuser``) run for real, as root, with the
Azure Linux toolkit's exact command lines (6a8b54d4) and a throwaway user and groups made by
the test (removed afterwards), under both bash (the guest's /bin/sh) and dash.

The util-linux test configures the real util-linux source with the recipe's flags while PAM's
headers are hidden (a private mount namespace over /usr/include/security), as in the guest.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PACKAGE_VARS, REPO, real_project

SHIM = REPO / "recipes" / "sudo" / "sudo"
# the toolkit's own sudoers line (toolchain/container/Dockerfile)
TOOLKIT_ENV_KEEP = [
    "LFS", "LC_ALL", "LFS_TGT", "PATH", "MAKEFLAGS", "FETCH_TOOLCHAIN_MODE", "LFS_TEST",
    "LFS_DOCS", "JOB_COUNT", "LOOP", "IMAGE_SIZE", "INITRD_TREE", "IMAGE",
]  # fmt: skip

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("chroot"),
    reason="switching users needs root, useradd (to make a throwaway user) and coreutils chroot",
)


@dataclass
class User:
    name: str
    group: str
    extra_group: str
    uid: int
    gid: int
    extra_gid: int
    home: Path


def _ids(kind: str, name: str) -> int:
    return int(subprocess.run(["getent", kind, name], capture_output=True, text=True,
                              check=True).stdout.split(":")[2])  # fmt: skip


@pytest.fixture(scope="module")
def area() -> Iterator[Path]:
    """A directory the throwaway user can reach (pytest's tmp_path is private to root)."""
    d = Path(tempfile.mkdtemp(prefix="azl-sudo-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d)


@pytest.fixture
def work(area: Path, request: pytest.FixtureRequest) -> Path:
    d = area / request.node.name.replace("[", "-").replace("]", "")
    d.mkdir(mode=0o777)
    d.chmod(0o777)
    return d


@pytest.fixture(scope="module")
def user(area: Path) -> Iterator[User]:
    """A user like the toolkit's lfs user (own group, /bin/bash, a home), plus a supplementary
    group; removed with its groups afterwards."""
    if os.geteuid() != 0 or not shutil.which("useradd"):
        pytest.skip("needs root and useradd")
    tag = f"azl{os.getpid() % 100000}"
    name, group, extra = f"{tag}u", f"{tag}g", f"{tag}x"
    home = area / "home" / name
    home.parent.mkdir(mode=0o755)
    subprocess.run(["groupadd", group], check=True)
    try:
        subprocess.run(["groupadd", extra], check=True)
        subprocess.run(["useradd", "-s", "/bin/bash", "-g", group, "-G", extra, "-d", str(home),
                        "-m", "-k", "/dev/null", name], check=True)  # fmt: skip
        yield User(name, group, extra, _ids("passwd", name), _ids("group", group),
                   _ids("group", extra), home)  # fmt: skip
    finally:
        subprocess.run(["userdel", name], capture_output=True)
        subprocess.run(["groupdel", extra], capture_output=True)
        subprocess.run(["groupdel", group], capture_output=True)


@pytest.fixture(scope="module", params=["bash", "dash"])
def bindir(request: pytest.FixtureRequest, area: Path) -> Path:
    """``sudo`` and ``runuser`` as the recipe installs them, run by bash (the guest's /bin/sh)
    or dash (Debian's)."""
    shell = shutil.which(request.param)
    if shell is None:
        pytest.skip(f"{request.param} is not installed")
    d = area / f"bin-{request.param}"
    d.mkdir(mode=0o755, exist_ok=True)
    text = SHIM.read_text().replace("#!/bin/sh\n", f"#!{shell}\n", 1)
    (d / "sudo").write_text(text)
    (d / "sudo").chmod(0o755)
    if not (d / "runuser").is_symlink():
        (d / "runuser").symlink_to("sudo")
    return d


def base_env(bindir: Path) -> dict[str, str]:
    """A root shell's environment in the middle of the toolkit's make, with package-build
    variables that must not reach the lfs user."""
    return {
        "PATH": f"{bindir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "USER": "root",
        "LOGNAME": "root",
        "TERM": "xterm-256color",
        "LC_ALL": "C",
        "LFS": "/azl/build/toolchain/lfs",
        "LFS_TGT": "x86_64-lfs-linux-gnu",
        "MAKEFLAGS": "-j2",
        "JOB_COUNT": "2",
        **PACKAGE_VARS,
    }


def dump_script(path: Path) -> Path:
    """A stand-in for $LFS/tools/toolchain_build_temp_tools.sh: the real one's guard on LFS,
    then it records who runs it and with what environment, and exits 7."""
    path.write_text(
        "#!/bin/bash\n"
        'if [[ -z "$LFS" ]]; then echo "Must define LFS in environment" 1>&2; exit 1; fi\n'
        'out="$(dirname "$0")/dump"\n'
        '{ id -u; id -g; id -G; pwd; } > "$out.ids"\n'
        'env -0 > "$out.env"\n'
        "exit 7\n"
    )
    path.chmod(0o755)
    return path


def read_env(path: Path) -> dict[str, str]:
    items = path.read_bytes().decode().split("\0")
    return dict(item.split("=", 1) for item in items if item)


@needs_root
def test_bypass_container_line_runs_the_lfs_script_as_the_user(
    user: User, bindir: Path, work: Path
) -> None:
    tools = work
    script = dump_script(tools / "toolchain_build_temp_tools.sh")
    env = base_env(bindir)
    env["PATH"] = f"/azl/build/toolchain/lfs/tools/bin:{env['PATH']}"  # bypass_container.sh
    line = f"sudo --preserve-env=PATH -u {user.name} {script}"
    r = subprocess.run(["bash", "-c", line], cwd=tools, env=env, capture_output=True, text=True,
                       timeout=60)  # fmt: skip
    assert r.returncode == 7, r.stderr  # the script's own exit code
    uid, gid, groups, cwd = (tools / "dump.ids").read_text().splitlines()
    assert (int(uid), int(gid)) == (user.uid, user.gid)
    assert sorted(map(int, groups.split())) == sorted([user.gid, user.extra_gid])
    assert cwd == str(tools)  # sudo keeps the working directory
    got = read_env(tools / "dump.env")
    # PATH, the toolkit's env_keep list and TERM survive; HOME and the names are the user's
    for name in [*TOOLKIT_ENV_KEEP, "TERM"]:
        assert got.get(name) == env.get(name), name
    assert got["HOME"] == str(user.home)
    assert (got["USER"], got["LOGNAME"], got["SHELL"]) == (user.name, user.name, "/bin/bash")
    assert (got["SUDO_USER"], got["SUDO_UID"], got["SUDO_GID"]) == ("root", "0", "0")
    # nothing of the package builds reaches the LFS scripts
    assert not set(PACKAGE_VARS) & set(got), sorted(got)
    # without LFS the real script's guard stops it, as with a real sudo
    del env["LFS"]
    r = subprocess.run(["bash", "-c", line], cwd=tools, env=env, capture_output=True, text=True,
                       timeout=60)  # fmt: skip
    assert r.returncode == 1 and "Must define LFS in environment" in r.stderr


@needs_root
def test_build_tag_line_runs_git_as_the_tree_owner(user: User, bindir: Path, work: Path) -> None:
    """build_tag.mk: as root, `runuser -u <owner of the tree> -- git rev-parse --short HEAD`
    (run by make's shell, here bash: $UID is a bash variable)."""
    if not shutil.which("git"):
        pytest.skip("git is not installed")
    tree = work / "azurelinux"
    tree.mkdir()
    git = ["git", "-C", str(tree), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    genv = {"PATH": os.environ["PATH"], "HOME": str(work), "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run([*git, "init", "-q"], check=True, env=genv)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True, env=genv)
    short = subprocess.run([*git, "rev-parse", "--short", "HEAD"], env=genv, check=True,
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    subprocess.run(["chown", "-R", f"{user.name}:{user.group}", str(tree)], check=True)
    line = (
        'if [ -n "$UID" ] && [ "$UID" -eq 0 ]; then runuser -u $(stat -c "%U" '
        f"{tree}) -- git rev-parse --short HEAD; else git rev-parse --short HEAD; fi"
    )
    r = subprocess.run(["bash", "-c", line], cwd=tree, env=base_env(bindir),
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    # run as root instead, git would refuse the tree ("dubious ownership") and print nothing
    assert (r.returncode, r.stdout.strip()) == (0, short), r.stderr
    # and it did run as the owner
    r = subprocess.run(["runuser", "-u", user.name, "--", "sh", "-c", 'id -un; echo "$HOME"'],
                       env=base_env(bindir), capture_output=True, text=True)  # fmt: skip
    assert r.stdout == f"{user.name}\n{user.home}\n", r.stderr


@needs_root
def test_root_sudo_calls_of_toolchain_mk(bindir: Path, tmp_path: Path) -> None:
    """`sudo mkdir -vp`, `sudo cp`, `sudo find ... -exec sudo touch {} ';'`, `sudo rm -f`."""
    env = base_env(bindir)
    rpms = tmp_path / "RPMS"
    lines = [
        f"sudo mkdir -vp {rpms}/x86_64",
        f"sudo cp /etc/hostname {rpms}/x86_64/a.x86_64.rpm",
        f"sudo find {rpms} -name '*.rpm' -exec sudo touch {{}} ';'",
        f"sudo rm -f {tmp_path}/absent.list",
    ]
    for line in lines:
        r = subprocess.run(["sh", "-c", line], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, (line, r.stderr)
    rpm = rpms / "x86_64" / "a.x86_64.rpm"
    assert rpm.stat().st_uid == 0 and rpm.read_bytes() == Path("/etc/hostname").read_bytes()
    r = subprocess.run(["sh", "-c", f"sudo rm {tmp_path}/absent"], env=env, capture_output=True)
    assert r.returncode == 1  # rm's own failure comes back


@needs_root
def test_tools_mk_go_get_line_runs_as_sudo_user(user: User, bindir: Path) -> None:
    """tools.mk: `sudo -u $SUDO_USER go get -d ./...` (here `env` stands in for go): runs as
    that user with a reset environment, as a real sudo would."""
    env = {**base_env(bindir), "SUDO_USER": user.name, "GOFLAGS": "-mod=mod"}
    r = subprocess.run(["sh", "-c", "sudo -u $SUDO_USER sh -c 'id -un; env'"], env=env,
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    first, *rest = r.stdout.splitlines()
    assert first == user.name
    got = dict(line.split("=", 1) for line in rest if "=" in line)
    assert "GOFLAGS" not in got and "PREFIX" not in got
    assert got["HOME"] == str(user.home)


@needs_root
def test_runuser_modes_set_the_environment_as_util_linux_does(user: User, bindir: Path) -> None:
    env = {**base_env(bindir), "FOO": "a b $c 'd'"}

    def runuser(*args: str) -> dict[str, str]:
        r = subprocess.run(["runuser", *args], env=env, capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return read_env_bytes(r.stdout)

    # -u: environment kept, but HOME, SHELL, USER, LOGNAME are the user's
    got = runuser("-u", user.name, "--", "env", "-0")
    assert got["FOO"] == env["FOO"] and got["PREFIX"] == "/usr"
    assert (got["HOME"], got["USER"], got["SHELL"]) == (str(user.home), user.name, "/bin/bash")
    # -m keeps them too
    got = runuser("-m", "-u", user.name, "--", "env", "-0")
    assert (got["HOME"], got["USER"]) == ("/root", "root")
    # -l: a login shell in HOME with only TERM kept (and -w's list), a default PATH
    got = runuser(
        "-l", "-w", "FOO", user.name, "-c", 'cd_now=$(pwd); env -0; printf "PWD2=%s\\0" "$cd_now"'
    )
    assert got["PWD2"] == str(user.home)
    assert got["TERM"] == env["TERM"] and got["FOO"] == env["FOO"]
    assert str(bindir) not in got["PATH"]  # a default PATH (or /etc/profile's), not the caller's
    assert not {"LFS", "PREFIX", "PKG_CONFIG_PATH", "LC_ALL"} & set(got)
    # root target: USER stays (util-linux sets USER/LOGNAME only for other users)
    got = runuser("-u", "root", "--", "env", "-0")
    assert (got["HOME"], got["USER"]) == ("/root", "root")


def read_env_bytes(data: bytes) -> dict[str, str]:
    return dict(item.split("=", 1) for item in data.decode().split("\0") if "=" in item)


@needs_root
def test_signals_and_exit_codes_reach_the_caller(user: User, bindir: Path) -> None:
    env = base_env(bindir)
    for tool in (["sudo", "-u", user.name], ["runuser", "-u", user.name, "--"]):
        r = subprocess.run([*tool, "sh", "-c", "exit 42"], env=env, timeout=60)
        assert r.returncode == 42, tool
        r = subprocess.run([*tool, "sh", "-c", "kill -TERM $$"], env=env, timeout=60)
        assert r.returncode == -signal.SIGTERM, tool
        # a signal sent to the pid the caller started reaches the command itself: the tool
        # execs, so that pid *is* the command, running as the user
        p = subprocess.Popen([*tool, "sleep", "60"], env=env)
        try:
            deadline = time.monotonic() + 30
            status = ""
            while time.monotonic() < deadline:
                status = Path(f"/proc/{p.pid}/status").read_text()
                if status.startswith("Name:\tsleep\n"):
                    break
                time.sleep(0.05)
            assert status.startswith("Name:\tsleep\n"), status
            assert f"\nUid:\t{user.uid}\t{user.uid}\t{user.uid}\t{user.uid}\n" in status
            p.send_signal(signal.SIGINT)
            assert p.wait(timeout=30) == -signal.SIGINT, tool
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    r = subprocess.run(["sudo", "no-such-command-azl"], env=env, capture_output=True, text=True)
    assert r.returncode == 127 and "no-such-command-azl" in r.stderr


@needs_root
def test_sudo_keeps_everything_with_E_and_never_prompts_a_user(user: User, bindir: Path) -> None:
    env = {**base_env(bindir), "FOO": "x"}
    r = subprocess.run(["sudo", "-E", "-u", user.name, "X=1", "sh", "-c", 'echo "$X $FOO $HOME $PREFIX"'],
                       env=env, capture_output=True, text=True)  # fmt: skip
    assert r.stdout == "1 x /root /usr\n", r.stderr
    r = subprocess.run(["sudo", "--preserve-env=FOO", "-u", user.name, "sh", "-c", 'echo "$FOO"'],
                       env=env, capture_output=True, text=True)  # fmt: skip
    assert r.stdout == "x\n", r.stderr
    # a non-root caller cannot switch, and is not asked for a password
    r = subprocess.run(["runuser", "-u", user.name, "--", "sudo", "-u", "root", "true"],
                       env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 1
    assert "only root can run a command as 'root'" in r.stderr


def test_shim_rejects_what_it_does_not_support(bindir: Path) -> None:
    env = base_env(bindir)
    cases = [
        (["sudo", "-x", "true"], "unsupported option '-x'"),
        (["sudo", "-k", "true"], "unsupported option '-k'"),
        (["sudo", "--login", "true"], "unsupported option '--login'"),
        (["sudo"], "no command"),
        (["sudo", "-u", "no-such-user-azl", "true"], "user 'no-such-user-azl' does not exist"),
        (["sudo", "--preserve-env=BAD-NAME", "true"], "bad variable name 'BAD-NAME'"),
        (["runuser", "-g", "x", "-u", "root", "true"], "unsupported option '-g'"),
        (["runuser", "--", "true"], "no user given"),
    ]
    for argv, message in cases:
        r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 1, argv
        assert message in r.stderr, (argv, r.stderr)
        assert r.stdout == ""


def test_sudo_recipe_installs_sudo_and_runuser(tmp_path: Path) -> None:
    """The shim is a file of the recipe (``files``: editing it rebuilds the package); the
    install phase puts it at ${PREFIX}/bin/sudo with runuser a link to it."""
    recipe = tomllib.loads((REPO / "recipes" / "sudo.toml").read_text())
    assert recipe["files"] == ["sudo"]
    env = {
        "PATH": os.environ["PATH"],
        "FILESDIR": str(SHIM.parent),
        "DESTDIR": str(tmp_path / "stage"),
        "PREFIX": "/usr",
    }
    r = subprocess.run(["sh", "-e", "-c", recipe["script"]["install"]], cwd=tmp_path, env=env,
                       capture_output=True)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    bindir = tmp_path / "stage" / "usr" / "bin"
    assert (bindir / "sudo").read_bytes() == SHIM.read_bytes()
    assert os.access(bindir / "sudo", os.X_OK)
    assert os.readlink(bindir / "runuser") == "sudo"


# --------------------------------------------------------------------------- util-linux


@pytest.mark.network
@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare"), reason="hiding headers needs root + unshare"
)
def test_util_linux_configures_without_pam_headers(tmp_path: Path, archive: str) -> None:
    """The recipe's flags configure util-linux on a machine without PAM headers (the guest):
    configure is run with /usr/include/security hidden, sees no pam_appl.h and succeeds,
    building no runuser, su, login or setpriv, but losetup, libuuid and libblkid."""
    from tasks.engine.recipeset import parse_recipe

    recipe, errors = parse_recipe(REPO / "recipes" / "util-linux.toml")
    assert recipe is not None, errors
    build = recipe.for_platform("sandbox")
    (source,) = build.version.sources
    project = real_project(tmp_path / "proj", "util-linux", "libcap", "attr")
    r = project.doit(f"mirror:{source.file}", timeout=900)
    assert r.code == 0, r.out + r.err
    with tarfile.open(project.root / "mirror" / source.file) as tar:
        tar.extractall(tmp_path / "src")
    (srcdir,) = (tmp_path / "src").iterdir()
    empty = tmp_path / "empty"
    empty.mkdir()
    configure = " ".join(["./configure", "--prefix=/usr", *build.configure_args])
    hide = f"mount --bind {empty} /usr/include/security 2>/dev/null || true; {configure}"
    r2 = subprocess.run(["unshare", "-m", "sh", "-c", hide], cwd=srcdir, capture_output=True,
                        text=True, timeout=1800)  # fmt: skip
    assert r2.returncode == 0, r2.stdout[-3000:] + r2.stderr[-3000:]
    assert "checking for security/pam_appl.h... no" in r2.stdout
    status = (srcdir / "config.status").read_text()
    for program in ("RUNUSER", "SU", "LOGIN", "SETPRIV", "CHFN_CHSH"):
        assert f'S["BUILD_{program}_TRUE"]="#"' in status, program
    for program in ("LOSETUP", "LIBUUID", "LIBBLKID", "LIBMOUNT"):
        assert f'S["BUILD_{program}_TRUE"]=""' in status, program
