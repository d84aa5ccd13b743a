"""``lb-image``: the rootfs.py and qemu command lines against the seed's, what rootfs.py needs
up front, the in-use refusal, and a real ``rootfs.py --qemu`` start under TCG."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.engine.recipeset import parse_recipe
from tasks.host import lbimage, lbinputs, lbprogress, qemuwrap
from tasks.model.config import Config, Paths
from tests import lbcheckout

REPO = Path(__file__).resolve().parent.parent
# docs/procedure.md H4, the seed's command ($(nproc) and $PWD filled in below)
SEED = "--arch x86 -t azurelinux --cores {nproc} --update-checksums --interactive --mirror file://{pwd}/mirror --qemu --qemu-ram=16384 --target-size=100g"
# what rootfs.py at 1296c44b hands --qemu-cmd in kernel-bootstrap mode (its bootstrap())
ROOTFS_QEMU = "-enable-kvm -m {ram}M -smp {cores} -drive file={img},format=raw -machine kernel-irqchip=split -nic user,ipv6=off,model=e1000 -no-reboot -nographic"


def lb_spec() -> lbinputs.Spec:
    recipe, errors = parse_recipe(REPO / "recipes" / "lb-image.toml")
    assert recipe is not None and not errors, errors
    return recipe.spec


def copy_host_recipes(dst: Path) -> None:
    """The recipes of preflight and lb-image (and dropbear's, whose tarball the after-step
    builds). lb-image here depends on preflight only: the tests make the checkout themselves
    and lb-mirror would fetch all 248 distfiles of the real manifest."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("preflight.toml", "lb-image.toml", "dropbear.toml"):
        shutil.copy(REPO / "recipes" / name, dst)
    shutil.copytree(REPO / "recipes" / "lb-image", dst / "lb-image")
    text = (dst / "lb-image.toml").read_text()
    assert 'depends = ["preflight", "lb-mirror"]' in text
    (dst / "lb-image.toml").write_text(text.replace('"preflight", "lb-mirror"', '"preflight"'))


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("lb") / "live-bootstrap"
    lbcheckout.live_bootstrap(dst)
    return dst


def decisions(accel: str = "tcg", cores: int = 2, ram: int = 16384, size: str = "100G") -> dict:
    return {
        "accel": accel,
        "sizes": {"qemu_cores": cores, "qemu_ram_mib": ram, "image_size": size},
        "tools": {
            "qemu-system-x86_64": shutil.which("qemu-system-x86_64")
            or "/usr/bin/qemu-system-x86_64"
        },
    }


def parse_with_rootfs(checkout: Path, argv: list[str]) -> dict:
    """rootfs.py's own argparse result for ``argv`` (its main() stopped right after parsing)."""
    code = (
        "import argparse, json, runpy, sys\n"
        "def grab(self, *a, **k):\n"
        "    ns = ORIG(self, *a, **k); print(json.dumps(vars(ns))); sys.exit(0)\n"
        "ORIG = argparse.ArgumentParser.parse_args\n"
        "argparse.ArgumentParser.parse_args = grab\n"
        "sys.argv = ['rootfs.py'] + sys.argv[1:]\n"
        "sys.path.insert(0, '.')\n"
        "runpy.run_path('rootfs.py', run_name='__main__')\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, *argv], cwd=checkout, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_rootfs_command_is_the_seeds_field_by_field(checkout: Path, tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    spec = lb_spec()
    nproc = os.cpu_count()
    lay = lbinputs.Layout(paths)
    ours = lbinputs.rootfs_args(
        spec, decisions(cores=nproc), lay, lbinputs.mirror_urls(paths, Config())
    )
    seed = SEED.format(nproc=nproc, pwd=tmp_path).split()
    a, b = parse_with_rootfs(checkout, ours), parse_with_rootfs(checkout, seed)
    differ = {k for k in a if a[k] != b[k]}
    assert differ == {"target", "interactive", "target_size", "qemu_cmd"}
    assert a["interactive"] is False and b["interactive"] is True  # nobody at the console
    assert a["target"] == str(tmp_path / "cache/host/lb-target")
    assert a["mirrors"] == [f"file://{tmp_path}/mirror"] and b["mirrors"] == [
        f"file://{tmp_path}/mirror"
    ]
    assert (a["target_size"], b["target_size"]) == ("100G", "100g")  # rootfs.py: both 102400 MiB
    assert a["qemu_cmd"] == str(tmp_path / "cache/host/qemu/qemu-wrapper")
    assert a["update_checksums"] and a["qemu"] and a["arch"] == "x86" and a["qemu_ram"] == "16384"
    # from config and preflight
    small = lbinputs.rootfs_args(
        spec, decisions(cores=1, ram=4096, size="48G"), lay, ["http://10.0.0.1/m"]
    )
    c = parse_with_rootfs(checkout, small)
    assert (c["cores"], c["qemu_ram"], c["target_size"], c["mirrors"]) == (
        "1",
        "4096",
        "48G",
        ["http://10.0.0.1/m"],
    )


def test_qemu_command_under_tcg_and_kvm(tmp_path: Path) -> None:
    args = ROOTFS_QEMU.format(ram=16384, cores=2, img="/t/init.img").split()
    tcg = qemuwrap.rewrite(args, "tcg", "/l/lb-image.log", "/q/qemu.pid")
    assert tcg == [
        "-accel", "tcg", "-m", "16384M", "-smp", "2", "-drive", "file=/t/init.img,format=raw",
        "-nic", "user,ipv6=off,model=e1000", "-no-reboot", "-nographic",
        "-serial", "file:/l/lb-image.log", "-monitor", "none", "-pidfile", "/q/qemu.pid",
    ]  # fmt: skip
    kvm = qemuwrap.rewrite(args, "kvm", "/l/lb-image.log", "/q/qemu.pid")
    assert kvm == args + [
        "-serial",
        "file:/l/lb-image.log",
        "-monitor",
        "none",
        "-pidfile",
        "/q/qemu.pid",
    ]
    # the generated wrapper really execs qemu with that command line
    lay = lbinputs.Layout(Paths(tmp_path))
    fake = tmp_path / "qemu"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/argv\n')
    fake.chmod(0o755)
    d = decisions()
    d["tools"]["qemu-system-x86_64"] = str(fake)
    wrapper = lbinputs.write_wrapper(lay, d)
    subprocess.run([str(wrapper), *args], check=True, capture_output=True)
    got = (tmp_path / "argv").read_text().split("\n")[:-1]
    assert got == qemuwrap.rewrite(
        args, "tcg", str(lay.serial_log.resolve()), str((lay.qemu / "qemu.pid").resolve())
    )


def test_distfiles_rootfs_needs_up_front(checkout: Path) -> None:
    files = {s.file: s for s in lbinputs.upfront_distfiles(checkout)}
    assert len(files) == 71
    mes = files["mes-0.27.tar.gz"]
    assert mes.sha256 == "033ee656d98cfc04a826eab27eed6e6a276d15bbb980a7cd71d00f30227aaaa8"
    assert mes.urls == ("https://mirrors.kernel.org/gnu/mes/mes-0.27.tar.gz",)
    assert "curl-8.12.1.tar.xz" in files  # the last build: before improve: get_network
    assert "linux-4.14.336.tar.xz" in files and "gcc-13.3.0.tar.xz" not in files
    gnulib = files["gnulib-8e128e.tar.gz"]  # a git snapshot without a download URL
    assert gnulib.urls == () and gnulib.git
    assert gnulib.sha256 == "0cfbf866bc39c31f25fa0e56af1e56c5e5c92fc1e5d51242ebafef7ea211f3d5"


def test_rootfs_py_really_fetches_them_before_the_image(checkout: Path, tmp_path: Path) -> None:
    """The claim above, checked on rootfs.py itself: cut off from the network, with no
    distfiles, it stops at the first one and never writes init.img."""
    lb = tmp_path / "lb"
    shutil.copytree(checkout, lb, symlinks=True)
    wrapper = tmp_path / "qemu"
    wrapper.write_text("#!/bin/sh\nexit 99\n")
    wrapper.chmod(0o755)
    # tasks.build.supervise: the group leader, cut off the network, killed with its stdin's writer
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tasks.build.supervise",
            sys.executable,
            "rootfs.py",
            "--arch",
            "x86",
            "-t",
            str(tmp_path / "t"),
            "--qemu",
            "--qemu-cmd",
            str(wrapper),
            "--target-size",
            "1G",
        ],
        cwd=lb,
        env={**os.environ, "AZL_NO_NETWORK": "1", "PYTHONPATH": str(REPO)},
        stdin=subprocess.PIPE,  # kept open while it runs
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    out = proc.stdout.read()
    proc.wait(timeout=120)
    proc.stdin.close()
    if proc.returncode == 126:
        pytest.skip(f"cannot cut a process off the network here: {out.strip()}")
    assert proc.returncode == 1, out
    assert "Downloading: mes-0.27.tar.gz" in out
    assert "requests.exceptions.ConnectionError" in out, out
    assert not (tmp_path / "t" / "init.img").exists()


def test_missing_distfiles_stop_the_task_before_rootfs(checkout: Path, tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    lay = lbinputs.Layout(paths)
    lay.host.mkdir(parents=True)
    shutil.copytree(checkout, lay.checkout, symlinks=True)
    (lay.host / "preflight.json").write_text(json.dumps(decisions()))
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "mes-0.27.tar.gz").write_bytes(b"one of them")
    copy_host_recipes(tmp_path / "recipes")
    failed = lbimage.build_image(paths, Config(), lb_spec())
    assert failed is not None
    msg = str(failed)
    assert "rootfs.py needs 70 distfile(s) before it builds the image" in msg
    assert (
        "  linux-4.14.336.tar.xz  sha256 " in msg
        and "from https://cdn.kernel.org/pub/linux/kernel/v4.x/linux-4.14.336.tar.xz" in msg
    )
    assert (lay.checkout / "distfiles" / "mes-0.27.tar.gz").resolve() == (
        tmp_path / "mirror" / "mes-0.27.tar.gz"
    )
    assert not lay.target.exists() and lbimage.read_state(paths) == {}  # rootfs.py never ran


def test_clean_refuses_while_the_image_is_open(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    lay = lbinputs.Layout(paths)
    lay.target.mkdir(parents=True)
    lay.image.write_bytes(b"\0" * 4096)
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "keep.tar.gz").write_text("x")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sys, time; f = open({str(lay.image)!r}, 'rb'); print('open', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "open\n"
        assert lbimage.users_of(lay.image) == [
            f"process {holder.pid} (python{sys.version_info.major}.{sys.version_info.minor})"
        ] or lbimage.users_of(lay.image)[0].startswith(f"process {holder.pid} (")
        with pytest.raises(
            SystemExit, match=r"doit clean lb-image: refusing: .*init.img is in use by process \d+"
        ):
            lbimage.clean_image(paths)
        assert lay.image.exists()
    finally:
        holder.kill()
        holder.wait()
    lbimage.clean_image(paths)
    assert not lay.target.exists() and (tmp_path / "mirror" / "keep.tar.gz").exists()


def test_loop_device_backing_counts_as_in_use(tmp_path: Path) -> None:
    img = tmp_path / "init.img"
    img.write_bytes(b"")
    loop = tmp_path / "block" / "loop3" / "loop"
    loop.mkdir(parents=True)
    (loop / "backing_file").write_text(f"{img}\n")
    assert lbimage.users_of(img, proc=tmp_path / "noproc", sys_block=tmp_path / "block") == [
        "loop device /dev/loop3"
    ]


# -- a real rootfs.py --qemu start under TCG ---------------------------------------------


def tcg_project(root: Path, checkout: Path, dropbear: Path) -> Path:
    """A project whose checkout stops live-bootstrap's manifest before its first distfile
    (mes-0.27): the 71 distfiles rootfs.py wants up front are not obtainable here, and the
    steps before mes need none."""
    root.mkdir()
    shutil.copy(REPO / "dodo.py", root)
    copy_host_recipes(root / "recipes")
    (root / "mirror").mkdir()
    shutil.copy(dropbear, root / "mirror")
    (root / "azl-bootstrap.toml").write_text(
        'platform = "sandbox"\n[host]\nram_mib = 4096\nimage_size = "2G"\n'
    )
    lb = root / "cache" / "live-bootstrap"
    lb.parent.mkdir(parents=True)
    lbcheckout.live_bootstrap(lb)
    manifest = lb / "steps" / "manifest"
    text = manifest.read_text()
    manifest.write_text(text[: text.index("build: mes-0.27")])
    assert lbinputs.upfront_distfiles(lb) == []
    return root


def doit(root: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "doit", *args],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_for(log: Path, proc: subprocess.Popen, predicate, timeout: float) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        text = log.read_text(errors="replace") if log.exists() else ""
        if predicate(text):
            return text
        assert proc.poll() is None, f"doit ended early ({proc.returncode}):\n{proc.stdout.read()}"
        time.sleep(2)
    pytest.fail(f"not seen within {timeout} s; serial log ends:\n{text[-2000:]}")


def qemu_alive(root: Path) -> bool:
    pid = root / "cache/host/qemu/qemu.pid"
    return pid.exists() and Path(f"/proc/{pid.read_text().strip()}").exists()


def stop_all(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.network
def test_real_rootfs_qemu_start_under_tcg_stop_and_rerun(
    tmp_path: Path, checkout: Path, dropbear_tarball: Path
) -> None:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is not installed")
    root = tcg_project(tmp_path / "proj", checkout, dropbear_tarball)
    serial = root / "cache/logs/lb-image.log"
    loading = lambda t: t.count("\nsrc") >= 100  # noqa: E731 - builder-hex0 loads its sources
    # 1. start, see builder-hex0 loading the sources, stop doit with SIGTERM (like Ctrl-C)
    first = doit(root, "lb-image")
    try:
        wait_for(serial, first, loading, 240)
        qemu_pid = (root / "cache/host/qemu/qemu.pid").read_text().strip()
        img = root / "cache/host/lb-target/init.img"
        assert f"process {qemu_pid} (qemu-system-x86)" in lbimage.users_of(
            img
        )  # clean would refuse
        assert lbimage.read_state(Paths(root))["state"] == "running"
        os.kill(first.pid, signal.SIGTERM)
        out = first.communicate(timeout=60)[0]
    finally:
        stop_all(first)
    assert first.returncode != 0
    assert (
        "lb-image: builder-hex0" in out
        and "lb-image: stopped at builder-hex0: loading sources; distfiles kept" in out
    ), out
    assert json.loads((root / "cache/host/lb-image.state.json").read_text())["state"] == "stopped"
    assert not qemu_alive(root)
    assert (root / "mirror" / dropbear_tarball.name).exists()
    assert (root / "cache/live-bootstrap/distfiles").is_dir()
    rootfs_log = (root / "cache/logs/lb-image.rootfs.log").read_text()
    qemu_line = next(ln for ln in rootfs_log.splitlines() if ln.startswith("qemu: "))
    assert shlex.split(qemu_line)[2:] == qemuwrap.rewrite(
        ROOTFS_QEMU.format(ram=4096, cores=len(os.sched_getaffinity(0)), img=img.resolve()).split(),
        "tcg",
        str(serial.resolve()),
        str((root / "cache/host/qemu/qemu.pid").resolve()),
    )
    # 2. rerun: starts over cleanly (old target removed, old log kept as .1); stop it by
    #    killing qemu: rootfs.py then exits 0, and the task still reports "stopped"
    second = doit(root, "lb-image")
    try:
        old = root / "cache/logs/lb-image.log.1"
        wait_for(
            serial,
            second,
            lambda _: old.exists() and loading(serial.read_text(errors="replace")),
            240,
        )
        assert loading(old.read_text(errors="replace"))
        os.kill(int((root / "cache/host/qemu/qemu.pid").read_text()), signal.SIGTERM)
        out = second.communicate(timeout=60)[0]
    finally:
        stop_all(second)
    assert second.returncode != 0
    assert (
        "lb-image: stopped: qemu exited at builder-hex0: loading sources before live-bootstrap powered off"
        in out
    ), out
    assert json.loads((root / "cache/host/lb-image.state.json").read_text())["state"] == "stopped"
    assert not (root / "cache/host/lb-image.json").exists()  # no record: not finished
    # 3. clean removes the image, never the mirror
    r = subprocess.run(
        [sys.executable, "-m", "doit", "clean", "lb-image"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert not img.exists() and (root / "mirror" / dropbear_tarball.name).exists()


@pytest.mark.slow
@pytest.mark.network
def test_real_tcg_run_reaches_stage0_posix(
    tmp_path: Path, checkout: Path, dropbear_tarball: Path
) -> None:
    """The same start, left running until stage0-posix builds its tools (tens of minutes)."""
    root = tcg_project(tmp_path / "proj", checkout, dropbear_tarball)
    serial = root / "cache/logs/lb-image.log"
    proc = doit(root, "lb-image")
    try:
        text = wait_for(serial, proc, lambda t: "./x86/artifact/catm" in t, 3600)
        time.sleep(6)  # the task reads the log every 2 s: let it print the steps so far
        os.kill(proc.pid, signal.SIGTERM)
        out = proc.communicate(timeout=60)[0]
    finally:
        stop_all(proc)
    assert "/x86/hex0_x86.hex0 /bootstrap-seeds/POSIX/x86/hex0-seed" in text  # builder-hex0's hex0
    for step in (
        "builder-hex0: hex0 seeds",
        "stage0-posix: hex0",
        "stage0-posix: hex1",
        "stage0-posix: hex2-0",
    ):
        assert f"lb-image: {step}  [" in out, out
    assert json.loads((root / "cache/host/lb-image.state.json").read_text())["state"] == "stopped"


FAKE_QEMU = """#!/bin/sh
# stands in for qemu: the preflight's tiny guest exits through its port; the image run
# prints what live-bootstrap and the after-step print at the end, then "powers off"
case "$*" in *isa-debug-exit*) exit 3 ;; esac
while [ $# -gt 0 ]; do [ "$1" = -serial ] && serial=${2#file:}; shift; done
printf 'Booting from Hard Disk...\\nm4-1.4.19: beginning build using script pass1.sh\\n' >> "$serial"
printf 'AZL-AFTER: start\\nAZL-HOSTKEY: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFake root@guest\\n' >> "$serial"
printf 'AZL-AFTER: done\\nreboot: Power down\\n' >> "$serial"
"""


def doit_run(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "doit", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def fake_qemu_env(tmp_path: Path, script: str) -> dict[str, str]:
    """The environment of a doit run whose ``qemu-system-x86_64`` is ``script``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "qemu-system-x86_64").write_text(script)
    (bin_dir / "qemu-system-x86_64").chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


@pytest.mark.network
def test_finished_image_is_kept_until_its_inputs_change(
    tmp_path: Path, checkout: Path, dropbear_tarball: Path
) -> None:
    """Real doit and rootfs.py (it builds the real init.img); only qemu is a stand-in."""
    root = tcg_project(tmp_path / "proj", checkout, dropbear_tarball)
    env = fake_qemu_env(tmp_path, FAKE_QEMU)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return doit_run(root, env, *args)

    r = run("lb-image")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "lb-image: m4-1.4.19  [" in r.stdout and "lb-image: finished in " in r.stdout
    host = root / "cache/host"
    record = json.loads((host / "lb-image.json").read_text())
    assert (
        record["inputs"]["image_size"] == "2G"
        and record["inputs"]["commit"] == lbcheckout.LB_COMMIT
    )
    assert (root / "cache/host/lb-target/init.img").stat().st_size == 2 << 30
    assert (
        host / "ssh/host_key.pub"
    ).read_text() == "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFake root@guest\n"
    assert json.loads((host / "lb-image.state.json").read_text())["state"] == "finished"
    # the after-step went into the image with the host's key and the dropbear tarball
    steps = root / "cache/host/lb-target/init/steps/after"
    assert (steps / "90-azl-automation.sh").read_bytes() == (
        REPO / "recipes/lb-image/90-azl-automation.sh"
    ).read_bytes()
    assert (steps / "azl/authorized_keys").read_text() == (host / "ssh/id_ed25519.pub").read_text()
    assert (steps / "azl" / dropbear_tarball.name).read_bytes() == dropbear_tarball.read_bytes()
    # nothing changed: not rebuilt
    r = run("lb-image")
    assert (
        r.returncode == 0 and "-- lb-image" in r.stdout and "lb-image: finished" not in r.stdout
    ), r.stdout
    # more RAM does not change the image; a bigger image does
    (root / "azl-bootstrap.toml").write_text(
        'platform = "sandbox"\n[host]\nram_mib = 5120\nimage_size = "2G"\n'
    )
    assert "-- lb-image" in run("lb-image").stdout
    (root / "azl-bootstrap.toml").write_text(
        'platform = "sandbox"\n[host]\nram_mib = 4096\nimage_size = "3G"\n'
    )
    r = run("lb-image")
    assert r.returncode == 0 and "lb-image: finished" in r.stdout, r.stdout + r.stderr
    assert (root / "cache/host/lb-target/init.img").stat().st_size == 3 << 30


def test_progress_steps_from_a_real_serial_console() -> None:
    lines = [
        "\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2-debian-1.16.2-1)\r",
        "Booting from Hard Disk...\r",
        "src\r",
        "./M2-Planet\r",
        "src\r",
        "hex0\r",
        "/x86/hex0_x86.hex0 /bootstrap-seeds/POSIX/x86/hex0-seed\r",
        " +> ./bootstrap-seeds/POSIX/x86/hex0-seed ./x86/hex0_x86.hex0 ./x86/artifact/hex",
        "0 ",
        " +> ./x86/artifact/hex0 ./x86/hex1_x86.hex0 ./x86/artifact/hex1 ",
        " +> ./x86/artifact/hex1 ./x86/hex2_x86.hex1 ./x86/artifact/hex2-0 ",
        "mes-0.27: beginning build using script pass1.kaem",
        "mes-0.27: build successful",
        "AZL-AFTER: start",
        "AZL-AFTER: done",
    ]
    assert lbprogress.steps(lines) == [
        "builder-hex0",
        "builder-hex0: loading sources",
        "builder-hex0: hex0 seeds",
        "stage0-posix: hex0",
        "stage0-posix: hex1",
        "mes-0.27",
        "azl-after",
        "finished",
    ]


def test_after_step_patches_the_pinned_init(checkout: Path, tmp_path: Path) -> None:
    """The after-step's /init edit, run on the /init that live-bootstrap's make_bootable.sh
    writes at the pinned commit: dropbear starts right before the console shell."""
    bootable = (checkout / "steps/improve/make_bootable.sh").read_text()
    init = bootable.split("cat > /init <<- 'EOF'\n", 1)[1].split("\nEOF\n", 1)[0] + "\n"
    (tmp_path / "init").write_text(init)
    script = (REPO / "recipes/lb-image/90-azl-automation.sh").read_text()
    sed = next(ln.strip() for ln in script.splitlines() if ln.strip().startswith("sed -i"))
    subprocess.run(["bash", "-c", sed.replace("/init", str(tmp_path / "init"))], check=True)
    lines = (tmp_path / "init").read_text().splitlines()
    at = lines.index("/usr/bin/azl-start-ssh")
    assert lines[at + 1].startswith("env - PATH=${PREFIX}/bin") and "openvt" in lines[at + 1]
    assert len(lines) == len(init.splitlines()) + 1
    subprocess.run(["bash", "-n", str(REPO / "recipes/lb-image/90-azl-automation.sh")], check=True)


@pytest.mark.network
def test_after_step_failure_is_reported(
    tmp_path: Path, checkout: Path, dropbear_tarball: Path
) -> None:
    root = tcg_project(tmp_path / "proj", checkout, dropbear_tarball)
    failing = FAKE_QEMU.replace("AZL-AFTER: done", "AZL-AFTER: FAILED at line 37: make -j2")
    r = doit_run(root, fake_qemu_env(tmp_path, failing), "lb-image")
    assert r.returncode != 0
    assert (
        "lb-image: the after-step failed: AZL-AFTER: FAILED at line 37: make -j2"
        in r.stdout + r.stderr
    )
    assert lbimage.read_state(Paths(root))["state"] == "failed"
    assert not (root / "cache/host/lb-image.json").exists()


@pytest.mark.network
def test_qemu_failure_is_reported_with_rootfs_output(
    tmp_path: Path, checkout: Path, dropbear_tarball: Path
) -> None:
    root = tcg_project(tmp_path / "proj", checkout, dropbear_tarball)
    script = "#!/bin/sh\ncase \"$*\" in *isa-debug-exit*) exit 3 ;; esac\necho 'qemu: cannot set up guest memory' >&2\nexit 1\n"
    r = doit_run(root, fake_qemu_env(tmp_path, script), "lb-image")
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "lb-image: rootfs.py failed (exit 1)" in out, out
    assert "qemu: cannot set up guest memory" in out and "Bootstrapping failed" in out
    assert lbimage.read_state(Paths(root))["state"] == "failed"


def test_bad_lb_image_recipe_names_file_and_field(tmp_path: Path) -> None:
    copy_host_recipes(tmp_path)
    path = tmp_path / "lb-image.toml"
    text = path.read_text()
    path.write_text(
        text.replace('commit = "1296c44bb345ef5d54ecffd7688f9813d46a032a"', 'commit = "1296c44b"')
        .replace('dropbear = "2025.89"', 'dropbear = "2099.1"')
        .replace('after_step = "90-azl-automation.sh"', 'after_step = "missing.sh"')
        .replace('checkout = "cache/live-bootstrap"', 'checkout = "../elsewhere"')
    )
    recipe, errors = parse_recipe(path)
    got = {e.field: e.message for e in errors}
    assert got.keys() == {"commit", "after_step", "dropbear", "checkout"}, got
    assert got["commit"] == "'1296c44b': expected a full 40-digit commit id"
    assert got["dropbear"] == "'2099.1' is not a version of recipes/dropbear.toml with a source"
    assert got["after_step"].startswith("file not found: ") and got["after_step"].endswith(
        "lb-image/missing.sh"
    )
