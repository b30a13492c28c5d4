"""The SDN Controller Interface against a real Open vSwitch (scripts/fabric.sh:
OVS 3.1 in userspace in its own namespace): flows installed and removed by
cookie, another controller's flows untouched, a refused flow named, flows
replayed after ovs-vswitchd restarts, the dataplane following the flows, and
a switch that sends garbage or never answers failing cleanly in bounded time."""
import os
import socket
import subprocess
import threading
import time

from conftest import ROOT, wait_for

PROBE = os.path.join(ROOT, "build", "tests", "unit", "sdn-probe")


def probe(target, *args, **kw):
    return subprocess.run([PROBE, target, *args], capture_output=True, text=True, timeout=30, **kw)


def ping(fabric, src, dst):
    return subprocess.run(["nsenter", f"--net=/run/netns/{fabric.ns(src)}", "busybox", "ping", "-c1", "-W1",
                           fabric.ip(dst)], capture_output=True).returncode == 0


def test_flows_by_cookie_and_the_dataplane(fabric):
    assert ping(fabric, "c", "b")
    # another controller's flow, in its own cookie space
    fabric.ofctl("add-flow", fabric.mgmt, "cookie=0x77,priority=100,ip,nw_dst=10.9.9.9,actions=drop")
    # steer what the client sends to B's address to E's port instead
    p = probe(fabric.mgmt, "install", fabric.ip("b"), "3")
    assert p.returncode == 0 and p.stdout.startswith("connected: datapath ") and "ok" in p.stdout, p.stdout
    flows = fabric.flows()
    ours = [f for f in flows if "cookie=0x464d000000000001" in f]
    assert len(ours) == 1 and f"nw_dst={fabric.ip('b')}" in ours[0] and "actions=output:3" in ours[0], flows
    assert any("actions=NORMAL" in f for f in flows), "the switch's own NORMAL flow must stay"
    assert not ping(fabric, "c", "b"), "traffic for B now goes to E's port"
    p = probe(fabric.mgmt, "delete")
    assert p.returncode == 0, p.stdout
    flows = fabric.flows()
    assert not any("0x464d" in f for f in flows), flows
    assert any("cookie=0x77" in f for f in flows), "another controller's flow was deleted"
    assert ping(fabric, "c", "b")


def test_refused_and_foreign(fabric):
    p = probe(fabric.mgmt, "refused")
    assert p.returncode == 1 and "refused it: BAD_MATCH/BAD_PREREQ" in p.stdout, p.stdout
    p = probe(fabric.mgmt, "foreign")
    assert p.returncode == 1 and "outside FlexiMigrate's space" in p.stdout, p.stdout


def test_flows_replayed_after_switch_restart(fabric):
    p = subprocess.Popen([PROBE, fabric.mgmt, "replay", fabric.ip("b"), "3"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().startswith("connected")
        assert p.stdout.readline().strip() == "installed"
        assert sum("0x464d" in f for f in fabric.flows()) == 2
        fabric.switch_restart()
        assert not any("0x464d" in f for f in fabric.flows()), "a restarted ovs-vswitchd keeps no flows"
        t0 = time.monotonic()
        p.stdin.write("go\n")
        p.stdin.flush()
        rest = p.communicate(timeout=30)[0]
        assert p.returncode == 0 and "replayed" in rest, rest
        assert time.monotonic() - t0 < 10
    finally:
        if p.poll() is None:
            p.kill()
    flows = fabric.flows()
    assert sum("0x464d" in f for f in flows) == 2, flows
    assert any("in_port=10" in f for f in flows), flows


def fake_switch(behaviour):
    """A TCP listener that plays a broken switch: 'garbage' answers HELLO with
    a message whose length field is 2; 'silent' accepts and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve():
        c, _ = srv.accept()
        c.recv(64)
        if behaviour == "garbage":
            c.sendall(bytes([4, 0, 0, 2, 0, 0, 0, 1]) + os.urandom(32))
        time.sleep(6)
        c.close()
        srv.close()
    threading.Thread(target=serve, daemon=True).start()
    return f"tcp:127.0.0.1:{srv.getsockname()[1]}"


def test_garbage_and_silence_fail_in_bounded_time():
    t0 = time.monotonic()
    p = probe(fake_switch("garbage"), "delete")
    assert p.returncode == 1 and "sent a malformed message" in p.stdout, p.stdout
    assert time.monotonic() - t0 < 2
    t0 = time.monotonic()
    p = probe(fake_switch("silent"), "delete")
    assert p.returncode == 1 and "did not answer within 3000 ms" in p.stdout, p.stdout
    assert 2.5 < time.monotonic() - t0 < 5


def test_ports_and_macs_from_ovsdb(fabric):
    db = f"unix:{fabric.run_dir}/db.sock"
    p = probe(db, "ports")
    assert p.returncode == 0, p.stdout
    ports = {l.split()[0]: l.split()[1:] for l in p.stdout.splitlines()}
    for host, ofport in (("a", "1"), ("b", "2"), ("e", "3"), ("c", "10")):
        name = f"{fabric.prefix}{host}"
        assert ports[name][0] == ofport, ports
        # the MAC OVSDB reports is the switch-side end's, as the kernel has it
        link = subprocess.run(["ip", "-n", fabric.ns("sw"), "-o", "link", "show", name], capture_output=True,
                              text=True, check=True).stdout
        assert f"link/ether {ports[name][1]} " in link, (ports[name], link)
    p = probe(db, "ports", "nope")
    assert p.returncode == 1 and "the switch has no interface nope" in p.stdout, p.stdout
    p = probe("unix:/nonexistent/db.sock", "ports")
    assert p.returncode == 1 and "Open vSwitch's database" in p.stdout, p.stdout


OSKEN_APP = '''
from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import CONFIG_DISPATCHER, set_ev_cls
from os_ken.ofproto import ofproto_v1_3


class Other(app_manager.OSKenApp):
    """Another controller's flows, cookie 0x5c: NORMAL switching and a drop."""
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def features(self, ev):
        dp = ev.msg.datapath
        ofp, p = dp.ofproto, dp.ofproto_parser
        for prio, match, actions in ((0, p.OFPMatch(), [p.OFPActionOutput(ofp.OFPP_NORMAL)]),
                                     (150, p.OFPMatch(eth_type=0x0800, ipv4_dst="10.9.9.9"), [])):
            dp.send_msg(p.OFPFlowMod(datapath=dp, priority=prio, match=match, cookie=0x5c, instructions=[
                p.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)] if actions else []))
'''


def test_coexists_with_os_ken(fabric, tmp_path):
    """os-ken, the seed's SDN controller, connected to the same bridge as an
    active controller: its flows survive ours being added and deleted, and
    both stay connected."""
    app = tmp_path / "other_app.py"
    app.write_text(OSKEN_APP)
    ctl = subprocess.Popen(["nsenter", f"--net=/run/netns/{fabric.ns('sw')}", "/usr/bin/osken-manager",
                            "--ofp-listen-host", "127.0.0.1", "--ofp-tcp-listen-port", "16633", str(app)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        vsctl = ["ovs-vsctl", f"--db=unix:{fabric.run_dir}/db.sock"]

        def connected():
            return "true" in subprocess.run([*vsctl, "--columns=is_connected", "list", "Controller"],
                                            capture_output=True, text=True, env=fabric.env).stdout
        subprocess.run([*vsctl, "set-controller", "fmsw", "tcp:127.0.0.1:16633"], check=True, env=fabric.env)
        # (until osken-manager listens, ovs-vswitchd retries with a back-off)
        wait_for(connected, 30, "os-ken to be connected")
        wait_for(lambda: sum("cookie=0x5c" in f for f in fabric.flows()) == 2, 30, "os-ken's flows")
        theirs = sorted(f for f in fabric.flows() if "cookie=0x5c" in f)
        p = probe(fabric.mgmt, "install", fabric.ip("b"), "3")
        assert p.returncode == 0, p.stdout
        assert any("0x464d" in f for f in fabric.flows())
        p = probe(fabric.mgmt, "delete")
        assert p.returncode == 0, p.stdout
        flows = fabric.flows()
        assert not any("0x464d" in f for f in flows), flows
        assert sorted(f for f in flows if "cookie=0x5c" in f) == theirs, flows
        assert connected(), "os-ken lost its connection"
        assert ping(fabric, "c", "b"), "os-ken's NORMAL flow still switches"
    finally:
        ctl.kill()
        ctl.wait()
