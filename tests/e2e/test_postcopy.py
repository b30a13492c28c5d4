"""POST_COPY through CRIU lazy pages: the container resumes on the destination at
once, its memory follows on demand; and a page transfer cut while pages are in
flight rolls back to the source with its memory intact."""
import os
import subprocess
import time

import pytest

from conftest import assert_clean_destination, assert_failed_with_rollback, migration, wait_finished, wait_for

# 40 MB held in the shell's memory, base64 of random bytes (zstd keeps ~3/4 of
# it: ~2.5 s at 100 Mbit/s, so that pages are still in flight when a test cuts
# them; 40 MB of one letter crossed in 0.1 s); every iteration reads all of it
# (${#x})
MEM_CMD = ["/bin/sh", "-c", 'x=$(head -c 30000000 /dev/urandom | base64 -w 0); i=0; '
                            'while :; do i=$((i+1)); echo "$i ${#x}" > /tmp/counter; sleep 0.05; done']



def counter_of(d, name):
    """(iteration, size) from the workload's counter file.  The shell rewrites it
    in place (truncate, then write), so a read can land in between: read again."""
    path = os.path.join(d.state, "containers", name, "rootfs", "tmp", "counter")
    for _ in range(100):
        with open(path) as f:
            v = f.read().split()
        if len(v) == 2:
            return int(v[0]), int(v[1])
        time.sleep(0.01)
    raise AssertionError(f"{path} stayed incomplete for 1 s: {v}")


def start_mem(d):
    d.cli("run", "mem", "--image", "busybox", "--", *MEM_CMD)
    wait_for(lambda: os.path.exists(os.path.join(d.state, "containers/mem/rootfs/tmp/counter")), 20, "start")


def post_copy_until_pages_in_flight(a):
    """Starts a POST_COPY of mem A -> B and returns its id once pages are in flight."""
    mid = a.cli("migrate", "mem", "--to", "hostB", "--strategy", "POST_COPY", "--detach").stdout.strip()
    wait_for(lambda: any("Waiting for the remaining memory pages" in e["message"]
                         for e in migration(a, mid)["events"]), 30, "pages to be in flight")
    return mid


def assert_logs_kept(d, mid, name, text):
    """d keeps the log name of migration mid (its path below the migration's
    directory, '/' as '-') in STATE/logs/mid, with text in it."""
    path = os.path.join(d.state, "logs", mid, name)
    wait_for(lambda: os.path.exists(path), 10, path)
    with open(path, errors="replace") as fh:
        assert text in fh.read(), f"{path} on {d.name} lacks {text!r}"
    assert not os.path.exists(os.path.join(d.state, "migrations", mid)), "the working directory stayed"


def assert_source_resumed_intact(a, b, mid, error_part):
    m = wait_finished(a, mid)
    assert_failed_with_rollback(m, "VERIFICATION", error_part)
    # the source resumes with its memory intact
    i, size = counter_of(a, "mem")
    assert size == 40000000
    wait_for(lambda: counter_of(a, "mem")[0] > i, 10, "counter to advance on hostA")
    assert_clean_destination(b, "mem")
    # the failed dump's log stays readable on the source
    assert_logs_kept(a, mid, "work-dump.log", "Dumping processes")


# our own page fault handler (the prefetcher), or CRIU's lazy-pages daemon
@pytest.mark.parametrize("handler", ["prefetch", "no-prefetch"])
def test_post_copy_completes_with_memory_intact(slow, handler):
    a, b = slow.start().a, slow.b
    start_mem(a)
    before, _ = counter_of(a, "mem")
    extra = ["--no-prefetch"] if handler == "no-prefetch" else []
    p = a.cli("migrate", "-v", "mem", "--to", "hostB", "--strategy", "POST_COPY", *extra, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    mid = next(l.split()[1] for l in p.stdout.splitlines() if l.startswith("migration "))
    m = migration(a, mid)
    assert m["strategy"] == "POST_COPY" and m["state"] == "COMPLETED"
    msgs = [e["message"] for e in m["events"]]
    assert any("All memory pages of mem arrived" in x for x in msgs), msgs
    # the prefetcher says what it did; lazy-pages on its own does not
    assert any("page faults" in x for x in msgs) == (handler == "prefetch"), msgs
    # resumed at once: the freeze did not wait for 40 MB at 100 Mbit/s (~3.4 s)
    assert m["downtime_ms"] < 2000, m["downtime_ms"]
    # CRIU's dump on hostA and runc restore on hostB started before the freeze
    # and waited for what is decided on the frozen container
    assert any(x.startswith("Downtime") and "CRIU's dump and runc restore started before the freeze" in x
               for x in msgs), msgs
    i, size = counter_of(b, "mem")
    assert size == 40000000 and i >= before
    wait_for(lambda: counter_of(b, "mem")[0] > i, 5, "counter to advance on hostB")
    assert "mem" not in a.containers() and a.runc_list() == []
    # CRIU's logs outlive the migration's working directories
    assert_logs_kept(a, mid, "work-dump.log", "Dumping processes")
    if handler == "prefetch":
        assert_logs_kept(b, mid, "work-restore-restore.log", "Restoring")


def test_post_copy_rollback_while_pages_in_flight(slow):
    a, b = slow.start().a, slow.b
    start_mem(a)
    mid = post_copy_until_pages_in_flight(a)
    # cut the page transfer: abort hostB's TCP connections to hostA (the
    # page stream; the controller's calls come from hostA, to port 7070)
    cut = subprocess.run(["ip", "netns", "exec", b.netns, "ss", "-K", "-tn", "dst", a.ip,
                          "and", "not", "sport", "=", ":7070"], capture_output=True, text=True)
    assert cut.returncode == 0, cut.stderr
    assert a.ip in cut.stdout, "no page stream from hostB to hostA to cut: " + cut.stdout
    assert_source_resumed_intact(a, b, mid, "pages were still in flight")


def test_post_copy_cancel_while_pages_in_flight(slow):
    a, b = slow.start().a, slow.b
    start_mem(a)
    mid = post_copy_until_pages_in_flight(a)
    a.cli("migration", "cancel", mid)
    assert_source_resumed_intact(a, b, mid, "cancelled by the user")
