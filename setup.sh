#!/usr/bin/env bash
# Set up azl-bootstrap on a Debian 12 machine and run the main job: the sandbox build.
#
#   ./setup.sh              apt packages + .venv + `doit` (every recipe, into cache/sandbox/root)
#   ./setup.sh --no-build   apt packages + .venv only (what CI needs before the tests)
#
# Needs root (or sudo) only for the apt step, and only when a tool is missing.
set -euo pipefail
cd "$(dirname "$0")"

build=1
[ "${1:-}" = "--no-build" ] && build=0

# tool -> Debian package providing it
declare -A need=(
  [gcc]=gcc [g++]=g++ [make]=make [patch]=patch [pkg-config]=pkg-config [xz]=xz-utils
  [bzip2]=bzip2 [zstd]=zstd [gzip]=gzip [tar]=tar [ldd]=libc-bin [curl]=curl [mount]=mount
  [git]=git [dot]=graphviz
)
missing=()
for tool in "${!need[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${need[$tool]}")
done
python=${PYTHON:-/usr/bin/python3}
"$python" -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
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

if [ "$build" -eq 1 ]; then
  exec .venv/bin/doit
fi
