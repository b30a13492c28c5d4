"""The results as a Markdown table: medians with min-max, and FlexiMigrate's
best strategy beside each baseline as a ratio."""

BASELINES = ("naive-runc", "criu-page-server", "podman")


def _mm(r, key, scale=1.0, fmt="{:.0f}"):
    med = r["median"].get(key)
    if med is None:
        return "—"
    s = fmt.format(med / scale)
    lo, hi = (r.get("min") or {}).get(key), (r.get("max") or {}).get(key)
    if lo is not None and hi is not None and lo != hi:
        s += f" ({fmt.format(lo / scale)}–{fmt.format(hi / scale)})"
    return s


def _ratio(a, b):
    if a is None or not b:
        return "—"
    return f"{a / b:.3g}×"


def _delta_bytes(a, b):
    """a - b in bytes, signed, readable: the fewest bytes FlexiMigrate sent
    against a baseline's (negative: FlexiMigrate sent less)."""
    if a is None or b is None:
        return "—"
    d = a - b
    return f"{d / 2**20:+.2f} MiB" if abs(d) >= 2**20 else f"{d / 1024:+.1f} KiB"


def fewest(fm):
    return min(fm, key=lambda r: r["median"]["wire_bytes"]) if fm else None


def dirty(r):
    return "max" if r["dirty_mbit"] is None else f"{r['dirty_mbit']:g}"


def cell_key(r):
    return (r["scenario"], r.get("link_rate"), r.get("memory_mib"), r.get("working_set_mib"), r.get("dirty_mbit"))


def memory_table(results, scenario="A-memory"):
    """Scenario A (or D), one block of rows per cell (M, W, D, B)."""
    rows = [r for r in results if r["scenario"] == scenario]
    cells = []
    for r in rows:
        if cell_key(r) not in cells:
            cells.append(cell_key(r))
    out = ["| B | M MiB | W MiB | D Mbit/s | system | downtime ms | stall sum ms | frozen ms | total ms | wire MiB "
           "| CPU s | peak RSS MiB | best FM ÷ this: downtime | total | fewest FM bytes − this |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key in cells:
        rs = [r for r in rows if cell_key(r) == key]
        fm = [r for r in rs if r["system"].startswith("fleximigrate:")]
        best = min(fm, key=lambda r: r["median"]["downtime_ms"]) if fm else None
        least = fewest(fm)
        for r in rs:
            ratio_d = ratio_t = delta = ""
            if best and r["system"] in BASELINES:
                ratio_d = _ratio(best["median"]["downtime_ms"], r["median"].get("downtime_ms"))
                ratio_t = _ratio(best["median"]["total_ms"], r["median"].get("total_ms"))
                delta = _delta_bytes(least["median"]["wire_bytes"], r["median"].get("wire_bytes"))
            elif best and r["system"] == "bound":
                ratio_t = _ratio(best["median"]["total_ms"], r["median"]["total_ms"])
            name = r["system"] + (" (best)" if r is best else "")
            out.append(f"| {r['link_rate']} | {r['memory_mib']} | {r['working_set_mib'] if r['working_set_mib'] is not None else '—'} | {dirty(r)} "
                       f"| {name} | {_mm(r, 'downtime_ms')} | {_mm(r, 'stall_sum_ms')} | {_mm(r, 'frozen_ms')} "
                       f"| {_mm(r, 'total_ms')} | {_mm(r, 'wire_bytes', 2**20, '{:.1f}')} "
                       f"| {_mm(r, 'cpu_s', 1.0, '{:.2f}')} | {_mm(r, 'peak_rss_kib', 1024, '{:.1f}')} "
                       f"| {ratio_d} | {ratio_t} | {delta} |")
    return "\n".join(out)


def service_table(results, scenario):
    """Scenarios B and C: the request probe's view (largest gap between two
    answers, stalls, its errors and reconnects) and the load generator's rate."""
    rows = [r for r in results if r["scenario"] == scenario]
    fm = [r for r in rows if r["system"].startswith("fleximigrate:")]
    best = min(fm, key=lambda r: r["median"]["downtime_ms"]) if fm else None
    out = ["| B | M MiB | system | downtime ms | stall sum ms | probe errors | reconnects | frozen ms | total ms "
           "| wire MiB | CPU s | peak RSS MiB | load req/s | intact | best FM ÷ this: downtime "
           "| fewest FM bytes − this |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    least = fewest(fm)
    for r in rows:
        ratio = delta = ""
        if best and r["system"] in BASELINES:
            ratio = _ratio(best["median"]["downtime_ms"], r["median"].get("downtime_ms"))
            delta = _delta_bytes(least["median"]["wire_bytes"], r["median"].get("wire_bytes"))
        rps = sorted(x["load_rps"] for x in r["repetitions"] if x.get("load_rps") is not None)
        name = r["system"] + (" (best)" if r is best else "")
        out.append(f"| {r['link_rate']} | {r['memory_mib']} | {name} | {_mm(r, 'downtime_ms')} "
                   f"| {_mm(r, 'stall_sum_ms')} | {_mm(r, 'errors')} | {_mm(r, 'reconnects')} "
                   f"| {_mm(r, 'frozen_ms')} | {_mm(r, 'total_ms')} | {_mm(r, 'wire_bytes', 2**20, '{:.1f}')} "
                   f"| {_mm(r, 'cpu_s', 1.0, '{:.2f}')} | {_mm(r, 'peak_rss_kib', 1024, '{:.1f}')} "
                   f"| {f'{rps[len(rps) // 2]:.0f}' if rps else '—'} | {r.get('intact', '—')} | {ratio} | {delta} |")
    return "\n".join(out)


def markdown(doc):
    m = doc["machine"]
    head = (f"FlexiMigrate benchmark, {doc['date']}: {m['cpu_model']}, {m['cores']} cores, {m['mem_mib']} MiB; "
            f"kernel {doc['kernel']}, CRIU {doc['criu_version']}, runc {doc['runc_version']}; "
            f"`{doc['command']}` at {((doc.get('git') or {}).get('commit') or '?')[:12]}.")
    parts = [head, ""]
    if any(r["scenario"] == "A-memory" for r in doc["results"]):
        parts += ["Scenario A, memory workload (fm-memload): medians (min–max) of "
                  f"{doc['repetitions']['A']} repetition(s).  Downtime: the largest heartbeat gap at the "
                  "probe; stall sum: gaps over 20 ms from the freeze to the last page; CPU and peak RSS: the "
                  "migration processes on both hosts.", "", memory_table(doc["results"]), ""]
    if any(r["scenario"] == "B-redis" for r in doc["results"]):
        parts += ["Scenario B, Redis (Debian's redis-server, the host's /usr bound read-only) holding M MiB of "
                  "random values under a constant redis-benchmark SET load; the probe INCRs its own key every 1 ms "
                  "(each answer one more than the last), and every value is read back and compared after the "
                  "move.  Medians "
                  f"(min–max) of {doc['repetitions']['B']} repetition(s).", "",
                  service_table(doc["results"], "B-redis"), ""]
    if any(r["scenario"] == "C-nginx" for r in doc["results"]):
        parts += ["Scenario C, nginx (the host's /usr bound read-only) under a paced wrk load on keep-alive "
                  "connections; the probe GETs the page every 1 ms.  The fixed costs of a move.  Medians "
                  f"(min–max) of {doc['repetitions']['C']} repetition(s).", "",
                  service_table(doc["results"], "C-nginx"), ""]
    d = [r for r in doc["results"] if r["scenario"] == "D-rootfs"]
    if d:
        parts += [f"Scenario D, edge link: the memory workload after writing {d[0]['rootfs_mib']} MiB of random "
                  "bytes to its root filesystem (SHA-256 checked on arrival); bound: (M + R) / B.  Medians "
                  f"(min–max) of {doc['repetitions']['D']} repetition(s).", "",
                  memory_table(doc["results"], "D-rootfs"), ""]
    s = doc.get("summary") or {}
    if "overhead_ms" in s:
        parts += [f"Framework overhead (COLD, busybox, 1 Gbit/s): {s['overhead_ms']} ms (target ≤ "
                  f"{s['overhead_target_ms']}); idle RSS {s['idle_rss_kib']} KiB, idle CPU {s['idle_cpu_percent']} %.",
                  ""]
    v = doc.get("verdicts") or []
    if v:
        parts += ["| target | system | M MiB | W MiB | D Mbit/s | measured | limit | verdict |",
                  "|---|---|---|---|---|---|---|---|"]
        for x in v:
            if x["unit"] == "B":
                meas, lim = f"{x['measured'] / 2**20:.1f} MiB", f"≤ {x['limit'] / 2**20:.1f} MiB"
            else:
                meas, lim = f"{x['measured']:g} ms", f"≤ {x['limit']:g} ms"
            parts.append(f"| {x['target']} | {x['system']} | {x['memory_mib']} | {x['working_set_mib']} "
                         f"| {dirty(x)} | {meas} | {lim} | {x['verdict']} |")
        parts.append("")
    return "\n".join(parts)
