"""TCP connections survive: a container with its own address on the hosts'
shared layer-2 segment moves, and an external client's established connection
keeps working across the move: the heartbeat stream it receives continues
without a gap in its sequence (the byte stream is intact), and an echo
connection returns every byte it sent."""
import os
import socket
import subprocess
import sys
import threading
import time

from conftest import ROOT, memload_rootfs, memload_status, migration, wait_for

HERE = os.path.dirname(__file__)
CLIENT = os.path.join(HERE, "tcp_client.py")


def client(c, mode, ip, port, seconds):
    """Runs tests/e2e/tcp_client.py in the client namespace; returns the Popen."""
    return subprocess.Popen(["nsenter", f"--net=/run/netns/{c.prefix}-c", sys.executable, CLIENT, mode, ip, str(port),
                             str(seconds)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def result(p):
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0, out
    return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)


def migrate(a, name, *args):
    p = a.cli("migrate", "-v", name, "--to", "hostB", *args, check=False, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    mid = next(l.split()[1] for l in p.stdout.splitlines() if l.startswith("migration "))
    return migration(a, mid)


def test_echo_connection_survives_cold_migration(cluster):
    c = cluster.start()
    ip = f"10.77.{c.n}.50"
    c.a.cli("run", "echo", "--image", "busybox", "--ip", ip + "/24", "--",
            "/bin/nc", "-l", "-p", "5000", "-e", "/bin/cat")
    time.sleep(0.3)
    cl = client(c, "echo", ip, 5000, 6)
    time.sleep(2)
    m = migrate(c.a, "echo", "--strategy", "COLD_MIGRATION")
    assert m["state"] == "COMPLETED", m
    r = result(cl)
    print("client:", r, "downtime_ms:", m["downtime_ms"])
    assert r["intact"] == "1", r
    assert int(r["roundtrips"]) > 50, r
    assert "echo" in c.b.containers() and "echo" not in c.a.containers()
    msgs = [e["message"] for e in m["events"]]
    assert any("will move to hostB with its established TCP connections" in x for x in msgs), msgs


def test_heartbeat_stream_survives_post_copy(cluster):
    c = cluster.start()
    ip = f"10.77.{c.n}.51"
    c.a.cli("image", "import", "memload", memload_rootfs())
    c.a.cli("run", "mem", "--image", "memload", "--ip", ip + "/24", "--",
            "/bin/fm-memload", "64", "4", "/tmp/memload.status", "6000")
    wait_for(lambda: (memload_status(c.a, "mem") or {}).get("full_scans", 0) >= 1, 60, "memload to fill its memory")
    cl = client(c, "heartbeat", ip, 6000, 6)
    time.sleep(2)
    m = migrate(c.a, "mem", "--strategy", "POST_COPY")
    assert m["state"] == "COMPLETED", m
    r = result(cl)
    print("client:", r, "downtime_ms:", m["downtime_ms"])
    # every heartbeat arrived, in order, none lost or duplicated
    assert r["intact"] == "1", r
    assert float(r["max_gap_ms"]) < 5000, r
    assert memload_status(c.b, "mem")["errors"] == 0
