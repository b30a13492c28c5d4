"""CRIU's kernel probe cache (src/sync/checkpoint.c, fm_ckpt_kdat_prime): where
/run is no tmpfs CRIU never keeps /run/criu.kdat and probes the kernel again on
every run (35-55 ms); the daemon primes the cache at its start, and CRIU uses it."""
import os
import subprocess
import tempfile

from conftest import CRIU


def run_is_tmpfs():
    p = subprocess.run(["stat", "-f", "-c", "%T", "/run"], capture_output=True, text=True, check=True)
    return p.stdout.strip() == "tmpfs"


def test_daemon_primes_criu_kernel_probe_cache(cluster):
    if os.path.exists("/run/criu.kdat"):
        os.unlink("/run/criu.kdat")
    a = cluster.start().a
    if run_is_tmpfs():
        # CRIU keeps its cache itself there: the daemon leaves it alone
        assert "probe cache primed" not in a.log()
        return
    assert "CRIU's kernel probe cache primed in /run/criu.kdat" in a.log(), a.log()[-2000:]
    st = os.stat("/run/criu.kdat")
    assert st.st_size > 0 and st.st_mode & 0o777 == 0o600
    # CRIU itself loads it instead of probing
    with tempfile.TemporaryDirectory() as d:
        p = subprocess.run([CRIU, "check", "--feature", "uffd-noncoop", "-v4", "-o", "check.log", "-D", d,
                            "--work-dir", d], capture_output=True, text=True)
        log = open(os.path.join(d, "check.log")).read()
    assert "Loaded kdat cache from /run/criu.kdat" in log, log[-2000:]
    assert p.returncode == 0, p.stdout + p.stderr
