"""A UDP sequence stream, run in the client namespace: a datagram carrying its
sequence number every INTERVAL_MS (1 ms), echoed by the container
(fm-udpecho); prints one JSON line: sent, echoed, lost, the lost sequence
numbers as ranges, and the longest gap between echoes (ms).

  /usr/bin/python3 udpstream.py IP PORT SECONDS
"""
import json
import select
import socket
import struct
import sys
import time

INTERVAL_MS = 1.0


def main(ip, port, seconds):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    seen, sent, last_rx, gap = set(), 0, None, 0.0
    t0 = time.monotonic()
    nxt = t0
    end = t0 + seconds
    while True:
        now = time.monotonic()
        if now >= nxt and now < end:
            try:
                s.sendto(struct.pack("!Q", sent), (ip, port))
            except OSError:
                pass  # the kernel could not send it (ARP unresolved, queue full): it counts as lost
            sent += 1
            nxt += INTERVAL_MS / 1000
            continue
        if now >= end + 0.5:   # the last echoes' grace
            break
        r, _, _ = select.select([s], [], [], max(0.0, min(nxt, end + 0.5) - now))
        if r:
            while True:
                try:
                    data = s.recv(64)
                except BlockingIOError:
                    break
                if len(data) == 8:
                    seen.add(struct.unpack("!Q", data)[0])
                    t = time.monotonic()
                    if last_rx is not None:
                        gap = max(gap, (t - last_rx) * 1000)
                    last_rx = t
    lost = sorted(set(range(sent)) - seen)
    ranges = []
    for q in lost:
        if ranges and ranges[-1][1] == q - 1:
            ranges[-1][1] = q
        else:
            ranges.append([q, q])
    print(json.dumps({"sent": sent, "echoed": len(seen), "lost": len(lost), "lost_ranges": ranges[:20],
                      "max_gap_ms": round(gap, 1)}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))
