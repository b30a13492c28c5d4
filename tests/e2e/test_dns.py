"""The DNS Manager against real authoritative servers, Knot and BIND 9
(scripts/dns.sh): RFC 2136 updates signed with TSIG lower a record's TTL,
switch its address and put it back; the new answer is served within
milliseconds; a wrong key, a key file others can read, and a server that
does not answer each fail clearly, in bounded time, leaving the record as it
was."""
import itertools
import os
import shutil
import subprocess
import time

import pytest

from conftest import ROOT

PROBE = os.path.join(ROOT, "build", "tests", "unit", "dns-probe")
DNS_SH = os.path.join(ROOT, "scripts", "dns.sh")
_port = itertools.count(15353)


@pytest.fixture(params=["knot", "bind"])
def server(request):
    d = f"/tmp/fm-e2e/dns-{request.param}"
    shutil.rmtree(d, ignore_errors=True)
    port = next(_port)
    subprocess.run([DNS_SH, "up", request.param, d, "127.0.0.1", str(port)], check=True, capture_output=True)
    yield {"addr": f"127.0.0.1:{port}", "key": os.path.join(d, "key"), "dir": d}
    subprocess.run([DNS_SH, "down", d], capture_output=True)
    shutil.rmtree(d, ignore_errors=True)


def dns(server, *args, key=None):
    return subprocess.run([PROBE, server["addr"], key or server["key"], *args], capture_output=True, text=True,
                          timeout=30)


def record(server):
    p = dns(server, "get", "web.mig.test")
    assert p.returncode == 0, p.stdout
    ip, ttl = p.stdout.split()
    return ip, int(ttl)


def test_lower_ttl_switch_and_restore(server):
    assert record(server) == ("10.77.0.10", 60)
    # before a move: the TTL down, so that resolvers forget the old answer fast
    p = dns(server, "set", "mig.test", "web.mig.test", "10.77.0.10", "5")
    assert p.returncode == 0, p.stdout
    assert record(server) == ("10.77.0.10", 5)
    # at the switchover: the new address, served within milliseconds
    p = dns(server, "set", "mig.test", "web.mig.test", "10.77.0.99", "5")
    assert p.returncode == 0, p.stdout
    served_ms = float(p.stdout.split()[3])
    assert record(server) == ("10.77.0.99", 5)
    print(f"update -> served: {served_ms:.1f} ms")
    # (Knot holds ~3 % of updates ~1 s in its queue: HOST-NOTES; allow it)
    assert served_ms < 2000, p.stdout
    # after it, or on a rollback: the old record, its old TTL
    p = dns(server, "set", "mig.test", "web.mig.test", "10.77.0.10", "60")
    assert p.returncode == 0, p.stdout
    assert record(server) == ("10.77.0.10", 60)


def test_wrong_key_and_open_key_file_are_refused(server, tmp_path):
    bad = tmp_path / "bad"
    bad.write_text("hmac-sha256:mig-key:" + "QUJD" * 11 + "\n")
    os.chmod(bad, 0o600)
    p = dns(server, "set", "mig.test", "web.mig.test", "10.77.0.66", "5", key=str(bad))
    assert p.returncode == 1 and "without a valid signature (a wrong key?)" in p.stdout, p.stdout
    assert record(server) == ("10.77.0.10", 60), "a refused update changed the record"
    os.chmod(bad, 0o644)
    p = dns(server, "get", "web.mig.test", key=str(bad))
    assert p.returncode == 1 and "readable by nobody else (chmod 600; it is mode 644" in p.stdout, p.stdout
    bad.write_text("mig-key secret\n")
    os.chmod(bad, 0o600)
    p = dns(server, "get", "web.mig.test", key=str(bad))
    assert p.returncode == 1 and "expected one line ALGORITHM:NAME:SECRET" in p.stdout, p.stdout


def test_silent_server_bounded(server):
    subprocess.run([DNS_SH, "down", server["dir"]], check=True)
    t0 = time.monotonic()
    p = dns(server, "set", "mig.test", "web.mig.test", "10.77.0.66", "5")
    assert p.returncode == 1 and "did not answer the update within 1500 ms" in p.stdout, p.stdout
    assert time.monotonic() - t0 < 5
