"""The baselines users would otherwise pick, run on the same hosts and link as
FlexiMigrate, in the same invocation:

  naive-runc        runc checkpoint to disk -> tar | socat over the link -> runc restore
  criu-page-server  runc checkpoint --page-server: CRIU streams the memory pages
                    to a `criu page-server` on the destination; the rest of the
                    images and the upper layer follow by tar | socat; runc restore
  podman            podman container checkpoint --export (Podman's defaults:
                    zstd) -> the archive over the link by socat -> podman
                    container restore --import
  bound             the physical bound M / B for the total time (no process)

Each host has its own copy of the root filesystem (an overlay lower layer), its
own upper and work dirs, bundle and `runc --root`.  runc runs in the host's
network namespace and in its tool group (the meter)."""
import json
import os
import re
import shutil
import subprocess
import time

from .testbed import BRIDGE, CGROUP_TOP, HOSTS, PREFIX, WORK
from .util import (CRIU, BenchError, fresh_dir, garp, mac_for, ms, mount_overlay, now, read, run, tcp_listening,
                   umount_lazy, wait_for)

BASE_CONTAINER = "nb"
BASE_PORT = f"{PREFIX}ct"           # its bridge port on each host (same name, one per host netns)
COPY_PORT_BASE = 17100
PAGE_SERVER_PORT_BASE = 17300


def container_net(h, ip, mac, port_up):
    """The container's network namespace on host h (PREFIX-ctH), as the product
    builds it (src/runtime/net.c): a veth whose host end is a port of the bridge
    and whose other end is eth0 with the container's address and MAC."""
    cns, hns = f"{PREFIX}-ct{h}", HOSTS[h]["netns"]
    run(["ip", "netns", "del", cns], check=False)
    # a namespace deleted just before goes away in the background, its veth
    # with it: the port may still be there (the next `link add` failed on it)
    run(["ip", "-n", hns, "link", "del", BASE_PORT], check=False)
    run(["ip", "netns", "add", cns])
    run(["ip", "-n", hns, "link", "add", BASE_PORT, "type", "veth", "peer", "name", "eth0", "netns", cns])
    run(["ip", "-n", hns, "link", "set", BASE_PORT, "master", BRIDGE])
    run(["ip", "-n", cns, "link", "set", "eth0", "address", mac])
    run(["ip", "-n", cns, "addr", "add", f"{ip}/24", "dev", "eth0"])
    run(["ip", "-n", cns, "link", "set", "lo", "up"])
    run(["ip", "-n", cns, "link", "set", "eth0", "up"])
    if port_up:
        port_set(h, "up")


def port_set(h, updown):
    """The container's bridge port on host h up or down."""
    run(["ip", "-n", HOSTS[h]["netns"], "link", "set", BASE_PORT, updown])


def wait_listening(p, h, port, what):
    """Until p (on host h) listens on port; a BenchError if it exits first."""
    wait_for(lambda: p.poll() is not None or tcp_listening(p.pid, port), 10,
             f"{what} to listen on {HOSTS[h]['ip']}:{port}")
    if p.poll() is not None:
        raise BenchError(f"{what} on {HOSTS[h]['name']} exited ({p.returncode})")


def bound(memory_mib, link_mbit):
    """The physical bound for moving M MiB over B Mbit/s: M / B."""
    return round(memory_mib * 2**20 * 8 / (link_mbit * 1e6) * 1000.0, 1)


class RuncBaseline:
    def __init__(self, tb):
        self.tb = tb
        self.ip = self.mac = None
        tb.runc_roots += [self.dir(h, "runc") for h in HOSTS]
        tb.cgroup_dirs += [f"{CGROUP_TOP}/{h}/{BASE_CONTAINER}" for h in HOSTS] + [f"{CGROUP_TOP}/{h}" for h in HOSTS]

    def dir(self, h, *sub):
        return os.path.join(WORK, "base", h, *sub)

    def upper_file(self, h, path):
        return self.dir(h, "upper", path.lstrip("/"))

    # ---------------------------------------------------------- runc
    def runc(self, h, *args, timeout=600):
        return self.tb.run_on(h, ["runc", "--root", self.dir(h, "runc"), "--criu", CRIU, "--log",
                                  self.dir(h, "runc.log"), "--log-format", "json", *args], timeout=timeout,
                             capture=False)

    def runc_or_fail(self, h, what, logdir, *args):
        p = self.runc(h, *args)
        if p.returncode != 0:
            detail = ""
            for f in (self.dir(h, "runc.log"), *(os.path.join(logdir, x) for x in ("dump.log", "restore.log"))):
                if os.path.exists(f):
                    lines = [line for line in read(f).splitlines() if "rror" in line and "RLIMIT_NOFILE" not in line]
                    detail += f"\n--- {f}:\n" + "\n".join(lines[-8:])
            raise BenchError(f"runc {what} on {HOSTS[h]['name']} failed ({p.returncode}){detail}")

    def status(self, h):
        p = run(["runc", "--root", self.dir(h, "runc"), "state", BASE_CONTAINER], check=False)
        if p.returncode != 0:
            return None
        return json.loads(p.stdout).get("status")

    # ---------------------------------------------------------- set-up
    def setup(self, rootfs):
        for h in HOSTS:
            fresh_dir(self.dir(h))
            run(["cp", "-a", rootfs, self.dir(h, "lower")])
            for d in ("upper", "ovlwork", "bundle/rootfs", "runc", "img", "ckwork", "recv", "rswork"):
                os.makedirs(self.dir(h, d), exist_ok=True)
            run(["runc", "spec", "--bundle", self.dir(h, "bundle")])
            with open(self.dir(h, "bundle", "config.json")) as f:
                self.spec = json.load(f)

    def configure(self, args, net, volumes=()):
        """A bundle like the daemon's on each host (runc spec defaults, no
        terminal, no /sys/fs/cgroup mount, writable root, own cgroup), running
        args, joining PREFIX-ctH if net, binding volumes ((source, destination,
        readonly): as FlexiMigrate's run --volume does)."""
        for h in HOSTS:
            cfg = json.loads(json.dumps(self.spec))
            cfg["process"]["terminal"] = False
            cfg["process"]["args"] = args
            cfg["process"]["env"] = [e for e in cfg["process"]["env"] if not e.startswith("TERM=")]
            cfg["root"] = {"path": self.dir(h, "bundle", "rootfs"), "readonly": False}
            cfg["hostname"] = BASE_CONTAINER
            cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] != "/sys/fs/cgroup"]
            cfg["mounts"] += [{"destination": d, "type": "bind", "source": src,
                               "options": ["bind", "nosuid", "ro" if ro else "rw"]} for src, d, ro in volumes]
            cfg["linux"]["cgroupsPath"] = f"/{CGROUP_TOP}/{h}/{BASE_CONTAINER}"
            for n in cfg["linux"]["namespaces"]:
                if n["type"] == "network" and net:
                    n["path"] = f"/run/netns/{PREFIX}-ct{h}"
            with open(self.dir(h, "bundle", "config.json"), "w") as f:
                json.dump(cfg, f, indent=1)

    def start(self, h, args, ip=None, volumes=()):
        """A fresh container on host h running args; with ip, in a network
        namespace of its own on the bridge, and the other host gets the same
        address and MAC with its bridge port down until the restore
        (step6-tcp.sh's recipe)."""
        self.configure(args, net=ip is not None, volumes=volumes)
        self.ip, self.mac = ip, (mac_for(ip) if ip else None)
        for x in HOSTS:
            if ip:
                container_net(x, ip, self.mac, port_up=(x == h))
            umount_lazy(self.dir(x, "bundle", "rootfs"))
            for d in ("upper", "ovlwork", "img", "ckwork", "recv", "rswork"):
                fresh_dir(self.dir(x, d))
        mount_overlay(self.dir(h, "lower"), self.dir(h, "upper"), self.dir(h, "ovlwork"), self.dir(h, "bundle", "rootfs"))
        self.runc_or_fail(h, "run", self.dir(h), "run", "-d", "--bundle", self.dir(h, "bundle"), BASE_CONTAINER)

    def remove(self):
        for h in HOSTS:
            if self.status(h) is not None:
                run(["runc", "--root", self.dir(h, "runc"), "delete", "-f", BASE_CONTAINER], check=False)
            umount_lazy(self.dir(h, "bundle", "rootfs"))
            if self.ip:
                run(["ip", "netns", "del", f"{PREFIX}-ct{h}"], check=False)
            for d in ("img", "recv"):
                fresh_dir(self.dir(h, d))   # up to 1 GiB each: not kept between runs

    # ---------------------------------------------------------- one migration
    def migrate(self, src, dst, k, page_server=False):
        """One migration src -> dst.  Timed: (the source port goes down,) runc
        checkpoint (to disk, or memory streamed to the destination's page
        server), tar of the images and the upper layer piped through socat over
        the link, on dst the upper layer goes into place, the overlay is mounted,
        runc restore (and the port comes up, a gratuitous ARP announces the
        address).  Before the clock: empty directories, the receivers listening
        (FlexiMigrate too opens its data channel before the freeze)."""
        tb = self.tb
        tcp = self.ip is not None
        port = COPY_PORT_BASE + k % 190
        logs = fresh_dir(os.path.join(WORK, "base", "logs", str(k)))
        img, ckwork = fresh_dir(self.dir(src, "img")), fresh_dir(self.dir(src, "ckwork"))
        recv, rswork = fresh_dir(self.dir(dst, "recv")), fresh_dir(self.dir(dst, "rswork"))
        os.makedirs(os.path.join(recv, "img"))
        fresh_dir(self.dir(dst, "ovlwork"))
        dst_ip = HOSTS[dst]["ip"]

        def listening(p, port, what):
            wait_listening(p, dst, port, what)

        p_ps = None
        if page_server:
            ps_port = PAGE_SERVER_PORT_BASE + k % 190
            ps_log = open(os.path.join(logs, "page-server.err"), "w")
            p_ps = tb.popen(dst, [CRIU, "page-server", "--images-dir", os.path.join(recv, "img"), "--address",
                                  dst_ip, "--port", str(ps_port), "-o", "page-server.log", "-v4"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=ps_log)
            listening(p_ps, ps_port, "criu page-server")
        rs_err = open(os.path.join(logs, "recv-socat.err"), "w")
        rt_err = open(os.path.join(logs, "recv-tar.err"), "w")
        p_rs = tb.popen(dst, ["socat", "-u", f"TCP-LISTEN:{port},bind={dst_ip},reuseaddr", "STDOUT"],
                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=rs_err)
        p_rt = tb.popen(dst, ["tar", "-C", recv, "-xf", "-"], net=False, stdin=p_rs.stdout,
                        stdout=subprocess.DEVNULL, stderr=rt_err)
        p_rs.stdout.close()
        listening(p_rs, port, "socat")

        tw0 = time.time()
        t0 = now()
        if tcp:   # nothing may reach the source copy once it is being checkpointed
            port_set(src, "down")
        ck = ["checkpoint", "--image-path", img, "--work-path", ckwork]
        if tcp:
            ck.append("--tcp-established")
        if page_server:
            ck += ["--page-server", f"{dst_ip}:{ps_port}"]
        self.runc_or_fail(src, "checkpoint", ckwork, *ck, BASE_CONTAINER)
        t1 = now()
        st_err = open(os.path.join(logs, "send-tar.err"), "w")
        ss_err = open(os.path.join(logs, "send-socat.err"), "w")
        p_st = tb.popen(src, ["tar", "--totals", "-C", self.dir(src), "-cf", "-", "img", "upper"], net=False,
                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=st_err)
        p_ss = tb.popen(src, ["socat", "-u", "STDIN", f"TCP:{dst_ip}:{port}"], stdin=p_st.stdout,
                        stdout=subprocess.DEVNULL, stderr=ss_err)
        p_st.stdout.close()
        rcs = [p.wait(1200) for p in (p_st, p_ss, p_rs, p_rt)]
        t2 = now()
        for f in (rs_err, rt_err, st_err, ss_err):
            f.close()
        if any(rcs):
            errs = "".join(read(f.name) for f in (st_err, ss_err, rs_err, rt_err))
            raise BenchError(f"copy {src}->{dst} failed (tar, socat, socat, tar exit {rcs}): {errs}")
        x = re.search(r"Total bytes written: (\d+)", read(st_err.name))
        if not x:
            raise BenchError(f"tar --totals printed no byte count: {read(st_err.name)}")
        wire = int(x.group(1))
        if page_server:
            # the page server ends when the dump closes its connection
            if p_ps.wait(60) != 0:
                raise BenchError(f"criu page-server on {HOSTS[dst]['name']} failed ({p_ps.returncode}): "
                                 f"{read(ps_log.name)[-1000:]}")
            ps_log.close()
            # what it received: the pages and their maps (CRIU's own framing is a few bytes per run of pages)
            wire += sum(os.path.getsize(os.path.join(recv, "img", f)) for f in os.listdir(os.path.join(recv, "img"))
                        if f.startswith(("pages-", "pagemap-")))
        shutil.rmtree(self.dir(dst, "upper"))
        os.rename(os.path.join(recv, "upper"), self.dir(dst, "upper"))
        mount_overlay(self.dir(dst, "lower"), self.dir(dst, "upper"), self.dir(dst, "ovlwork"),
                      self.dir(dst, "bundle", "rootfs"))
        rs = ["restore", "-d", "--image-path", os.path.join(recv, "img"), "--work-path", rswork,
              "--bundle", self.dir(dst, "bundle")]
        if tcp:
            rs.append("--tcp-established")
        self.runc_or_fail(dst, "restore", rswork, *rs, BASE_CONTAINER)
        t3 = now()
        if tcp:   # the address lives on dst now: open its port and tell the segment
            port_set(dst, "up")
            garp(f"/run/netns/{PREFIX}-ct{dst}", self.ip, self.mac)
        t4 = now()

        # after the clock: the source is gone, its rootfs unmounted
        if self.status(src) is not None:
            raise BenchError(f"runc: {BASE_CONTAINER} still known to runc on {HOSTS[src]['name']} after checkpoint")
        umount_lazy(self.dir(src, "bundle", "rootfs"))
        st = self.status(dst)
        if st != "running":
            raise BenchError(f"runc: {BASE_CONTAINER} is {st} on {HOSTS[dst]['name']} after restore")
        total = ms(t0, t4)
        steps = {"checkpoint_ms": ms(t0, t1), "copy_ms": ms(t1, t2), "restore_ms": ms(t2, t3)}
        if tcp:
            steps["announce_ms"] = ms(t3, t4)
        return {"downtime_ms": total, "frozen_ms": total, "total_ms": total, "wire_bytes": wire, "steps_ms": steps,
                "t_freeze_wall": tw0, "t_last_wall": tw0 + (t4 - t0)}


def runc_cgroup_path(h):
    """The baseline container's cgroup, relative to a hierarchy."""
    return f"{CGROUP_TOP}/{h}/{BASE_CONTAINER}"


PODMAN_CONTAINER = "pm"
PODMAN_IMAGE = "localhost/fm-bench-memload:latest"
PODMAN_NETNS = f"/run/netns/{PREFIX}-pm"    # the container's namespace path, the same on every host
PODMAN_COPY_PORT_BASE = 17500


class PodmanBaseline:
    """Podman as its users move a container: `podman container checkpoint
    --export` (its defaults: runc, zstd), the archive copied over the link by
    socat, `podman container restore --import` on the other host.

    Each host has its own storage and run state (--root, --runroot, --tmpdir
    below WORK/podman/H), the image imported into both; cgroupfs, the file
    events backend and explicit rlimits (HOST-NOTES: without them `podman run`
    fails here).  Podman finds CRIU as the first `criu` on PATH: ours (>= 4.2)
    comes first.  The container joins the namespace at PODMAN_NETNS, a bind
    mount of host A's PREFIX-ctA (address, MAC, a port on A's bridge); runc
    dumps it as an external namespace and restores into whatever the path
    names then, so before the restore the path is re-bound to host B's
    PREFIX-ctB (same address and MAC, its port down until the restore)."""

    def __init__(self, tb):
        self.tb = tb
        self.ip = self.mac = None
        self.upper = {}
        tb.teardown_hooks.append(self.cleanup)
        tb.cgroup_dirs += [f"{CGROUP_TOP}/podman"]
        self.env = dict(os.environ, PATH=f"{os.path.join(WORK, 'podman', 'bin')}:{os.environ['PATH']}")

    def dir(self, h, *sub):
        return os.path.join(WORK, "podman", h, *sub)

    def podman(self, h, *args, timeout=600, capture=True, check=True, net=True):
        argv = ["podman", "--root", self.dir(h, "root"), "--runroot", self.dir(h, "run"), "--tmpdir",
                self.dir(h, "tmp"), "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--runtime", "runc",
                "--storage-driver", "overlay", *args]
        p = self.tb.run_on(h, argv, timeout=timeout, capture=capture, env=self.env, net=net)
        if check and p.returncode != 0:
            raise BenchError(f"podman {args[0]} on {HOSTS[h]['name']} failed ({p.returncode}): "
                             f"{(p.stderr or '')[-1500:]}")
        return p

    def setup(self, rootfs):
        fresh_dir(os.path.join(WORK, "podman", "bin"))
        os.symlink(CRIU, os.path.join(WORK, "podman", "bin", "criu"))
        tarball = os.path.join(WORK, "podman", "rootfs.tar")
        run(["tar", "-C", rootfs, "-cf", tarball, "."], timeout=300)
        for h in HOSTS:
            for d in ("root", "run", "tmp", "xfer"):
                fresh_dir(self.dir(h, d))
            self.podman(h, "import", tarball, PODMAN_IMAGE, timeout=300)
        os.unlink(tarball)

    def upper_file(self, h, path):
        """A file of the container on host h, in its upper layer (asked of
        Podman once per container and host)."""
        if h not in self.upper:
            p = self.podman(h, "container", "inspect", "--format", "{{.GraphDriver.Data.UpperDir}}",
                            PODMAN_CONTAINER)
            self.upper[h] = p.stdout.strip()
        return os.path.join(self.upper[h], path.lstrip("/"))

    def bind_netns(self, h):
        umount_lazy(PODMAN_NETNS)
        if not os.path.exists(PODMAN_NETNS):
            open(PODMAN_NETNS, "w").close()
        run(["mount", "--bind", f"/run/netns/{PREFIX}-ct{h}", PODMAN_NETNS])

    def start(self, h, args, ip, volumes=()):
        self.ip, self.mac = ip, mac_for(ip)
        self.upper = {}
        for x in HOSTS:
            container_net(x, ip, self.mac, port_up=(x == h))
        self.bind_netns(h)
        self.podman(h, "run", "-d", "--name", PODMAN_CONTAINER, "--network", f"ns:{PODMAN_NETNS}",
                    "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096",
                    "--cgroup-parent", f"/{CGROUP_TOP}/podman",
                    *(x for src, d, ro in volumes for x in ("-v", f"{src}:{d}:{'ro' if ro else 'rw'}")),
                    PODMAN_IMAGE, *args, capture=False)

    def state(self, h):
        p = self.podman(h, "container", "inspect", "--format", "{{.State.Status}}", PODMAN_CONTAINER, check=False)
        return p.stdout.strip() if p.returncode == 0 else None

    def remove(self):
        for h in HOSTS:
            self.podman(h, "rm", "-f", "-t", "0", PODMAN_CONTAINER, check=False)
            fresh_dir(self.dir(h, "xfer"))
            run(["ip", "netns", "del", f"{PREFIX}-ct{h}"], check=False)
        umount_lazy(PODMAN_NETNS)
        self.upper = {}

    def cleanup(self):
        if os.path.isdir(os.path.join(WORK, "podman")):
            for h in HOSTS:
                if os.path.isdir(self.dir(h, "root")):
                    self.podman(h, "rm", "-af", "-t", "0", check=False, timeout=120, net=False)
        umount_lazy(PODMAN_NETNS)
        try:
            os.unlink(PODMAN_NETNS)
        except OSError:
            pass

    def migrate(self, src, dst, k):
        """One migration src -> dst, timed from the source port going down to the
        destination's port up and announced; before the clock the receiver
        listens (as for the other systems)."""
        tb = self.tb
        port = PODMAN_COPY_PORT_BASE + k % 190
        sent, got = os.path.join(self.dir(src, "xfer"), "ck.tar"), os.path.join(self.dir(dst, "xfer"), "ck.tar")
        dst_ip = HOSTS[dst]["ip"]
        logs = fresh_dir(os.path.join(WORK, "podman", "logs", str(k)))
        rs_err = open(os.path.join(logs, "recv-socat.err"), "w")
        p_rs = tb.popen(dst, ["socat", "-u", f"TCP-LISTEN:{port},bind={dst_ip},reuseaddr", f"CREATE:{got}"],
                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=rs_err)
        wait_listening(p_rs, dst, port, "socat")

        tw0 = time.time()
        t0 = now()
        port_set(src, "down")
        self.podman(src, "container", "checkpoint", "--tcp-established", f"--export={sent}", PODMAN_CONTAINER,
                    timeout=1200)
        t1 = now()
        ss_err = open(os.path.join(logs, "send-socat.err"), "w")
        p_ss = tb.popen(src, ["socat", "-u", f"OPEN:{sent}", f"TCP:{dst_ip}:{port}"], stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL, stderr=ss_err)
        rcs = [p.wait(1200) for p in (p_ss, p_rs)]
        t2 = now()
        rs_err.close()
        ss_err.close()
        if any(rcs):
            raise BenchError(f"copy {src}->{dst} failed (socat exit {rcs}): {read(ss_err.name)}{read(rs_err.name)}")
        wire = os.path.getsize(got)
        if wire != os.path.getsize(sent):
            raise BenchError(f"copy {src}->{dst}: {wire} bytes arrived of {os.path.getsize(sent)}")
        self.bind_netns(dst)
        self.podman(dst, "container", "restore", "--tcp-established", f"--import={got}", timeout=1200)
        t3 = now()
        port_set(dst, "up")
        garp(f"/run/netns/{PREFIX}-ct{dst}", self.ip, self.mac)
        t4 = now()

        # after the clock: the source copy goes (the other host has it now)
        if self.state(src) not in ("exited", "stopped"):
            raise BenchError(f"podman: {PODMAN_CONTAINER} is {self.state(src)} on {HOSTS[src]['name']} "
                             "after checkpoint")
        self.podman(src, "rm", "-f", "-t", "0", PODMAN_CONTAINER)
        self.upper.pop(src, None)
        self.upper.pop(dst, None)
        st = self.state(dst)
        if st != "running":
            raise BenchError(f"podman: {PODMAN_CONTAINER} is {st} on {HOSTS[dst]['name']} after restore")
        total = ms(t0, t4)
        return {"downtime_ms": total, "frozen_ms": total, "total_ms": total, "wire_bytes": wire,
                "steps_ms": {"checkpoint_ms": ms(t0, t1), "copy_ms": ms(t1, t2), "restore_ms": ms(t2, t3),
                             "announce_ms": ms(t3, t4)},
                "t_freeze_wall": tw0, "t_last_wall": tw0 + (t4 - t0)}
