"""Scenario A, the memory workload: a container holding M MiB of busy,
self-checking memory (fm-memload: working set W rewritten at the dirty rate D,
a heartbeat every 1 ms from inside its loop) moves from host A to host B over a
link of rate B, by every system in turn; the probe in the client namespace
measures the gaps users see, the meter the CPU and memory each system spends.

  downtime_ms   the largest gap between two heartbeats at the probe
  stall_sum_ms  every gap over 20 ms from the freeze until the last page arrived
                (sender_stalls: those of them fm-memload itself sent late, by
                the send time in its heartbeat; the others the network or the
                probe made)
  frozen_ms     the application's frozen time, as the system itself reports it
  total_ms      request to done (FlexiMigrate: to COMPLETED, last page included)
  wire_bytes    bytes the system sent for the move
  cpu_s, peak_rss_kib  the migration processes on both hosts (testbed.Meter)

Scenario D (RootfsDeltaScenario) is the same measurement on an edge link
(20 Mbit/s) for a container that wrote R MiB (random bytes) to its root
filesystem before the migration: only that change, and the memory, should
travel, and the file must arrive intact (checked by its SHA-256).
"""
import hashlib
import json
import os
import re
import statistics
import subprocess
import time

from .baselines import bound
from .probe import GAP_MS, RESUME_LIMIT_S
from .testbed import CLIENT_NS, HOSTS, NET, link_mbit_nominal
from .util import PY, BenchError, disk_quiet, read, wait_for

SCENARIO = "A-memory"
CONTAINER = "mem"                   # the FlexiMigrate container
HB_PORT = 6000                      # fm-memload's heartbeat port inside the container
STATUS_IN_CONTAINER = "/tmp/memload.status"
FIRST_IP = 10                       # containers get 10.77.NET.10 and up, a new one each run
TAIL_S = 1.0                        # the probe listens this long after the last page arrived
PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "probe.py")

SYSTEMS = ("fleximigrate:POST_COPY", "fleximigrate:COLD_MIGRATION", "naive-runc", "criu-page-server", "podman")
# scenario D in a quick run (every transfer takes ~25 s at 20 Mbit/s): both of
# FlexiMigrate's strategies, as the full matrix (on a slow link diskless COLD
# sends fewer bytes than POST_COPY, whose page requests and their answers'
# headers cost ~0.2 %)
QUICK_D_SYSTEMS = ("fleximigrate:POST_COPY", "fleximigrate:COLD_MIGRATION", "naive-runc", "podman")
# D as a fraction of the nominal B; None: as fast as fm-memload's loop goes (issue 4's
# "rewriting continuously"), run at 1 Gbit/s only
FULL = {"sizes": (256, 1024), "rates": ("1gbit", "100mbit"), "dirty": (0.0, 0.5, None)}
QUICK = {"sizes": (256,), "rates": ("1gbit",), "dirty": (0.5,)}
STATUS_KEYS = ("iterations", "errors", "full_scans", "max_gap_ms", "gap_sum_ms", "hot_passes", "size_mib", "hot_mib")
MEDIAN_KEYS = ("downtime_ms", "stall_sum_ms", "frozen_ms", "total_ms", "wire_bytes", "cpu_s", "peak_rss_kib")

# issue 4's targets (1 Gbit/s link)
T_DOWNTIME_MS = 300                 # POST_COPY downtime at 1 GiB
T_TOTAL_FACTOR, T_TOTAL_EXTRA_MS = 1.15, 500     # total <= 1.15 x M/B + 0.5 s
T_STALL_HOT_FACTOR = 1.1            # stall sum with W = M: <= 1.1 x M/B
T_STALL_SMALL_MS = 200              # stall sum with W = M/64: <= 200 ms
T_WIRE_FACTOR = 1.02                # wire bytes <= memory + 2 %


def memload_status(path):
    """fm-memload's status line (tests/workload/memload.c) as a dict, or None."""
    try:
        v = read(path).split()
    except OSError:
        return None
    if len(v) != len(STATUS_KEYS):
        return None
    return {k: float(x) if "ms" in k else int(x) for k, x in zip(STATUS_KEYS, v)}


def cells(plan, sizes=None, rates=None):
    """(M, W, D as a fraction of B or None, rate) in the order they run: one
    link rate at a time."""
    out = []
    for rate in rates or plan["rates"]:
        for m in sizes or plan["sizes"]:
            for w in (m, m // 64):
                for d in plan["dirty"]:
                    if d is not None or rate == "1gbit":
                        out.append((m, w, d, rate))
    return out


class MemoryScenario:
    SCENARIO = SCENARIO
    MEDIAN_KEYS = MEDIAN_KEYS
    SETTLE_S = 0.5                 # a steady heartbeat stream before the request (outside any timed region)

    def __init__(self, tb, base, podman, reps, systems, quick, sizes=None, rates=None):
        """base: the runc baselines (naive-runc, criu-page-server); podman: Podman's"""
        self.tb, self.reps = tb, reps
        self.baseline = {"naive-runc": base, "criu-page-server": base, "podman": podman}
        self.systems = systems
        self.plan = QUICK if quick else FULL
        self.cells = cells(self.plan, sizes, rates)
        self.links = {}            # rate -> (measured Mbit/s, how)

    def cmd(self, size, hot, dirty_mbit):
        return self.memload_cmd(size, hot, dirty_mbit)

    def fingerprint(self, system, h):
        """What must arrive unchanged besides the memory (none here)."""
        return None

    next_ip = 0    # one sequence for every scenario of a run: an address (and the MAC derived
                   # from it) is not reused while the bridge may still know it on the other host

    def new_ip(self):
        ip = f"10.77.{NET}.{FIRST_IP + MemoryScenario.next_ip % 200}"
        MemoryScenario.next_ip += 1
        return ip

    @staticmethod
    def memload_cmd(size, hot, dirty_mbit):
        # COLD_PAGES 0 when W < M: the application touches its working set only
        return ["/bin/fm-memload", str(size), str(hot), STATUS_IN_CONTAINER, str(HB_PORT), "0",
                "-1" if dirty_mbit is None else f"{dirty_mbit:g}"]

    def status_path(self, system, h):
        if system.startswith("fleximigrate:"):
            return self.tb.container_file(h, CONTAINER, STATUS_IN_CONTAINER)
        return self.baseline[system].upper_file(h, STATUS_IN_CONTAINER)

    # ---------------------------------------------------------- the workload (hooks for service.py)
    VOLUMES = ()                   # host paths bound into the container: (source, destination, readonly)
    IMAGE = "memload"

    def start_workload(self, system, ip, cmd):
        if system.startswith("fleximigrate:"):
            vols = [f"{s}:{d}{':ro' if ro else ''}" for s, d, ro in self.VOLUMES]
            self.tb.cli("a", "run", CONTAINER, "--image", self.IMAGE, "--ip", f"{ip}/24",
                        *(x for v in vols for x in ("--volume", v)), "--", *cmd)
        else:
            self.baseline[system].start("a", cmd, ip, volumes=self.VOLUMES)

    def wait_ready(self, system, size, hot):
        """filled, and a whole pass over the working set done"""
        status_a = self.status_path(system, "a")
        wait_for(lambda: (memload_status(status_a) or {}).get("hot_passes", 0) >= 1, 300,
                 f"fm-memload {size} {hot} to fill its memory on {HOSTS['a']['name']}")

    def snapshot(self, system):
        """The application's own account before the migration (verify's before)."""
        return memload_status(self.status_path(system, "a"))

    def verify(self, system, before, size, hot):
        """Memory intact: two whole passes over the working set on B after the
        restore, without an error (the pass in progress at the first reading may
        have started before the freeze; the next one cannot)."""
        status_b = self.status_path(system, "b")
        first = wait_for(lambda: memload_status(status_b), 30, f"fm-memload status on {HOSTS['b']['name']}")
        after = wait_for(lambda: (lambda s: s if s and s["hot_passes"] >= first["hot_passes"] + 2 else None)(
            memload_status(status_b)), 300, f"two more passes over the working set on {HOSTS['b']['name']}")
        if after["iterations"] < before["iterations"]:
            raise BenchError(f"{system}: fm-memload on {HOSTS['b']['name']} is at iteration {after['iterations']}, "
                             f"before the migration it was at {before['iterations']}: state was not carried over")
        return {"intact": after["errors"] == 0, "memload_errors": after["errors"], "verified_mib": hot,
                "app_gap_sum_ms": round(after["gap_sum_ms"] - before["gap_sum_ms"], 1)}

    def load_start(self, ip):
        """A load generator against the service (none: fm-memload's heartbeat is the load)."""

    def load_stop(self):
        return {}

    # ---------------------------------------------------------- the probe
    def probe_argv(self, ip):
        return ["heartbeat", ip, str(HB_PORT)]

    def probe_start(self, ip, timeline):
        argv = self.probe_argv(ip)
        p = subprocess.Popen(["nsenter", f"--net=/run/netns/{CLIENT_NS}", PY, PROBE, *argv, timeline],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
        self.tb.procs.append(p)
        line = p.stdout.readline()   # the probe gives up by itself after 10 s
        if line.strip() != "connected":
            p.wait(5)
            raise BenchError(f"probe could not connect ({' '.join(argv)}): {line.strip()} {p.stderr.read()[-500:]}")
        return p

    def probe_stop(self, p, t_last):
        """The probe listens until the first heartbeat TAIL_S after the last page
        (t_last, wall-clock seconds) and at least one after t_last itself."""
        out, err = p.communicate(f"{t_last + TAIL_S:.3f} {t_last:.3f}\n", timeout=RESUME_LIMIT_S + 60)
        self.tb.procs = [q for q in self.tb.procs if q.poll() is None]
        lines = out.strip().splitlines()
        try:
            return json.loads(lines[-1])
        except (IndexError, ValueError):
            raise BenchError(f"probe printed no result ({p.returncode}): {out[-500:]} {err[-500:]}")

    # ---------------------------------------------------------- one repetition
    def measure(self, system, size, hot, dirty_mbit, timeline):
        """One migration A -> B of a fresh container; the probe is connected
        before the request and listens until the first heartbeat TAIL_S after
        the last page."""
        tb = self.tb
        ip = self.new_ip()
        self.start_workload(system, ip, self.cmd(size, hot, dirty_mbit))
        self.wait_ready(system, size, hot)
        self.load_start(ip)
        cl = self.probe_start(ip, timeline)
        try:
            quiet_ms = disk_quiet()
            time.sleep(self.SETTLE_S)
            before = self.snapshot(system)
            fp_before = self.fingerprint(system, "a")
            load = os.getloadavg()[0]   # other work on the machine shows in the figures: recorded
            tb.meter.start()
            try:
                if system.startswith("fleximigrate:"):
                    r = self.fm_migrate(system.split(":")[1])
                elif system == "podman":
                    r = self.baseline[system].migrate("a", "b", self.next_ip)
                else:
                    r = self.baseline[system].migrate("a", "b", self.next_ip,
                                                      page_server=(system == "criu-page-server"))
            finally:
                cost = tb.meter.stop("a", "b")
            c = self.probe_stop(cl, r.pop("t_last_wall"))
        except BaseException:
            if cl.poll() is None:
                cl.kill()
            self.load_stop()
            raise
        r.update(cost)
        t_freeze, t_done = r.pop("t_freeze_wall") * 1000.0, r.pop("t_last_wall_ms", None)
        if t_done is None:
            t_done = t_freeze + r["total_ms"]
        r.update({k: c[k] for k in ("requests", "errors", "reconnects") if k in c})
        if c.get("error") or not c["stream_intact"]:
            raise BenchError(f"{system} M={size} W={hot}: the probe's TCP stream did not survive "
                             f"(error {c.get('error')}, in sequence {c['stream_intact']}, {c['beats']} beats; "
                             f"freeze at +0, last page at +{t_done - t_freeze:.0f} ms; gaps "
                             f"{[[round(s - t_freeze), g] for s, g, *_ in c['gaps']]})")
        # stalls: every gap over GAP_MS that overlaps [freeze, last page], counted whole
        window = [[round(s - t_freeze, 1), g, *sg] for s, g, *sg in c["gaps"] if s + g > t_freeze and s < t_done]
        # of those, the ones fm-memload itself sent late (its third figure: the
        # sender's own gap): the application did not run, or did not get to its
        # socket; the rest the network or the probe took late
        sender = [[t, sg[0]] for t, _, *sg in window if sg and sg[0] > GAP_MS]
        r.update({"downtime_ms": c["max_gap_ms"], "stall_sum_ms": round(sum(g for _, g, *_ in window), 1),
                  "beats": c["beats"], "stream_intact": c["stream_intact"],
                  "max_gap_after_freeze_ms": (round(c["max_gap_at_ms"] - t_freeze, 1)
                                              if c["max_gap_at_ms"] is not None else None),
                  "last_page_after_freeze_ms": round(t_done - t_freeze, 1), "stall_count": len(window),
                  # "LENGTH@START,...": one string, so that hundreds of stalls stay one line in the JSON
                  "stalls": ",".join(f"{g:g}@{t:+g}" for t, g, *_ in window),
                  "sender_stalls": ",".join(f"{g:g}@{t:+g}" for t, g in sender),
                  "t_freeze_wall_ms": round(t_freeze, 1),
                  "loadavg_1m": round(load, 2), "disk_quiet_wait_ms": quiet_ms})
        try:
            r.update(self.verify(system, before, size, hot))
        finally:
            r.update(self.load_stop())
        fp_after = self.fingerprint(system, "b")
        r["intact"] = r["intact"] and fp_after == fp_before
        if fp_after != fp_before:
            r["files_differ"] = [fp_before, fp_after]
        # the container leaves B again; the next run starts a fresh one on A
        if system.startswith("fleximigrate:"):
            if os.path.exists(os.path.join(tb.state("a"), "containers", CONTAINER)):
                raise BenchError(f"{CONTAINER} still has a bundle on {HOSTS['a']['name']} after "
                                 f"migration {r['migration_id']}")
            tb.cli("b", "container", "rm", CONTAINER, "--force")
        else:
            self.baseline[system].remove()
        return r

    # ---------------------------------------------------------- FlexiMigrate
    def fm_migrate(self, strategy):
        tb = self.tb
        p = tb.cli("a", "migrate", CONTAINER, "--to", HOSTS["b"]["name"], "--strategy", strategy, "-v",
                   timeout=1800, check=False)
        x = re.search(r"^migration (\S+) completed", p.stdout, re.M) or \
            re.search(r"migration (\S+) failed", p.stderr)
        if not x:
            raise BenchError(f"migrate {strategy} printed no migration id ({p.returncode}):\n{p.stdout}{p.stderr}")
        mid = x.group(1)
        m = tb.cli_json("a", "migration", "show", mid)
        if p.returncode != 0 or m.get("state") != "COMPLETED":
            raise BenchError(f"migration {mid} ({strategy}) ended {m.get('state')}: {m.get('error')}\n"
                             f"{m.get('error_detail') or ''}")
        if m.get("strategy") != strategy:
            raise BenchError(f"migration {mid} ran {m.get('strategy')}, not {strategy}")
        evs = m.get("events", [])

        def ev(prefix):
            return next((e for e in evs if e.get("message", "").startswith(prefix)), None)
        freeze = ev("Freezing ")
        last = ev("All memory pages ") if strategy == "POST_COPY" else ev("Restored ")
        if not freeze or not last:
            raise BenchError(f"migration {mid}: no freeze or last-page event in its log: "
                             f"{[e.get('message') for e in evs]}")
        steps = {}
        for k, rx in (("freeze_ms", r"frozen in ([0-9.]+) ms"),
                      ("freezer_ms", r"frozen in [0-9.]+ ms \(freezer ([0-9.]+)"),
                      ("hold_ms", r"frozen in [0-9.]+ ms \(freezer [0-9.]+, connections held ([0-9.]+)"),
                      ("dump_ms", r"dumped in ([0-9.]+) ms"),
                      ("restore_ms", r"^Restored .* in ([0-9.]+) ms"),
                      ("pages_after_checks_ms", r"^All memory pages .*\(([0-9.]+) ms after the checks"),
                      # the destination's prefetcher (src/sync/prefetch.c): its rate, when the last
                      # page was there, and how many of lazy-pages' requests had to wait
                      ("prefetch_mbit", r"prefetched at ([0-9.]+) Mbit/s"),
                      ("prefetch_window_kib", r"with a window of [0-9.]+-([0-9.]+) KiB"),
                      ("prefetch_all_here_ms", r"every page here ([0-9.]+) ms after the restore began"),
                      ("prefetch_waits", r"([0-9]+) waited for the network"),
                      # the controller's downtime breakdown (coordinator.c, log_downtime)
                      ("transfer_ms", r"^Downtime .* state transfer ([0-9.]+)"),
                      ("prepare_ms", r"^Downtime .* restore preparation ([0-9.]+)"),
                      ("handler_start_ms", r"^Downtime .* page handler start ([0-9.]+)"),
                      ("network_ms", r"^Downtime .* network handover ([0-9.]+)"),
                      ("criu_restore_ms", r"^Downtime .* CRIU restore ([0-9.]+)"),
                      ("control_ms", r"^Downtime .* control messages (-?[0-9.]+)"),
                      # diskless COLD's overlapped restore: its wait for the memory
                      ("memory_in_ms", r"^Downtime .* memory arriving ([0-9.]+)"),
                      # runc's end after CRIU let the tasks go (fm-criu-shim's relay)
                      ("runc_tail_ms", r"^Downtime .*running again ([0-9.]+) ms before")):
            for e in evs:
                y = re.search(rx, e.get("message", ""))
                if y:
                    steps[k] = float(y.group(1))
                    break
        return {"migration_id": mid, "frozen_ms": m["downtime_ms"], "total_ms": m["total_ms"],
                "wire_bytes": m["bytes_transferred"], "steps_ms": steps,
                "diskless": any("(diskless)" in e.get("message", "") for e in evs),
                "t_freeze_wall": freeze["at_ms"] / 1000.0, "t_last_wall_ms": last["at_ms"],
                "t_last_wall": last["at_ms"] / 1000.0}

    # ---------------------------------------------------------- the scenario
    def run(self, out_dir, log):
        """Every cell, the systems taking turns one repetition each; returns the
        results entries (the spine's schema) and the verdicts."""
        results = []
        for size, hot, dfrac, rate in self.cells:
            if rate not in self.links:
                self.tb.set_rate(rate)
                self.links[rate] = self.tb.measure_link()
                log(f"link {rate}: {self.links[rate][0]} Mbit/s ({self.links[rate][1]})")
            self.tb.set_rate(rate)
            link_mbit = self.links[rate][0]
            nominal = link_mbit_nominal(rate)
            dirty_mbit = None if dfrac is None else round(dfrac * nominal, 1)
            dlabel = "max" if dirty_mbit is None else f"{dirty_mbit:g}"
            reps_of = {s: [] for s in self.systems}
            for k in range(self.reps):
                for system in self.systems:
                    tl = os.path.join(out_dir, f"timeline-{self.SCENARIO}-{size}-{hot}-{dlabel}-{rate}-"
                                               f"{system.replace(':', '-')}"
                                               f"-{k + 1}.txt")
                    r = self.measure(system, size, hot, dirty_mbit, tl)
                    r["rep"] = k + 1
                    r["timeline_file"] = os.path.basename(tl)
                    reps_of[system].append(r)
                    det = " ".join(f"{x.removesuffix('_ms')} {v:g}" for x, v in r["steps_ms"].items())
                    log(f"{k + 1:>3}  {system:<28} {rate:>7} {size:>5} {'—' if hot is None else hot:>5} {dlabel:>6} "
                        f"{r['downtime_ms']:>9} {r['stall_sum_ms']:>9} {r['frozen_ms']:>8} {r['total_ms']:>8} "
                        f"{r['wire_bytes'] / 2**20:>8.1f} {r['cpu_s']:>6.2f} {r['peak_rss_kib'] / 1024:>7.1f} "
                        f"{str(r['intact']):>6}  {det}; last page +{r['last_page_after_freeze_ms']:g} ms, "
                        f"{r['stall_count']} stalls, load {r['loadavg_1m']:g}")
            for system in self.systems:
                rs = reps_of[system]
                results.append({
                    "scenario": self.SCENARIO, "system": system, "memory_mib": size, "working_set_mib": hot,
                    "dirty_mbit": dirty_mbit, "link_mbit": link_mbit, "link_rate": rate,
                    "intact": all(r["intact"] for r in rs), "verified_mib": hot,
                    "repetitions": rs,
                    "median": {x: round(statistics.median([r[x] for r in rs]), 3) for x in self.MEDIAN_KEYS},
                    "min": {x: min(r[x] for r in rs) for x in self.MEDIAN_KEYS},
                    "max": {x: max(r[x] for r in rs) for x in self.MEDIAN_KEYS}})
            bound_entry = self.bound_entry(size, link_mbit)
            if bound_entry:
                results.append({"scenario": self.SCENARIO, "system": "bound", "memory_mib": size,
                                "working_set_mib": hot, "dirty_mbit": dirty_mbit, "link_mbit": link_mbit,
                                "link_rate": rate, "repetitions": [], **bound_entry})
        for r in results:
            r.update(self.extra_fields())
        return results

    def bound_entry(self, size, link_mbit):
        return {"median": {"total_ms": bound(size, link_mbit), "wire_bytes": size * 2**20},
                "note": "M / B: the memory over the measured link rate, nothing else"}

    def extra_fields(self):
        return {}

    @staticmethod
    def verdicts(results):
        """Issue 4's targets on the 1 Gbit/s cells.  POST_COPY: downtime at
        1 GiB, total, stall sum, wire bytes; COLD_MIGRATION: total and wire bytes
        (its stall is the whole transfer by design)."""
        out = []

        def add(name, r, value, limit, unit):
            out.append({"target": name, "system": r["system"], "memory_mib": r["memory_mib"],
                        "working_set_mib": r["working_set_mib"], "dirty_mbit": r["dirty_mbit"],
                        "link_rate": r["link_rate"], "measured": value, "limit": round(limit, 1), "unit": unit,
                        "verdict": "PASS" if value <= limit else "MISS"})
        for r in results:
            if r["scenario"] != SCENARIO or r["link_rate"] != "1gbit" or not r["system"].startswith("fleximigrate:"):
                continue
            size, hot, med = r["memory_mib"], r["working_set_mib"], r["median"]
            mb_ms = bound(size, r["link_mbit"])
            if r["system"] == "fleximigrate:POST_COPY" and size == 1024:
                add("downtime", r, med["downtime_ms"], T_DOWNTIME_MS, "ms")
            add("total", r, med["total_ms"], T_TOTAL_FACTOR * mb_ms + T_TOTAL_EXTRA_MS, "ms")
            if r["system"] == "fleximigrate:POST_COPY":
                lim = T_STALL_HOT_FACTOR * mb_ms if hot == size else T_STALL_SMALL_MS
                add("stall_sum", r, med["stall_sum_ms"], lim, "ms")
            add("wire_bytes", r, med["wire_bytes"], T_WIRE_FACTOR * size * 2**20, "B")
        return out


class RootfsDeltaScenario(MemoryScenario):
    """Scenario D: an edge link, R MiB written to the root filesystem."""
    SCENARIO = "D-rootfs"
    SETTLE_S = 1.5       # the file was written well before the migration (FlexiMigrate's
                         # pre-sync skips files changed in the last second: timestamps are coarse)
    FILE = "/rootfs-delta.bin"
    FULL = {"memory_mib": 64, "rootfs_mib": 100, "rate": "20mbit"}
    QUICK = {"memory_mib": 32, "rootfs_mib": 25, "rate": "20mbit"}

    def __init__(self, tb, base, podman, reps, systems, quick):
        super().__init__(tb, base, podman, reps, systems, quick)
        p = self.QUICK if quick else self.FULL
        self.rootfs_mib = p["rootfs_mib"]
        # W = M/64, D = 0: the memory is read, not rewritten; the written file is the change
        self.cells = [(p["memory_mib"], max(1, p["memory_mib"] // 64), 0.0, p["rate"])]

    def cmd(self, size, hot, dirty_mbit):
        memload = " ".join(self.memload_cmd(size, hot, dirty_mbit))
        return ["/bin/sh", "-c", f"dd if=/dev/urandom of={self.FILE} bs=1M count={self.rootfs_mib} 2>/dev/null "
                                 f"&& exec {memload}"]

    def fingerprint(self, system, h):
        if system.startswith("fleximigrate:"):
            path = self.tb.container_file(h, CONTAINER, self.FILE)
        else:
            path = self.baseline[system].upper_file(h, self.FILE)
        d = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                d.update(chunk)
        return d.hexdigest()

    def bound_entry(self, size, link_mbit):
        mib = size + self.rootfs_mib
        return {"median": {"total_ms": bound(mib, link_mbit), "wire_bytes": mib * 2**20},
                "note": "(M + R) / B: the memory and the written file over the measured link rate"}

    def extra_fields(self):
        return {"rootfs_mib": self.rootfs_mib}

    @staticmethod
    def verdicts(results):
        """Only what changed travels: wire bytes <= M + R + 2 %."""
        out = []
        for r in results:
            if r["scenario"] != RootfsDeltaScenario.SCENARIO or not r["system"].startswith("fleximigrate:"):
                continue
            limit = T_WIRE_FACTOR * (r["memory_mib"] + r["rootfs_mib"]) * 2**20
            out.append({"target": "wire_bytes (M + R)", "system": r["system"], "memory_mib": r["memory_mib"],
                        "working_set_mib": r["working_set_mib"], "dirty_mbit": r["dirty_mbit"],
                        "link_rate": r["link_rate"], "measured": r["median"]["wire_bytes"],
                        "limit": round(limit, 1), "unit": "B",
                        "verdict": "PASS" if r["median"]["wire_bytes"] <= limit else "MISS"})
        return out
