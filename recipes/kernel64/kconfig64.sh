#!/bin/sh
# Make the 64-bit kernel's .config: the kernel's x86_64_defconfig with kconfig64.fragment
# merged over it by the kernel's own scripts/kconfig/merge_config.sh, completed by
# `make olddefconfig`; then check that every `CONFIG_...=y` of the fragment is still `=y`
# (an option whose dependencies are missing is silently dropped by Kconfig: here that stops
# the build, naming the option).
# Usage: kconfig64.sh FRAGMENT [MAKE ARGS...]   run in the kernel's source tree; ARCH=x86_64
# and CROSS_COMPILE come from the environment; extra args (e.g. O=dir) go to every make.
set -eu
fragment=$1
shift
out=.
for a in "$@"; do
	case $a in O=*) out=${a#O=} ;; esac
done
make "$@" x86_64_defconfig
scripts/kconfig/merge_config.sh -m -O "$out" "$out/.config" "$fragment"
make "$@" olddefconfig
lost=$(grep -E '^CONFIG_[A-Za-z0-9_]+=y$' "$fragment" | while read -r line; do
	grep -qx "$line" "$out/.config" || echo "$line"
done)
if [ -n "$lost" ]; then
	echo "$fragment: options not =y in the final .config (a dependency is missing):" >&2
	echo "$lost" >&2
	exit 1
fi
echo "kconfig64: all $(grep -cE '^CONFIG_[A-Za-z0-9_]+=y$' "$fragment") options of $fragment are set"
