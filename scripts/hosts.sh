#!/bin/sh
# Namespace "hosts" for the demo, the tests and the benchmarks: network namespaces
# joined by one veth link, both ends shaped with HTB (a real rate limit, not a
# simulation: iperf3 measures ~941 Mbit/s at 1gbit).  Each host has a bridge
# (fmbr, the daemons' --bridge) holding its end of the link and its address, so
# the hosts share one layer-2 segment: containers with addresses on it
# (container run --ip 10.77.N.X/24) keep them when they move.  A third
# namespace, PREFIX-c (10.77.N.3), is an external client on host A's bridge.
#
#   hosts.sh up [RATE] [PREFIX]   create PREFIX-a (10.77.0.1) and PREFIX-b (10.77.0.2)
#                                 RATE: tc rate such as 1gbit, 100mbit, or "none"
#   hosts.sh down [PREFIX]        remove them
#   hosts.sh link up|down [PREFIX]  set the link (fault injection: cut the wire)
#   hosts.sh rate RATE [PREFIX]   reshape the link of hosts that are up (RATE as for up)
#
# PREFIX defaults to fm; the subnet is 10.77.N.0/24 with N from $FM_NET (default 0)
# so parallel test runs can use distinct prefixes.
set -eu
cmd=${1:-up}
case "$cmd" in
up) RATE=${2:-1gbit}; P=${3:-fm} ;;
down) P=${2:-fm} ;;
link) STATE=${2:?up or down}; P=${3:-fm} ;;
rate) RATE=${2:?a tc rate such as 100mbit}; P=${3:-fm} ;;
*) echo "usage: hosts.sh up [RATE] [PREFIX] | down [PREFIX] | link up|down [PREFIX] | rate RATE [PREFIX]" >&2
   exit 2 ;;
esac
N=${FM_NET:-0}
A=$P-a; B=$P-b
VA=${P}va; VB=${P}vb

case "$cmd" in
down)
    ip netns del "$A" 2>/dev/null || true
    ip netns del "$B" 2>/dev/null || true
    ip netns del "$P-c" 2>/dev/null || true
    exit 0 ;;
link)
    ip -n "$A" link set "$VA" "$STATE"
    ip -n "$B" link set "$VB" "$STATE"
    exit 0 ;;
rate)
    for x in "$A $VA" "$B $VB"; do
        # shellcheck disable=SC2086
        set -- $x
        tc -n "$1" class change dev "$2" parent 1: classid 1:10 htb rate "$RATE" ceil "$RATE" quantum 60000 \
            || { echo "hosts.sh: cannot reshape $2 in $1 (was it brought up with a rate?)" >&2; exit 1; }
    done
    echo "link $A <-> $B shaped to $RATE"
    exit 0 ;;
esac

C=$P-c
for ns in "$A" "$B" "$C"; do ip netns del "$ns" 2>/dev/null || true; ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip link add "$VA" type veth peer name "$VB"
ip link set "$VA" netns "$A"
ip link set "$VB" netns "$B"
for x in "$A $VA 1" "$B $VB 2"; do
    # shellcheck disable=SC2086
    set -- $x
    ip -n "$1" link add fmbr type bridge
    ip -n "$1" link set "$2" master fmbr
    # a fixed address: a bridge takes the lowest MAC of its ports, which changes
    # as container ports come and go, under the other host's ARP cache
    ip -n "$1" link set fmbr address "$(ip -n "$1" -o link show "$2" | sed 's/.*link\/ether \([^ ]*\).*/\1/')"
    ip -n "$1" addr add "10.77.$N.$3/24" dev fmbr
    ip -n "$1" link set fmbr up
    ip -n "$1" link set "$2" up
done
ip link add "${P}vc" netns "$A" type veth peer name eth0 netns "$C"
ip -n "$A" link set "${P}vc" master fmbr up
ip -n "$C" addr add "10.77.$N.3/24" dev eth0
ip -n "$C" link set eth0 up
if [ "$RATE" != none ]; then
    for x in "$A $VA" "$B $VB"; do
        # shellcheck disable=SC2086
        set -- $x
        tc -n "$1" qdisc add dev "$2" root handle 1: htb default 10
        tc -n "$1" class add dev "$2" parent 1: classid 1:10 htb rate "$RATE" ceil "$RATE" quantum 60000
    done
fi
# prove the link carries packets before anyone relies on it
nsenter --net="/run/netns/$A" busybox ping -c1 -W2 "10.77.$N.2" >/dev/null \
    || { echo "hosts.sh: link $A <-> $B does not pass packets" >&2; exit 1; }
echo "hosts $A (10.77.$N.1) and $B (10.77.$N.2) up, link shaped to $RATE; client $C (10.77.$N.3)"
