#!/bin/sh
# `make demo-fabric`: a migration across a switched fabric.  Open vSwitch runs
# in userspace in its own namespace (scripts/fabric.sh) between hosts A and B
# and a client; host A's controller programs it (--sdn).  A container with its
# own address answers the client's pings on host A; it moves to host B, and the
# switch's flows move its address after it: the client reaches it throughout.
#
#   KEEP=1 demo/fabric.sh   leave the fabric and daemons running afterwards
set -eu
cd "$(dirname "$0")/.."
TOP=$PWD
BIN=$TOP/build/src
W=/tmp/fleximigrate-demo-fabric
export FM_NET=8
P=demof
RUN=/run/fleximigrate/fabric-$P
export FM_FABRIC_RUN=$RUN
IP=10.77.$FM_NET.50
. "$TOP/demo/lib.sh"
demo_require demo-fabric

cleanup() {
    [ "${KEEP:-0}" = 1 ] && { echo "(KEEP=1: left running; scripts/fabric.sh down $P to remove)"; return; }
    demo_stop_hosts
    for h in a b; do
        for ns in $(ip netns list | awk '{print $1}' | grep "^fm-host$(echo $h | tr ab AB)-" || true); do ip netns del "$ns"; done
    done
    "$TOP/scripts/fabric.sh" down $P
    rm -rf "$W"
}
trap cleanup EXIT INT TERM
KEEP=0 cleanup 2>/dev/null || true
mkdir -p "$W"

say "Open vSwitch in userspace between hosts A, B, E and a client"
"$TOP/scripts/fabric.sh" up $P

say "A fleximigrated on hosts A and B; A's controller programs the switch"
demo_secret
for h in a b; do
    H=host$(echo $h | tr ab AB)
    ip=10.77.$FM_NET.$([ $h = a ] && echo 1 || echo 2)
    extra=""
    [ $h = a ] && extra="--sdn unix:$RUN/fmsw.mgmt --ovsdb unix:$RUN/db.sock"
    # shellcheck disable=SC2086
    nsenter --net=/run/netns/$P-$h "$BIN/fleximigrated" --name "$H" --listen "$ip:7070" --bridge fmbr \
        --socket "$W/$h.sock" --state-dir "$W/host$h" --secret-file "$W/secret" --switch-port "$P$h" $extra \
        >"$W/$h.log" 2>&1 &
    echo $! > "$W/$h.pid"
done
A="$BIN/fleximigrate -s $W/a.sock"
demo_wait_daemons
grep NetworkManager "$W/a.log" || true
$A host add hostB 10.77.$FM_NET.2:7070

say "A container with its own address ($IP) on host A"
"$TOP/scripts/mk-rootfs.sh" "$W/rootfs"
$A image import busybox "$W/rootfs"
$A run web --image busybox --ip "$IP/24" -- /bin/sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.1; done'
i=0; until nsenter --net=/run/netns/$P-c busybox ping -c1 -W1 "$IP" >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -lt 50 ] || { echo "demo: the client cannot reach $IP"; exit 1; }; sleep 0.1
done
echo "the client reaches $IP (on host A)"

say "The client pings it every 10 ms while it moves to host B"
nsenter --net=/run/netns/$P-c busybox ping -i 0.01 -c 500 -q "$IP" > "$W/ping.out" 2>&1 &
PING=$!
sleep 1
$A migrate web --to hostB -v
wait $PING || true
tail -n 2 "$W/ping.out"

say "The switch's flows for $IP (FlexiMigrate's cookie space, 0x464d...)"
ovs-ofctl -O OpenFlow13 dump-flows "unix:$RUN/fmsw.mgmt" | grep -e 0x464d -e NORMAL
nsenter --net=/run/netns/$P-c busybox ping -c1 -W1 "$IP" >/dev/null && echo "the client reaches $IP (now on host B)"
echo
echo "demo: OK — web moved from host A to host B across the switch; its address followed it"
