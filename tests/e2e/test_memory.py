"""Large, busy memory: a container holding 256 MiB of touched memory that it
keeps rewriting and verifying (tests/workload/memload.c) moves by POST_COPY and
by diskless COLD_MIGRATION on a 1 Gbit/s link; its memory must arrive intact:
the workload checks every page against the pattern it must hold, and a whole
verification pass must complete on the destination without a single error."""
import pytest

from conftest import workload_rootfs, memload_status, migration, wait_for

SIZE_MIB = 256


def start_memload(c, hot_mib):
    a = c.a
    a.cli("image", "import", "memload", workload_rootfs())
    a.cli("run", "mem", "--image", "memload", "--", "/bin/fm-memload", str(SIZE_MIB), str(hot_mib),
          "/tmp/memload.status")
    # filled and at least one whole verification pass done
    wait_for(lambda: (memload_status(a, "mem") or {}).get("full_scans", 0) >= 1, 60, "memload to fill its memory")
    return memload_status(a, "mem")


def migrate(a, *args):
    p = a.cli("migrate", "-v", "mem", "--to", "hostB", *args, check=False, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    mid = next(l.split()[1] for l in p.stdout.splitlines() if l.startswith("migration "))
    return migration(a, mid), p.stdout


def assert_intact_on(b, before):
    # the destination's copy goes on from where the source was, and finishes a
    # whole verification of every page with no error
    s = memload_status(b, "mem")
    assert s["errors"] == 0, s
    assert s["iterations"] >= before["iterations"], (before, s)
    scans = s["full_scans"]
    after = wait_for(lambda: (lambda t: t if t["full_scans"] >= scans + 2 else None)(memload_status(b, "mem")),
                     60, "two more full verification passes on hostB")
    assert after["errors"] == 0, after


@pytest.mark.parametrize("hot", [SIZE_MIB, SIZE_MIB // 64], ids=["W=M", "W=M/64"])
def test_post_copy_256mib_busy_memory_intact(cluster, hot):
    c = cluster.start()
    before = start_memload(c, hot)
    m, out = migrate(c.a, "--strategy", "POST_COPY")
    assert m["state"] == "COMPLETED" and m["strategy"] == "POST_COPY", m
    # the freeze did not wait for 256 MiB at 1 Gbit/s (~2.2 s)
    assert m["downtime_ms"] < 1500, m["downtime_ms"]
    # every page crossed the link, through our relay
    assert m["bytes_transferred"] >= SIZE_MIB << 20, m["bytes_transferred"]
    assert_intact_on(c.b, before)
    assert "mem" not in c.a.containers()


# the restore overlapping the transfer (held until the memory is in), or after
# it (the memory streamed to a CRIU page server while the source dumps)
@pytest.mark.parametrize("overlap", [True, False])
def test_diskless_cold_256mib_busy_memory_intact(cluster, overlap):
    c = cluster.start()
    before = start_memload(c, SIZE_MIB // 64)
    m, out = migrate(c.a, "--strategy", "COLD_MIGRATION", *([] if overlap else ["--no-overlap"]))
    assert m["state"] == "COMPLETED", m
    msgs = [e["message"] for e in m["events"]]
    if overlap:
        assert any("All memory pages of mem arrived on hostB before it ran (diskless)" in x for x in msgs), msgs
    else:
        assert any("Memory streamed to hostB while it was dumped (diskless)" in x for x in msgs), msgs
    assert m["bytes_transferred"] >= SIZE_MIB << 20, m["bytes_transferred"]
    # random-looking pages are not worth compressing: auto sends them raw
    assert m["bytes_transferred"] <= (SIZE_MIB << 20) * 1.02 + (2 << 20), m["bytes_transferred"]
    assert_intact_on(c.b, before)
    assert "mem" not in c.a.containers()


def test_live_migration_selector_measures_and_explains(cluster):
    """LIVE_MIGRATION: the Strategy Selector measures the container's memory and
    what it touches, takes the link rate from the --bandwidth cap or from an
    earlier migration's measurement, and says why it chose what it chose."""
    c = cluster.start()
    start_memload(c, SIZE_MIB // 64)
    # a tiny container over a known 1 Gbit/s: the memory crosses in a few ms -> COLD
    c.a.cli("run", "tiny", "--image", "busybox", "--", "/bin/sleep", "1000")
    p = c.a.cli("migrate", "-v", "tiny", "--to", "hostB", "--strategy", "LIVE_MIGRATION", "--bandwidth", "1G")
    assert "Strategy COLD_MIGRATION chosen: LIVE_MIGRATION: COLD_MIGRATION, since the whole memory crosses" in p.stdout, p.stdout
    assert "link 1000 Mbit/s (the --bandwidth cap)" in p.stdout, p.stdout
    # 256 MiB: ~2 s at 1 Gbit/s -> POST_COPY, with the working set measured
    m, out = migrate(c.a, "--strategy", "LIVE_MIGRATION", "--bandwidth", "1G")
    assert m["strategy"] == "POST_COPY" and m["state"] == "COMPLETED", m
    line = next(l for l in out.splitlines() if "Strategy POST_COPY chosen" in l)
    assert "all memory follows in about" in line and "touched" in line and "while its working set arrives" in line, line
    assert memload_status(c.b, "mem")["errors"] == 0


def test_bandwidth_cap_holds_on_every_path(cluster):
    """--bandwidth caps the memory stream (diskless COLD, POST_COPY pages) and the
    state transfer: 64 MiB cannot cross in less than 64 MiB / cap, although the
    link is ten times faster."""
    c = cluster.start()
    c.a.cli("image", "import", "memload", workload_rootfs())
    c.a.cli("run", "mem", "--image", "memload", "--", "/bin/fm-memload", "64", "4", "/tmp/memload.status")
    wait_for(lambda: (memload_status(c.a, "mem") or {}).get("full_scans", 0) >= 1, 60, "memload to fill its memory")
    floor_ms = (64 << 20) * 8 / 100e6 * 1000 * 0.9   # 64 MiB at 100 Mbit/s, 10 % slack
    m, out = migrate(c.a, "--strategy", "COLD_MIGRATION", "--no-overlap", "--bandwidth", "100M")
    assert m["state"] == "COMPLETED", m
    assert m["downtime_ms"] >= floor_ms, (m["downtime_ms"], floor_ms)
    line = next(l for l in out.splitlines() if "Memory streamed" in l)
    assert "link measured at" in line and int(line.split("link measured at ")[1].split()[0]) <= 110, line
    assert memload_status(c.b, "mem")["errors"] == 0
    # back by POST_COPY under the same cap: the pages take as long
    p = c.b.cli("migrate", "-v", "mem", "--to", "hostA", "--strategy", "POST_COPY", "--bandwidth", "100M",
                check=False, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    mid = next(l.split()[1] for l in p.stdout.splitlines() if l.startswith("migration "))
    m = migration(c.b, mid)
    assert m["state"] == "COMPLETED" and m["total_ms"] >= floor_ms, (m["total_ms"], floor_ms)
    assert m["downtime_ms"] < floor_ms, m["downtime_ms"]   # post-copy resumes before the pages are there
    wait_for(lambda: memload_status(c.a, "mem"), 10, "status on hostA")
    assert memload_status(c.a, "mem")["errors"] == 0
    # and by COLD with its restore overlapping the transfer: held that long
    m, out = migrate(c.a, "--strategy", "COLD_MIGRATION", "--bandwidth", "100M")
    assert m["state"] == "COMPLETED", m
    assert m["downtime_ms"] >= floor_ms, (m["downtime_ms"], floor_ms)
    line = next(l for l in out.splitlines() if "All memory pages of mem arrived" in l)
    assert "before it ran" in line and int(line.split("prefetched at ")[1].split()[0]) <= 110, line
    wait_for(lambda: memload_status(c.b, "mem"), 10, "status on hostB")
    assert memload_status(c.b, "mem")["errors"] == 0
