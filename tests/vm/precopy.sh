#!/bin/sh
# In-guest test of PRE_COPY and HYBRID (tests/vm/run tests/vm/precopy.sh): they need
# dirty-memory tracking, which our hosts' kernels lack and Debian's stock kernel in
# the VM has.  Two namespace hosts, a fleximigrated in each, busy fm-memload
# containers whose every page is verified after each move:
#   1. 64 MiB with an 8 MiB working set: COLD_MIGRATION A -> B (the plain dump's
#      freeze), then PRE_COPY B -> A: pre-copy rounds shrink to about the working
#      set, the final freeze is shorter than the plain dump's, memory intact;
#   2. 64 MiB rewritten whole (W = M): HYBRID A -> B: the rounds do not converge,
#      HYBRID switches to post-copy, memory intact;
#   3. the same with PRE_COPY --auto-converge B -> A: the container's CPU is
#      limited step by step, memory intact.
set -eu
. "$FM_ROOT/tests/vm/lib.sh"
SIZE=64
T0=$(vm_now)

vm_step "hosts and daemons"
"$FM_CRIU" check --feature mem_dirty_track || vm_fail "criu check --feature mem_dirty_track"
vm_hosts_up none
vm_daemon_start hostA vm-a "10.77.$FM_NET.1"
vm_daemon_start hostB vm-b "10.77.$FM_NET.2"
fm hostA host add hostB "10.77.$FM_NET.2:7070"
fm hostB host add hostA "10.77.$FM_NET.1:7070"
"$FM_ROOT/scripts/mk-rootfs.sh" "$VM_WORK/rootfs-memload"
cp "$FM_ROOT/build/fm-memload" "$VM_WORK/rootfs-memload/bin/fm-memload"
fm hostA image import memload "$VM_WORK/rootfs-memload"
fm hostB image import memload "$VM_WORK/rootfs-memload"

scanned() { [ "$(vm_memload "$1" "$2" full_scans)" -ge "$3" ] 2>/dev/null; }

# migrate FROM TO NAME ARGS...: runs a migration that must complete; sets MID,
# DOWNTIME and leaves the output in $VM_WORK/migrate.out
migrate() {
    _from=$1 _to=$2 _name=$3; shift 3
    fm "$_from" migrate -v "$_name" --to "$_to" "$@" > "$VM_WORK/migrate.out" 2>&1 || {
        cat "$VM_WORK/migrate.out"; vm_fail "migrate $_name $_from -> $_to $* exited non-zero"; }
    cat "$VM_WORK/migrate.out"
    MID=$(awk '$1 == "migration" { print $2; exit }' "$VM_WORK/migrate.out")
    fm "$_from" migration show "$MID" --json > "$VM_WORK/migration.json"
    [ "$(vm_json_str state < "$VM_WORK/migration.json")" = COMPLETED ] || vm_fail "migration $MID did not complete"
    DOWNTIME=$(vm_json_num downtime_ms < "$VM_WORK/migration.json")
    # the dump's own time: "Checkpoint of X done: frozen in A ms, dumped in B ms"
    DUMP_MS=$(sed -n 's/.*dumped in \([0-9]*\).*/\1/p' "$VM_WORK/migrate.out" | head -n1)
}

# intact HOST NAME: no error, and a whole verification pass of every page after the move
intact() {
    vm_wait_for 60 "fm-memload's status on $1" vm_memload "$1" "$2" errors
    [ "$(vm_memload "$1" "$2" errors)" = 0 ] || vm_fail "corrupted memory on $1: $(vm_memload "$1" "$2")"
    _s=$(vm_memload "$1" "$2" full_scans)
    vm_wait_for 180 "a full verification pass of $2 on $1" scanned "$1" "$2" $((_s + 1))
    [ "$(vm_memload "$1" "$2" errors)" = 0 ] || vm_fail "corrupted memory on $1: $(vm_memload "$1" "$2")"
    echo "fm-memload $2 on $1: $(vm_memload "$1" "$2")"
}

vm_step "1. 64 MiB, 8 MiB working set: COLD, then PRE_COPY back"
fm hostA run mem --image memload -- /bin/fm-memload "$SIZE" 8 /tmp/memload.status
vm_wait_for 120 "fm-memload to fill its memory" scanned hostA mem 1
# --no-overlap: a plain dump of all the memory (streamed to a page server), the
# figure the final pre-copy dump is held against (an overlapped COLD dumps all
# but the memory)
migrate hostA hostB mem --strategy COLD_MIGRATION --no-overlap
COLD_DOWNTIME=$DOWNTIME COLD_DUMP=$DUMP_MS
intact hostB mem
migrate hostB hostA mem --strategy PRE_COPY
PRE_DOWNTIME=$DOWNTIME PRE_DUMP=$DUMP_MS
grep -q "Pre-copy round 2" "$VM_WORK/migrate.out" || vm_fail "PRE_COPY made fewer than two rounds"
grep -q -e "Pre-copy reached the working set" -e "Pre-copy converged" "$VM_WORK/migrate.out" \
    || vm_fail "PRE_COPY with an 8 MiB working set did not converge"
intact hostA mem
# the final dump (8 MiB left) against a plain dump of all 64 MiB; the downtimes
# also hold runc's restore, seconds under TCG either way
echo "final dump: PRE_COPY ${PRE_DUMP} ms, plain (COLD) ${COLD_DUMP} ms;" \
     "downtime: PRE_COPY ${PRE_DOWNTIME} ms, COLD ${COLD_DOWNTIME} ms"
[ "$PRE_DUMP" -lt "$COLD_DUMP" ] \
    || vm_fail "PRE_COPY's final dump ($PRE_DUMP ms) is not shorter than a plain dump ($COLD_DUMP ms)"
fm hostA container rm mem --force

vm_step "2. 64 MiB rewritten whole: HYBRID switches to post-copy"
fm hostA run hot --image memload -- /bin/fm-memload "$SIZE" "$SIZE" /tmp/memload.status
vm_wait_for 120 "fm-memload to fill its memory" scanned hostA hot 1
migrate hostA hostB hot --strategy HYBRID
grep -q "HYBRID switches to post-copy" "$VM_WORK/migrate.out" \
    || grep -q "Pre-copy converged" "$VM_WORK/migrate.out" \
    || vm_fail "HYBRID neither converged nor switched to post-copy"
intact hostB hot

vm_step "3. the same with PRE_COPY --auto-converge"
migrate hostB hostA hot --strategy PRE_COPY --auto-converge
intact hostA hot
grep -q "Auto-converge" "$VM_WORK/migrate.out" || grep -q "Pre-copy converged" "$VM_WORK/migrate.out" \
    || vm_fail "PRE_COPY --auto-converge neither throttled nor converged"

vm_step "timings (guest seconds, TCG)"
echo "downtime: COLD $COLD_DOWNTIME ms, PRE_COPY $PRE_DOWNTIME ms; test $(vm_since "$T0") s"
vm_pass "PRE_COPY, HYBRID and auto-converge in the VM, memory intact"
