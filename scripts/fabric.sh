#!/bin/sh
# A switched fabric for the Network Manager's tests and demo: Open vSwitch 3.1
# in userspace (netdev datapath, userspace TSO on, no kernel module, no
# systemd) in a namespace of its own, with three namespace hosts and a client
# attached to it:
#
#   PREFIX-sw   ovsdb-server + ovs-vswitchd, bridge fmsw (OpenFlow 1.3,
#               fail-mode standalone: it switches by itself until programmed)
#   PREFIX-a    host A, 10.77.N.1 on its bridge fmbr, uplink to fmsw port 1
#   PREFIX-b    host B, 10.77.N.2,                   fmsw port 2
#   PREFIX-e    host E (an edge), 10.77.N.4,         fmsw port 3
#   PREFIX-c    a client, 10.77.N.3,                 fmsw port 10
#
# As with scripts/hosts.sh, each host's bridge fmbr is the daemons' --bridge:
# containers with addresses on it (container run --ip 10.77.N.X/24) keep them
# when they move, and the hosts share one layer-2 segment, through the switch.
#
#   fabric.sh up [PREFIX]              create it (an old one of PREFIX goes first)
#   fabric.sh down [PREFIX]            remove it
#   fabric.sh switch-restart [PREFIX]  kill ovs-vswitchd and start it again
#                                      (its flows are gone: controllers replay theirs)
#   fabric.sh env [PREFIX]             print OVS_RUNDIR=... and the bridge's sockets
#
# PREFIX defaults to fmf; N is $FM_NET (default 0).  The switch's files live in
# $FM_FABRIC_RUN (default /run/fleximigrate/fabric-PREFIX): db.sock (OVSDB),
# fmsw.mgmt (the bridge's OpenFlow management socket), logs.  ovs-vsctl,
# ovs-ofctl and ovs-appctl reach them with OVS_RUNDIR set to it.
set -eu
cmd=${1:-up}
P=${2:-fmf}
N=${FM_NET:-0}
RUN=${FM_FABRIC_RUN:-/run/fleximigrate/fabric-$P}
SW=$P-sw
BR=fmsw
export OVS_RUNDIR="$RUN" OVS_LOGDIR="$RUN" OVS_DBDIR="$RUN" OVS_SYSCONFDIR="$RUN"
VS="ovs-vsctl --db=unix:$RUN/db.sock --timeout=10"
X="nsenter --net=/run/netns/$SW"

stop_switch() {
    for d in ovs-vswitchd ovsdb-server; do
        [ -f "$RUN/$d.pid" ] || continue
        pid=$(cat "$RUN/$d.pid" 2>/dev/null || true)
        [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
        i=0
        while [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
        [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
        rm -f "$RUN/$d.pid"
    done
}

start_vswitchd() {
    $X ovs-vswitchd "unix:$RUN/db.sock" --pidfile="$RUN/ovs-vswitchd.pid" --detach \
        --log-file="$RUN/ovs-vswitchd.log" -vconsole:off
}

down() {
    stop_switch
    for h in a b e c sw; do ip netns del "$P-$h" 2>/dev/null || true; done
    rm -rf "$RUN"
}

case "$cmd" in
down) down; exit 0 ;;
env) echo "OVS_RUNDIR=$RUN DB=unix:$RUN/db.sock MGMT=unix:$RUN/$BR.mgmt BRIDGE=$BR"; exit 0 ;;
switch-restart)
    pid=$(cat "$RUN/ovs-vswitchd.pid")
    kill -9 "$pid"
    i=0
    while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    rm -f "$RUN/ovs-vswitchd.pid"
    start_vswitchd
    # up when the bridge's management socket answers again
    i=0
    until ovs-ofctl -O OpenFlow13 show "unix:$RUN/$BR.mgmt" >/dev/null 2>&1; do
        [ $i -lt 100 ] || { echo "fabric.sh: ovs-vswitchd did not come back" >&2; exit 1; }
        sleep 0.05; i=$((i + 1))
    done
    echo "ovs-vswitchd restarted (pid $(cat "$RUN/ovs-vswitchd.pid")), flows gone"
    exit 0 ;;
up) ;;
*) echo "usage: fabric.sh up|down|switch-restart|env [PREFIX]" >&2; exit 2 ;;
esac

command -v ovs-vswitchd >/dev/null || { echo "fabric.sh: Open vSwitch is missing: apt-get install openvswitch-switch (scripts/setup.sh)" >&2; exit 1; }
down
mkdir -p "$RUN"
chmod 700 "$RUN"
ip netns add "$SW"
$X ip link set lo up
ovsdb-tool create "$RUN/conf.db" /usr/share/openvswitch/vswitch.ovsschema
$X ovsdb-server "$RUN/conf.db" --remote="punix:$RUN/db.sock" --pidfile="$RUN/ovsdb-server.pid" --detach \
    --log-file="$RUN/ovsdb-server.log" -vconsole:off
$VS --no-wait init
# read at ovs-vswitchd's start only: without it TCP and UDP through a netdev
# bridge fail on checksums unless every end turns tx offload off
$VS --no-wait set Open_vSwitch . other_config:userspace-tso-enable=true
start_vswitchd
$VS add-br $BR -- set bridge $BR datapath_type=netdev protocols=OpenFlow13 fail_mode=standalone

# hosts: a Linux bridge fmbr holding the address and the uplink to the switch
for x in "a 1 1" "b 2 2" "e 4 3"; do
    # shellcheck disable=SC2086
    set -- $x
    ns=$P-$1
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip link add up0 netns "$ns" type veth peer name "${P}$1" netns "$SW"
    ip -n "$ns" link add fmbr type bridge
    ip -n "$ns" link set up0 master fmbr
    # a fixed address: a bridge takes the lowest MAC of its ports, which changes
    # as container ports come and go, under the other hosts' ARP caches
    ip -n "$ns" link set fmbr address "$(ip -n "$ns" -o link show up0 | sed 's/.*link\/ether \([^ ]*\).*/\1/')"
    ip -n "$ns" addr add "10.77.$N.$2/24" dev fmbr
    ip -n "$ns" link set fmbr up
    ip -n "$ns" link set up0 up
    ip -n "$SW" link set "${P}$1" up
    $VS add-port $BR "${P}$1" -- set interface "${P}$1" ofport_request="$3"
done
ip netns add "$P-c"
ip -n "$P-c" link set lo up
ip link add eth0 netns "$P-c" type veth peer name "${P}c" netns "$SW"
ip -n "$P-c" addr add "10.77.$N.3/24" dev eth0
ip -n "$P-c" link set eth0 up
ip -n "$SW" link set "${P}c" up
$VS add-port $BR "${P}c" -- set interface "${P}c" ofport_request=10

# prove the fabric carries packets (and TCP: the checksum pitfall) before anyone relies on it
for h in 2 4; do
    nsenter --net="/run/netns/$P-a" busybox ping -c1 -W2 "10.77.$N.$h" >/dev/null \
        || { echo "fabric.sh: $P-a cannot reach 10.77.$N.$h through the switch" >&2; exit 1; }
done
echo "fabric $P up: switch $SW (ovs-vswitchd $(cat "$RUN/ovs-vswitchd.pid"), bridge $BR, $RUN), hosts $P-a (10.77.$N.1, port 1), $P-b (.2, port 2), $P-e (.4, port 3), client $P-c (.3, port 10)"
