"""The test bed every scenario runs on: two namespace hosts (scripts/hosts.sh)
joined by one shaped link, a client namespace on host A's bridge, a
fleximigrated on each host, and the resource meter that charges CPU and memory
to each host's migration processes."""
import json
import os
import shutil
import signal
import subprocess
import threading
import time

from .util import (BUILD_CLI, BUILD_DAEMON, BUILD_SHIM, CRIU, HOSTS_SH, BenchError, alive, git_state, mounts_under, read, run,
                   tcp_listening, wait_for, write_secret)

PREFIX = "fmb"
NET = 20
WORK = "/tmp/fm-bench"
BRIDGE = "fmbr"
API_PORT = 7070
IPERF_PORT = 17099
HOSTS = {
    # own daemon names: a container's cgroup is /fleximigrate/HOST/NAME and its
    # network namespace fm-HOST-NAME, so hostA/hostB would collide with e2e runs
    "a": {"name": "benchA", "netns": f"{PREFIX}-a", "ip": f"10.77.{NET}.1"},
    "b": {"name": "benchB", "netns": f"{PREFIX}-b", "ip": f"10.77.{NET}.2"},
}
OTHER = {"a": "b", "b": "a"}
CLIENT_NS = f"{PREFIX}-c"           # 10.77.NET.3, on host A's bridge (scripts/hosts.sh)
CGROUP_TOP = "fm-bench"             # the baselines' containers and each host's tool group live below it
# the binaries are copied here at the start: one run, one build, even if the tree
# is rebuilt meanwhile
DAEMON = os.path.join(WORK, "bin", "fleximigrated")
CLI = os.path.join(WORK, "bin", "fleximigrate")
RSS_SAMPLE_S = 0.005


def ns(h):
    return ["nsenter", f"--net=/run/netns/{HOSTS[h]['netns']}"]


def link_mbit_nominal(rate):
    """'1gbit' -> 1000, '100mbit' -> 100, '20mbit' -> 20."""
    r = rate.lower()
    for suffix, f in (("gbit", 1000), ("mbit", 1), ("kbit", 0.001)):
        if r.endswith(suffix):
            return float(r[:-len(suffix)]) * f
    raise ValueError(rate)


class Meter:
    """CPU seconds and peak resident memory of the processes that do a migration,
    per host.  Each host has a cgroup of its own (CGROUP_TOP/tools-H in the
    cpuacct hierarchy, or in the unified one): its fleximigrated runs there, and
    so does every baseline command on that host (runc, criu, tar, socat,
    podman).  Children stay in it, so CRIU's dump and lazy-pages daemons are
    charged to the daemon that started them.  Containers are not: runc moves
    them into cgroups of their own.  (runc also moves the CRIU that restores a
    container into that container's cgroup, for every runc-based system alike:
    CRIU's restore is counted by none.)

    CPU: the cgroup's own counter (cpuacct.usage, or cpu.stat usage_usec), which
    keeps the time of processes that have exited.  Memory: the sum of the
    resident sets (statm) of the cgroup's processes, sampled every 5 ms by a
    thread of this script; the peak of that sum.  A process that lives less
    than 5 ms can be missed."""

    def __init__(self):
        self.v2 = False
        base = None
        with open("/proc/self/mountinfo") as f:
            for line in f:
                x = line.split()
                sep = x.index("-")
                fstype, opts = x[sep + 1], x[sep + 3].split(",")
                if fstype == "cgroup" and "cpuacct" in opts:
                    base = x[4]
                    break
                if fstype == "cgroup2" and x[4] == "/sys/fs/cgroup":
                    base, self.v2 = x[4], True
        if not base:
            raise BenchError("no cgroup hierarchy with CPU accounting (cpuacct, or cgroup v2 at /sys/fs/cgroup)")
        self.dirs = {h: os.path.join(base, CGROUP_TOP, f"tools-{h}") for h in HOSTS}
        self._stop = None
        self._thread = None
        self._peak = {}

    def create(self):
        for d in self.dirs.values():
            os.makedirs(d, exist_ok=True)

    def remove(self):
        for d in self.dirs.values():
            for x in (d, os.path.dirname(d)):
                try:
                    os.rmdir(x)
                except OSError:
                    pass

    def joiner(self, h):
        """A preexec_fn: the new process joins host h's tool group before it runs
        anything (its children follow)."""
        procs = os.path.join(self.dirs[h], "cgroup.procs")

        def join():
            with open(procs, "w") as f:
                f.write(f"{os.getpid()}\n")
        return join

    def cpu_ns(self, h):
        if self.v2:
            for line in read(os.path.join(self.dirs[h], "cpu.stat")).splitlines():
                if line.startswith("usage_usec "):
                    return int(line.split()[1]) * 1000
            raise BenchError(f"no usage_usec in {self.dirs[h]}/cpu.stat")
        return int(read(os.path.join(self.dirs[h], "cpuacct.usage")))

    def rss_kib(self, h):
        total = 0
        page_kib = os.sysconf("SC_PAGE_SIZE") // 1024
        try:
            pids = read(os.path.join(self.dirs[h], "cgroup.procs")).split()
        except OSError:
            return 0
        for pid in pids:
            try:
                total += int(read(f"/proc/{pid}/statm").split()[1]) * page_kib
            except (OSError, IndexError, ValueError):
                pass   # it exited between the listing and the read
        return total

    def start(self):
        """Begins a measurement window (one migration)."""
        self._cpu0 = {h: self.cpu_ns(h) for h in HOSTS}
        self._peak = {h: self.rss_kib(h) for h in HOSTS}
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(RSS_SAMPLE_S):
                for h in HOSTS:
                    v = self.rss_kib(h)
                    if v > self._peak[h]:
                        self._peak[h] = v
        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()

    def stop(self, src, dst):
        """Ends the window: {cpu_s, peak_rss_kib} overall and per end."""
        self._stop.set()
        self._thread.join()
        cpu = {h: (self.cpu_ns(h) - self._cpu0[h]) / 1e9 for h in HOSTS}
        return {"cpu_s": round(cpu[src] + cpu[dst], 3), "peak_rss_kib": max(self._peak[src], self._peak[dst]),
                "cpu_s_source": round(cpu[src], 3), "cpu_s_destination": round(cpu[dst], 3),
                "peak_rss_kib_source": self._peak[src], "peak_rss_kib_destination": self._peak[dst]}


class Testbed:
    def __init__(self):
        self.daemons = {}          # h -> Popen of the daemon (nsenter execs it in place)
        self.procs = []            # helper processes (client, socat, tar, iperf3) to reap at teardown
        self.runc_roots = [os.path.join(WORK, f"host{h}", "runc") for h in HOSTS]
        self.cgroup_dirs = []      # cgroups (relative to a hierarchy) to remove at teardown, deepest first
        self.teardown_hooks = []   # callables run at teardown (baselines' own cleanup)
        self.meter = Meter()
        self.rate = None

    # ---------------------------------------------------------- processes
    def popen(self, h, argv, **kw):
        """A process on host h (in its network namespace when net=True), charged
        to host h's tool group, reaped at teardown."""
        net = kw.pop("net", True)
        p = subprocess.Popen([*ns(h), *argv] if net else argv, preexec_fn=self.meter.joiner(h), **kw)
        self.procs.append(p)
        return p

    def run_on(self, h, argv, timeout=600, net=True, check=False, capture=True, env=None):
        """A command on host h, charged to host h's tool group; output captured
        (capture=False: none, for a command that leaves a process behind holding
        its stdio, such as `runc run -d`)."""
        out = subprocess.PIPE if capture else subprocess.DEVNULL
        p = self.popen(h, argv, net=net, stdin=subprocess.DEVNULL, stdout=out, stderr=out, text=True, env=env)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            raise BenchError(f"timed out after {timeout} s: {' '.join(argv)}")
        finally:
            self.procs = [q for q in self.procs if q.poll() is None]
        if check and p.returncode != 0:
            raise BenchError(f"command failed ({p.returncode}) on {HOSTS[h]['name']}: {' '.join(argv)}\n"
                             f"{(out or '')[-2000:]}{(err or '')[-2000:]}")
        return subprocess.CompletedProcess(argv, p.returncode, out, err)

    # ---------------------------------------------------------- teardown
    def teardown(self, quiet=False):
        for hook in self.teardown_hooks:
            try:
                hook()
            except Exception as e:  # teardown goes on whatever one step says
                print(f"teardown: {e}")
        for h, p in list(self.daemons.items()):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.daemons.clear()
        # daemons of an earlier run left with --keep (or orphaned by a kill -9 of this script)
        for h in HOSTS:
            try:
                pid = int(read(os.path.join(WORK, f"{h}.pid")))
                cmd = read(f"/proc/{pid}/cmdline").split("\0")
            except (OSError, ValueError):
                continue
            if os.path.join(WORK, f"{h}.sock") in cmd:
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 15
                while alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()
        for root in self.runc_roots:
            if not os.path.isdir(root):
                continue
            p = run(["runc", "--root", root, "list", "-q"], check=False)
            for c in p.stdout.split():
                run(["runc", "--root", root, "delete", "-f", c], check=False)
        for m in mounts_under(WORK):
            run(["umount", "-l", m], check=False)
        # container network namespaces the daemons left (fm-benchA-NAME; a daemon
        # removes its own on container rm) and the baselines' (PREFIX-ct*)
        try:
            netns = os.listdir("/run/netns")
        except OSError:
            netns = []
        for n in netns:
            if n.startswith(f"{PREFIX}-ct") or n == f"{PREFIX}-pm" or any(n.startswith(f"fm-{H['name']}-") for H in HOSTS.values()):
                run(["ip", "netns", "del", n], check=False)
        # empty cgroups left behind (runc removes only the leaf), deepest first, in
        # every v1 hierarchy and in the unified one; rmdir fails on non-empty ones
        self.meter.remove()
        dirs = [*self.cgroup_dirs, *(f"fleximigrate/{H['name']}" for H in HOSTS.values()), CGROUP_TOP]
        top = "/sys/fs/cgroup"
        roots = [top, *(os.path.join(top, c) for c in (os.listdir(top) if os.path.isdir(top) else []))]
        for root in roots:
            for d in dirs:
                try:
                    os.rmdir(os.path.join(root, d))
                except OSError:
                    pass
        env = dict(os.environ, FM_NET=str(NET))
        run([HOSTS_SH, "down", PREFIX], check=False, env=env)
        shutil.rmtree(WORK, ignore_errors=True)
        if not quiet:
            print("teardown: daemons stopped, containers deleted, mounts, network namespaces and cgroups removed, "
                  f"hosts down, {WORK} removed")

    # ---------------------------------------------------------- hosts and link
    def up(self, rate):
        """Fresh hosts, link shaped to rate, the binaries copied, the meter's groups."""
        self.teardown(quiet=True)  # leftovers of an earlier --keep or killed run
        os.makedirs(os.path.join(WORK, "bin"))
        for src, dst in ((BUILD_DAEMON, DAEMON), (BUILD_CLI, CLI),
                         (BUILD_SHIM, os.path.join(os.path.dirname(DAEMON), "fm-criu-shim"))):
            shutil.copy2(src, dst)
        self.build = {"fleximigrate_version": run([DAEMON, "--version"], check=False).stdout.strip(),
                      "git": git_state(BUILD_DAEMON)}
        run([HOSTS_SH, "up", rate, PREFIX], env=dict(os.environ, FM_NET=str(NET)))
        self.rate = rate
        self.meter.create()

    def set_rate(self, rate):
        if rate != self.rate:
            run([HOSTS_SH, "rate", rate, PREFIX], env=dict(os.environ, FM_NET=str(NET)))
            self.rate = rate

    def measure_link(self):
        """The link's real rate with iperf3 (A -> B, the direction every
        migration here takes), in Mbit/s, and how it was found."""
        if not shutil.which("iperf3"):
            raise BenchError("iperf3 not found: apt-get install iperf3 (the link's rate is measured, not assumed)")
        srv = subprocess.Popen([*ns("b"), "iperf3", "-s", "-1", "-B", HOSTS["b"]["ip"], "-p", str(IPERF_PORT)],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(srv)
        try:
            wait_for(lambda: srv.poll() is not None or tcp_listening(srv.pid, IPERF_PORT), 10,
                     f"iperf3 to listen on {HOSTS['b']['ip']}:{IPERF_PORT}")
            p = run([*ns("a"), "iperf3", "-c", HOSTS["b"]["ip"], "-p", str(IPERF_PORT), "-t", "3", "-J"],
                    check=False, timeout=30)
            try:
                bps = json.loads(p.stdout)["end"]["sum_received"]["bits_per_second"]
            except (ValueError, KeyError, TypeError):
                # iperf3 3.12 exits 0 on errors too; the reason is in its JSON
                raise BenchError(f"iperf3 across the link failed ({p.returncode}): {p.stdout[-500:]}{p.stderr[-500:]}")
        finally:
            if srv.poll() is None:
                srv.kill()
            srv.wait(5)
        return round(bps / 1e6, 1), f"iperf3 -t 3, {HOSTS['a']['netns']} -> {HOSTS['b']['netns']}, TCP goodput"

    # ---------------------------------------------------------- daemons
    def sock(self, h):
        return os.path.join(WORK, f"{h}.sock")

    def state(self, h):
        return os.path.join(WORK, f"host{h}")

    def cli(self, h, *args, timeout=300, check=True):
        return run([CLI, "-s", self.sock(h), *args], timeout=timeout, check=check)

    def cli_json(self, h, *args):
        return json.loads(self.cli(h, *args, "--json").stdout)

    def start_daemons(self):
        secret = write_secret(os.path.join(WORK, "secret"))
        for h, H in HOSTS.items():
            log = open(os.path.join(WORK, f"{h}.log"), "ab")
            p = subprocess.Popen(
                [*ns(h), DAEMON, "--name", H["name"], "--listen", f"{H['ip']}:{API_PORT}",
                 "--socket", self.sock(h), "--state-dir", self.state(h), "--secret-file", secret,
                 "--bridge", BRIDGE, "--criu", CRIU],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=self.meter.joiner(h))
            log.close()
            self.daemons[h] = p
            with open(os.path.join(WORK, f"{h}.pid"), "w") as f:
                f.write(f"{p.pid}\n")

            def up():
                if p.poll() is not None:
                    raise BenchError(f"daemon {H['name']} exited ({p.returncode}):\n{self.log_tail(h)}")
                return run([CLI, "-s", self.sock(h), "host", "info"], check=False).returncode == 0
            wait_for(up, 20, f"daemon {H['name']} to answer")
            # nsenter without --fork execve()s the daemon in place: the Popen pid is the daemon
            exe = os.readlink(f"/proc/{p.pid}/exe")
            if not exe.startswith(os.path.realpath(DAEMON)):
                raise BenchError(f"pid {p.pid} is {exe}, not {DAEMON}: cannot measure the daemon")
        self.cli("a", "host", "add", HOSTS["b"]["name"], f"{HOSTS['b']['ip']}:{API_PORT}")
        self.cli("b", "host", "add", HOSTS["a"]["name"], f"{HOSTS['a']['ip']}:{API_PORT}")
        info = self.cli_json("a", "host", "info")
        self.criu_version = (info.get("capabilities") or {}).get("criu_version")
        if not self.criu_version:
            raise BenchError(f"host info reports no CRIU version: {info.get('capabilities')}")
        self.runc_version = run(["runc", "--version"]).stdout.splitlines()[0].split()[-1]

    def log_tail(self, h, n=4000):
        try:
            return read(os.path.join(WORK, f"{h}.log"))[-n:]
        except OSError:
            return ""

    def container_file(self, h, name, path):
        """A file inside a FlexiMigrate container's root filesystem on host h."""
        return os.path.join(self.state(h), "containers", name, "rootfs", path.lstrip("/"))
