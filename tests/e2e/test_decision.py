"""The Decision Engine for real: `fleximigrate plan` classifies and forecasts
this host's containers from their measured counters, and in automatic mode
the daemon moves a container away from a host its containers overload, to the
host that fits it, once, and then leaves things be."""
import json
import time

from conftest import wait_finished, wait_for

BUSY_CMD = ["/bin/sh", "-c", "while :; do :; done"]


def test_plan_without_automatic_mode(cluster):
    a = cluster.start().a
    a.cli("run", "busy", "--image", "busybox", "--", *BUSY_CMD)
    a.cli("run", "idle", "--image", "busybox", "--", "/bin/sleep", "3600")

    def plan():
        p = json.loads(a.cli("plan", "--json").stdout)
        return p if len(p["containers"]) == 2 else None
    p = wait_for(plan, 20, "both containers in the plan")
    assert p["automatic"] is False and p["host"] == "hostA", p
    assert [h["name"] for h in p["hosts"]] == ["hostA", "hostB"], p["hosts"]
    by = {c["name"]: c for c in p["containers"]}
    assert by["busy"]["class"] == "CPU-bound" and by["busy"]["cpu_cores"] > 0.3, by
    assert by["idle"]["class"] == "idle" and by["idle"]["cpu_cores"] < 0.05, by
    # one busy container on two cores is not an overload (85 %)
    assert p["overloaded"] is False and "not enough samples" in p["why"], p["why"]
    out = a.cli("plan").stdout
    assert out.startswith("Host hostA: not overloaded: containers use ") and "automatic mode off" in out, out
    assert "busy                 CPU-bound" in out, out
    assert not a.api("GET", "/v1/migrations")[1], "nothing is moved without --auto-migrate"


def test_automatic_mode_moves_one_container(cluster):
    a = cluster.start(a_extra=["--auto-migrate", "--overload-cpu", "70", "--overload-sustain", "3",
                               "--plan-interval", "2"]).a
    b = cluster.b
    for name in ("busy1", "busy2"):
        a.cli("run", name, "--image", "busybox", "--", *BUSY_CMD)
    a.cli("run", "idle", "--image", "busybox", "--", "/bin/sleep", "3600")
    assert "Automatic mode: planning every 2 s" in a.log()

    first = wait_for(lambda: a.api("GET", "/v1/migrations")[1], 40, "the Decision Engine to submit a migration")
    m = wait_finished(a, first[0]["id"])
    assert m["state"] == "COMPLETED", m["error"]
    moved = m["container"]
    assert moved in ("busy1", "busy2") and m["destination"] == "hostB", m
    msgs = [e["message"] for e in m["events"]]
    reason = next(x for x in msgs if x.startswith("Requested by the Decision Engine: host hostA overloaded"))
    assert f"moving {moved} (CPU-bound" in reason and "to hostB" in reason, reason
    assert moved in b.containers() and moved not in a.containers()
    assert "Submitted migration " + m["id"] in a.log()

    # the other busy container stays: hostA is no longer overloaded
    time.sleep(8)  # four planning rounds
    assert len(a.api("GET", "/v1/migrations")[1]) == 1, a.api("GET", "/v1/migrations")[1]
    p = json.loads(a.cli("plan", "--json").stdout)
    assert p["overloaded"] is False, p
