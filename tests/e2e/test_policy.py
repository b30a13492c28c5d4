"""`fleximigrate policy check`: the seed's example policy file is valid as it
stands, and a broken one is refused with where and why (offline: no daemon)."""
import json
import os
import subprocess

from conftest import (CLI, COUNTER_CMD, SEED_POLICIES, assert_clean_destination, assert_failed_with_rollback,
                      assert_running_and_advancing, migration, wait_finished, wait_for, write_policies_file)

SEED = SEED_POLICIES


def check(tmp_path, doc):
    path = os.path.join(tmp_path, "policies.json")
    with open(path, "w") as f:
        f.write(doc if isinstance(doc, str) else json.dumps(doc))
    return subprocess.run([CLI, "policy", "check", path], capture_output=True, text=True)


def test_seed_policy_is_valid(tmp_path):
    p = check(tmp_path, SEED)
    assert p.returncode == 0, p.stderr
    assert "1 policy, valid" in p.stdout
    assert 'set_priority("high")' in p.stdout and "at most 5 migrations at once" in p.stdout


def test_broken_policies_are_refused_with_where_and_why(tmp_path):
    bad = json.loads(json.dumps(SEED))
    bad[0]["CONDITIONS"] = "source_cpu_utilization > 80 and __import__('os')"
    p = check(tmp_path, bad)
    assert p.returncode == 1
    assert "policy 1 (adaptive_load_balancing): CONDITIONS: line 1, column 33: \"__import__\" is not among" in p.stderr, p.stderr
    bad = json.loads(json.dumps(SEED))
    bad[0]["ACTIONS"].append("shutdown_host")
    p = check(tmp_path, bad)
    assert p.returncode == 1 and '"shutdown_host" is not an action' in p.stderr, p.stderr
    p = check(tmp_path, "[{\"policy_name\": ")
    assert p.returncode == 1 and "line 1" in p.stderr, p.stderr
    p = subprocess.run([CLI, "policy", "vars"], capture_output=True, text=True)
    assert p.returncode == 0 and "network_congestion_prob" in p.stdout


def test_explain_a_hypothetical_migration(tmp_path):
    assert check(tmp_path, SEED).returncode == 0
    path = os.path.join(tmp_path, "policies.json")
    values = ["source_cpu_utilization=91", "destination_cpu_utilization=30", "time_of_day=14",
              "network_congestion_prob=0.4", "service_type=batch"]
    p = subprocess.run([CLI, "policy", "explain", path, *values], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("Allowed: policy adaptive_load_balancing (priority 2) allows the migration")
    assert "source_cpu_utilization=91" in p.stdout and 'service_type="batch"' in p.stdout
    # a busy destination and no other reason: no policy allows it
    p = subprocess.run([CLI, "policy", "explain", path, *values[:1], "destination_cpu_utilization=70", *values[2:]],
                       capture_output=True, text=True)
    assert p.returncode == 1 and p.stdout.startswith("Denied: no policy allows the migration"), p.stdout
    # a value left out: fail closed, saying which
    p = subprocess.run([CLI, "policy", "explain", path, *values[:-1]], capture_output=True, text=True)
    assert p.returncode == 1 and "service_type has no value yet" in p.stdout, p.stdout
    p = subprocess.run([CLI, "policy", "explain", path, "time_of_day=noon"], capture_output=True, text=True)
    assert p.returncode == 2 and "time_of_day takes a number" in p.stderr, p.stderr


def test_policy_blocks_in_planning(cluster):
    """The seed's scenario 3: a policy denies the migration in PLANNING; it
    ends FAILED with the policy and the values it saw, nothing was reserved or
    frozen, the container runs on where it was.  Another migration the
    policies allow goes through."""
    policies = [
        {"policy_name": "keep_off_hostB", "CONTEXT": ["destination_host", "container"],
         "CONDITIONS": "destination_host == \"hostB\" and container != \"mobile\"",
         "ACTIONS": ["deny_migration"], "PRIORITY": 10},
        {"policy_name": "otherwise", "CONTEXT": ["time_of_day"], "CONDITIONS": "time_of_day >= 0",
         "ACTIONS": ["allow_migration"], "PRIORITY": -1},
    ]
    a, b = cluster.start(a_extra=["--policies", write_policies_file(cluster.a, policies)]).a, cluster.b
    assert any("2 migration policies loaded" in line for line in a.log().splitlines())
    a.cli("run", "counter", "--image", "busybox", "--", *COUNTER_CMD)
    wait_for(lambda: os.path.exists(os.path.join(a.state, "containers/counter/rootfs/tmp/counter")), 20, "start")
    p = a.cli("migrate", "-v", "counter", "--to", "hostB", check=False)
    assert p.returncode == 1
    mid = next(l.split()[1] for l in p.stdout.splitlines() if l.startswith("migration "))
    m = migration(a, mid)
    assert_failed_with_rollback(m, "PLANNING", "policy keep_off_hostB (priority 10) denies the migration")
    assert 'destination_host="hostB", container="counter"' in m["error"], m["error"]
    assert not any(e["component"] in ("ResourceAllocator", "CheckpointingModule") for e in m["events"]), m["events"]
    assert_running_and_advancing(a, "counter")
    assert_clean_destination(b, "counter")
    p = a.cli("policy", "explain", mid)
    assert "Denied: policy keep_off_hostB (priority 10) denies the migration" in p.stdout, p.stdout

    # the lower policy allows this one (its condition reads the clock)
    a.cli("run", "mobile", "--image", "busybox", "--", *COUNTER_CMD)
    wait_for(lambda: os.path.exists(os.path.join(a.state, "containers/mobile/rootfs/tmp/counter")), 20, "start")
    p = a.cli("migrate", "-v", "mobile", "--to", "hostB", check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Migration allowed: policy otherwise (priority -1) allows the migration: its condition holds (time_of_day=" \
        in p.stdout, p.stdout


def test_policies_reload_when_the_file_changes(cluster):
    """A replaced policy file is in force for the next migration; a broken
    one is refused and the policies in force stay."""
    deny = [{"policy_name": "not_now", "CONTEXT": ["destination_host"], "CONDITIONS": "destination_host == \"hostB\"",
             "ACTIONS": ["deny_migration"]}]
    allow = [{"policy_name": "now_yes", "CONTEXT": [], "CONDITIONS": "true", "ACTIONS": ["allow_migration"]}]
    path = write_policies_file(cluster.a, deny)
    a, b = cluster.start(a_extra=["--policies", path]).a, cluster.b
    for name in ("one", "two"):
        a.cli("run", name, "--image", "busybox", "--", *COUNTER_CMD)
        wait_for(lambda: os.path.exists(os.path.join(a.state, f"containers/{name}/rootfs/tmp/counter")), 20, "start")
    assert a.cli("migrate", "one", "--to", "hostB", check=False).returncode == 1

    # as editors do: a new file renamed over the old one
    with open(path + ".new", "w") as f:
        json.dump(allow, f)
    os.rename(path + ".new", path)
    wait_for(lambda: "1 migration policy reloaded from" in a.log(), 10, "the reload")
    p = a.cli("migrate", "-v", "one", "--to", "hostB", check=False)
    assert p.returncode == 0 and "policy now_yes (priority 0) allows" in p.stdout, p.stdout + p.stderr

    # a broken file: refused, the allowing policy stays in force
    with open(path, "w") as f:
        f.write('[{"policy_name": "oops", "CONDITIONS": "true and"}]')
    wait_for(lambda: "Policies not reloaded, the ones in force stay" in a.log(), 10, "the refusal")
    p = a.cli("migrate", "-v", "two", "--to", "hostB", check=False)
    assert p.returncode == 0 and "policy now_yes" in p.stdout, p.stdout + p.stderr


LB_SERVER = r"""
import http.server, sys
out = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with open(out, "ab") as f:
            f.write(self.path.encode() + b" " + body + b"\n")
        self.send_response(204)
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", 18080), H).serve_forever()
"""


def test_queue_priority_and_lb_hook_url(cluster):
    """max_concurrent_migrations 1: a second request waits in PENDING until the
    first is over, saying why; set_priority is applied; each switchover is
    POSTed to the load balancer's URL with the migration as JSON."""
    work = os.path.dirname(cluster.a.state)
    posted = os.path.join(work, "lb-posted")
    lb = subprocess.Popen(["nsenter", f"--net=/run/netns/{cluster.a.netns}", "/usr/bin/python3", "-c", LB_SERVER,
                           posted])
    try:
        policies = [{"policy_name": "steady", "CONTEXT": ["destination_host"],
                     "CONDITIONS": "destination_host == \"hostB\"",
                     "ACTIONS": ["allow_migration", "set_priority(\"low\")", "trigger_load_balancer_reconfiguration"],
                     "CONSTRAINTS": {"max_concurrent_migrations": 1}}]
        a = cluster.start(a_extra=["--policies", write_policies_file(cluster.a, policies),
                                   "--lb-hook", "http://127.0.0.1:18080/backends"]).a
        for name in ("one", "two"):
            a.cli("run", name, "--image", "busybox", "--", *COUNTER_CMD)
            wait_for(lambda: os.path.exists(os.path.join(a.state, f"containers/{name}/rootfs/tmp/counter")), 20, "start")
        # the first holds its slot a while: its health command sleeps on the destination
        m1 = a.cli("migrate", "--detach", "one", "--to", "hostB", "--", "/bin/sleep", "2").stdout.strip()
        m2 = a.cli("migrate", "--detach", "two", "--to", "hostB", "--priority", "high").stdout.strip()
        r1, r2 = wait_finished(a, m1), wait_finished(a, m2)
        assert r1["state"] == "COMPLETED" and r2["state"] == "COMPLETED", (r1["error"], r2["error"])
        msgs = [e["message"] for e in r2["events"]]
        assert any("Queued in PENDING (priority low, set by policy steady; policy steady allows 1 at a time): "
                   "1 migration under way, 0 requests ahead of this one" in x for x in msgs), msgs
        assert any(x.startswith("Leaves the queue after ") for x in msgs), msgs
        planning2 = next(t for t in r2["transitions"] if t["to"] == "PLANNING")
        assert planning2["at_ms"] >= r1["finished_ms"], (planning2, r1["finished_ms"])
        for r, name in ((r1, "one"), (r2, "two")):
            assert any("Load balancer reconfigured for the switchover: http://127.0.0.1:18080/backends answered "
                       "HTTP 204" in e["message"] for e in r["events"]), [e["message"] for e in r["events"]]
        with open(posted) as f:
            lines = f.read().splitlines()
        assert len(lines) == 2, lines
        for line, name, mid in zip(lines, ("one", "two"), (m1, m2)):
            path, body = line.split(" ", 1)
            ev = json.loads(body)
            assert path == "/backends" and ev["event"] == "switchover" and ev["container"] == name, line
            assert ev["migration"] == mid and ev["source"] == "hostA" and ev["destination"] == "hostB", ev
            assert ev["destination_address"] == cluster.b.addr and ev["policy"] == "steady", ev
    finally:
        lb.kill()
        lb.wait()


def test_migration_duration_aborts_and_rolls_back(cluster):
    """migration_duration 1 s against a health command of 5 s: the migration
    is aborted at its deadline and rolled back, the container runs on the
    source, the destination is clean; the load-balancer hook program saw the
    switchover and then the rollback."""
    work = os.path.dirname(cluster.a.state)
    hook, seen = os.path.join(work, "lb-hook"), os.path.join(work, "lb-seen")
    with open(hook, "w") as f:
        f.write(f"#!/bin/sh\nprintf '%s ' \"$1\" >>{seen}\ncat >>{seen}\necho >>{seen}\n")
    os.chmod(hook, 0o700)
    policies = [{"policy_name": "hurry", "CONTEXT": [], "CONDITIONS": "true",
                 "ACTIONS": ["allow_migration", "trigger_load_balancer_reconfiguration"],
                 "CONSTRAINTS": {"migration_duration": 1}}]
    a, b = cluster.start(a_extra=["--policies", write_policies_file(cluster.a, policies), "--lb-hook", hook]).a, cluster.b
    a.cli("run", "counter", "--image", "busybox", "--", *COUNTER_CMD)
    wait_for(lambda: os.path.exists(os.path.join(a.state, "containers/counter/rootfs/tmp/counter")), 20, "start")
    p = a.cli("migrate", "-v", "counter", "--to", "hostB", "--", "/bin/sleep", "5", check=False)
    assert p.returncode == 1, p.stdout
    mid = next(l.split()[1] for l in p.stdout.splitlines() if l.startswith("migration "))
    m = migration(a, mid)
    assert_failed_with_rollback(m, "VERIFICATION", "migration_duration exceeded: policy hurry allows 1 s")
    assert_running_and_advancing(a, "counter")
    assert_clean_destination(b, "counter")
    with open(seen) as f:
        events = [json.loads(l.split(" ", 1)[1]) | {"arg": l.split(" ", 1)[0]} for l in f.read().splitlines()]
    assert [(e["arg"], e["event"]) for e in events] == [("switchover", "switchover"), ("rollback", "rollback")], events
    assert all(e["migration"] == mid and e["container"] == "counter" for e in events), events
    msgs = [e["message"] for e in m["events"]]
    assert any("Load balancer reconfigured for the rollback: " + hook + " exited 0" in x for x in msgs), msgs
