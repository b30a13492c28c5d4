"""The Network Orchestrator with a real switch (scripts/fabric.sh: Open vSwitch
in userspace between hosts A, B and a client): a migration checks the switch
and both hosts' ports in PREPARATION, sends the container's address to the
destination's port at the switchover (after the address is up there) for 60
s, after which the switch's learning has long caught up; an ovs-vswitchd
restart has them put back at once; a rollback points them back; the client
reaches the container throughout."""
import subprocess

from conftest import COUNTER_CMD, assert_failed_with_rollback, migration, wait_for


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
    assert f"[TrafficRedirector]: Traffic for {ip} goes to hostB's switch port {fab.prefix}b from now" in out, out
    # the switch is checked before the freeze; the flows change only after the restore
    assert out.index("[SDNControllerInterface]") < out.index("Freezing web")
    assert out.index("Restored web on hostB") < out.index("from now, the address being ready there")
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
