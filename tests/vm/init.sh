#!/bin/busybox sh
# /init of the test VM (tests/vm/run builds the initramfs).  Sets the guest up the
# way our hosts are set up, runs the test script the runner chose (/etc/fm-vm/script
# with the arguments in /etc/fm-vm/args) as root in /fm, prints
# "FM-VM-EXIT <status> <nonce>" on the console and powers the guest off.
#
# Not `set -e`: if /init exits the kernel panics and the runner only learns that
# something broke; every failure here is reported and ends in the marker.

# runc and CRIU pivot_root(2) into containers, which the initramfs itself (rootfs,
# the root of all mounts) does not allow.  Bind-mount it onto itself and chroot into
# that: the same files, now on a mount with a parent (no copy: it would cost 2.6 s).
if [ "${1:-}" != --fm-stage2 ]; then
    /bin/busybox mount --bind / /mnt
    cd /mnt || exit 1
    /bin/busybox mount --move . /
    exec /bin/busybox chroot . /init --fm-stage2
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
# cgroups as on our hosts: v1 controller hierarchies plus the unified hierarchy at
# /sys/fs/cgroup/unified ("hybrid"), or the unified hierarchy alone ("v2", Debian
# 12's default).  runc 1.1 restores differently on the two: on v2 it leaves the
# cgroup to CRIU, which puts the tasks back into the cgroup they were dumped from.
case "$(cat /etc/fm-vm/cgroup)" in
v2)
    mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup || fail "cannot mount cgroup2" ;;
*)
    mount -t tmpfs -o mode=755 tmpfs /sys/fs/cgroup
    for c in cpu cpuacct cpuset memory devices freezer blkio pids; do
        mkdir -p "/sys/fs/cgroup/$c"
        mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c" || fail "cannot mount the $c cgroup hierarchy"
    done
    mkdir -p /sys/fs/cgroup/unified
    mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified || fail "cannot mount cgroup2" ;;
esac
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
FM_CRIU=$(cat /etc/fm-vm/criu)
export FM_VM=1 FM_ROOT=/fm FM_CRIU
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
