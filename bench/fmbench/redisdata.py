#!/usr/bin/python3
"""Scenario B's dataset: fills Redis with KEYS values of SIZE random bytes
(incompressible, like real data after the application compressed or
encrypted it, so that no system's compression flatters it), every one of which
can be checked afterwards, and checks them.  Keys data:<i>; the values come in
order from one seeded stream, so `check` regenerates what `fill` wrote.  Run
in the client namespace by bench/run; standard library only.

  redisdata.py fill|check IP PORT KEYS SIZE   prints {"keys": N, "bad": N}
"""
import json
import random
import socket
import sys

SEED = 20261125
BATCH = 1000          # commands per pipelined round trip


def main(mode, ip, port, keys, size):
    s = socket.create_connection((ip, port), timeout=120)
    f = s.makefile("rb")
    rnd = random.Random(SEED)
    bad = 0
    for start in range(0, keys, BATCH):
        n = min(BATCH, keys - start)
        names = [b"data:%d" % i for i in range(start, start + n)]
        vals = [rnd.randbytes(size) for _ in range(n)]
        if mode == "fill":
            s.sendall(b"".join(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, size, v)
                               for k, v in zip(names, vals)))
            for k in names:
                line = f.readline()
                if line != b"+OK\r\n":
                    raise SystemExit(f"redisdata: SET {k.decode()}: {line[:200]!r}")
        else:
            s.sendall(b"".join(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(k), k) for k in names))
            for v in vals:
                line = f.readline()
                if not line.startswith(b"$"):
                    raise SystemExit(f"redisdata: GET: {line[:200]!r}")
                length = int(line[1:])
                got = f.read(length + 2)[:length] if length >= 0 else None
                bad += got != v
    s.close()
    print(json.dumps({"keys": keys, "bad": bad}), flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 6 or sys.argv[1] not in ("fill", "check"):
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
