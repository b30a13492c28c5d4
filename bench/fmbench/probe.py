#!/usr/bin/python3
"""The probe client: an external TCP client of fm-memload's heartbeat (a line
"<seq>\\n" every 1 ms), run in the client namespace by bench/run, that measures
the service gap users see at the 1 ms grain.  Standard library only.

  probe.py IP PORT [TIMELINE]   connect, print "connected", then read the plan on stdin
"""
import json
import signal
import socket
import sys
import threading
import time

RESUME_LIMIT_S = 30.0   # the probe gives up if no heartbeat came back this long after the migration
GAP_MS = 20.0           # a gap over this is a stall (fm-memload's own threshold)


def main(ip, port, timeline=None):
    """The probe (run in the client namespace): connects to fm-memload's heartbeat
    port, prints "connected", then records every arrival of "<seq>\\n" lines.
    The parent then writes one line to its stdin, "T_STOP T_RESUMED" (wall-clock
    seconds): the client stops at the first arrival at or after T_STOP, or
    RESUME_LIMIT_S after T_RESUMED at the latest (then with an error: the stream
    did not come back).  So a gap is never cut short by the end of the window.
    It prints one JSON line: beats, whether the sequence had no hole and no
    repeat, the largest gap between two arrivals, and every gap over GAP_MS as
    [wall-clock start in ms, length in ms].  With TIMELINE it also writes every
    arrival there as "<wall-clock ms> <ms since the previous arrival>" lines (the
    latency plot).  SIGTERM stops it at once."""
    stop = []
    plan = {}
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent decides when to stop

    def read_plan():
        try:
            t_stop, t_resumed = (float(x) for x in sys.stdin.readline().split())
            plan.update(stop=t_stop, limit=t_resumed + RESUME_LIMIT_S)
        except ValueError:
            stop.append(1)   # stdin closed without a plan: the parent gave up
    out = {"beats": 0, "stream_intact": True, "max_gap_ms": 0.0, "max_gap_at_ms": None, "gaps": [],
           "error": None}
    deadline = time.monotonic() + 10
    while True:
        try:
            s = socket.create_connection((ip, port), timeout=1)
            break
        except OSError as e:
            if time.monotonic() > deadline:
                out["error"] = f"cannot connect to {ip}:{port}: {e}"
                print(json.dumps(out), flush=True)
                sys.exit(1)
            time.sleep(0.05)
    s.settimeout(0.05)   # how soon a stop is noticed
    print("connected", flush=True)
    threading.Thread(target=read_plan, daemon=True).start()
    off = time.time() - time.monotonic()   # gaps are measured on the monotonic clock, reported in wall time
    buf, last, expect = b"", None, None
    arrivals = []
    while not stop:
        if plan and time.time() > plan["limit"]:
            out["error"] = (f"no heartbeat for {(time.monotonic() - last) * 1000.0:.0f} ms: the stream did not "
                            f"come back within {RESUME_LIMIT_S:g} s after the migration")
            break
        try:
            data = s.recv(65536)
        except socket.timeout:
            continue
        except OSError as e:
            out["error"] = str(e)
            break
        if not data:
            out["error"] = "connection closed by the container"
            break
        t = time.monotonic()
        buf += data
        *lines, buf = buf.split(b"\n")
        for line in lines:
            try:
                v = int(line)
            except ValueError:
                out["stream_intact"] = False
                continue
            if expect is not None and v != expect:
                out["stream_intact"] = False
            expect = v + 1
            out["beats"] += 1
        if lines:
            if last is not None:
                g = (t - last) * 1000.0
                if g > out["max_gap_ms"]:
                    out["max_gap_ms"], out["max_gap_at_ms"] = round(g, 1), round((last + off) * 1000.0, 1)
                if g > GAP_MS:
                    out["gaps"].append([round((last + off) * 1000.0, 1), round(g, 1)])
            if timeline:
                arrivals.append((round((t + off) * 1000.0, 2), round((t - last) * 1000.0, 3) if last else 0.0))
            last = t
            if plan and t + off >= plan["stop"]:
                break
    s.close()
    if timeline:
        with open(timeline, "w") as f:
            f.writelines(f"{a} {g}\n" for a, g in arrivals)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        print("usage: probe.py IP PORT [TIMELINE]", file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) == 4 else None)
