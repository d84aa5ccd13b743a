#!/bin/bash
# azl-bootstrap's after-step for live-bootstrap (docs/procedure.md): prepares the finished
# system so the host can drive it over SSH and nobody types into the guest.
# `lb-image` (recipes/lb-image.toml) copies this file and the directory azl/ (dropbear
# tarball + sha256, the host's public key) into live-bootstrap's steps/after/ before
# rootfs.py runs; live-bootstrap's improve/after.sh runs it with bash as the last step, then
# powers off.
# Its markers on the serial console are read by the host (tasks/host/lbprogress.py): a failure
# prints "AZL-AFTER: FAILED ..." and still lets the machine power off, so the host reports
# it instead of waiting on a hung guest.

. /steps/bootstrap.cfg
. /steps/env
set -eE
trap 'echo "AZL-AFTER: FAILED at line ${LINENO}: ${BASH_COMMAND}"; exit 0' ERR
AZL=/steps/after/azl
echo "AZL-AFTER: start"

# devpts now and at every boot (/init below): the toolkit's LFS checks and ssh ptys need it
mkdir -p /dev/pts
grep -q ' /dev/pts ' /proc/mounts || mount -t devpts devpts /dev/pts

# login shells dropbear accepts
touch /etc/shells
for sh in /bin/sh /bin/bash /usr/bin/sh /usr/bin/bash; do
  grep -qx "${sh}" /etc/shells || echo "${sh}" >> /etc/shells
done

# dropbear, built from the tarball the host copied in from its mirror
cd /tmp
(cd "${AZL}" && sha256sum -c dropbear.sha256)
tarball=$(cut -d' ' -f3 < "${AZL}/dropbear.sha256")
rm -rf dropbear-build && mkdir dropbear-build && cd dropbear-build
bzip2 -dc "${AZL}/${tarball}" | tar -xf -
cd dropbear-*
./configure --prefix="${PREFIX}" --libdir="${LIBDIR}" --build="${TARGET}" --disable-pam
progs="dropbear dbclient dropbearkey dropbearconvert scp"
make "${MAKEJOBS}" PROGRAMS="${progs}"
make PROGRAMS="${progs}" install
cd /tmp && rm -rf dropbear-build

# the host's key may log in as root
mkdir -p /root/.ssh && chmod 700 /root/.ssh
cp "${AZL}/authorized_keys" /root/.ssh/authorized_keys
chmod 600 /root/.ssh/authorized_keys

# this machine's host key, made now; its public half goes to the host's known_hosts
mkdir -p /etc/dropbear
rm -f /etc/dropbear/dropbear_ed25519_host_key
dropbearkey -t ed25519 -f /etc/dropbear/dropbear_ed25519_host_key > /dev/null
echo "AZL-HOSTKEY: $(dropbearkey -y -f /etc/dropbear/dropbear_ed25519_host_key | grep '^ssh-ed25519')"

# /init (written by improve/make_bootable.sh) starts dropbear before its console shell
cat > /usr/bin/azl-start-ssh <<'EOS'
#!/usr/bin/bash
mkdir -p /dev/pts /run
grep -q ' /dev/pts ' /proc/mounts || mount -t devpts devpts /dev/pts
dropbear -r /etc/dropbear/dropbear_ed25519_host_key -p 22 -P /run/dropbear.pid
EOS
chmod 755 /usr/bin/azl-start-ssh
if ! grep -q azl-start-ssh /init; then
  sed -i 's|^env - PATH=${PREFIX}/bin PS1=.*openvt|/usr/bin/azl-start-ssh\n&|' /init
fi
grep -q '^/usr/bin/azl-start-ssh' /init

sync
echo "AZL-AFTER: done"
