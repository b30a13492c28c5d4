#!/bin/sh
# `make demo`: a real migration of a running container between two hosts.
#
# Two hosts are network namespaces (demo-a 10.77.9.1, demo-b 10.77.9.2) joined by a
# veth link shaped to 1 Gbit/s; each runs its own fleximigrated with its own state
# directory, so the checkpoint really crosses the link.  A busybox container on
# host A counts in its own memory and writes the count to a file; we migrate it to
# host B and show that the count goes on from where it was and that nothing is
# left on host A.
#
#   KEEP=1 demo/demo.sh   leave hosts and daemons running afterwards
set -eu
cd "$(dirname "$0")/.."
TOP=$PWD
BIN=$TOP/build/src
W=/tmp/fleximigrate-demo
export FM_NET=9
P=demo
. "$TOP/demo/lib.sh"
demo_require demo

cleanup() {
    [ "${KEEP:-0}" = 1 ] && { echo "(KEEP=1: hosts and daemons left running; scripts/hosts.sh down $P to remove)"; return; }
    demo_stop_hosts
    "$TOP/scripts/hosts.sh" down $P
    rm -rf "$W"
}
trap cleanup EXIT INT TERM

cleanup_previous() {
    KEEP=0 cleanup 2>/dev/null || true
}
cleanup_previous
mkdir -p "$W"

say "Two hosts joined by a link shaped to 1 Gbit/s"
"$TOP/scripts/hosts.sh" up 1gbit $P

say "A fleximigrated on each host (sharing a cluster secret)"
demo_secret
for h in a b; do
    H=host$(echo $h | tr ab AB)
    ip=10.77.$FM_NET.$([ $h = a ] && echo 1 || echo 2)
    nsenter --net=/run/netns/$P-$h "$BIN/fleximigrated" --name "$H" --listen "$ip:7070" \
        --socket "$W/$h.sock" --state-dir "$W/host$h" --secret-file "$W/secret" >"$W/$h.log" 2>&1 &
    echo $! > "$W/$h.pid"
done
A="$BIN/fleximigrate -s $W/a.sock"
B="$BIN/fleximigrate -s $W/b.sock"
demo_wait_daemons
head -n1 "$W/a.log"
head -n1 "$W/b.log"
$A host add hostB 10.77.$FM_NET.2:7070
$A host list

say "An image (busybox) and a container on host A whose state keeps changing"
"$TOP/scripts/mk-rootfs.sh" "$W/rootfs"
$A image import busybox "$W/rootfs"
$A run counter --image busybox -- /bin/sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.1; done'
CA=$W/hosta/containers/counter/rootfs/tmp/counter
CB=$W/hostb/containers/counter/rootfs/tmp/counter
sleep 1
for k in 1 2 3; do echo "counter on host A: $(cat "$CA")"; sleep 0.5; done
$A container list

say "Migrating counter to host B (the log below is the migration's own)"
before=$(cat "$CA")
$A migrate counter --to hostB -v
MID=$($A migration list | awk 'NR > 1 { id = $1 } END { print id }')

say "Continuity: the counter goes on where it was, on host B"
echo "last value seen on host A before the move: $before"
for k in 1 2 3; do echo "counter on host B: $(cat "$CB")"; sleep 0.5; done
after=$(cat "$CB")
[ "$after" -gt "$before" ] || { echo "demo: counter did not continue ($before -> $after)"; exit 1; }
$B container list

say "Nothing remains on host A"
$A container list
left=$(runc --root "$W/hosta/runc" list -q | wc -l)
echo "runc containers on host A: $left; bundle dir: $(ls "$W/hosta/containers" | wc -l) entries"
[ "$left" = 0 ] || { echo "demo: container left on host A"; exit 1; }

say "The migration record"
$A migration show "$MID"
echo
echo "demo: OK — counter moved from host A to host B and kept counting ($before -> $after)"
