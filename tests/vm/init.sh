#!/bin/busybox sh
# /init of the test VM (tests/vm/run builds the initramfs).  Sets the guest up the
# way our hosts are set up, runs the test script the runner chose (/etc/fm-vm/script
# with the arguments in /etc/fm-vm/args) as root in /fm, prints
# "FM-VM-EXIT <status> <nonce>" on the console and powers the guest off.
#
# Not `set -e`: if /init exits the kernel panics and the runner only learns that
# something broke; every failure here is reported and ends in the marker.

# runc (pivot_root) and CRIU cannot use the initramfs itself as the root of the
# system: copy it to a tmpfs and switch_root into that first (switch_root frees
# the initramfs)
if [ ! -e /.fm-switched ]; then
    echo "fm-vm: stage1 $(/bin/busybox cat /proc/uptime)"
    /bin/busybox mkdir -p /newroot
    /bin/busybox mount -t tmpfs -o mode=755 tmpfs /newroot
    for f in /*; do [ "$f" = /newroot ] || /bin/busybox cp -a "$f" /newroot/; done
    /bin/busybox touch /newroot/.fm-switched
    exec /bin/busybox switch_root /newroot /init
fi

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TMPDIR=/tmp
NONCE=$(cat /etc/fm-vm/nonce)
finish() {
    echo "FM-VM-EXIT $1 $NONCE"
    sync
    poweroff -f
    sleep 60   # never reached; /init must not return
}
fail() { echo "fm-vm: init: $*"; finish 125; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /dev/mqueue
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t mqueue mqueue /dev/mqueue
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
mount -t tmpfs -o mode=1777,size=90% tmpfs /tmp
mount -t tmpfs -o mode=755 tmpfs /run
# cgroup v2 only: runc then drives the unified hierarchy, as on our hosts
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup || fail "cannot mount cgroup2"
# a shared root, as under systemd: mounts made by the daemons (netns, overlays)
# propagate the way they do on a host
mount --make-rshared / 2>/dev/null
hostname "$(cat /etc/hostname)"

# kernel modules (tests/vm/run resolved their order and dependencies)
KV=$(uname -r)
bad=""
while read -r m; do
    insmod "/lib/modules/$KV/$m.ko" 2>/dev/null || bad="$bad $m"
done < "/lib/modules/$KV/load-order"
# crc32c-intel is a soft dependency that may find no SSE4.2: harmless
[ -z "$bad" ] || [ "$bad" = " crc32c-intel" ] || echo "fm-vm: init: insmod failed for:$bad"

# CRIU's start-up probe (kerndat_tcp_repair) connects over loopback
ip link set lo up
# CRIU lazy pages want 4 MiB pipes (as scripts/setup.sh sets on hosts)
echo 4194304 > /proc/sys/fs/pipe-max-size
# soft-dirty tracking is per 2 MiB on huge pages; the kernel command line says
# never, say it again for kernels that ignore it
echo never > /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null

SCRIPT=$(cat /etc/fm-vm/script)
[ -f "$SCRIPT" ] || fail "no test script at $SCRIPT"
eval "set -- $(cat /etc/fm-vm/args)"
export FM_VM=1 FM_ROOT=/fm FM_CRIU="$(cat /etc/fm-vm/criu)"
PATH=$PATH:${FM_CRIU%/criu}
echo "fm-vm: guest up in $(cut -d' ' -f1 /proc/uptime) s: kernel $KV, $(grep -c ^processor /proc/cpuinfo) CPUs," \
    "$(awk '/MemTotal/ { print int($2 / 1024) }' /proc/meminfo) MiB; running ${SCRIPT#/fm/} $*"
cd /fm || fail "no /fm"
# /bin/sh is dash, as on our hosts (busybox's sh would run its own applets, such as
# its `ip`, before the real programs on PATH)
/bin/sh "$SCRIPT" "$@" </dev/null
rc=$?
echo "fm-vm: ${SCRIPT#/fm/} exited $rc at $(cut -d' ' -f1 /proc/uptime) s guest uptime"
finish "$rc"
