"""Diskless COLD whose restore overlaps the memory's transfer: the destination
restores at once and holds the restored processes at CRIU's pre-resume while
the memory streams into them; they run only once all of it is there.  So a
failure or a cancel while the memory is in flight rolls back to the source
with nothing lost: the destination copy never ran."""
import subprocess
import time

import os

from conftest import assert_clean_destination, assert_failed_with_rollback, migration, wait_finished, wait_for
from test_postcopy import counter_of

# 60 MB of base64 of random bytes held in the shell's memory (zstd keeps ~3/4
# of it: ~3.6 s at 100 Mbit/s); every iteration reads all of it (${#x})
SIZE = 60000000
MEM_CMD = ["/bin/sh", "-c", f"x=$(head -c {SIZE * 3 // 4} /dev/urandom | base64 -w 0); i=0; "
                            'while :; do i=$((i+1)); echo "$i ${#x}" > /tmp/counter; sleep 0.05; done']


def start_mem(d):
    d.cli("run", "mem", "--image", "busybox", "--", *MEM_CMD)
    wait_for(lambda: os.path.exists(os.path.join(d.state, "containers/mem/rootfs/tmp/counter")), 30, "start")


def events(d, mid):
    return [e["message"] for e in migration(d, mid)["events"]]


def cold_until_memory_in_flight(a):
    """Starts a COLD of mem A -> B (100 Mbit/s: its memory takes ~4.5 s) and
    returns its id once the memory streams into the held copy (the freeze,
    the dump, ~0.2 s, and a margin; the controller logs the checkpoint only
    with the restore's answer)."""
    mid = a.cli("migrate", "mem", "--to", "hostB", "--detach").stdout.strip()
    wait_for(lambda: any(m.startswith("Freezing mem on hostA") for m in events(a, mid)), 30, "the freeze")
    time.sleep(1.0)
    m = migration(a, mid)
    msgs = [e["message"] for e in m["events"]]
    assert any(x.startswith("Diskless COLD with its restore overlapping the transfer") for x in msgs), msgs
    assert m["state"] == "EXECUTION" and not any(x.startswith("Restored mem") for x in msgs), \
        "the memory arrived before the test could look"
    return mid


def test_cold_overlapped_holds_the_copy_until_its_memory_is_in(slow):
    a, b = slow.start().a, slow.b
    start_mem(a)
    mid = cold_until_memory_in_flight(a)
    # restored on hostB, but held: its counter (in hostB's copy of the root
    # filesystem) stands still while the memory streams in
    held = counter_of(b, "mem")
    time.sleep(0.6)
    assert not any(m.startswith("Restored mem") for m in events(a, mid)), "the transfer ended too soon to look"
    assert counter_of(b, "mem") == held, "the destination copy ran before its memory was in"
    m = wait_finished(a, mid)
    assert m["state"] == "COMPLETED", m
    # then it runs there, its memory intact, and the downtime covers the transfer
    wait_for(lambda: counter_of(b, "mem")[0] > held[0], 10, "counter to advance on hostB")
    assert counter_of(b, "mem")[1] == SIZE
    line = next(e for e in events(a, mid) if e.startswith("Downtime "))
    memory_ms = float(line.rsplit("memory arriving ", 1)[1])
    assert memory_ms > 1000 and m["downtime_ms"] > memory_ms, line
    assert any("arrived on hostB before it ran (diskless)" in e for e in events(a, mid))
    assert "mem" not in a.containers()


def test_cold_overlapped_rollback_while_memory_in_flight(slow):
    a, b = slow.start().a, slow.b
    start_mem(a)
    i0, _ = counter_of(a, "mem")
    mid = cold_until_memory_in_flight(a)
    # cut the page stream (hostB's connections to hostA but the controller's)
    cut = subprocess.run(["ip", "netns", "exec", b.netns, "ss", "-K", "-tn", "dst", a.ip,
                          "and", "not", "sport", "=", ":7070"], capture_output=True, text=True)
    assert cut.returncode == 0, cut.stderr
    assert a.ip in cut.stdout, "no page stream from hostB to hostA to cut: " + cut.stdout
    m = wait_finished(a, mid)
    assert_failed_with_rollback(m, "EXECUTION", "the restored copy never ran")
    i, size = counter_of(a, "mem")
    assert size == SIZE and i >= i0
    wait_for(lambda: counter_of(a, "mem")[0] > i, 10, "counter to advance on hostA")
    assert_clean_destination(b, "mem")


def test_cold_overlapped_cancel_while_memory_in_flight(slow):
    a, b = slow.start().a, slow.b
    start_mem(a)
    mid = cold_until_memory_in_flight(a)
    t0 = time.monotonic()
    a.cli("migration", "cancel", mid)
    m = wait_finished(a, mid)
    # the held restore gives up at once (it does not wait for the memory)
    assert time.monotonic() - t0 < 10
    assert_failed_with_rollback(m, "EXECUTION", "cancelled by the user")
    i, size = counter_of(a, "mem")
    assert size == SIZE
    wait_for(lambda: counter_of(a, "mem")[0] > i, 10, "counter to advance on hostA")
    assert_clean_destination(b, "mem")
