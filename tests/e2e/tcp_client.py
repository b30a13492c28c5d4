"""An external TCP client for the tests and benchmarks, run in the client
namespace:
  tcp_client.py echo IP PORT SECONDS       send a numbered line every 20 ms,
                                           check each echo
  tcp_client.py heartbeat IP PORT SECONDS  read fm-memload's "<seq> <sent ms>\\n" lines
Prints key=value: intact (1 = every byte as expected), roundtrips or beats,
max_gap_ms (largest gap between two replies/beats, less the echo
client's own 20 ms pause), gaps (all gaps over
20 ms, comma-separated, with their start time relative to the first)."""
import socket
import sys
import time

mode, ip, port, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
s = socket.create_connection((ip, port), timeout=30)
s.settimeout(30)
f = s.makefile("rb", buffering=0)
t0 = last = time.monotonic()
end = t0 + seconds
n, intact, max_gap, gaps = 0, 1, 0.0, []


def gap(now, pause=0.0):
    """pause: the client's own wait between requests, not a stall"""
    global last, max_gap
    g = now - last - pause
    if g > 0.020:
        gaps.append("%.1f@%.2f" % (g * 1000, last - t0))
    max_gap = max(max_gap, g)
    last = now


try:
    if mode == "echo":
        while time.monotonic() < end:
            n += 1
            s.sendall(b"%d\n" % n)
            if f.readline() != b"%d\n" % n:
                intact = 0
                break
            gap(time.monotonic(), 0.02 if n > 1 else 0.0)
            time.sleep(0.02)
    else:
        expect = None
        while time.monotonic() < end:
            line = f.readline()
            if not line.endswith(b"\n"):
                intact = 0
                break
            v = int(line.split()[0])
            if expect is not None and v != expect:
                intact = 0
                break
            expect = v + 1
            n += 1
            gap(time.monotonic())
except OSError as e:
    print("error=%s" % str(e).replace(" ", "_"))
    intact = 0
print("intact=%d %s=%d max_gap_ms=%.1f gaps=%s" % (intact, "roundtrips" if mode == "echo" else "beats", n,
                                                  max_gap * 1000, ",".join(gaps) or "-"))
