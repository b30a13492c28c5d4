"""Scenarios B and C: real services under load, each in a container that has
the host's /usr bound read-only (`run --volume /usr:/usr:ro`; the image holds
only busybox, the lib symlinks and the service's own files), moved by every
system with the same measurement as scenario A, the probe asking instead of
listening:

  B  Redis (Debian's redis-server) holding M MiB of random values
     (redisdata.py: incompressible, every one checkable), under a constant
     redis-benchmark SET load on its own keys, at 1 Gbit/s; the probe INCRs its
     own key every 1 ms (each answer must be the last plus one: state neither
     lost nor repeated); after the move every value is read back and compared.
  C  nginx serving a small page under a constant wrk load on keep-alive
     connections (paced: wrk's delay()), at 100 Mbit/s: the fixed costs of a
     move; the probe GETs the page every 1 ms and checks it.

Both load generators and the probe run in the client namespace.  The probe
reports the largest gap between two answers (downtime), the gaps over 20 ms,
its errors and reconnects; the load generator's requests and errors are
recorded beside them.
"""
import json
import os
import re
import signal
import subprocess

from .memory import MEDIAN_KEYS, MemoryScenario
from .probe import HTTP_BODY
from .testbed import CLIENT_NS, HOSTS
from .util import PY, BenchError, run, wait_for

USR_RO = (("/usr", "/usr", True),)
REDIS_PORT = 6379
HTTP_PORT = 80
REDIS_KEYS_PER_MIB = 700          # 1 KiB values: ~1490 B of Redis's RSS per key here
REDIS_VALUE = 1024
REDISDATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "redisdata.py")
NGINX_CONF = "/etc/fm-nginx.conf"
WRK_SCRIPT = "/fm-wrk-pace.lua"   # in the bench work dir, read by wrk in the client namespace
WRK_CONNECTIONS, WRK_DELAY_MS = 8, 5       # paced: about 1600 requests/s
REDIS_BENCH_CLIENTS = 2

NGINX_CONF_TEXT = """# bench/run scenario C (bench/fmbench/service.py)
daemon off;
master_process off;
user root root;
worker_processes 1;
pid /tmp/nginx.pid;
error_log /tmp/nginx-error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path /tmp/nginx-body;
    proxy_temp_path /tmp/nginx-proxy;
    fastcgi_temp_path /tmp/nginx-fastcgi;
    uwsgi_temp_path /tmp/nginx-uwsgi;
    scgi_temp_path /tmp/nginx-scgi;
    keepalive_requests 1000000000;
    keepalive_timeout 600s;
    server { listen 80; root /www; }
}
"""


def add_to_rootfs(rootfs, page):
    """What the services need in the shared bench image: /lib and /lib64 as the
    host's (merged /usr: they point into the bound /usr), an empty /usr, nginx's
    configuration and the page."""
    for link in ("lib", "lib64"):
        if not os.path.lexists(os.path.join(rootfs, link)):
            os.symlink(f"usr/{link}", os.path.join(rootfs, link))
    os.makedirs(os.path.join(rootfs, "usr"), exist_ok=True)
    os.makedirs(os.path.join(rootfs, "www"), exist_ok=True)
    with open(os.path.join(rootfs, NGINX_CONF.lstrip("/")), "w") as f:
        f.write(NGINX_CONF_TEXT)
    with open(os.path.join(rootfs, "www", "index.html"), "wb") as f:
        f.write(page)


def in_client(argv):
    return ["nsenter", f"--net=/run/netns/{CLIENT_NS}", *argv]


class ServiceScenario(MemoryScenario):
    VOLUMES = USR_RO
    MEDIAN_KEYS = MEDIAN_KEYS + ("errors", "reconnects")
    SETTLE_S = 1.0            # the load running steadily before the request

    def __init__(self, tb, base, podman, reps, systems, quick, work):
        super().__init__(tb, base, podman, reps, systems, quick)
        p = self.QUICK if quick else self.FULL
        self.cells = [(p["memory_mib"], None, self.DIRTY, p["rate"])]
        self.work, self.load, self.ip = work, None, None

    def start_workload(self, system, ip, cmd):
        self.ip = ip
        super().start_workload(system, ip, cmd)

    def snapshot(self, system):
        return None

    def bound_entry(self, size, link_mbit):
        return None   # the service's own memory is small or not the point: no M / B row

    def load_start(self, ip):
        out = open(os.path.join(self.work, f"load-{self.SCENARIO}.out"), "w")
        self.load = (subprocess.Popen(in_client(self.load_argv(ip)), stdin=subprocess.DEVNULL, stdout=out,
                                      stderr=subprocess.STDOUT, start_new_session=True), out)
        self.tb.procs.append(self.load[0])

    def load_stop(self):
        """SIGINT to the load generator (wrk prints its totals then); what it
        did, and whether it ran the whole time."""
        if not self.load:
            return {}
        p, out = self.load
        self.load = None
        alive = p.poll() is None
        if alive:
            os.killpg(p.pid, signal.SIGINT)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)
        out.close()
        with open(out.name, errors="replace") as f:
            text = f.read()
        r = self.load_result(text.replace("\r", "\n"))
        r["load_survived"] = alive
        if not alive:
            r["load_output"] = text[-500:]
        return r

    @staticmethod
    def verdicts(results):
        return []


class RedisScenario(ServiceScenario):
    SCENARIO = "B-redis"
    FULL = {"memory_mib": 1024, "rate": "1gbit"}
    QUICK = {"memory_mib": 256, "rate": "1gbit"}
    DIRTY = None              # as fast as redis-benchmark goes

    bound_entry = MemoryScenario.bound_entry   # M / B: the dataset over the link

    def cmd(self, size, hot, dirty_mbit):
        return ["/usr/bin/redis-server", "--port", str(REDIS_PORT), "--bind", "0.0.0.0", "--protected-mode", "no",
                "--save", "", "--appendonly", "no", "--dir", "/tmp",
                "--logfile", "/tmp/redis.log", "--daemonize", "no"]

    def cli(self, *args, timeout=60):
        try:
            p = run(in_client(["redis-cli", "-h", self.ip, "-p", str(REDIS_PORT), *args]), timeout=timeout,
                    check=False)
        except subprocess.TimeoutExpired:
            return None
        return p.stdout.strip() if p.returncode == 0 else None

    def wait_ready(self, system, size, hot):
        wait_for(lambda: self.cli("PING", timeout=5) == "PONG", 30, f"redis-server on {HOSTS['a']['name']}")
        self.keys = size * REDIS_KEYS_PER_MIB
        self.dataset("fill", "a")

    def dataset(self, mode, h):
        """redisdata.py fill or check from the client namespace; the count of bad values."""
        p = run(in_client([PY, REDISDATA, mode, self.ip, str(REDIS_PORT), str(self.keys), str(REDIS_VALUE)]),
                timeout=900, check=False)
        try:
            return json.loads(p.stdout.strip().splitlines()[-1])["bad"]
        except (IndexError, ValueError, KeyError):
            raise BenchError(f"redisdata.py {mode} against {HOSTS[h]['name']} failed ({p.returncode}): "
                             f"{(p.stdout + p.stderr)[-500:]}")

    def probe_argv(self, ip):
        return ["redis", ip, str(REDIS_PORT)]

    def load_argv(self, ip):
        # SET on keys of its own (key:<12 digits>), 64-byte values, until stopped
        return ["redis-benchmark", "-h", ip, "-p", str(REDIS_PORT), "-t", "set", "-d", "64", "-r", "100000",
                "-n", "2000000000", "-c", str(REDIS_BENCH_CLIENTS), "-q"]

    @staticmethod
    def load_result(text):
        x = re.findall(r"rps=[0-9.]+ \(overall: ([0-9.]+)\)", text)
        return {"load_rps": float(x[-1]) if x else None}

    def verify(self, system, before, size, hot):
        bad = self.dataset("check", "b")
        rss = re.search(r"used_memory_rss:(\d+)", self.cli("INFO", "memory") or "")
        return {"intact": bad == 0, "bad_values": bad, "verified_keys": self.keys,
                "service_rss_mib": round(int(rss.group(1)) / 2**20, 1) if rss else None}


class NginxScenario(ServiceScenario):
    SCENARIO = "C-nginx"
    FULL = {"memory_mib": 0, "rate": "100mbit"}
    QUICK = FULL
    DIRTY = 0.0
    PAGE = HTTP_BODY

    def cmd(self, size, hot, dirty_mbit):
        return ["/usr/sbin/nginx", "-e", "/tmp/nginx-error.log", "-c", NGINX_CONF]

    def get(self):
        try:
            p = run(in_client(["busybox", "wget", "-q", "-O", "-", f"http://{self.ip}:{HTTP_PORT}/"]),
                    timeout=10, check=False)
        except subprocess.TimeoutExpired:
            return None
        return p.stdout if p.returncode == 0 else None

    def wait_ready(self, system, size, hot):
        wait_for(lambda: self.get() == self.PAGE.decode(), 30, f"nginx on {HOSTS['a']['name']}")

    def probe_argv(self, ip):
        return ["http", ip, str(HTTP_PORT)]

    def load_argv(self, ip):
        return ["wrk", "-t", "1", "-c", str(WRK_CONNECTIONS), "-d", "3600s", "-s", os.path.join(self.work, WRK_SCRIPT.lstrip("/")),
                f"http://{ip}:{HTTP_PORT}/"]

    @staticmethod
    def load_result(text):
        r = {}
        x = re.search(r"(\d+) requests in", text)
        r["load_requests"] = int(x.group(1)) if x else None
        x = re.search(r"Requests/sec:\s+([0-9.]+)", text)
        r["load_rps"] = float(x.group(1)) if x else None
        x = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
        r["load_socket_errors"] = sum(int(v) for v in x.groups()) if x else 0
        x = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
        r["load_non_2xx"] = int(x.group(1)) if x else 0
        return r

    def verify(self, system, before, size, hot):
        page = wait_for(lambda: self.get(), 30, f"nginx on {HOSTS['b']['name']}")
        return {"intact": page == self.PAGE.decode()}

    def load_start(self, ip):
        with open(os.path.join(self.work, WRK_SCRIPT.lstrip("/")), "w") as f:
            f.write(f"-- bench/run scenario C: each connection waits {WRK_DELAY_MS} ms between requests\n"
                    f"function delay() return {WRK_DELAY_MS} end\n")
        super().load_start(ip)
