"""The spine's scenario: framework overhead and idle footprint.  The same small
container on both systems (a busybox shell counting in its own memory and
writing the count to /tmp/counter every 0.1 s, the demo's container) moves
back and forth by FlexiMigrate COLD_MIGRATION and by naive runc, taking turns;
overhead = FlexiMigrate's total minus naive runc's (medians).  Then the daemons
are measured idle."""
import os
import re
import time

from .baselines import BASE_CONTAINER, runc_cgroup_path
from .testbed import HOSTS, OTHER
from .util import BenchError, median, now, read, wait_for

CONTAINER = "counter"
COUNTER_CMD = ["/bin/sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.1; done"]
TARGET_OVERHEAD_MS = 50
TARGET_RSS_KIB = 10 * 1024
TARGET_CPU_PERCENT = 0.5
MIN_REPS = 5
KEYS = ("downtime_ms", "frozen_ms", "total_ms", "wire_bytes", "cpu_s", "peak_rss_kib")

MS_RE = {
    "freeze_ms": re.compile(r"frozen in ([0-9.]+) ms"),
    "dump_ms": re.compile(r"dumped in ([0-9.]+) ms"),
    "transfer_ms": re.compile(r"^Transferred .* in ([0-9.]+) ms"),
    "restore_ms": re.compile(r"^Restored .* in ([0-9.]+) ms"),
}


def read_counter(path):
    try:
        s = read(path).strip()
        return int(s) if s else None
    except (OSError, ValueError):
        return None


def wait_counter_advances(path, what, before=None):
    """The container runs: its counter file exists and grows (past `before` if given)."""
    v1 = wait_for(lambda: read_counter(path), 10, f"counter of {what} ({path})")
    if before is not None and v1 < before:
        raise BenchError(f"{what}: counter went back from {before} to {v1}: state was not carried over")
    wait_for(lambda: (read_counter(path) or 0) > v1, 10, f"counter of {what} to advance")
    return v1


def fm_breakdown(m):
    """Where the time of one migration goes, from the product's own record:
    steps_ms are the durations the daemons log ("frozen in X ms, dumped in Y ms",
    "Transferred ... in Z ms", "Restored ... in W ms"); phases_ms are the FSM
    states (differences of transition timestamps); breakdown_ms splits the
    phases further at the log events (millisecond wall-clock timestamps)."""
    steps = {}
    for ev in m.get("events", []):
        for k, rx in MS_RE.items():
            x = rx.search(ev.get("message", ""))
            if x and k not in steps:
                steps[k] = float(x.group(1))
    tr = m.get("transitions", [])
    phases = {a["to"]: b["at_ms"] - a["at_ms"] for a, b in zip(tr, tr[1:])}
    t_enter = {t["to"]: t["at_ms"] for t in tr}

    def ev_at(prefix):
        return next((e["at_ms"] for e in m.get("events", []) if e.get("message", "").startswith(prefix)), None)
    marks = [("PREPARATION", t_enter.get("PREPARATION")), ("preflight_ms", ev_at("Pre-flight check passed")),
             ("prepare_destination_ms", t_enter.get("EXECUTION")),
             ("checkpoint_and_transfer_ms", ev_at("Checkpoint of ")),
             ("restore_call_ms", ev_at("Restored ")),
             ("verify_ms", ev_at("Checks passed")),
             ("source_cleanup_ms", ev_at("Source cleaned up")),
             ("commit_ms", t_enter.get("COMPLETED"))]
    breakdown = {"pending_ms": phases.get("PENDING"), "planning_ms": phases.get("PLANNING")}
    for (_, t0), (name, t1) in zip(marks, marks[1:]):
        breakdown[name] = (t1 - t0) if t0 is not None and t1 is not None else None
    # verify_ms starts at VERIFICATION, not at the restore event
    if t_enter.get("VERIFICATION") is not None and ev_at("Checks passed") is not None:
        breakdown["verify_ms"] = ev_at("Checks passed") - t_enter["VERIFICATION"]
    return steps, phases, {k: v for k, v in breakdown.items() if v is not None}


def status_kib(pid, key):
    for line in read(f"/proc/{pid}/status").splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise BenchError(f"no {key} in /proc/{pid}/status")


def proc_cpu_ticks(pid):
    s = read(f"/proc/{pid}/stat")
    f = s[s.rindex(")") + 2:].split()
    # fields after the command: state is f[0]; utime=f[11], stime=f[12], cutime=f[13], cstime=f[14]
    return int(f[11]) + int(f[12]), int(f[13]) + int(f[14])


def memory_detail(pid):
    """What the resident set is made of: anonymous memory is the daemon's own;
    file-backed pages are mostly its shared libraries (shared with other
    processes, hence the proportional set size too)."""
    d = {"rss_anon_kib": status_kib(pid, "RssAnon"), "rss_file_kib": status_kib(pid, "RssFile"),
         "threads": status_kib(pid, "Threads")}
    try:
        for line in read(f"/proc/{pid}/smaps_rollup").splitlines():
            if line.startswith("Pss:"):
                d["pss_kib"] = int(line.split()[1])
    except OSError:
        pass
    d["mapped_libraries"] = len({x.split()[5] for x in read(f"/proc/{pid}/maps").splitlines()
                                 if len(x.split()) >= 6 and ".so" in x.split()[5]})
    return d


class OverheadScenario:
    def __init__(self, tb, base, reps, idle_window_s):
        self.tb, self.base, self.reps, self.window = tb, base, reps, idle_window_s

    def counter_path(self, h):
        return self.tb.container_file(h, CONTAINER, "/tmp/counter")

    def fm_migrate(self, src, dst):
        tb = self.tb
        before = read_counter(self.counter_path(src))
        tb.meter.start()
        try:
            mid = tb.cli(src, "migrate", CONTAINER, "--to", HOSTS[dst]["name"], "--detach").stdout.strip()
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", mid):
                raise BenchError(f"migrate --detach printed {mid!r}, not a migration id")
            m = wait_for(lambda: (lambda j: j if j.get("finished") else None)(
                tb.cli_json(src, "migration", "show", mid)), 300, f"migration {mid} to finish")
        finally:
            cost = tb.meter.stop(src, dst)
        if m.get("state") != "COMPLETED":
            raise BenchError(f"migration {mid} {src}->{dst} ended {m.get('state')}: {m.get('error')}\n"
                             f"{tb.log_tail(src)}\n{tb.log_tail(dst)}")
        wait_counter_advances(self.counter_path(dst), f"{CONTAINER} on {HOSTS[dst]['name']}", before)
        if os.path.exists(os.path.join(tb.state(src), "containers", CONTAINER)):
            raise BenchError(f"{CONTAINER} still has a bundle on {HOSTS[src]['name']} after migration {mid}")
        return mid, m, cost

    def base_migrate(self, src, dst, k):
        tb = self.tb
        before = read_counter(self.base.upper_file(src, "/tmp/counter"))
        tb.meter.start()
        try:
            b = self.base.migrate(src, dst, k)
        finally:
            cost = tb.meter.stop(src, dst)
        wait_counter_advances(self.base.upper_file(dst, "/tmp/counter"), f"{BASE_CONTAINER} on {HOSTS[dst]['name']}",
                              before)
        for x in ("t_freeze_wall", "t_last_wall"):
            b.pop(x)
        b.update(cost)
        return b

    def idle(self):
        tb = self.tb
        hz = os.sysconf("SC_CLK_TCK")
        for h, p in tb.daemons.items():
            if p.poll() is not None:
                raise BenchError(f"daemon {HOSTS[h]['name']} died before the idle measurement")
        for h in HOSTS:
            ml = tb.cli_json(h, "migration", "list")
            running = [m.get("id") for m in ml if m.get("state") not in ("COMPLETED", "FAILED")]
            if running:
                raise BenchError(f"migration still in progress on {HOSTS[h]['name']}: {running}; not idle")
        start = {h: (proc_cpu_ticks(p.pid), now()) for h, p in tb.daemons.items()}
        rss_start = {h: status_kib(p.pid, "VmRSS") for h, p in tb.daemons.items()}
        time.sleep(self.window)  # the measurement window itself: the daemons are left alone
        out = []
        for h, p in tb.daemons.items():
            (c0, ch0), t0 = start[h]
            c1, ch1 = proc_cpu_ticks(p.pid)
            dt = now() - t0
            out.append({"daemon": HOSTS[h]["name"], "pid": p.pid,
                        "rss_kib": status_kib(p.pid, "VmRSS"), "rss_kib_at_window_start": rss_start[h],
                        "rss_kib_after_start": self.rss_after_start.get(h), **memory_detail(p.pid),
                        "cpu_percent": round((c1 - c0) / hz / dt * 100.0, 3),
                        "children_cpu_percent": round((ch1 - ch0) / hz / dt * 100.0, 3),
                        "window_s": round(dt, 2)})
        return out

    def run(self, rootfs, log):
        tb = self.tb
        self.rss_after_start = {h: status_kib(p.pid, "VmRSS") for h, p in tb.daemons.items()}
        tb.cli("a", "image", "import", "busybox", rootfs)
        tb.cli("a", "run", CONTAINER, "--image", "busybox", "--", *COUNTER_CMD)
        wait_counter_advances(self.counter_path("a"), f"{CONTAINER} on {HOSTS['a']['name']}")
        self.base.start("a", COUNTER_CMD)
        wait_counter_advances(self.base.upper_file("a", "/tmp/counter"), f"{BASE_CONTAINER} on {HOSTS['a']['name']}")

        log("warm-up (not counted): A->B->A for both systems; the first FlexiMigrate move pulls the image")
        pos_fm = pos_base = "a"
        for k in range(2):
            self.fm_migrate(pos_fm, OTHER[pos_fm])
            pos_fm = OTHER[pos_fm]
            self.base_migrate(pos_base, OTHER[pos_base], 90 + k)
            pos_base = OTHER[pos_base]

        # the containers' memory, measured once they have settled on host A again
        cshow = tb.cli_json(pos_fm, "container", "show", CONTAINER)
        fm_mem = cshow.get("memory_usage_bytes")
        if fm_mem is None:
            raise BenchError(f"container show has no memory_usage_bytes: {cshow}")
        base_mem_file = f"/sys/fs/cgroup/memory/{runc_cgroup_path(pos_base)}/memory.usage_in_bytes"
        try:
            base_mem = int(read(base_mem_file))
        except OSError as e:
            raise BenchError(f"cannot read the naive-runc container's memory ({base_mem_file}): {e}")
        fm_mib, base_mib = round(fm_mem / 2**20, 2), round(base_mem / 2**20, 2)
        log(f"container memory: fleximigrate {fm_mib} MiB, naive-runc {base_mib} MiB")
        hdr = (f"{'rep':>3}  {'system':<28} {'dir':<4} {'total_ms':>9} {'downtime_ms':>11} {'wire_bytes':>10} "
               f"{'cpu_s':>6} {'rss_MiB':>7}  steps")
        log(hdr)
        log("-" * (len(hdr) + 40))

        fm_reps, base_reps = [], []
        for k in range(self.reps):
            src = pos_fm
            mid, m, cost = self.fm_migrate(src, OTHER[src])
            pos_fm = OTHER[src]
            steps, phases, breakdown = fm_breakdown(m)
            r = {"downtime_ms": m["downtime_ms"], "frozen_ms": m["downtime_ms"], "total_ms": m["total_ms"],
                 "wire_bytes": m["bytes_transferred"], "direction": f"{src.upper()}->{OTHER[src].upper()}",
                 "migration_id": mid, "steps_ms": steps, "phases_ms": phases, "breakdown_ms": breakdown, **cost}
            fm_reps.append(r)
            log(f"{k + 1:>3}  {'fleximigrate:COLD_MIGRATION':<28} {r['direction']:<4} {r['total_ms']:>9} "
                f"{r['downtime_ms']:>11} {r['wire_bytes']:>10} {r['cpu_s']:>6.2f} {r['peak_rss_kib'] / 1024:>7.1f}  "
                + " ".join(f"{x[:-3]} {v:g}" for x, v in steps.items()))
            src = pos_base
            b = self.base_migrate(src, OTHER[src], k)
            pos_base = OTHER[src]
            b["direction"] = f"{src.upper()}->{OTHER[src].upper()}"
            base_reps.append(b)
            log(f"{k + 1:>3}  {'naive-runc':<28} {b['direction']:<4} {b['total_ms']:>9} {b['downtime_ms']:>11} "
                f"{b['wire_bytes']:>10} {b['cpu_s']:>6.2f} {b['peak_rss_kib'] / 1024:>7.1f}  "
                + " ".join(f"{x[:-3]} {v:g}" for x, v in b["steps_ms"].items()))

        fm_med = {k: median([r[k] for r in fm_reps]) for k in KEYS}
        fm_med["steps_ms"] = {s: median([r["steps_ms"][s] for r in fm_reps if s in r["steps_ms"]])
                              for s in MS_RE if any(s in r["steps_ms"] for r in fm_reps)}
        fm_med["phases_ms"] = {s: median([r["phases_ms"][s] for r in fm_reps if s in r["phases_ms"]])
                               for s in fm_reps[0]["phases_ms"]}
        fm_med["breakdown_ms"] = {s: median([r["breakdown_ms"][s] for r in fm_reps if s in r["breakdown_ms"]])
                                  for s in fm_reps[0]["breakdown_ms"]}
        base_med = {k: median([r[k] for r in base_reps]) for k in KEYS}
        base_med["steps_ms"] = {s: median([r["steps_ms"][s] for r in base_reps]) for s in base_reps[0]["steps_ms"]}
        overhead = round(fm_med["total_ms"] - base_med["total_ms"], 1)
        paired = [round(f["total_ms"] - b["total_ms"], 1) for f, b in zip(fm_reps, base_reps)]

        # the daemons idle: no migration in progress, the FlexiMigrate container running,
        # the naive-runc container gone (so only the daemons are measured)
        p = self.base.runc(pos_base, "delete", "-f", BASE_CONTAINER)
        if p.returncode != 0:
            raise BenchError("cannot delete the naive-runc container before the idle measurement")
        log(f"idle: both daemons, no migration in progress, {CONTAINER} running on {HOSTS[pos_fm]['name']}; "
            f"{self.window} s window")
        idle = self.idle()
        for d in idle:
            log(f"     {d['daemon']} (pid {d['pid']}): VmRSS {d['rss_kib']} KiB ({d['rss_kib'] / 1024:.2f} MiB; "
                f"anon {d['rss_anon_kib']}, file {d['rss_file_kib']}, PSS {d.get('pss_kib')}, "
                f"{d['mapped_libraries']} shared libraries; {d['rss_kib_after_start']} KiB right after start), "
                f"CPU {d['cpu_percent']} % (children {d['children_cpu_percent']} %)")
        idle_rss = max(d["rss_kib"] for d in idle)
        idle_cpu = max(d["cpu_percent"] for d in idle)
        tb.cli(pos_fm, "container", "rm", CONTAINER, "--force")
        link = 1000
        results = [
            {"scenario": "cold-busybox", "system": "fleximigrate:COLD_MIGRATION", "memory_mib": fm_mib,
             "link_mbit": link, "repetitions": fm_reps, "median": fm_med},
            {"scenario": "cold-busybox", "system": "naive-runc", "memory_mib": base_mib,
             "link_mbit": link, "repetitions": base_reps, "median": base_med},
            {"scenario": "overhead", "system": "fleximigrate:COLD_MIGRATION", "memory_mib": fm_mib,
             "link_mbit": link, "target_ms": TARGET_OVERHEAD_MS,
             "repetitions": [{"downtime_ms": round(f["downtime_ms"] - b["downtime_ms"], 1),
                              "frozen_ms": round(f["frozen_ms"] - b["frozen_ms"], 1),
                              "total_ms": round(f["total_ms"] - b["total_ms"], 1),
                              "wire_bytes": f["wire_bytes"] - b["wire_bytes"]}
                             for f, b in zip(fm_reps, base_reps)],
             "median": {"overhead_ms": overhead, "fleximigrate_total_ms": fm_med["total_ms"],
                        "naive_runc_total_ms": base_med["total_ms"],
                        "downtime_overhead_ms": round(fm_med["downtime_ms"] - base_med["downtime_ms"], 1),
                        "median_of_paired_differences_ms": median(paired)}},
            {"scenario": "idle", "system": "fleximigrate", "memory_mib": fm_mib, "link_mbit": link,
             "target_rss_kib": TARGET_RSS_KIB, "target_cpu_percent": TARGET_CPU_PERCENT,
             "repetitions": idle, "median": {"rss_kib": idle_rss, "cpu_percent": idle_cpu}},
        ]

        def verdict(ok):
            return "meets" if ok else "misses"
        summary = {
            "overhead_ms": overhead, "overhead_target_ms": TARGET_OVERHEAD_MS,
            "overhead": verdict(overhead <= TARGET_OVERHEAD_MS),
            "idle_rss_kib": idle_rss, "idle_rss_target_kib": TARGET_RSS_KIB,
            "idle_rss": verdict(idle_rss <= TARGET_RSS_KIB),
            "idle_cpu_percent": idle_cpu, "idle_cpu_target_percent": TARGET_CPU_PERCENT,
            "idle_cpu": verdict(idle_cpu <= TARGET_CPU_PERCENT),
        }
        log(f"framework overhead  {overhead:>8} ms   target <= {TARGET_OVERHEAD_MS} ms   {summary['overhead']}   "
            f"(median of paired differences {median(paired)} ms)")
        log(f"idle RSS (max)      {idle_rss:>8} KiB  target <= {TARGET_RSS_KIB} KiB {summary['idle_rss']}   "
            f"({idle_rss / 1024:.2f} MiB)")
        log(f"idle CPU (max)      {idle_cpu:>8} %    target <= {TARGET_CPU_PERCENT} %      {summary['idle_cpu']}")
        return results, summary
