"""A container's /dev and its empty /dev/shm travel as fresh tmpfs mounts, not
inside the checkpoint (runtime/tmpfs.h: CRIU's tar of each cost ~11 ms in the
dump and as much in the restore, inside the freeze); a /dev/shm that holds
files travels inside the checkpoint as before.  Either way the container
finds them as runc made them: /dev with the same devices, links and
mountpoints, /dev/shm a writable tmpfs of 64 MiB, nosuid, nodev, noexec."""
import os
import stat

import pytest

from conftest import assert_running_and_advancing
from test_cold import migrate, run_counter

FRESH = "/dev/shm of counter travels as a fresh tmpfs"
FRESH_DEV = "/dev of counter travels as a fresh tmpfs"


def dev_listing(d, name="counter"):
    """/dev as the container sees it: name, mode, owner, device, link target."""
    root = f"/proc/{d.containers()[name]['pid']}/root/dev"
    out = []
    for n in sorted(os.listdir(root)):
        st = os.lstat(os.path.join(root, n))
        out.append((n, st.st_mode, st.st_uid, st.st_gid, st.st_rdev,
                    os.readlink(os.path.join(root, n)) if stat.S_ISLNK(st.st_mode) else None))
    return out


def dev_shm(d, name="counter"):
    """(per-mount options, fs type, superblock options) of the container's /dev/shm."""
    pid = d.containers()[name]["pid"]
    with open(f"/proc/{pid}/mountinfo") as f:
        rows = [l.split() for l in f if l.split()[4] == "/dev/shm"]
    assert len(rows) == 1, rows
    x = rows[0]
    dash = x.index("-")
    return set(x[5].split(",")), x[dash + 1], set(x[dash + 3].split(","))


def assert_runc_like(d):
    opts, fstype, sopts = dev_shm(d)
    assert fstype == "tmpfs" and {"rw", "nosuid", "nodev", "noexec"} <= opts, (opts, fstype)
    assert "size=65536k" in sopts, sopts


def shm_file(d, fname, text=None):
    path = f"/proc/{d.containers()['counter']['pid']}/root/dev/shm/{fname}"
    if text is not None:
        with open(path, "w") as f:
            f.write(text)
    with open(path) as f:
        return f.read()


@pytest.mark.parametrize("strategy", ["COLD_MIGRATION", "POST_COPY"])
def test_empty_dev_shm_travels_fresh_and_back(cluster, strategy):
    a, b = cluster.start().a, cluster.b
    run_counter(a)
    assert_runc_like(a)
    dev = dev_listing(a)
    assert ("null", stat.S_IFCHR | 0o666, 0, 0, os.makedev(1, 3), None) in dev, dev
    p, m = migrate(a, "counter", "--to", "hostB", "--strategy", strategy)
    assert p.returncode == 0 and m["state"] == "COMPLETED", p.stdout + p.stderr
    assert_running_and_advancing(b, "counter")
    assert a.log().count(FRESH) == 1 and a.log().count(FRESH_DEV) == 1, a.log()[-3000:]
    assert_runc_like(b)
    assert dev_listing(b) == dev
    # the container's own tmpfs, writable; the host's copy of it is detached
    assert shm_file(b, "probe", "written on hostB\n") == "written on hostB\n"
    assert not [x for x in b.mounts() if "/tmpfs/" in x], b.mounts()
    # a fresh one, empty again, moves on fresh
    os.unlink(f"/proc/{b.containers()['counter']['pid']}/root/dev/shm/probe")
    p, m = migrate(b, "counter", "--to", "hostA", "--strategy", strategy)
    assert p.returncode == 0 and m["state"] == "COMPLETED", p.stdout + p.stderr
    assert b.log().count(FRESH) == 1 and b.log().count(FRESH_DEV) == 1, b.log()[-3000:]
    assert_runc_like(a)
    assert dev_listing(a) == dev
    # and with a file in it, inside the checkpoint
    shm_file(a, "probe", "written on hostA\n")
    p, m = migrate(a, "counter", "--to", "hostB", "--strategy", strategy)
    assert p.returncode == 0 and m["state"] == "COMPLETED", p.stdout + p.stderr
    assert_running_and_advancing(b, "counter")
    assert a.log().count(FRESH) == 1 and a.log().count(FRESH_DEV) == 2, a.log()[-3000:]
    assert shm_file(b, "probe") == "written on hostA\n"
    assert dev_listing(b) == dev
    assert_runc_like(b)
    assert not [x for x in a.mounts() + b.mounts() if "/tmpfs/" in x], a.mounts() + b.mounts()


def test_tmpfs_with_files_travels_inside_the_checkpoint(cluster):
    a, b = cluster.start().a, cluster.b
    run_counter(a)
    shm_file(a, "data", "kept\n")
    pid = a.containers()["counter"]["pid"]
    with open(f"/proc/{pid}/root/dev/notes", "w") as f:
        f.write("a file with contents in /dev\n")
    p, m = migrate(a, "counter", "--to", "hostB")
    assert p.returncode == 0 and m["state"] == "COMPLETED", p.stdout + p.stderr
    assert FRESH not in a.log() and FRESH_DEV not in a.log()
    assert shm_file(b, "data") == "kept\n"
    with open(f"/proc/{b.containers()['counter']['pid']}/root/dev/notes") as f:
        assert f.read() == "a file with contents in /dev\n"
    assert_runc_like(b)


def test_dev_entry_a_destination_refuses_travels_inside_the_checkpoint(cluster):
    """An empty file with set-id bits: the source lists it, but its own check of
    the manifest (the destination's) refuses it, so CRIU carries /dev."""
    a, b = cluster.start().a, cluster.b
    run_counter(a)
    fname = f"/proc/{a.containers()['counter']['pid']}/root/dev/flagged"
    open(fname, "w").close()
    os.chmod(fname, 0o4644)
    p, m = migrate(a, "counter", "--to", "hostB")
    assert p.returncode == 0 and m["state"] == "COMPLETED", p.stdout + p.stderr
    assert FRESH_DEV not in a.log() and "its tmpfs mounts go inside the checkpoint" in a.log()
    assert os.stat(f"/proc/{b.containers()['counter']['pid']}/root/dev/flagged").st_mode & 0o7777 == 0o4644
    assert_runc_like(b)
