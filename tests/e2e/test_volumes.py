"""Volumes: host paths bound into a container (`run --volume SRC:DST[:ro]`).

A volume is not copied by a migration: its source must exist on the
destination host as well (shared storage, or the host's own /usr).  Its mount
moves with the container (CRIU external mount, bound again on the
destination), read-only stays read-only, and a destination that lacks the
source refuses the container in PREPARATION, before anything is frozen."""
import os
import shutil

import pytest

from conftest import assert_clean_destination, assert_failed_with_rollback, assert_running_and_advancing, wait_for
from test_cold import migrate

# reads the read-only volume into the rootfs and appends to the read-write one,
# every 50 ms, with a counter as the other tests have it
VOLUME_CMD = ["/bin/sh", "-c",
              "i=0; while :; do i=$((i+1)); echo $i > /tmp/counter; cat /conf/greeting > /tmp/seen; "
              "echo $i >> /out/log; sleep 0.05; done"]


def container_mounts(d, name):
    """{mount point: options} of the container's init, from its mountinfo."""
    pid = d.containers()[name]["pid"]
    with open(f"/proc/{pid}/mountinfo") as f:
        return {l.split()[4]: l.split()[5] for l in f}


@pytest.fixture
def volumes(tmp_path):
    conf, out = tmp_path / "conf", tmp_path / "out"
    conf.mkdir()
    out.mkdir()
    (conf / "greeting").write_text("hello from the host\n")
    return conf, out


def run_with_volumes(d, conf, out):
    d.cli("run", "vol", "--image", "busybox", "--volume", f"{conf}:/conf:ro", "--volume", f"{out}:/out",
          "--", *VOLUME_CMD)
    seen = os.path.join(d.state, "containers", "vol", "rootfs", "tmp", "seen")
    wait_for(lambda: os.path.exists(seen) and open(seen).read() == "hello from the host\n", 10, "/tmp/seen")


@pytest.mark.parametrize("strategy", ["COLD_MIGRATION", "POST_COPY"])
def test_volumes_move_with_the_container(cluster, volumes, strategy):
    a, b = cluster.start().a, cluster.b
    conf, out = volumes
    run_with_volumes(a, conf, out)
    c = a.containers()["vol"]
    assert c["volumes"] == [{"source": str(conf), "destination": "/conf", "readonly": True},
                            {"source": str(out), "destination": "/out", "readonly": False}], c
    m = container_mounts(a, "vol")
    assert m["/conf"].split(",")[0] == "ro" and m["/out"].split(",")[0] == "rw", m

    p, rec = migrate(a, "vol", "--to", "hostB", "--strategy", strategy)
    assert p.returncode == 0, p.stdout + p.stderr
    assert rec["state"] == "COMPLETED", rec["error"]
    assert "vol" not in a.containers()
    assert_running_and_advancing(b, "vol")
    # the same host directories, bound again, with their modes
    m = container_mounts(b, "vol")
    assert m["/conf"].split(",")[0] == "ro" and m["/out"].split(",")[0] == "rw", m
    assert b.containers()["vol"]["volumes"] == c["volumes"]
    # the process keeps writing to the read-write volume: the log grows on
    # without a gap (every counter value once, in order)
    before = len((out / "log").read_text().split())
    wait_for(lambda: len((out / "log").read_text().split()) > before + 5, 10, "/out/log to grow on hostB")
    log = [int(x) for x in (out / "log").read_text().split()]
    assert log == list(range(1, len(log) + 1)), log[-20:]
    # and the read-only one is read-only for it
    pid = b.containers()["vol"]["pid"]
    with pytest.raises(OSError):
        open(f"/proc/{pid}/root/conf/new", "w")
    assert not (conf / "new").exists()


def test_volume_missing_on_the_destination_fails_in_preparation(cluster, volumes):
    a, b = cluster.start().a, cluster.b
    conf, out = volumes
    run_with_volumes(a, conf, out)
    # the container keeps its bind; the host path itself is gone (as on a
    # destination without that storage)
    shutil.rmtree(conf)
    p, m = migrate(a, "vol", "--to", "hostB")
    assert p.returncode == 1
    assert_failed_with_rollback(m, "PREPARATION", f"volume {conf} of vol: No such file or directory on hostB")
    assert_running_and_advancing(a, "vol")
    assert_clean_destination(b, "vol")
