"""TCP connections survive: a container with its own address on the hosts'
shared layer-2 segment moves, and an external client's established connection
keeps working across the move: the heartbeat stream it receives continues
without a gap in its sequence (the byte stream is intact), and an echo
connection returns every byte it sent."""
import os
import subprocess
import sys
import time

from conftest import workload_rootfs, memload_status, migration, wait_for

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


def move_under_client(c, name, mode, ip, port, strategy):
    """Connects the external client, moves the container while it runs, and
    returns (migration, client result)."""
    cl = client(c, mode, ip, port, 6)
    time.sleep(2)
    m = migrate(c.a, name, "--strategy", strategy)
    assert m["state"] == "COMPLETED", m
    r = result(cl)
    print("client:", r, "downtime_ms:", m["downtime_ms"])
    return m, r


def test_echo_connection_survives_cold_migration(cluster):
    c = cluster.start()
    ip = f"10.77.{c.n}.50"
    c.a.cli("run", "echo", "--image", "busybox", "--ip", ip + "/24", "--",
            "/bin/nc", "-l", "-p", "5000", "-e", "/bin/cat")
    time.sleep(0.3)
    m, r = move_under_client(c, "echo", "echo", ip, 5000, "COLD_MIGRATION")
    assert r["intact"] == "1", r
    assert int(r["roundtrips"]) > 50, r
    assert "echo" in c.b.containers() and "echo" not in c.a.containers()
    msgs = [e["message"] for e in m["events"]]
    assert any("will move to hostB with its established TCP connections" in x for x in msgs), msgs


def test_heartbeat_stream_survives_post_copy(cluster):
    c = cluster.start()
    ip = f"10.77.{c.n}.51"
    c.a.cli("image", "import", "memload", workload_rootfs())
    c.a.cli("run", "mem", "--image", "memload", "--ip", ip + "/24", "--",
            "/bin/fm-memload", "64", "4", "/tmp/memload.status", "6000")
    wait_for(lambda: (memload_status(c.a, "mem") or {}).get("full_scans", 0) >= 1, 60, "memload to fill its memory")
    m, r = move_under_client(c, "mem", "heartbeat", ip, 6000, "POST_COPY")
    # every heartbeat arrived, in order, none lost or duplicated
    assert r["intact"] == "1", r
    assert float(r["max_gap_ms"]) < 5000, r
    assert memload_status(c.b, "mem")["errors"] == 0


def test_new_address_ends_connections_and_serves_at_it(cluster):
    """migrate --new-ip: the container's established connections cannot keep
    their address; CRIU restores them closed (--tcp-close), the client sees
    its connection end, the workload runs on (its memory intact) and answers
    at the new address."""
    c = cluster.start()
    old, new = f"10.77.{c.n}.55", f"10.77.{c.n}.75"
    c.a.cli("image", "import", "memload", workload_rootfs())
    c.a.cli("run", "mem", "--image", "memload", "--ip", old + "/24", "--",
            "/bin/fm-memload", "16", "4", "/tmp/memload.status", "6000")
    wait_for(lambda: (memload_status(c.a, "mem") or {}).get("full_scans", 0) >= 1, 60, "memload to fill its memory")
    cl = client(c, "heartbeat", old, 6000, 8)
    time.sleep(1)
    m = migrate(c.a, "mem", "--new-ip", new + "/24")
    assert m["state"] == "COMPLETED", m
    msgs = [e["message"] for e in m["events"]]
    assert any("an address change ends its TCP connections" in x for x in msgs), msgs
    out, _ = cl.communicate(timeout=60)
    assert "intact=0" in out, out  # its connection ended with the move
    r = result(client(c, "heartbeat", new, 6000, 1))
    assert r["intact"] == "1" and int(r["beats"]) > 100, r
    assert memload_status(c.b, "mem")["errors"] == 0
