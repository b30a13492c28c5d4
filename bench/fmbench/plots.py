"""PNG plots of a run with Debian's gnuplot (gnuplot-nox): the data go to
files, gnuplot reads a script file; no shell in between.

  downtime.png  scenarios A to D: the median downtime of every system, per cell
  total.png     scenarios A to D: the median total migration time per cell,
                with the bound M / B ((M + R) / B in D; none in C)
  timeline.png  the probe's view of one migration per system (scenario A's first
                cell's first repetition): each heartbeat's gap to the one before,
                against the time since the freeze
"""
import os
import shutil
import subprocess

from .util import BenchError

SCENARIOS = ("A-memory", "B-redis", "C-nginx", "D-rootfs")
SERVICES = {"B-redis": "Redis", "C-nginx": "nginx"}
STYLE = "set terminal pngcairo noenhanced size 1200,640 font 'DejaVu Sans,10'"


def q(path):
    """A path as a gnuplot single-quoted string."""
    return "'" + path.replace("'", "''") + "'"


def _label(r):
    d = "max" if r["dirty_mbit"] is None else f"{r['dirty_mbit']:g}"
    rootfs = f" R={r['rootfs_mib']}" if r.get("rootfs_mib") else ""
    if r["scenario"] in SERVICES:
        return f"{SERVICES[r['scenario']]} {r.get('link_rate')}" + (f" M={r['memory_mib']}" if r["memory_mib"] else "")
    return f"{r.get('link_rate')} M={r['memory_mib']} W={r['working_set_mib']} D={d}{rootfs}"


def _cells(results, with_bound):
    """[(label, {system: result})] in run order, and the systems in order."""
    cells, systems = [], []
    for r in results:
        if r["scenario"] not in SCENARIOS or (r["system"] == "bound" and not with_bound):
            continue
        label = _label(r)
        if not cells or cells[-1][0] != label:
            cells.append((label, {}))
        cells[-1][1][r["system"]] = r
        if r["system"] not in systems:
            systems.append(r["system"])
    return cells, systems


def _bars(results, key, title, ylabel, path, work, with_bound):
    cells, systems = _cells(results, with_bound)
    if not cells:
        return None
    data = os.path.join(work, os.path.basename(path) + ".dat")
    with open(data, "w") as f:
        f.write("cell " + " ".join(f'"{s}"' for s in systems) + "\n")
        for label, by in cells:
            vals = []
            for s in systems:
                v = (by.get(s) or {}).get("median", {}).get(key)
                vals.append("-" if v is None else f"{v:g}")
            f.write(f'"{label}" ' + " ".join(vals) + "\n")
    cols = " , ".join(f"{q(data)} using {i + 2}:xtic(1) title columnheader" for i in range(len(systems)))
    return [STYLE, f"set output {q(path)}", f"set title '{title}'", f"set ylabel '{ylabel}'",
            "set logscale y", "set grid ytics", "set style data histograms",
            "set style histogram clustered gap 1", "set style fill solid 0.8 border -1",
            "set datafile missing '-'", "set key outside right top", "set xtics rotate by -20",
            f"plot {cols}"]


def _timeline(results, timelines, path, work):
    first = next((r for r in results if r["scenario"] == SCENARIOS[0] and r["repetitions"]), None)
    if not first:
        return None
    series = []
    for r in results:
        if r["scenario"] != SCENARIOS[0] or _label(r) != _label(first) or not r["repetitions"]:
            continue
        rep = r["repetitions"][0]
        src = os.path.join(timelines, rep.get("timeline_file", ""))
        if not rep.get("timeline_file") or not os.path.exists(src):
            continue
        t0 = rep["t_freeze_wall_ms"]
        data = os.path.join(work, f"timeline-{len(series)}.dat")
        with open(src) as f, open(data, "w") as out:
            for line in f:
                at, gap = line.split()
                out.write(f"{(float(at) - t0) / 1000.0:.4f} {max(float(gap), 0.01):g}\n")
        series.append((r["system"], data))
    if not series:
        return None
    plots = " , ".join(f"{q(d)} using 1:2 with impulses title '{s}'" for s, d in series)
    return [STYLE, f"set output {q(path)}",
            f"set title 'What the probe saw: gap between heartbeats, {_label(first)}, repetition 1'",
            "set xlabel 'seconds since the freeze'", "set ylabel 'gap to the previous heartbeat (ms)'",
            "set logscale y", "set grid", "set key outside right top", f"plot {plots}"]


def write(doc, timelines, out_dir, work, prefix=""):
    """Writes the PNGs into out_dir (their names after prefix); returns their
    paths.  work: a scratch directory for the data and the script."""
    gnuplot = shutil.which("gnuplot")
    if not gnuplot:
        raise BenchError("gnuplot not found (scripts/setup.sh installs gnuplot-nox)")
    os.makedirs(work, exist_ok=True)
    res = doc["results"]
    png = {k: os.path.join(out_dir, f"{prefix}{k}.png") for k in ("downtime", "total", "timeline")}
    jobs = [(png["downtime"],
             _bars(res, "downtime_ms", "Downtime (largest gap at the probe), median", "ms",
                   png["downtime"], work, False)),
            (png["total"],
             _bars(res, "total_ms", "Total migration time, median (bound: M / B; D: (M + R) / B)", "ms",
                   png["total"], work, True)),
            (png["timeline"], _timeline(res, timelines, png["timeline"], work))]
    written = []
    for path, script in jobs:
        if not script:
            continue
        sp = os.path.join(work, os.path.basename(path) + ".gp")
        with open(sp, "w") as f:
            f.write("\n".join(script) + "\n")
        p = subprocess.run([gnuplot, sp], capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            raise BenchError(f"gnuplot failed on {sp}: {p.stderr[-1000:]}")
        written.append(path)
    return written
