#!/bin/sh
# A minimal container root filesystem: busybox-static with its applets as symlinks.
#   mk-rootfs.sh DIR
set -eu
D=${1:?usage: mk-rootfs.sh DIR}
BB=$(command -v busybox) || { echo "mk-rootfs.sh: busybox not found (apt-get install busybox-static)" >&2; exit 1; }
rm -rf "$D"
mkdir -p "$D/bin" "$D/tmp" "$D/proc" "$D/sys" "$D/dev" "$D/etc" "$D/data"
cp "$BB" "$D/bin/busybox"
for a in $("$D/bin/busybox" --list); do [ -e "$D/bin/$a" ] || ln -s busybox "$D/bin/$a"; done
echo "root:x:0:0:root:/:/bin/sh" > "$D/etc/passwd"
echo "root:x:0:" > "$D/etc/group"
chmod 1777 "$D/tmp"
