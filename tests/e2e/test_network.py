"""The Network Orchestrator with a real switch (scripts/fabric.sh: Open vSwitch
in userspace between hosts A, B and a client): a migration checks the switch
and both hosts' ports in PREPARATION and has the switch take the
container's flows there, as a trial (a switch that refuses them fails the
migration before anything is frozen), sends the address to the destination's port at the
switchover (after the address is up there) for 60 s, after which the
switch's learning has long caught up; an ovs-vswitchd restart has them put
back at once; a rollback points them back; the client reaches the container
throughout."""
import json
import os
import subprocess
import threading
import time

import pytest

from conftest import (COUNTER_CMD, ROOT, FabricCluster, assert_failed_with_rollback, migration, rootfs, wait_for,
                      workload_rootfs)

STREAM = os.path.join(ROOT, "bench", "fmbench", "udpstream.py")


def reachable(fabric, ip):
    return subprocess.run(["nsenter", f"--net=/run/netns/{fabric.ns('c')}", "busybox", "ping", "-c1", "-W1", ip],
                          capture_output=True).returncode == 0


def flows_for(fabric, ip):
    return [f for f in fabric.flows() if "0x464d" in f and (f"nw_dst={ip}" in f or f"arp_tpa={ip}" in f)]


def test_address_follows_the_container_through_the_switch(fabric_cluster):
    fc = fabric_cluster.start()
    a, b, fab = fc.a, fc.b, fc.fabric
    ip = f"10.77.{fc.n}.50"
    a.cli("run", "web", "--image", "busybox", "--ip", f"{ip}/24", "--", *COUNTER_CMD)
    wait_for(lambda: reachable(fab, ip), 10, "the container to answer the client")
    assert not flows_for(fab, ip), "no flows before a migration"

    p = a.cli("migrate", "-v", "web", "--to", "hostB", check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert (f"[SDNControllerInterface]: Switch at {fab.mgmt} ready: hostA is on {fab.prefix}a (OpenFlow port 1), "
            f"hostB on {fab.prefix}b (port 2)") in out, out
    assert (f"[TrafficRedirector]: Flows for {ip} accepted by the switch (a trial: installed pointing at hostA's port "
            f"{fab.prefix}a") in out, out
    assert out.index("accepted by the switch") < out.index("Freezing web")
    assert f"[TrafficRedirector]: Traffic for {ip} goes to hostB's switch port {fab.prefix}b from now" in out, out
    # the switch is checked and takes the flows (a trial) before the freeze; they go in after the restore
    assert out.index("[SDNControllerInterface]") < out.index("Freezing web")
    assert out.index("Checkpoint of web done") < out.index("from now, the address being ready there")
    fl = flows_for(fab, ip)
    assert len(fl) == 2 and all("output:2" in f and "hard_timeout=60" in f for f in fl), fl
    assert any("set_field:" in f and "->eth_dst" in f for f in fl), fl
    assert reachable(fab, ip)

    # ovs-vswitchd restarts (its flows gone): the controller puts them back
    fab.switch_restart()
    fl = wait_for(lambda: (lambda x: x if len(x) == 2 else None)(flows_for(fab, ip)), 10,
                  "the flows to be replayed after the switch restarted")
    assert all("output:2" in f for f in fl), fl
    assert f"Reconnected to the switch at {fab.mgmt} and installed our 2 flows again" in a.log()
    assert reachable(fab, ip)

    # back to A with a health command that fails: rolled back, the flows point at B again
    p = a.cli("migrate", "-v", "web", "--from", "hostB", "--to", "hostA", "--", "/bin/false", check=False)
    assert p.returncode == 1, p.stdout
    mid = next(l.split()[1] for l in p.stdout.splitlines() if l.startswith("migration "))
    assert_failed_with_rollback(migration(a, mid), "VERIFICATION", "")
    assert f"Traffic for {ip} goes to hostB's switch port {fab.prefix}b, back" in p.stdout, p.stdout
    fl = flows_for(fab, ip)
    assert len(fl) == 2 and all("output:2" in f for f in fl), fl
    assert any("set_field:" in f and "->eth_dst" in f for f in fl), fl
    assert "web" in b.containers()
    assert reachable(fab, ip)

    # the address given to a new container on A while the flows still hold it
    # at B's port (for up to 60 s): they are released at its `run`, and it is
    # announced, so the client reaches it at once
    b.cli("container", "rm", "web", "--force")
    assert len(flows_for(fab, ip)) == 2
    a.cli("run", "web2", "--image", "busybox", "--ip", f"{ip}/24", "--", *COUNTER_CMD)
    assert not flows_for(fab, ip)
    wait_for(lambda: reachable(fab, ip), 5, "the new container to answer at the address")


def test_switch_refusing_the_flows_fails_preparation(fabric_cluster):
    """The switch's table 0 is full (an OVSDB flow limit that refuses): the
    pin's FLOW_MOD gets OFPT_ERROR FLOW_MOD_FAILED/TABLE_FULL; the migration
    fails in PREPARATION and rolls back, the container never frozen, the
    switch's table as it was."""
    fc = fabric_cluster.start()
    a, b, fab = fc.a, fc.b, fc.fabric
    ip = f"10.77.{fc.n}.51"
    a.cli("run", "web", "--image", "busybox", "--ip", f"{ip}/24", "--", *COUNTER_CMD)
    wait_for(lambda: reachable(fab, ip), 10, "the container to answer the client")
    before = fab.flows()
    fab.vsctl("--", "--id=@ft", "create", "Flow_Table", f"flow_limit={len(before)}", "overflow_policy=refuse",
              "--", "set", "Bridge", "fmsw", "flow_tables:0=@ft")
    p = a.cli("migrate", "-v", "web", "--to", "hostB", check=False)
    assert p.returncode == 1, p.stdout
    mid = next(l.split()[1] for l in p.stdout.splitlines() if l.startswith("migration "))
    m = migration(a, mid)
    assert_failed_with_rollback(m, "PREPARATION", "the switch refused the container's flows")
    assert "TABLE_FULL" in m["error"], m["error"]
    assert "Freezing" not in p.stdout
    assert f"No flows for {ip} left on the switch: it forwards the address by learning, to hostA" in p.stdout, p.stdout
    assert fab.flows() == before
    assert "web" in a.containers() and "web" not in b.containers()
    assert reachable(fab, ip)


def test_switch_restarted_during_a_migration(fabric_cluster):
    """ovs-vswitchd restarts while the migration verifies the destination (a
    health command taking 3 s): the controller puts its flows back within a
    second, pointing at the destination, and the migration completes."""
    fc = fabric_cluster.start()
    a, fab = fc.a, fc.fabric
    ip = f"10.77.{fc.n}.52"
    a.cli("run", "web", "--image", "busybox", "--ip", f"{ip}/24", "--", *COUNTER_CMD)
    wait_for(lambda: reachable(fab, ip), 10, "the container to answer the client")
    done = {}
    t = threading.Thread(target=lambda: done.update(p=a.cli("migrate", "-v", "web", "--to", "hostB", "--",
                                                            "/bin/sleep", "3", check=False)))
    t.start()
    wait_for(lambda: "from now, the address being ready there" in a.log(), 30, "the switchover")
    fab.switch_restart()
    fl = wait_for(lambda: (lambda x: x if len(x) == 2 else None)(flows_for(fab, ip)), 10,
                  "the flows to be replayed after the switch restarted")
    assert all("output:2" in f for f in fl), fl
    assert "p" not in done, "the flows came back while the migration was still verifying"
    t.join(60)
    assert "p" in done and done["p"].returncode == 0, done
    assert "Reconnected to the switch" in a.log()
    assert reachable(fab, ip)


def test_udp_stream_across_the_fabric(fabric_cluster):
    """A UDP sequence stream from the client, a datagram every 1 ms, echoed by
    the container (fm-udpecho) while it moves A -> B through the switch: the
    datagrams lost fit in the freeze (bench/network measures 0 beyond it; a
    few ms of slack here for a loaded machine), and the stream flows again
    long before it ends."""
    fc = fabric_cluster.start()
    a, fab = fc.a, fc.fabric
    ip = f"10.77.{fc.n}.53"
    a.cli("image", "import", "workload", workload_rootfs())
    a.cli("run", "udp", "--image", "workload", "--ip", f"{ip}/24", "--", "/bin/fm-udpecho", "7000")
    client = ["nsenter", f"--net=/run/netns/{fab.ns('c')}", "/usr/bin/python3", STREAM, ip, "7000"]

    def answers():
        p = subprocess.run([*client, "0.05"], capture_output=True, text=True)
        return p.returncode == 0 and json.loads(p.stdout)["echoed"] > 0
    wait_for(answers, 10, "the container to echo the client's datagrams")
    stream = subprocess.Popen([*client, "6"], stdout=subprocess.PIPE, text=True)
    time.sleep(1.5)
    p = a.cli("migrate", "-v", "udp", "--to", "hostB", check=False)
    out = json.loads(stream.communicate(timeout=30)[0])
    assert p.returncode == 0, p.stdout + p.stderr
    mid = next(l.split()[1] for l in p.stdout.splitlines() if l.startswith("migration "))
    m = migration(a, mid)
    print(f"sent {out['sent']}, lost {out['lost']} {out['lost_ranges']}, downtime {m['downtime_ms']} ms")
    assert 0 < out["lost"] <= m["downtime_ms"] + 15, (out, m["downtime_ms"])
    assert out["lost_ranges"][-1][1] < out["sent"] - 2000, out


FAKE_SWITCH = """
import os, socket, sys, time
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[2]))); srv.listen(4)
print("ready", flush=True)
while True:
    c, _ = srv.accept()
    c.recv(64)
    if sys.argv[1] == "garbage":
        c.sendall(bytes([4, 0, 0, 2, 0, 0, 0, 1]) + os.urandom(32))
    time.sleep(8)
    c.close()
"""


@pytest.mark.parametrize("behaviour", ["garbage", "silent"])
def test_broken_switch_fails_preparation_in_bounded_time(fabric, behaviour):
    """The controller's --sdn is a switch that answers HELLO with garbage, or
    never answers (a fake one in host A's namespace; OVSDB is the real
    fabric's): the migration fails in PREPARATION within the switch's
    timeout, says why, and rolls back; the container runs on at the source."""
    c = FabricCluster(fabric)
    fake = None
    try:
        port = 16700 + (behaviour == "silent")
        fake = subprocess.Popen(["nsenter", f"--net=/run/netns/{fabric.ns('a')}", "/usr/bin/python3", "-c",
                                 FAKE_SWITCH, behaviour, str(port)], stdout=subprocess.PIPE, text=True)
        assert fake.stdout.readline().strip() == "ready"
        c.a.start(["--switch-port", f"{fabric.prefix}a", "--sdn", f"tcp:127.0.0.1:{port}", "--ovsdb",
                   f"unix:{fabric.run_dir}/db.sock"])
        c.b.start(["--switch-port", f"{fabric.prefix}b"])
        c.a.cli("host", "add", "hostB", c.b.addr)
        c.b.cli("host", "add", "hostA", c.a.addr)
        c.a.cli("image", "import", "busybox", rootfs())
        ip = f"10.77.{c.n}.54"
        c.a.cli("run", "web", "--image", "busybox", "--ip", f"{ip}/24", "--", *COUNTER_CMD)
        p = c.a.cli("migrate", "-v", "web", "--to", "hostB", check=False)
        assert p.returncode == 1, p.stdout
        mid = next(l.split()[1] for l in p.stdout.splitlines() if l.startswith("migration "))
        m = migration(c.a, mid)
        why = "sent a malformed message" if behaviour == "garbage" else "did not answer within 3000 ms"
        assert_failed_with_rollback(m, "PREPARATION", "the switch is not ready")
        assert why in m["error"], m["error"]
        assert m["total_ms"] < 15000, m["total_ms"]
        assert "Freezing" not in p.stdout
        assert "web" in c.a.containers() and "web" not in c.b.containers()
        assert reachable(fabric, ip)
    finally:
        if fake:
            fake.kill()
            fake.wait()
        c.teardown()
