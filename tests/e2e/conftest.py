"""End-to-end harness: namespace hosts, real fleximigrated daemons, real runc/CRIU.

Every test gets its own pair of hosts (network namespaces PREFIX-a / PREFIX-b joined
by a shaped veth), a daemon in each, and tears everything down afterwards, whatever
happened.  Missing prerequisites fail loudly; nothing is skipped.
"""
import http.client
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "build", "src")
DAEMON = os.path.join(BIN, "fleximigrated")
CLI = os.path.join(BIN, "fleximigrate")
CRIU = "/opt/fleximigrate/criu/bin/criu"
WORK = "/tmp/fm-e2e"
_net = itertools.count(int(os.environ.get("FM_NET_BASE", "40")))

COUNTER_CMD = ["/bin/sh", "-c",
               "i=0; while :; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.05; done"]


def pytest_sessionstart(session):
    problems = []
    if os.geteuid() != 0:
        problems.append("run as root (namespaces, runc, CRIU need it)")
    for path, what in ((DAEMON, "build first: make build"), (CLI, "build first: make build"),
                       (CRIU, "install CRIU: scripts/setup.sh")):
        if not os.access(path, os.X_OK):
            problems.append(f"{path} missing: {what}")
    for tool in ("runc", "busybox", "ip", "tc", "nsenter"):
        if not shutil.which(tool):
            problems.append(f"{tool} not found: scripts/setup.sh installs it")
    if problems:
        pytest.exit("e2e prerequisites missing:\n  " + "\n  ".join(problems), returncode=3)


def write_secret(path):
    """A cluster secret file (mode 0600) for --secret-file."""
    import base64
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, base64.b64encode(os.urandom(32)).rstrip(b"=") + b"\n")
    os.close(fd)
    return path


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=60):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class Daemon:
    def __init__(self, name, netns, ip, workdir, extra=()):
        self.name, self.netns, self.ip = name, netns, ip
        self.addr = f"{ip}:7070"
        self.sock = os.path.join(workdir, f"{name}.sock")
        self.state = os.path.join(workdir, name)
        self.logpath = os.path.join(workdir, f"{name}.log")
        self.extra = list(extra)
        self.proc = None

    def start(self, extra=None):
        if extra is not None:
            self.extra = list(extra)
        log = open(self.logpath, "ab")
        self.proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.netns}", DAEMON, "--name", self.name,
             "--listen", self.addr, "--socket", self.sock, "--state-dir", self.state,
             "--data-timeout", "3000", "--secret-file", os.path.join(os.path.dirname(self.sock), "secret"),
             "--bridge", "fmbr",
             *self.extra],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon {self.name} exited: {self.log()[-2000:]}")
            try:
                self.api("GET", "/v1/info")
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"daemon {self.name} did not come up: {self.log()[-2000:]}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def log(self):
        try:
            with open(self.logpath, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def api(self, method, path, body=None, timeout=60):
        c = UnixHTTPConnection(self.sock, timeout)
        data = json.dumps(body) if body is not None else None
        c.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
        r = c.getresponse()
        raw = r.read()
        c.close()
        return r.status, (json.loads(raw) if raw else None)

    def cli(self, *args, check=True, timeout=300):
        p = subprocess.run([CLI, "-s", self.sock, *args], capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"fleximigrate {' '.join(args)} failed ({p.returncode}):\n"
                                 f"{p.stdout}\n{p.stderr}")
        return p

    # -- facts about this host, read from the outside -----------------------
    def containers(self):
        return {c["name"]: c for c in self.api("GET", "/v1/containers")[1]}

    def runc_list(self):
        root = os.path.join(self.state, "runc")
        p = subprocess.run(["runc", "--root", root, "list", "-q"], capture_output=True, text=True)
        return [l for l in p.stdout.split() if l]

    def counter(self, name):
        """The counter COUNTER_CMD writes.  Its shell truncates the file before each
        write, so a read can land between the two and find it empty: read again."""
        path = os.path.join(self.state, "containers", name, "rootfs", "tmp", "counter")
        deadline = time.monotonic() + 2
        while True:
            with open(path) as f:
                text = f.read().strip()
            if text or time.monotonic() > deadline:
                return int(text or 0)
            time.sleep(0.005)

    def mounts(self):
        with open("/proc/self/mountinfo") as f:
            return [l.split()[4] for l in f if self.state + "/" in l.split()[4]]

    def staging(self):
        d = os.path.join(self.state, "migrations")
        return os.listdir(d) if os.path.isdir(d) else []

    def reserved(self):
        return self.api("GET", "/v1/info")[1]["allocation"]["reserved"]


class Cluster:
    def __init__(self, rate="1gbit"):
        self.n = next(_net)
        self.prefix = f"fmt{self.n}"
        self.work = os.path.join(WORK, self.prefix)
        shutil.rmtree(self.work, ignore_errors=True)
        os.makedirs(self.work)
        write_secret(os.path.join(self.work, "secret"))
        env = dict(os.environ, FM_NET=str(self.n))
        subprocess.run([os.path.join(ROOT, "scripts", "hosts.sh"), "up", rate, self.prefix],
                       check=True, env=env, capture_output=True)
        self.a = Daemon("hostA", f"{self.prefix}-a", f"10.77.{self.n}.1", self.work)
        self.b = Daemon("hostB", f"{self.prefix}-b", f"10.77.{self.n}.2", self.work)

    def start(self, a_extra=(), b_extra=()):
        self.a.start(a_extra)
        self.b.start(b_extra)
        self.a.cli("host", "add", "hostB", self.b.addr)
        self.b.cli("host", "add", "hostA", self.a.addr)
        self.a.cli("image", "import", "busybox", rootfs())
        return self

    def link(self, state):
        env = dict(os.environ, FM_NET=str(self.n))
        subprocess.run([os.path.join(ROOT, "scripts", "hosts.sh"), "link", state, self.prefix],
                       check=True, env=env)

    def teardown(self):
        stop_daemons((self.a, self.b))
        env = dict(os.environ, FM_NET=str(self.n))
        subprocess.run([os.path.join(ROOT, "scripts", "hosts.sh"), "down", self.prefix], env=env)
        if os.environ.get("FM_KEEP_WORK") != "1":
            shutil.rmtree(self.work, ignore_errors=True)


def stop_daemons(daemons):
    """Kills the daemons and removes what their containers left: runc
    containers, mounts, the containers' network namespaces."""
    for d in daemons:
        d.kill9()
    for d in daemons:
        root = os.path.join(d.state, "runc")
        for c in d.runc_list():
            subprocess.run(["runc", "--root", root, "delete", "-f", c], capture_output=True)
        for m in sorted(d.mounts(), key=len, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)
        # containers' own networks (runtime/net.c: fm-HOST-NAME); deleting
        # the namespace takes the veth port on the host's bridge with it
        for ns in (os.listdir("/run/netns") if os.path.isdir("/run/netns") else []):
            if ns.startswith(f"fm-{d.name}-"):
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)


_rootfs = None


def rootfs():
    global _rootfs
    if _rootfs is None:
        _rootfs = os.path.join(WORK, "rootfs-busybox")
        subprocess.run([os.path.join(ROOT, "scripts", "mk-rootfs.sh"), _rootfs], check=True)
    return _rootfs


_workload_rootfs = None
MEMLOAD = os.path.join(ROOT, "build", "fm-memload")
UDPECHO = os.path.join(ROOT, "build", "fm-udpecho")


def workload_rootfs():
    """busybox + our test workloads: fm-memload (tests/workload/memload.c) at
    /bin/fm-memload, fm-udpecho (tests/workload/udpecho.c) at /bin/fm-udpecho."""
    global _workload_rootfs
    if _workload_rootfs is None:
        for b in (MEMLOAD, UDPECHO):
            if not os.path.exists(b):
                raise AssertionError(f"{b} missing: build first (make build)")
        _workload_rootfs = os.path.join(WORK, "rootfs-workload")
        subprocess.run([os.path.join(ROOT, "scripts", "mk-rootfs.sh"), _workload_rootfs], check=True)
        for b in (MEMLOAD, UDPECHO):
            shutil.copy(b, os.path.join(_workload_rootfs, "bin", os.path.basename(b)))
    return _workload_rootfs


def memload_status(d, name):
    """fm-memload's status line as a dict (see tests/workload/memload.c), or None."""
    try:
        with open(os.path.join(d.state, "containers", name, "rootfs", "tmp", "memload.status")) as f:
            v = f.read().split()
    except OSError:
        return None
    if len(v) != 8:
        return None
    keys = ("iterations", "errors", "full_scans", "max_gap_ms", "gap_sum_ms", "hot_passes", "size_mib", "hot_mib")
    return {k: float(x) if "ms" in k else int(x) for k, x in zip(keys, v)}


def _cluster(request, rate):
    c = Cluster(rate=rate)
    yield c
    if getattr(request.node, "rep_call", None) and request.node.rep_call.failed:
        for d in (c.a, c.b):
            print(f"\n----- log of {d.name} -----\n{d.log()[-6000:]}")
    c.teardown()


@pytest.fixture
def cluster(request):
    """Two hosts on a 1 Gbit/s link."""
    yield from _cluster(request, "1gbit")


@pytest.fixture
def slow(request):
    """Two hosts on a 100 Mbit/s link: long enough transfers to hit them mid-way."""
    yield from _cluster(request, "100mbit")


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


class Fabric:
    """scripts/fabric.sh: Open vSwitch in userspace in its own namespace, hosts
    PREFIX-a/-b/-e (10.77.N.1/.2/.4, switch ports 1/2/3) and a client PREFIX-c
    (10.77.N.3, port 10)."""

    def __init__(self):
        self.n = next(_net)
        self.prefix = f"fmf{self.n}"
        self.run_dir = f"/run/fleximigrate/fabric-{self.prefix}"
        self.env = dict(os.environ, FM_NET=str(self.n), FM_FABRIC_RUN=self.run_dir, OVS_RUNDIR=self.run_dir)
        self.mgmt = f"unix:{self.run_dir}/fmsw.mgmt"
        self.script = os.path.join(ROOT, "scripts", "fabric.sh")
        subprocess.run([self.script, "up", self.prefix], check=True, env=self.env, capture_output=True)

    def ip(self, host):
        return f"10.77.{self.n}.{ {'a': 1, 'b': 2, 'c': 3, 'e': 4}[host] }"

    def ns(self, host):
        return f"{self.prefix}-{host}"

    def ofctl(self, *args):
        return subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", *args], check=True, env=self.env,
                              capture_output=True, text=True).stdout

    def vsctl(self, *args):
        return subprocess.run(["ovs-vsctl", f"--db=unix:{self.run_dir}/db.sock", "--timeout=10", *args], check=True,
                              env=self.env, capture_output=True, text=True).stdout

    def flows(self):
        return [l.strip() for l in self.ofctl("dump-flows", "--no-stats", self.mgmt).splitlines() if "actions=" in l]

    def switch_restart(self):
        subprocess.run([self.script, "switch-restart", self.prefix], check=True, env=self.env, capture_output=True)

    def teardown(self):
        subprocess.run([self.script, "down", self.prefix], env=self.env, capture_output=True)


@pytest.fixture
def fabric():
    f = Fabric()
    yield f
    f.teardown()


class FabricCluster:
    """Daemons on the fabric's hosts A and B, each told its switch port; A's
    controller programs the switch (--sdn, --ovsdb)."""

    def __init__(self, fabric):
        self.fabric, self.n = fabric, fabric.n
        self.work = os.path.join(WORK, fabric.prefix)
        shutil.rmtree(self.work, ignore_errors=True)
        os.makedirs(self.work)
        write_secret(os.path.join(self.work, "secret"))
        self.a = Daemon("hostA", fabric.ns("a"), fabric.ip("a"), self.work)
        self.b = Daemon("hostB", fabric.ns("b"), fabric.ip("b"), self.work)

    def start(self):
        f = self.fabric
        self.a.start(["--switch-port", f"{f.prefix}a", "--sdn", f.mgmt, "--ovsdb", f"unix:{f.run_dir}/db.sock"])
        self.b.start(["--switch-port", f"{f.prefix}b"])
        self.a.cli("host", "add", "hostB", self.b.addr)
        self.b.cli("host", "add", "hostA", self.a.addr)
        self.a.cli("image", "import", "busybox", rootfs())
        return self

    def teardown(self):
        stop_daemons((self.a, self.b))
        if os.environ.get("FM_KEEP_WORK") != "1":
            shutil.rmtree(self.work, ignore_errors=True)


@pytest.fixture
def fabric_cluster(fabric):
    c = FabricCluster(fabric)
    yield c
    c.teardown()


def wait_for(pred, timeout=30, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# the seed's example policy, as the seed writes it
SEED_POLICIES = [{
    "policy_name": "adaptive_load_balancing",
    "CONTEXT": ["source_cpu_utilization", "destination_cpu_utilization", "time_of_day",
                "network_congestion_prob", "service_type"],
    "CONDITIONS": "(source_cpu_utilization > 80 and destination_cpu_utilization < 50) or "
                  "(time_of_day >= 18 and time_of_day <= 22 and service_type == \"critical\") or "
                  "(network_congestion_prob < 0.2)",
    "ACTIONS": ["allow_migration", "set_priority(\"high\")", "trigger_load_balancer_reconfiguration"],
    "CONSTRAINTS": {"max_concurrent_migrations": 5, "migration_duration": 300},
    "PRIORITY": 2,
}]


def wait_monitored(*daemons):
    """Until each daemon's Resource Monitor has its first figures: before,
    a policy reading them cannot be evaluated (and fails closed)."""
    for d in daemons:
        for figure in ("network_congestion_prob", "cpu_utilization_percent", "memory_utilization_percent"):
            wait_for(lambda: (d.api("GET", "/v1/info")[1]["monitor"][figure] or {}).get("samples", 0) >= 2,
                     20, f"{d.name}'s Resource Monitor's first samples")


def write_policies_file(d, doc):
    """A policy file for daemon d (its --policies), beside its state."""
    path = os.path.join(os.path.dirname(d.state), f"{d.name}-policies.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    return path


def migration(d, mid):
    return d.api("GET", f"/v1/migrations/{mid}?events_since=0")[1]


def wait_finished(d, mid, timeout=90):
    return wait_for(lambda: (lambda m: m if m["finished"] else None)(migration(d, mid)), timeout,
                    f"migration {mid} to finish")


def leftover_processes(d):
    """Processes other than the daemon working in d's state directory (CRIU,
    runc): after a migration ends there must be none."""
    own = d.proc.pid if d.proc else None
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if int(pid) != own and any(a.startswith(d.state.encode() + b"/") for a in argv):
            found.append(b" ".join(argv).decode(errors="replace")[:200])
    return found


def assert_clean_destination(dst, name):
    assert name not in dst.containers(), f"{name} left on {dst.name}"
    wait_for(lambda: not leftover_processes(dst), 10, f"processes of {dst.name} to end: {leftover_processes(dst)}")
    assert dst.runc_list() == [], f"runc containers left on {dst.name}: {dst.runc_list()}"
    assert dst.staging() == [], f"staging left on {dst.name}: {dst.staging()}"
    assert dst.mounts() == [], f"mounts left on {dst.name}: {dst.mounts()}"
    assert os.listdir(os.path.join(dst.state, "tmp")) == [], f"scratch left on {dst.name}"
    assert not os.path.exists(os.path.join(dst.state, "containers", name)), "bundle left behind"
    r = dst.reserved()
    assert r["cpu_milli"] == 0 and r["memory_bytes"] == 0, f"reservation left on {dst.name}: {r}"


def assert_running_and_advancing(d, name):
    c = d.containers().get(name)
    assert c and c["status"] == "running", f"{name} not running on {d.name}: {c}"
    v1 = d.counter(name)
    wait_for(lambda: d.counter(name) > v1, 5, f"counter of {name} to advance on {d.name}")


def assert_failed_with_rollback(m, failed_in, error_part):
    states = [t["to"] for t in m["transitions"]]
    assert m["state"] == "FAILED" and m["finished"], m
    assert states[-3:] == ["FAILED", "ROLLBACK", "FAILED"], states
    first_failed = next(t for t in m["transitions"] if t["to"] == "FAILED")
    assert first_failed["from"] == failed_in, (first_failed, states)
    assert error_part in (m["error"] or ""), m["error"]
    msgs = [e["message"] for e in m["events"]]
    assert any("Transitioning: " + failed_in + " -> FAILED" in x for x in msgs), msgs
    assert any("Transitioning: FAILED -> ROLLBACK" in x for x in msgs), msgs
    assert msgs[-1].endswith("Final State: FAILED"), msgs[-1]
