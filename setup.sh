#!/usr/bin/env bash
# Set up azl-bootstrap on a Debian 12 machine and run the main job: the sandbox build.
#
#   ./setup.sh                        apt packages + .venv + the bootstrap Go + `doit`
#                                     (every recipe of the sandbox, into cache/sandbox/root)
#   ./setup.sh --no-build             apt packages + .venv only (what CI needs for the tests)
#   ./setup.sh --no-build --with-go   ... and the bootstrap Go (tests/run_slow.sh)
#
# Needs root (or sudo) only for the apt steps, and only when something is missing.
set -euo pipefail
cd "$(dirname "$0")"

build=1 go=1
for arg in "$@"; do
  case $arg in
    --no-build) build=0; go=0 ;;
    --with-go) go=1 ;;
    *) echo "usage: $0 [--no-build [--with-go]]" >&2; exit 2 ;;
  esac
done
sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo

# tool -> Debian package providing it
declare -A need=(
  [gcc]=gcc [g++]=g++ [make]=make [patch]=patch [pkg-config]=pkg-config [xz]=xz-utils
  [bzip2]=bzip2 [zstd]=zstd [gzip]=gzip [tar]=tar [ldd]=libc-bin [curl]=curl [mount]=mount
  [git]=git [dot]=graphviz
  # what the sandbox recipes need beyond a compiler: jq's autoreconf, iproute2's parser,
  # ncurses' autoreconf-dickey (m4), meson (python3)
  [m4]=m4 [autoreconf]=autoconf [automake]=automake [libtoolize]=libtool [bison]=bison
  [flex]=flex [python3]=python3
  # the kernel64 proof (tests/test_kernel64.py: kernel build, disk image, TCG boot) and the
  # 32-bit rehearsal (tests/rehearsal32/root.py)
  [bc]=bc [qemu-system-x86_64]=qemu-system-x86 [mkfs.ext4]=e2fsprogs [sfdisk]=fdisk
  [debootstrap]=debootstrap
  # the libelf proof (tests/test_libelf.py: libelf, zlib and objtool built with musl, static)
  [musl-gcc]=musl-tools
  # the VM and the guest link (tasks/guest/vm.py, tasks/guest/link.py) and their tests' guest and sshd
  [qemu-img]=qemu-utils [ssh]=openssh-client [sshd]=openssh-server [dropbear]=dropbear-bin
  [cpio]=cpio [unshare]=util-linux
  # the ISO tools' tests (tests/test_udevadm.py, tests/test_sandbox_pkgs_a.py's cdrkit): a FAT
  # EFI image and its files, and a reader of the ISO's El Torito catalogue
  [mkfs.vfat]=dosfstools [mcopy]=mtools [xorriso]=xorriso [file]=file [partx]=util-linux
)
missing=()
for tool in "${!need[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${need[$tool]}")
done
# headers the sandbox recipes link against (util-linux's runuser: PAM; rpm: OpenSSL; zlib),
# the kernel's objtool (libelf) and the kernel64 test's 32-bit static /init (gcc -m32)
for header in security/pam_appl.h:libpam0g-dev openssl/ssl.h:libssl-dev zlib.h:zlib1g-dev \
              ffi.h:libffi-dev magic.h:libmagic-dev lzma.h:liblzma-dev \
              gelf.h:libelf-dev gnu/stubs-32.h:gcc-multilib; do
  [ -e "/usr/include/${header%%:*}" ] || [ -e "/usr/include/x86_64-linux-gnu/${header%%:*}" ] ||
    missing+=("${header##*:}")
done
# the VM tests' guest (tests/vmimage.py): a static busybox and a kernel with its modules
# (ldd's own output is tested, not a pipeline's status: under pipefail `ldd … | grep -q` takes
# ldd's exit 1 for a static binary and reinstalled busybox-static on every run)
busybox_ldd=$(ldd /bin/busybox 2>&1 || true)
[[ $busybox_ldd == *"not a dynamic executable"* ]] || missing+=(busybox-static)
ls /boot/vmlinuz-* >/dev/null 2>&1 || missing+=(linux-image-amd64)
python=${PYTHON:-/usr/bin/python3}
"$python" -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    ca-certificates "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'

# The sandbox's go1.23.1 is bootstrapped by Debian's golang-1.22-go (recipes/go.toml): Debian
# 12 has no Go >= 1.20, bookworm-backports has. The archive URI is read from this machine's
# apt sources (tasks.sources.download.debian_archive_uri), never written here.
if [ "$go" -eq 1 ] && [ ! -x /usr/lib/go-1.22/bin/go ]; then
  if ! grep -qs '^Suites:.*bookworm-backports' /etc/apt/sources.list.d/*.sources &&
     ! grep -qs '^deb .* bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/*.list; then
    archive=$(.venv/bin/python -c 'from tasks.sources.download import debian_archive_uri as u; print(u() or "")')
    if [ -z "$archive" ]; then
      echo "setup: no Debian archive in the apt sources; cannot add bookworm-backports" >&2
      exit 1
    fi
    echo "setup: adding bookworm-backports (the apt sources' archive) for golang-1.22-go"
    printf '%s\n' "Types: deb" "URIs: $archive" "Suites: bookworm-backports" "Components: main" \
      "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" |
      $sudo tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null
  fi
  $sudo apt-get update -qq
  # backports has priority 100: this installs golang-1.22-go and upgrades nothing else
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    -t bookworm-backports golang-1.22-go
fi

if [ "$build" -eq 1 ]; then
  exec .venv/bin/doit
fi
