"""Faults during a migration: a destination killed or cut off mid-transfer, the
controller killed -9 in every phase, a container that dies right after restore.

Invariants after every fault: the migration is resolved (COMPLETED, or FAILED after
ROLLBACK), the container runs exactly once, nothing is left where it does not run."""
import os
import time

import pytest

from conftest import (assert_clean_destination, assert_failed_with_rollback,
                      assert_running_and_advancing, migration, wait_finished, wait_for)

# 40 MiB written into the container's root filesystem: its writable layer travels
# with it, so at 100 Mbit/s the transfer lasts ~3.5 s, long enough to hit: by
# default in the rootfs pre-sync while the container runs ("pre-syncing rootfs"),
# with --no-presync in the freeze ("transferring").
PHASES = {"pre-syncing rootfs": [], "transferring": ["--no-presync"]}
BIG_CMD = ["/bin/sh", "-c",
           "dd if=/dev/urandom of=/data/blob bs=1M count=40 2>/dev/null; "
           "i=0; while :; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.05; done"]
SMALL_CMD = ["/bin/sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.05; done"]



def start_big(d, name="big"):
    d.cli("run", name, "--image", "busybox", "--", *BIG_CMD)
    wait_for(lambda: os.path.exists(os.path.join(d.state, "containers", name, "rootfs/tmp/counter")), 20,
             "container to start counting")
    return name


def submit(d, name, *extra):
    p = d.cli("migrate", name, "--to", "hostB" if d.name == "hostA" else "hostA", "--detach", *extra)
    return p.stdout.strip()


def wait_state(d, mid, state, phase=None, timeout=30):
    def ok():
        m = migration(d, mid)
        if m["state"] != state:
            return None
        if phase and (m.get("progress") or {}).get("phase") != phase:
            return None
        if phase and (m.get("progress") or {}).get("bytes", 0) < 1 << 20:
            return None
        return m
    return wait_for(ok, timeout, f"migration {mid} in {state} {phase or ''}")


def exactly_once(a, b, name):
    """The container runs on exactly one host and advances there."""
    on = [d for d in (a, b) if d.containers().get(name, {}).get("status") == "running"]
    assert len(on) == 1, f"{name} runs on {[d.name for d in on]}"
    other = b if on[0] is a else a
    assert name not in other.runc_list(), f"{name} still known to runc on {other.name}"
    assert_running_and_advancing(on[0], name)
    return on[0]


@pytest.mark.parametrize("phase", PHASES)
def test_destination_killed_mid_transfer(slow, phase):
    a, b = slow.start().a, slow.b
    start_big(a)
    mid = submit(a, "big", *PHASES[phase])
    wait_state(a, mid, "EXECUTION", phase)
    b.kill9()
    m = wait_finished(a, mid)
    assert_failed_with_rollback(m, "EXECUTION", "")
    assert_running_and_advancing(a, "big")
    b.start()  # the destination discards the half-received state when it comes back
    wait_for(lambda: b.staging() == [], 10, "staging on hostB to be discarded")
    assert_clean_destination(b, "big")


def test_link_down_mid_transfer(slow):
    a, b = slow.start().a, slow.b
    start_big(a)
    mid = submit(a, "big", "--no-presync")
    wait_state(a, mid, "EXECUTION", "transferring")
    slow.link("down")
    try:
        m = wait_finished(a, mid, timeout=120)
    finally:
        slow.link("up")
    assert_failed_with_rollback(m, "EXECUTION", "")
    # depending on timing the kernel fails the send at once (the route went with the
    # interface) or the transfer stalls into the inactivity limit
    assert any(x in m["error"] for x in ("no progress", "timed out", "link", "Network is unreachable")), m["error"]
    assert_running_and_advancing(a, "big")
    # the destination's receiver timed out by itself and threw the partial state away
    wait_for(lambda: b.staging() == [] and b.reserved()["memory_bytes"] == 0, 15, "hostB to clean up")
    assert_clean_destination(b, "big")


@pytest.mark.parametrize("phase", ["PREPARATION", "EXECUTION", "VERIFICATION"])
def test_controller_killed(slow, phase):
    a, b = slow.start().a, slow.b
    start_big(a)
    extra = []
    if phase == "PREPARATION":
        # a big image on the source only: the destination pulls it during PREPARATION
        big_rootfs = os.path.join(slow.work, "bigroot")
        os.system(f"cp -a {a.state}/images/rootfs/*/ {big_rootfs} && "
                  f"dd if=/dev/urandom of={big_rootfs}/fill bs=1M count=40 2>/dev/null")
        a.cli("image", "import", "bigimage", big_rootfs)
        a.cli("run", "pulled", "--image", "bigimage", "--", *SMALL_CMD)
        name = "pulled"
    else:
        name = "big"
    if phase == "EXECUTION":
        extra = ["--no-presync"]  # killed while the state crosses in the freeze
    if phase == "VERIFICATION":
        extra = ["--", "/bin/sleep", "4"]  # a slow health command keeps VERIFICATION open
    mid = submit(a, name, *extra)
    wait_state(a, mid, phase, "transferring" if phase == "EXECUTION" else None, timeout=60)
    time.sleep(0.3)
    a.kill9()
    a.start()  # recovers: every unfinished migration is resolved
    m = wait_finished(a, mid)
    assert m["state"] == "FAILED", m
    assert "restarted" in m["error"], m["error"]
    states = [t["to"] for t in m["transitions"]]
    assert states[-3:] == ["FAILED", "ROLLBACK", "FAILED"], states
    assert exactly_once(a, b, name) is a
    assert_clean_destination(b, name)
    # a second restart changes nothing: resolved exactly once
    n_events = len(m["events"])
    a.kill9()
    a.start()
    time.sleep(1)
    assert len(migration(a, mid)["events"]) == n_events


def test_controller_killed_at_random_points(cluster):
    """kill -9 at a spread of instants through a whole (small, ~1 s) migration."""
    a, b = cluster.start().a, cluster.b
    a.cli("run", "c", "--image", "busybox", "--", *SMALL_CMD)
    wait_for(lambda: os.path.exists(os.path.join(a.state, "containers/c/rootfs/tmp/counter")), 10, "start")
    for delay in (0.02, 0.08, 0.15, 0.22, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.1):
        src, dst = (a, b) if "c" in a.containers() else (b, a)
        mid = submit(src, "c")
        time.sleep(delay)
        src.kill9()
        src.start()
        m = wait_finished(src, mid)
        assert m["state"] in ("COMPLETED", "FAILED"), m
        runner = exactly_once(a, b, "c")
        if m["state"] == "COMPLETED":
            assert runner is dst, (delay, m["state"])
        else:
            assert runner is src, (delay, m["transitions"])
            assert_clean_destination(dst, "c")


def test_verification_container_dies_after_restore(cluster):
    """A container that exits as soon as it finds itself on hostB's cgroup."""
    a, b = cluster.start().a, cluster.b
    cmd = ["/bin/sh", "-c", "while :; do grep -q hostB /proc/self/cgroup && exit 3; "
                            "echo x > /tmp/counter; sleep 0.01; done"]
    a.cli("run", "fragile", "--image", "busybox", "--", *cmd)
    p = a.cli("migrate", "-v", "fragile", "--to", "hostB", check=False)
    assert p.returncode == 1
    mid = next(l.split()[1] for l in p.stdout.splitlines() if l.startswith("migration "))
    m = migration(a, mid)
    assert_failed_with_rollback(m, "VERIFICATION", "not running")
    assert a.containers()["fragile"]["status"] == "running"
    assert_clean_destination(b, "fragile")


def test_cli_progress_on_a_terminal(slow):
    """On a terminal `migrate` shows a live progress line (phase, bytes, rate)."""
    import pty
    import subprocess
    from conftest import CLI
    a = slow.start().a
    start_big(a)
    master, slave = pty.openpty()
    p = subprocess.Popen([CLI, "-s", a.sock, "migrate", "big", "--to", "hostB"], stdout=slave, stderr=slave)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    assert p.wait(60) == 0
    text = out.decode(errors="replace")
    assert "[EXECUTION] pre-syncing rootfs:" in text, text[-2000:]
    assert "Mbit/s" in text
    assert "Final State: COMPLETED" in text


def test_one_migration_per_container(slow):
    """A second migration of a container already moving is refused, not raced."""
    a, b = slow.start().a, slow.b
    start_big(a)
    mid = submit(a, "big")
    p = a.cli("migrate", "big", "--to", "hostB", check=False)
    assert p.returncode == 1 and "already being migrated" in p.stderr, p.stderr
    # and a host taking part cannot be forgotten meanwhile
    p = a.cli("host", "rm", "hostB", check=False)
    assert p.returncode == 1 and "unfinished migration" in p.stderr, p.stderr
    m = wait_finished(a, mid)
    assert m["state"] == "COMPLETED", m
    assert exactly_once(a, b, "big") is b


@pytest.mark.parametrize("phase", PHASES)
def test_cancel_mid_transfer_rolls_back(slow, phase):
    a, b = slow.start().a, slow.b
    start_big(a)
    mid = submit(a, "big", *PHASES[phase])
    wait_state(a, mid, "EXECUTION", phase)
    p = a.cli("migration", "cancel", mid)
    assert "being cancelled" in p.stdout
    m = wait_finished(a, mid)
    assert_failed_with_rollback(m, "EXECUTION", "cancelled by the user")
    assert exactly_once(a, b, "big") is a
    assert_clean_destination(b, "big")
    # a finished migration cannot be cancelled; an unknown one is unknown
    p = a.cli("migration", "cancel", mid, check=False)
    assert p.returncode == 1 and "already FAILED" in p.stderr, p.stderr
    p = a.cli("migration", "cancel", "mnosuch", check=False)
    assert p.returncode == 1 and "no migration mnosuch" in p.stderr, p.stderr
