"""Small helpers shared by every scenario: commands, waits, mounts, files,
machine facts and the results file."""
import base64
import ctypes
import datetime
import json
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD_DAEMON = os.path.join(ROOT, "build", "src", "fleximigrated")
BUILD_CLI = os.path.join(ROOT, "build", "src", "fleximigrate")
BUILD_SHIM = os.path.join(ROOT, "build", "src", "fm-criu-shim")  # runc's CRIU, found beside the daemon
BUILD_MEMLOAD = os.path.join(ROOT, "build", "fm-memload")
CRIU = "/opt/fleximigrate/criu/bin/criu"
HOSTS_SH = os.path.join(ROOT, "scripts", "hosts.sh")
MK_ROOTFS = os.path.join(ROOT, "scripts", "mk-rootfs.sh")
DEFAULT_OUT = os.path.join(ROOT, "bench", "results", "latest.json")
PY = "/usr/bin/python3"

_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
MNT_DETACH = 2
CLONE_NEWNET = 0x40000000
ETH_P_ARP = 0x0806


class BenchError(Exception):
    """A measurement that could not be made: the run stops with status 1."""


def die(msg, code=2):
    print(f"bench/run: {msg}", file=sys.stderr)
    sys.exit(code)


def now():
    return time.perf_counter()


def ms(t0, t1):
    return round((t1 - t0) * 1000.0, 1)


def median(xs):
    return round(statistics.median(xs), 1)


def run(argv, check=True, timeout=120, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    p = subprocess.run(argv, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise BenchError(f"command failed ({p.returncode}): {shlex.join(argv)}\n{p.stdout or ''}{p.stderr or ''}")
    return p


def read(path):
    with open(path) as f:
        return f.read()


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)  # polling interval of a condition check, outside any timed region
    raise BenchError(f"timed out after {timeout} s waiting for {what}")


def mount_overlay(lower, upper, work, target):
    opts = f"lowerdir={lower},upperdir={upper},workdir={work}".encode()
    if _libc.mount(b"overlay", target.encode(), b"overlay", 0, opts) != 0:
        e = ctypes.get_errno()
        raise BenchError(f"mount overlay on {target}: {os.strerror(e)}")


def umount_lazy(target):
    if _libc.umount2(target.encode(), MNT_DETACH) != 0:
        e = ctypes.get_errno()
        if e not in (22, 2):  # EINVAL: not mounted; ENOENT
            raise BenchError(f"umount {target}: {os.strerror(e)}")


def mounts_under(prefix):
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4]
            if mp == prefix or mp.startswith(prefix + "/"):
                out.append(mp)
    return sorted(set(out), key=len, reverse=True)


def disk_quiet(timeout=30.0, still=0.5):
    """Flushes dirty data and waits until the machine's block devices stand
    still (their counters unchanged for `still` seconds; at most `timeout`):
    the writes and discards a previous move left behind (1 GiB of images
    deleted on a filesystem mounted with `discard`, as our VMs' root is) are
    not the next move's.  Returns how long it waited, in ms."""
    t0 = time.monotonic()
    os.sync()
    devs = [d for d in os.listdir("/sys/block") if os.path.exists(f"/sys/block/{d}/device")]
    last, since = None, time.monotonic()
    while time.monotonic() - t0 < timeout:
        snap = tuple(read(f"/sys/block/{d}/stat") for d in devs)
        if snap != last:
            last, since = snap, time.monotonic()
        elif time.monotonic() - since >= still:
            break
        time.sleep(0.05)
    return round((time.monotonic() - t0) * 1000.0)


def alive(pid):
    """Running (a zombie waiting for its reaper does not count)."""
    try:
        s = read(f"/proc/{pid}/stat")
    except OSError:
        return False
    return s[s.rindex(")") + 2] != "Z"


def fresh_dir(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def write_secret(path):
    """A cluster secret file (mode 0600) for --secret-file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, base64.b64encode(os.urandom(32)).rstrip(b"=") + b"\n")
    os.close(fd)
    return path


def tcp_listening(pid, port):
    """Whether a socket in pid's network namespace listens on TCP port."""
    try:
        with open(f"/proc/{pid}/net/tcp") as f:
            next(f)
            for line in f:
                x = line.split()
                if x[1].endswith(":%04X" % port) and x[3] == "0A":
                    return True
    except OSError:
        pass
    return False


def mac_for(ip, first=0xfe):
    """A locally administered MAC from the address (the product derives 02:fd:IP;
    the baselines use 02:fe:IP, and every run gets a new address anyway)."""
    return "02:%02x:" % first + ":".join("%02x" % int(x) for x in ip.split("."))


def garp(nspath, ip, mac, ifname="eth0"):
    """Gratuitous ARP from inside a network namespace, as the product does it
    (src/runtime/net.c: a thread that joins the namespace, two frames on a
    packet socket): "who has IP? tell IP" from MAC, to everyone."""
    m = bytes(int(x, 16) for x in mac.split(":"))
    a = socket.inet_aton(ip)
    frame = (b"\xff" * 6 + m + b"\x08\x06" + b"\x00\x01\x08\x00\x06\x04\x00\x01" + m + a + b"\x00" * 6 + a)
    res = {}

    def body():
        # setns changes this thread only, and the thread ends here
        try:
            fd = os.open(nspath, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    e = ctypes.get_errno()
                    raise OSError(e, os.strerror(e))
            finally:
                os.close(fd)
            with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as s:
                s.bind((ifname, ETH_P_ARP))
                for _ in range(2):  # one frame can be lost while the port comes up
                    s.send(frame)
        except OSError as e:
            res["error"] = e
    t = threading.Thread(target=body)
    t.start()
    t.join()
    if "error" in res:
        raise BenchError(f"gratuitous ARP for {ip} from {nspath} failed: {res['error']}")


# ----------------------------------------------------------------- facts

def machine_facts():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    return {"hostname": socket.gethostname(), "cpu_model": cpu, "cores": os.cpu_count(),
            "mem_mib": mem_kib // 1024}


def mem_available_mib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    return 0


def git_state(daemon):
    p = run(["git", "-C", ROOT, "rev-parse", "HEAD"], check=False)
    if p.returncode != 0:
        return None
    dirty = run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"], check=False).stdout.strip()
    return {"commit": p.stdout.strip(), "dirty": bool(dirty),
            "daemon_built": datetime.datetime.fromtimestamp(os.path.getmtime(daemon)).astimezone()
            .isoformat(timespec="seconds")}


def date_now():
    return datetime.datetime.now(datetime.timezone.utc).astimezone().isoformat(timespec="seconds")


# ----------------------------------------------------------------- results file

def load_results(path):
    """The existing results file (its other keys are kept), {} if there is none."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise BenchError(f"{path} exists but is not readable JSON ({e}): not overwriting it")
    if not isinstance(doc, dict):
        raise BenchError(f"{path} does not hold a JSON object: not overwriting it")
    return doc


def write_json(path, doc):
    """Atomically: a reader never sees half a file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
