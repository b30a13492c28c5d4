"""The Resource Monitor: real counters of the host and its containers (procfs,
cgroups, the container's own network namespace), as JSON in the API, as
Prometheus metrics that `promtool check metrics` accepts, and as the values
policies' CONDITIONS read."""
import json
import os
import subprocess

from conftest import SEED_POLICIES, UnixHTTPConnection, wait_for, wait_monitored, write_policies_file

BUSY_CMD = ["/bin/sh", "-c", "while :; do :; done"]
# writes 4 MiB to its root filesystem every half second (page cache: the
# cgroup's memory grows), and counts
WRITER_CMD = ["/bin/sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /tmp/counter; "
              "dd if=/dev/zero of=/tmp/blob bs=1M count=4 2>/dev/null; sleep 0.5; done"]


def metrics(d):
    c = UnixHTTPConnection(d.sock, 30)
    c.request("GET", "/metrics")
    r = c.getresponse()
    body = r.read().decode()
    ctype = r.getheader("Content-Type")
    c.close()
    assert r.status == 200, body
    return ctype, body


def sample_value(text, name, **labels):
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name + ("{" + want if want else " ")):
            if not want or line.startswith(f"{name}{{{want}"):
                return float(line.rsplit(" ", 1)[1])
    return None


def test_host_and_container_figures_and_prometheus(cluster):
    a = cluster.start(a_extra=["--uplink-rate", "1G"]).a
    a.cli("run", "busy", "--image", "busybox", "--label", "service_type=critical", "--", *BUSY_CMD)
    a.cli("run", "writer", "--image", "busybox", "--", *WRITER_CMD)
    # its own network namespace: its traffic is counted there
    ip = f"10.77.{cluster.n}.50"
    a.cli("run", "netc", "--image", "busybox", "--ip", f"{ip}/24", "--", "/bin/sleep", "3600")

    def usage(name):
        u = a.api("GET", f"/v1/containers/{name}")[1].get("usage")
        return u if u and u["cpu_utilization_percent"] and u["cpu_utilization_percent"]["samples"] >= 3 else None
    busy = wait_for(lambda: usage("busy"), 20, "three CPU samples of busy")
    # a shell spinning: most of a core (two cores shared with the rest of the test)
    assert busy["cpu_utilization_percent"]["mean"] > 30, busy
    assert busy["cpu_utilization_percent"]["max"] <= 105, busy
    assert busy["cgroup_version"] in (1, 2), busy
    assert busy["memory_bytes"]["last"] > 0, busy
    writer = wait_for(lambda: usage("writer"), 20, "samples of writer")
    assert writer["cpu_utilization_percent"]["mean"] < busy["cpu_utilization_percent"]["mean"], (writer, busy)
    assert a.api("GET", "/v1/containers/busy")[1]["labels"] == {"service_type": "critical"}

    mon = a.api("GET", "/v1/info")[1]["monitor"]
    assert mon["interval_ms"] == 1000 and mon["cpus"] >= 1, mon
    # the busy container alone keeps a core of the host's busy
    assert mon["cpu_utilization_percent"]["mean"] > 100 / mon["cpus"] / 3, mon
    assert 0 < mon["memory_utilization_percent"]["last"] < 100, mon
    # the uplink is the interface holding --listen's address (here the host's
    # bridge, whose speed the kernel does not know: the rate is stated)
    assert mon["uplink"]["interface"] == "fmbr", mon
    assert mon["uplink"]["capacity_bps"] == 1e9 and mon["uplink"]["capacity_origin"] == "stated (--uplink-rate)", mon
    assert 0 <= mon["network_congestion_prob"]["last"] <= 1, mon
    assert mon["overloaded"] == {"cpu": False, "memory": False}, mon

    # traffic on the uplink shows in its counters and rates
    before = mon["uplink"]["rx_bps"]["max"]
    server = subprocess.Popen(["ip", "netns", "exec", cluster.a.netns, "iperf3", "-s", "-1", "-p", "15201"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: subprocess.run(["ip", "netns", "exec", cluster.b.netns, "iperf3", "-c", cluster.a.ip, "-p",
                                         "15201", "-t", "3", "-b", "200M"], capture_output=True).returncode == 0,
                 10, "an iperf3 run at 200 Mbit/s")
    finally:
        server.kill()
        server.wait()
    up = wait_for(lambda: (lambda u: u if u["rx_bps"]["max"] > 100e6 else None)(
        a.api("GET", "/v1/info")[1]["monitor"]["uplink"]), 10, "iperf3's bytes in the uplink's rate")
    assert before < 100e6 and up["rx_bps"]["max"] < 300e6 and 0.1 < up["utilization"]["max"] < 0.3, up

    subprocess.run(["ip", "netns", "exec", cluster.b.netns, "iperf3", "-c", ip, "-p", "1", "-t", "1"],
                   capture_output=True)  # nothing listens: SYN and RST, a few packets each way
    net = wait_for(lambda: (lambda u: u if u and u["net_rx_bps"] and u["net_rx_bps"]["max"] > 0 else None)(
        a.api("GET", "/v1/containers/netc")[1].get("usage")), 10, "netc's packets in its namespace's counters")
    assert net["net_rx_bps"]["max"] < 1e6, net

    ctype, text = metrics(a)
    assert ctype.startswith("text/plain; version=0.0.4"), ctype
    p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.strip() == "" and p.stderr.strip() == "", p.stdout + p.stderr + text
    assert sample_value(text, "fleximigrate_container_cpu_seconds_total", container="busy") > 1
    assert sample_value(text, "fleximigrate_container_memory_bytes", container="writer") > 4 << 20
    assert sample_value(text, "fleximigrate_container_network_receive_bytes_total", container="netc",
                        interface="eth0") > 0
    assert sample_value(text, "fleximigrate_host_network_receive_bytes_total",
                        interface=mon["uplink"]["interface"]) > 50e6
    assert 0 < sample_value(text, "fleximigrate_host_cpu_utilization_ratio", stat="mean") <= 1
    assert sample_value(text, "fleximigrate_host_overloaded", resource="cpu") == 0
    assert sample_value(text, "fleximigrate_migrations_finished_total", state="COMPLETED") == 0
    assert sample_value(text, "fleximigrate_daemon_resident_memory_bytes") > 1 << 20


def test_policies_read_measured_values(cluster):
    """Policies decide on measured values: a higher policy denies moving a
    container that measures idle; the seed's example policy, unchanged, allows
    the busy one (the link is quiet: its third clause); the values each saw
    are in the log."""
    seed = SEED_POLICIES + [{
        "policy_name": "busy_only", "CONTEXT": ["container_cpu_utilization", "container"],
        "CONDITIONS": "container == \"idle\" and container_cpu_utilization < 50",
        "ACTIONS": ["deny_migration"], "PRIORITY": 5,
    }]
    path = write_policies_file(cluster.a, seed)
    a = cluster.start(a_extra=["--policies", path]).a
    a.cli("run", "idle", "--image", "busybox", "--", "/bin/sleep", "3600")
    a.cli("run", "busy", "--image", "busybox", "--label", "service_type=critical", "--", *BUSY_CMD)
    wait_for(lambda: (a.api("GET", "/v1/containers/idle")[1].get("usage") or {}).get("cpu_utilization_percent"),
             20, "samples of idle")
    wait_monitored(a, cluster.b)
    p = a.cli("migrate", "-v", "idle", "--to", "hostB", check=False)
    assert p.returncode == 1 and "policy busy_only (priority 5) denies the migration" in p.stderr + p.stdout, \
        p.stdout + p.stderr
    assert "container_cpu_utilization=" in p.stdout + p.stderr
    p = a.cli("migrate", "-v", "busy", "--to", "hostB", check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    line = next(l for l in p.stdout.splitlines() if "Migration allowed: policy adaptive_load_balancing" in l)
    for var in ("source_cpu_utilization=", "destination_cpu_utilization=", "network_congestion_prob=",
                'service_type="critical"'):
        assert var in line, line
    # its labels moved with it
    assert cluster.b.api("GET", "/v1/containers/busy")[1]["labels"] == {"service_type": "critical"}
