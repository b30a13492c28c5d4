#!/bin/sh
# In-guest smoke test of the VM harness (tests/vm/run tests/vm/smoke.sh; make vm-check):
# the guest's CRIU can track dirty memory, and a real migration works in the guest
# as it does on our hosts: two namespace hosts, a fleximigrated in each, a busy
# fm-memload container (64 MiB, 8 MiB working set) moved by COLD_MIGRATION, its
# memory intact on the destination.  Prints the time of every step.
set -eu
. "$FM_ROOT/tests/vm/lib.sh"
SIZE=64 HOT=8
T0=$(vm_now)

vm_step "CRIU tracks dirty memory (soft-dirty)"
"$FM_CRIU" --version | head -n1
"$FM_CRIU" check --feature mem_dirty_track || vm_fail "criu check --feature mem_dirty_track"

vm_step "hosts and daemons"
t=$(vm_now)
vm_hosts_up none
T_HOSTS=$(vm_since "$t")
t=$(vm_now)
vm_daemon_start hostA vm-a "10.77.$FM_NET.1"
vm_daemon_start hostB vm-b "10.77.$FM_NET.2"
T_DAEMONS=$(vm_since "$t")
fm hostA host add hostB "10.77.$FM_NET.2:7070"
fm hostB host add hostA "10.77.$FM_NET.1:7070"
fm hostA host info | grep -i -e criu -e kernel || true

vm_step "image and container"
t=$(vm_now)
"$FM_ROOT/scripts/mk-rootfs.sh" "$VM_WORK/rootfs-memload"
cp "$FM_ROOT/build/fm-memload" "$VM_WORK/rootfs-memload/bin/fm-memload"
fm hostA image import memload "$VM_WORK/rootfs-memload"
T_IMPORT=$(vm_since "$t")
t=$(vm_now)
fm hostA run mem --image memload -- /bin/fm-memload "$SIZE" "$HOT" /tmp/memload.status
# filled, and one whole verification pass done
vm_wait_for 120 "fm-memload to fill its memory on hostA" vm_memload_at_least hostA mem full_scans 1
T_FILL=$(vm_since "$t")
BEFORE=$(vm_memload hostA mem)
echo "fm-memload on hostA: $BEFORE"
[ "$(vm_memload hostA mem errors)" = 0 ] || vm_fail "fm-memload reports errors before the migration"

vm_step "COLD_MIGRATION hostA -> hostB"
t=$(vm_now)
fm hostA migrate -v mem --to hostB --strategy COLD_MIGRATION > "$VM_WORK/migrate.out" 2>&1 || {
    cat "$VM_WORK/migrate.out"; vm_fail "fleximigrate migrate exited non-zero"; }
T_MIGRATE=$(vm_since "$t")
cat "$VM_WORK/migrate.out"
MID=$(awk '$1 == "migration" { print $2; exit }' "$VM_WORK/migrate.out")
[ -n "$MID" ] || vm_fail "no migration id in the output of fleximigrate migrate"
fm hostA migration show "$MID" --json > "$VM_WORK/migration.json"
STATE=$(vm_json_str state < "$VM_WORK/migration.json")
DOWNTIME=$(vm_json_num downtime_ms < "$VM_WORK/migration.json")
BYTES=$(vm_json_num bytes_transferred < "$VM_WORK/migration.json")
[ "$STATE" = COMPLETED ] || vm_fail "migration $MID ended $STATE"

vm_step "memory intact on hostB"
fm hostB container list
fm hostA container list | grep -qw mem && vm_fail "mem is still on hostA"
vm_wait_for 30 "fm-memload's status on hostB" vm_memload_at_least hostB mem iterations 0
AFTER=$(vm_memload hostB mem)
echo "fm-memload on hostB: $AFTER"
[ "$(vm_memload hostB mem errors)" = 0 ] || vm_fail "fm-memload found corrupted memory on hostB: $AFTER"
[ "$(vm_memload hostB mem iterations)" -ge "$(echo "$BEFORE" | cut -d' ' -f1)" ] \
    || vm_fail "fm-memload on hostB went back in time: before $BEFORE, after $AFTER"
# a whole verification of every page on the destination, still without an error
t=$(vm_now)
s=$(vm_memload hostB mem full_scans)
vm_wait_for 120 "a full verification pass on hostB" vm_memload_at_least hostB mem full_scans $((s + 1))
T_VERIFY=$(vm_since "$t")
AFTER=$(vm_memload hostB mem)
echo "fm-memload on hostB: $AFTER"
[ "$(vm_memload hostB mem errors)" = 0 ] || vm_fail "fm-memload found corrupted memory on hostB: $AFTER"

vm_step "timings (guest seconds, TCG)"
echo "hosts up $T_HOSTS s, two daemons up $T_DAEMONS s, image import $T_IMPORT s,"
echo "fm-memload ${SIZE} MiB filled and verified $T_FILL s, migration $T_MIGRATE s" \
    "(downtime ${DOWNTIME:-?} ms, ${BYTES:-?} bytes), full verification on hostB $T_VERIFY s,"
echo "test $(vm_since "$T0") s, guest uptime $(vm_now) s"
vm_pass "COLD_MIGRATION of a busy ${SIZE} MiB container in the VM, memory intact"
