"""The seed's API in C: examples/seed_example.c (the seed's Python snippet,
through include/fleximigrate.h and libfleximigrate) moves a container between
two real hosts; the seed's policy, evaluated on measured values, allows it;
an unknown destination and a container too large for the declared host are
refused with clear errors."""
import os
import subprocess

from conftest import ROOT, assert_clean_destination, wait_for, wait_monitored

EXAMPLE = os.path.join(ROOT, "build", "examples", "seed-example")


def example(cluster, *args):
    return subprocess.run([EXAMPLE, cluster.a.sock, *args], capture_output=True, text=True, timeout=300)


def test_seed_example_migrates(cluster):
    a, b = cluster.start().a, cluster.b
    wait_monitored(a, b)
    p = example(cluster, "hostA", "hostB", cluster.b.addr, "busybox")
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert "Policies allow the migration: policy adaptive_load_balancing (priority 2) allows the migration" in out, out
    assert "network_congestion_prob=" in out, out
    assert "[MigrationStrategySelector]: Strategy " in out, out
    assert out.rstrip().endswith("Final State: COMPLETED"), out[-500:]
    assert "container1" in b.containers() and "container1" not in a.containers()
    v = b.counter("container1")
    wait_for(lambda: b.counter("container1") > v, 5, "the counter to advance on hostB")

    # again: container1 is not on hostA any more, so it is started anew there,
    # but this time the destination is unknown
    p = example(cluster, "hostA", "nowhere", "10.0.0.9:1", "busybox")
    assert p.returncode == 1 and "nowhere" in p.stderr and "10.0.0.9:1" in p.stderr, p.stdout + p.stderr


def test_seed_example_refuses_what_does_not_fit(cluster):
    """A destination that declares less memory than the container's limit is
    refused by enforce_policies: nothing is asked of the destination."""
    a, b = cluster.start().a, cluster.b
    p = example(cluster, "hostA", "hostB", cluster.b.addr, "busybox", "1024")
    assert p.returncode == 1, p.stdout + p.stderr
    assert "Policies refuse the migration: container container1 needs 2048 MiB of memory; host hostB declares 1024" \
        in p.stdout, p.stdout + p.stderr
    assert not a.api("GET", "/v1/migrations")[1]
    assert "container1" in a.containers()
    assert_clean_destination(b, "container1")
    # a bad image: the daemon's error, word for word
    a.cli("container", "rm", "container1", "--force")
    p = example(cluster, "hostA", "hostB", cluster.b.addr, "no-such-image")
    assert p.returncode == 1 and "no-such-image" in p.stderr, p.stdout + p.stderr
