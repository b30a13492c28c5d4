#!/bin/sh
# In-guest test on the unified cgroup hierarchy alone, as Debian 12 mounts it
# (tests/vm/run --cgroup v2 tests/vm/monitor-v2.sh; make check runs it): the
# Resource Monitor reads a container's CPU and memory from cgroup v2
# (cpu.stat, memory.current), the Decision Engine classifies it from them, and
# the Prometheus exposition carries them.  (Migrations on v2 alone wait for
# runc >= 1.2: tests/vm/README.md.)
set -eu
. "$FM_ROOT/tests/vm/lib.sh"

vm_step "cgroup v2 alone"
[ -f /sys/fs/cgroup/cgroup.controllers ] || vm_fail "/sys/fs/cgroup is not the unified hierarchy"
[ ! -d /sys/fs/cgroup/unified ] || vm_fail "a hybrid layout: run with --cgroup v2"

vm_step "a daemon and a busy container"
vm_hosts_up none
vm_daemon_start hostA vm-a "10.77.$FM_NET.1"
"$FM_ROOT/scripts/mk-rootfs.sh" "$VM_WORK/rootfs"
fm hostA image import busybox "$VM_WORK/rootfs"
fm hostA run busy --image busybox -- /bin/sh -c 'while :; do :; done'

usage() { fm hostA container show busy --json | tr -d ' \n'; }
# "usage":{"cgroup_version":2,"cpu_utilization_percent":{"last":..,"max":..,"mean":..,...,"samples":N}
samples() { usage | grep -o '"cpu_utilization_percent":{[^}]*}' | grep -o '"samples":[0-9]*' | cut -d: -f2; }
has_samples() { n=$(samples); [ -n "$n" ] && [ "$n" -ge 3 ]; }
vm_wait_for 60 "three CPU samples of busy" has_samples
U=$(usage)
echo "$U" | grep -o '"usage":.*' | cut -c1-400
echo "$U" | grep -q '"cgroup_version":2' || vm_fail "the figures did not come from cgroup v2"
MEAN=$(echo "$U" | grep -o '"cpu_utilization_percent":{[^}]*}' | grep -o '"mean":[0-9.]*' | cut -d: -f2)
MEM=$(echo "$U" | grep -o '"memory_bytes":{[^}]*}' | grep -o '"last":[0-9.]*' | cut -d: -f2)
echo "busy: CPU mean $MEAN % of a core, memory $MEM bytes (cgroup v2)"
awk -v m="$MEAN" 'BEGIN { exit !(m > 10) }' || vm_fail "a spinning shell measured at $MEAN % of a core"
awk -v m="$MEM" 'BEGIN { exit !(m > 0) }' || vm_fail "no memory figure"

vm_step "the Decision Engine's view"
fm hostA plan | tee "$VM_WORK/plan.out"
grep -q '^busy  *CPU-bound' "$VM_WORK/plan.out" || vm_fail "busy is not classified CPU-bound"

vm_step "Prometheus metrics, over TCP with the cluster secret, as Prometheus scrapes them"
nsenter --net=/run/netns/vm-a busybox wget -q -O "$VM_WORK/metrics.out" \
    --header "Authorization: Bearer $(cat "$VM_WORK/secret")" "http://10.77.$FM_NET.1:7070/metrics" ||
    vm_fail "GET /metrics failed"
grep '^fleximigrate_container_' "$VM_WORK/metrics.out"
grep -q '^fleximigrate_container_cpu_seconds_total{container="busy"}' "$VM_WORK/metrics.out" ||
    vm_fail "no container CPU metric in GET /metrics"
vm_pass "the Resource Monitor on cgroup v2"
