#!/usr/bin/python3
"""The probe client, run in the client namespace by bench/run: an external
client of the migrated service that measures the service gap users see at the
1 ms grain.  Standard library only.

  probe.py heartbeat IP PORT [TIMELINE]  fm-memload's heartbeat: a line "<seq> <sent ms>\\n" every 1 ms
  probe.py redis IP PORT [TIMELINE]      a request every 1 ms: INCR on its own key (RESP)
  probe.py http IP PORT [TIMELINE]       a request every 1 ms: GET / on a keep-alive connection

Each connects, prints "connected", then reads the plan on stdin (see main).
"""
import json
import signal
import socket
import sys
import threading
import time

RESUME_LIMIT_S = 30.0   # the probe gives up if no answer came back this long after the migration
GAP_MS = 20.0           # a gap over this is a stall (fm-memload's own threshold)
PERIOD_S = 0.001        # a request every millisecond
REDIS_KEY = b"fm-probe"
HTTP_BODY = b"fleximigrate probe page\n"   # what bench/run puts at the web server's /


class Recorder:
    """Arrivals (heartbeats or answers) on the monotonic clock, reported in
    wall-clock milliseconds: the largest gap, every gap over GAP_MS as [start,
    length], and with a timeline file every arrival as "<ms> <ms since the
    previous>"."""

    def __init__(self, timeline):
        self.timeline, self.arrivals, self.last = timeline, [], None
        self.sent, self.gap_at = [], []
        self.off = time.time() - time.monotonic()
        self.out = {"beats": 0, "stream_intact": True, "max_gap_ms": 0.0, "max_gap_at_ms": None, "gaps": [],
                    "error": None}

    def arrival(self, t, sent=None):
        """An arrival at t; sent: (first, last) send times of its beats (ms,
        the sender's clock), when the sender says (fm-memload's heartbeat)."""
        if sent is not None:
            self.sent.append((t * 1000.0, sent[0], sent[1]))
        if self.last is not None:
            g = (t - self.last) * 1000.0
            if g > self.out["max_gap_ms"]:
                self.out["max_gap_ms"], self.out["max_gap_at_ms"] = round(g, 1), round((self.last + self.off) * 1000.0, 1)
            if g > GAP_MS:
                self.out["gaps"].append([round((self.last + self.off) * 1000.0, 1), round(g, 1)])
                if sent is not None:
                    self.gap_at.append((len(self.out["gaps"]) - 1, len(self.sent) - 1))
        if self.timeline:
            self.arrivals.append((round((t + self.off) * 1000.0, 2),
                                  round((t - self.last) * 1000.0, 3) if self.last else 0.0))
        self.last = t

    def sender_gaps(self):
        """A gap's third figure: how long the sender itself sent nothing, from
        the send times in its beats.  A restored process's monotonic clock
        may run at an offset (CRIU restores it in a time namespace that
        continues its clock): so the offset is taken as the change in the
        least one-way delay (arrival - send) of the beats before and after
        the gap, which a late delivery does not lower."""
        k = 50
        for gi, si in self.gap_at:
            if si < 1:
                continue
            before = min(a - s1 for a, _, s1 in self.sent[max(0, si - k):si])
            after = min(a - s1 for a, _, s1 in self.sent[si:si + k])
            sent_gap = self.sent[si][1] - self.sent[si - 1][2] + (after - before)
            self.out["gaps"][gi].append(round(sent_gap, 1))

    def finish(self):
        self.sender_gaps()
        if self.timeline:
            with open(self.timeline, "w") as f:
                f.writelines(f"{a} {g}\n" for a, g in self.arrivals)
        print(json.dumps(self.out), flush=True)


def connect(ip, port, deadline):
    while True:
        try:
            return socket.create_connection((ip, port), timeout=1)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def recv_some(s, peer):
    """What s has (b"" when its 50 ms timeout passed first); a closed
    connection raises."""
    try:
        data = s.recv(65536)
    except socket.timeout:
        return b""
    if not data:
        raise ConnectionError(f"connection closed by the {peer}")
    return data


def heartbeat(s, rec, done):
    """fm-memload's stream: every line must be the previous plus one."""
    buf, expect = b"", None
    s.settimeout(0.05)   # how soon a stop is noticed
    while not done():
        data = recv_some(s, "container")
        if not data:
            continue
        t = time.monotonic()
        buf += data
        *lines, buf = buf.split(b"\n")
        sent = []
        for line in lines:
            try:
                f = line.split()
                v = int(f[0])
                sent.append(float(f[1]))
            except (ValueError, IndexError):
                rec.out["stream_intact"] = False
                continue
            if expect is not None and v != expect:
                rec.out["stream_intact"] = False
            expect = v + 1
            rec.out["beats"] += 1
        if lines:
            rec.arrival(t, (sent[0], sent[-1]) if sent else None)


def read_answer(s, kind, buf, done):
    """One whole answer from s (buf: bytes already read); returns (answer, rest)."""
    while True:
        if kind == "redis":
            end = buf.find(b"\r\n")
            if end >= 0:
                return buf[:end], buf[end + 2:]
        else:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                head = buf[:end].decode("latin-1").split("\r\n")
                length = next((int(h.split(":", 1)[1]) for h in head[1:] if h.lower().startswith("content-length:")),
                              None)
                if length is None:
                    raise ValueError(f"answer without Content-Length: {head[0]!r}")
                if len(buf) >= end + 4 + length:
                    return (head[0], buf[end + 4:end + 4 + length]), buf[end + 4 + length:]
        if done():
            raise TimeoutError("stopped while waiting for an answer")
        buf += recv_some(s, "server")


def requests(ip, port, kind, rec, done, first):
    """A request every PERIOD_S on one connection, the next sent when the answer
    is in (never more than one outstanding); a broken connection is counted as
    an error and replaced.  redis: INCR on the probe's own key, every answer
    must be one more than the last (a server that lost or repeated state shows
    as stream_intact false; after a reconnect one skipped value is allowed: the
    lost answer's INCR may have been applied).  http: GET /, 200 and the page."""
    out = rec.out
    out.update(requests=0, errors=0, reconnects=0)
    s, buf, expect, skip_ok = first, b"", None, False
    nxt = time.monotonic()
    req = (b"*2\r\n$4\r\nINCR\r\n$%d\r\n%s\r\n" % (len(REDIS_KEY), REDIS_KEY) if kind == "redis" else
           f"GET / HTTP/1.1\r\nHost: {ip}\r\nConnection: keep-alive\r\n\r\n".encode())
    while not done():
        try:
            if s is None:
                s, buf = connect(ip, port, time.monotonic() + 1), b""
                out["reconnects"] += 1
                skip_ok = True
            s.settimeout(0.05)
            wait = nxt - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            nxt = max(nxt + PERIOD_S, time.monotonic())
            s.sendall(req)
            ans, buf = read_answer(s, kind, buf, done)
        except TimeoutError:
            break
        except (OSError, ValueError) as e:
            out["errors"] += 1
            out["last_request_error"] = str(e)
            if s is not None:
                s.close()
            s = None
            continue
        t = time.monotonic()
        out["requests"] += 1
        if kind == "redis":
            ok = ans.startswith(b":")
            if ok:
                v = int(ans[1:])
                if expect is not None and not (v == expect or (skip_ok and v == expect + 1)):
                    out["stream_intact"] = False
                    out.setdefault("sequence_breaks", []).append([expect, v])
                expect, skip_ok = v + 1, False
        else:
            ok = ans[0].split(" ")[1:2] == ["200"] and ans[1] == HTTP_BODY
        if not ok:
            out["errors"] += 1
            out["last_request_error"] = repr(ans)[:200]
            continue
        out["beats"] += 1
        rec.arrival(t)
    if s is not None:
        s.close()


def main(kind, ip, port, timeline=None):
    """Connects to the service, prints "connected", then records every arrival
    (heartbeat line or answer).  The parent then writes one line to its stdin,
    "T_STOP T_RESUMED" (wall-clock seconds): the client stops at the first
    arrival at or after T_STOP, or RESUME_LIMIT_S after T_RESUMED at the latest
    (then with an error: the service did not come back).  So a gap is never cut
    short by the end of the window.  It prints one JSON line: arrivals (beats),
    whether the sequence had no hole and no repeat, the largest gap between two
    arrivals, and every gap over GAP_MS; the request probes add requests, errors
    and reconnects.  SIGTERM stops it at once."""
    stop, plan = [], {}
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent decides when to stop

    def read_plan():
        try:
            t_stop, t_resumed = (float(x) for x in sys.stdin.readline().split())
            plan.update(stop=t_stop, limit=t_resumed + RESUME_LIMIT_S)
        except ValueError:
            stop.append(1)   # stdin closed without a plan: the parent gave up
    rec = Recorder(timeline)

    def done():
        if stop:
            return True
        if plan and rec.last is not None and rec.last + rec.off >= plan["stop"]:
            return True
        if plan and time.time() > plan["limit"]:
            since = (time.monotonic() - rec.last) * 1000.0 if rec.last else float("nan")
            rec.out["error"] = (f"no answer for {since:.0f} ms: the service did not come back within "
                                f"{RESUME_LIMIT_S:g} s after the migration")
            return True
        return False
    try:
        s = connect(ip, port, time.monotonic() + 10)
    except OSError as e:
        rec.out["error"] = f"cannot connect to {ip}:{port}: {e}"
        print(json.dumps(rec.out), flush=True)
        sys.exit(1)
    print("connected", flush=True)
    threading.Thread(target=read_plan, daemon=True).start()
    try:
        if kind == "heartbeat":
            heartbeat(s, rec, done)
        else:
            requests(ip, port, kind, rec, done, s)
    except OSError as e:
        rec.out["error"] = str(e)
    rec.finish()


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5) or sys.argv[1] not in ("heartbeat", "redis", "http"):
        print("usage: probe.py heartbeat|redis|http IP PORT [TIMELINE]", file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) == 5 else None)
