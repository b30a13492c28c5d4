"""The DNS Manager in migrations that change a container's address
(`migrate --new-ip`), against a real authoritative server (scripts/dns.sh:
Knot and BIND 9) in host A's namespace, the controller's --dns-* options:
PREPARATION lowers the name's TTL, the switchover moves its A record to the
new address, the commit puts the TTL back; a rollback restores the old
record; a key the server rejects or a server that does not answer fails the
migration in PREPARATION with the record as it was."""
import itertools
import json
import os
import subprocess
import time

import pytest

from conftest import (COUNTER_CMD, ROOT, Cluster, assert_failed_with_rollback, migration, wait_for,
                      rootfs, workload_rootfs)

PROBE = os.path.join(ROOT, "build", "tests", "unit", "dns-probe")
DNS_SH = os.path.join(ROOT, "scripts", "dns.sh")
STREAM = os.path.join(ROOT, "bench", "fmbench", "udpstream.py")
NAME, ZONE = "web.mig.test", "mig.test"
_port = itertools.count(15453)


class DnsCluster(Cluster):
    """Two namespace hosts; an authoritative server for mig.test in host A's
    namespace, on its bridge address, where A's controller and the client
    namespace PREFIX-c reach it; A's controller probes from the client."""

    def __init__(self, kind):
        super().__init__()
        self.kind, self.port = kind, next(_port)
        self.dns_dir = os.path.join(self.work, "dns")
        self.key = os.path.join(self.dns_dir, "key")
        self.client_ns = f"/run/netns/{self.prefix}-c"
        self.server = f"10.77.{self.n}.1:{self.port}"
        subprocess.run(["nsenter", f"--net=/run/netns/{self.a.netns}", DNS_SH, "up", kind, self.dns_dir,
                        f"10.77.{self.n}.1", str(self.port)], check=True, capture_output=True)

    def probe(self, *args, key=None):
        return subprocess.run(["nsenter", f"--net=/run/netns/{self.a.netns}", PROBE, self.server, key or self.key,
                               *args], capture_output=True, text=True, timeout=30)

    def record(self):
        p = self.probe("get", NAME)
        assert p.returncode == 0, p.stdout
        ip, ttl = p.stdout.split()
        return ip, int(ttl)

    def point(self, ip, ttl=60):
        p = self.probe("set", ZONE, NAME, ip, str(ttl))
        assert p.returncode == 0, p.stdout

    def dns_args(self, server=None, key=None):
        return ["--dns-server", server or self.server, "--dns-key", key or self.key, "--dns-zone", ZONE,
                "--probe-netns", self.client_ns]

    def teardown(self):
        subprocess.run([DNS_SH, "down", self.dns_dir], capture_output=True)
        super().teardown()


@pytest.fixture(params=["knot", "bind"])
def dns_cluster(request):
    c = DnsCluster(request.param)
    yield c
    c.teardown()


def run_web(c):
    ip = f"10.77.{c.n}.50"
    c.point(ip)
    c.a.cli("run", "web", "--image", "busybox", "--ip", f"{ip}/24", "--dns-name", NAME, "--", *COUNTER_CMD)
    return ip


def migrate(c, *args):
    p = c.a.cli("migrate", "-v", "web", "--to", "hostB", *args, check=False)
    mid = next(l.split()[1] for l in p.stdout.splitlines() if l.startswith("migration "))
    return p, migration(c.a, mid)


def reachable(c, ip):
    return subprocess.run(["nsenter", f"--net=/run/netns/{c.a.netns}", "busybox", "ping", "-c1", "-W1", ip],
                          capture_output=True).returncode == 0


def nft_tables(c):
    return subprocess.run(["nsenter", f"--net=/run/netns/{c.a.netns}", "nft", "list", "tables"], capture_output=True,
                          text=True).stdout


def host_addrs(c):
    """Host A's addresses and links (the forward's stand-in is fmw.../fmx...)."""
    return subprocess.run(["ip", "-n", c.a.netns, "-o", "addr", "show"], capture_output=True, text=True).stdout


def echoes(c, ip):
    """A UDP datagram from the client namespace to ip:7000 comes back."""
    code = ("import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(0.5)\n"
            "s.sendto(b'ping',(sys.argv[1],7000))\n"
            "try:\n  d,a=s.recvfrom(100);print(a[0] if d==b'ping' else 'bad')\nexcept OSError:\n  print('none')")
    return subprocess.run(["nsenter", f"--net=/run/netns/{c.prefix}-c", "/usr/bin/python3", "-c", code, ip],
                          capture_output=True, text=True).stdout.strip()


def test_old_address_forwarded_by_the_source_until_clients_move(cluster):
    """Without DNS: --new-ip with --forward-for 4: host A stands in for the
    container (its MAC and old address on a port of A's bridge; nftables
    DNAT + masquerade) and the container echoes what the client sends there,
    from the old address; after 4 s the forward, the stand-in and IPv4
    forwarding (off before) are gone."""
    c = cluster.start()
    old, new = f"10.77.{c.n}.56", f"10.77.{c.n}.76"
    c.a.cli("image", "import", "workload", workload_rootfs())
    c.a.cli("run", "udp", "--image", "workload", "--ip", f"{old}/24", "--", "/bin/fm-udpecho", "7000")
    wait_for(lambda: echoes(c, old) == old, 10, "the container to echo at its address")
    fwd_before = subprocess.run(["ip", "netns", "exec", c.a.netns, "sysctl", "-n", "net.ipv4.ip_forward"],
                                capture_output=True, text=True).stdout.strip()
    # a client streaming to the old address all along (1 ms UDP sequence):
    # its flow, tracked since before the move, is forwarded too
    stream = subprocess.Popen(["nsenter", f"--net=/run/netns/{c.prefix}-c", "/usr/bin/python3", STREAM, old, "7000",
                               "3"], stdout=subprocess.PIPE, text=True)
    time.sleep(0.8)
    p = c.a.cli("migrate", "-v", "udp", "--to", "hostB", "--new-ip", f"{new}/24", "--forward-for", "4", check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    out = json.loads(stream.communicate(timeout=30)[0])
    m = migration(c.a, next(l.split()[1] for l in p.stdout.splitlines() if l.startswith("migration ")))
    print(f"stream to the old address: lost {out['lost']} {out['lost_ranges']}, downtime {m['downtime_ms']} ms")
    assert out["lost_ranges"] and out["lost_ranges"][-1][1] < out["sent"] - 1000, out
    assert out["lost"] <= m["downtime_ms"] + 100, (out, m["downtime_ms"])
    assert f"[TrafficRedirector]: hostA forwards {old}/24 to {new}/24 for 4 s" in p.stdout, p.stdout
    assert echoes(c, new) == new
    assert echoes(c, old) == old, "the old address answers, through host A"
    assert "fleximigrate_fwd" in nft_tables(c) and f"{old}/32" in host_addrs(c) and "fmx" in host_addrs(c)
    wait_for(lambda: echoes(c, old) == "none", 10, "the forward to end")
    wait_for(lambda: "fleximigrate_fwd" not in nft_tables(c), 5, "the nftables table to go")
    assert f"{old}/32" not in host_addrs(c) and "fmx" not in host_addrs(c)
    assert echoes(c, new) == new
    log = c.a.log()
    assert f"{old} no longer forwarded to {new}" in log, log[-3000:]
    fwd_after = subprocess.run(["ip", "netns", "exec", c.a.netns, "sysctl", "-n", "net.ipv4.ip_forward"],
                               capture_output=True, text=True).stdout.strip()
    assert fwd_after == fwd_before, (fwd_before, fwd_after)


def test_new_address_moves_the_dns_name(dns_cluster):
    c = dns_cluster.start(a_extra=dns_cluster.dns_args())
    old = run_web(c)
    new = f"10.77.{c.n}.70"
    p, m = migrate(c, "--new-ip", f"{new}/24")
    out = p.stdout
    assert p.returncode == 0 and m["state"] == "COMPLETED", out + p.stderr
    assert f"[DNSManager]: TTL of {NAME} lowered from 60 to 5 s (still {old};" in out, out
    assert f"[DNSManager]: {NAME} answers {new} from now (was {old};" in out, out
    assert f"[DNSManager]: TTL of {NAME} back to 60 s (answering {new};" in out, out
    assert f"an address change ends its TCP connections" in out, out
    assert out.index("TTL of web.mig.test lowered") < out.index("Freezing web")
    assert out.index("Restored web on hostB") < out.index(f"answers {new} from now")
    assert c.record() == (new, 60)
    info = c.b.api("GET", "/v1/containers/web")[1]
    assert info["network"]["ip"] == f"{new}/24" and info["network"]["dns_name"] == NAME, info
    assert info["network"]["mac"] == "02:fd:0a:4d:%02x:46" % c.n, info
    # VERIFICATION asked from the client's namespace
    assert f"[NetworkOrchestrator]: From the client namespace {c.client_ns}, {new} answers (ICMP echo in" in out, out
    assert f"[DNSManager]: From the client namespace {c.client_ns}, {NAME} answers {new}" in out, out
    assert out.index(f"{NAME} answers {new}") < out.index("Source cleaned up")
    # the source forwards the old address for the old TTL + 10 s
    assert f"[TrafficRedirector]: hostA forwards {old}/24 to {new}/24 for 70 s" in out, out
    wait_for(lambda: reachable(c, new), 10, "the container to answer at its new address")
    before = c.b.counter("web")
    wait_for(lambda: c.b.counter("web") > before, 10, "the counter to advance on hostB")


def test_rollback_puts_the_record_back(dns_cluster):
    c = dns_cluster.start(a_extra=dns_cluster.dns_args())
    old = run_web(c)
    new = f"10.77.{c.n}.71"
    p, m = migrate(c, "--new-ip", f"{new}/24", "--", "/bin/false")
    assert p.returncode == 1, p.stdout
    assert_failed_with_rollback(m, "VERIFICATION", "")
    assert f"{NAME} answers {new} from now" in p.stdout, p.stdout
    assert f"[DNSManager]: {NAME} restored: it answers {old} again, TTL 60 s" in p.stdout, p.stdout
    assert c.record() == (old, 60)
    assert "web" in c.a.containers() and "web" not in c.b.containers()
    # the forward of the old address (made at the switchover) is gone with the rollback
    assert f"hostA forwards {old}/24 to {new}/24" in p.stdout, p.stdout
    assert "fleximigrate_fwd" not in nft_tables(c)
    assert f"{old}/32" not in host_addrs(c) and "fmx" not in host_addrs(c)
    wait_for(lambda: reachable(c, old), 10, "the container to answer at its old address again")


def test_rejected_key_fails_preparation_record_unchanged(dns_cluster, tmp_path):
    bad = tmp_path / "bad.key"
    bad.write_text("hmac-sha256:mig-key:" + "QUJD" * 11 + "\n")
    os.chmod(bad, 0o600)
    c = dns_cluster.start(a_extra=dns_cluster.dns_args(key=str(bad)))
    old = run_web(c)
    p, m = migrate(c, "--new-ip", f"10.77.{c.n}.72/24")
    assert p.returncode == 1, p.stdout
    assert_failed_with_rollback(m, "PREPARATION", f"the DNS server did not lower the TTL of {NAME}")
    assert "without a valid signature (a wrong key?)" in m["error"], m["error"]
    assert f"[DNSManager]: {NAME} unchanged: it answers {old}, TTL 60 s, as before the migration" in p.stdout
    assert "Freezing" not in p.stdout
    assert c.record() == (old, 60)
    assert "web" in c.a.containers() and "web" not in c.b.containers()


def test_silent_server_fails_preparation_in_bounded_time(dns_cluster):
    # a UDP socket that never answers, in host A's namespace
    silent = subprocess.Popen(["nsenter", f"--net=/run/netns/{dns_cluster.a.netns}", "/usr/bin/python3", "-c",
                               "import socket,time\n"
                               "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(('127.0.0.1',15599))\n"
                               "time.sleep(120)"])
    try:
        c = dns_cluster.start(a_extra=dns_cluster.dns_args(server="127.0.0.1:15599"))
        old = run_web(c)
        p, m = migrate(c, "--new-ip", f"10.77.{c.n}.73/24")
        assert p.returncode == 1, p.stdout
        assert_failed_with_rollback(m, "PREPARATION", f"DNS name {NAME} of web")
        assert "Freezing" not in p.stdout
        assert m["total_ms"] < 15000, m["total_ms"]
        assert c.record() == (old, 60)
        assert "web" in c.a.containers() and "web" not in c.b.containers()
    finally:
        silent.kill()
        silent.wait()


def test_new_ip_refused_without_an_address(cluster):
    c = cluster.start()
    c.a.cli("run", "plain", "--image", "busybox", "--", *COUNTER_CMD)
    p = c.a.cli("migrate", "-v", "plain", "--to", "hostB", "--new-ip", f"10.77.{c.n}.74/24", check=False)
    assert p.returncode == 1
    mid = next(l.split()[1] for l in p.stdout.splitlines() if l.startswith("migration "))
    assert_failed_with_rollback(migration(c.a, mid), "PREPARATION",
                                "plain has no address of its own (fleximigrate run --ip) for \"new_ip\" to change")
    p = c.a.cli("migrate", "plain", "--to", "hostB", "--new-ip", "10.77.1.300/24", check=False)
    assert p.returncode == 2 and "--new-ip 10.77.1.300/24: give the address with its prefix" in p.stderr, p.stderr
    s, body = c.a.api("POST", "/v1/migrations", {"container": "plain", "to": "hostB", "_net": {"ip": "10.0.0.1"}})
    assert s == 400 and "names starting with _ are the controller's own" in body["error"]["message"], body


def test_client_that_cannot_connect_fails_verification(cluster):
    """--probe-netns: a client namespace that cannot connect to the
    container's --verify-port fails VERIFICATION: rolled back, the container
    runs on at the source."""
    client_ns = f"/run/netns/{cluster.prefix}-c"
    c = cluster.start(a_extra=["--probe-netns", client_ns])
    ip = f"10.77.{c.n}.57"
    c.a.cli("run", "web", "--image", "busybox", "--ip", f"{ip}/24", "--", *COUNTER_CMD)
    p = c.a.cli("migrate", "-v", "web", "--to", "hostB", "--verify-port", "9", check=False)
    assert p.returncode == 1, p.stdout
    mid = next(l.split()[1] for l in p.stdout.splitlines() if l.startswith("migration "))
    m = migration(c.a, mid)
    assert_failed_with_rollback(m, "VERIFICATION", f"a client cannot reach web: {ip}:9 did not accept a TCP "
                                                   f"connection from {client_ns} within 5000 ms")
    assert "web" in c.a.containers() and "web" not in c.b.containers()
    # the same move with an ICMP echo (no port) passes
    p = c.a.cli("migrate", "-v", "web", "--to", "hostB", check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"From the client namespace {client_ns}, {ip} answers (ICMP echo in" in p.stdout, p.stdout


def test_addresses_are_reserved(cluster):
    """An address belongs to one container per host: a second `run` with it
    is refused, and a migration whose (new) address a container on the
    destination holds fails in PREPARATION, nothing frozen."""
    c = cluster.start()
    taken = f"10.77.{c.n}.58"
    c.b.cli("image", "import", "busybox", rootfs())
    c.b.cli("run", "other", "--image", "busybox", "--ip", f"{taken}/24", "--", *COUNTER_CMD)
    p = c.b.cli("run", "twin", "--image", "busybox", "--ip", f"{taken}/24", "--", *COUNTER_CMD, check=False)
    assert p.returncode == 1 and f"address {taken} is taken on hostB by container other" in p.stderr, p.stderr
    c.a.cli("run", "web", "--image", "busybox", "--ip", f"10.77.{c.n}.59/24", "--", *COUNTER_CMD)
    p = c.a.cli("migrate", "-v", "web", "--to", "hostB", "--new-ip", f"{taken}/24", check=False)
    assert p.returncode == 1, p.stdout
    mid = next(l.split()[1] for l in p.stdout.splitlines() if l.startswith("migration "))
    assert_failed_with_rollback(migration(c.a, mid), "PREPARATION", f"address {taken} is taken on hostB by container other")
    assert "Freezing" not in p.stdout
    assert "web" in c.a.containers() and "web" not in c.b.containers()
