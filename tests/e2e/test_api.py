"""Bad input against a real daemon: malformed and oversized requests, hostile names,
unknown IDs and garbage on its TCP port get clear 4xx errors and never crash it."""
import json
import os
import socket
import subprocess

from conftest import CLI, migration, wait_for


def authed(cluster, req):
    """req with the cluster secret's Authorization header after its request line."""
    secret = open(os.path.join(cluster.work, "secret")).read().strip().encode()
    line, rest = req.split(b"\r\n", 1)
    return line + b"\r\nAuthorization: Bearer " + secret + b"\r\n" + rest


def raw_tcp(addr, netns, payload):
    """Sends payload to the daemon's TCP API from inside its namespace; returns the reply."""
    host, port = addr.split(":")
    code = ("import socket,sys\n"
            "s=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)\n"
            "s.sendall(sys.stdin.buffer.read()); s.shutdown(socket.SHUT_WR)\n"
            "out=b''\n"
            "while True:\n"
            "    d=s.recv(65536)\n"
            "    if not d: break\n"
            "    out+=d\n"
            "sys.stdout.buffer.write(out)\n")
    p = subprocess.run(["nsenter", f"--net=/run/netns/{netns}", "/usr/bin/python3", "-c", code, host, port],
                       input=payload, capture_output=True, timeout=30)
    return p.stdout


def test_bad_requests_get_4xx_and_daemon_survives(cluster):
    a = cluster.start().a
    bad = [
        ("POST", "/v1/containers", "{not json", 400, "malformed JSON"),
        ("POST", "/v1/containers", "[]", 400, "JSON object"),
        ("POST", "/v1/containers", '{"name":"../../etc","image":"busybox","args":["/bin/sh"]}', 400, "name"),
        ("POST", "/v1/containers", '{"name":"x","image":"busybox","args":"rm -rf /"}', 400, "args"),
        ("POST", "/v1/containers", '{"name":"x","image":"nosuchimage","args":["/bin/sh"]}', 404, "nosuchimage"),
        ("POST", "/v1/containers", '{"name":"x","image":"busybox","args":["/bin/sh"],"volumes":[{"source":"usr","destination":"/usr"}]}', 400, '"source" must be an absolute path'),
        ("POST", "/v1/containers", '{"name":"x","image":"busybox","args":["/bin/sh"],"volumes":[{"source":"/usr/../etc","destination":"/x"}]}', 400, '"source" must be an absolute path'),
        ("POST", "/v1/containers", '{"name":"x","image":"busybox","args":["/bin/sh"],"volumes":[{"source":"/usr","destination":"/proc/sys"}]}', 400, '/proc, /sys, /dev'),
        ("POST", "/v1/containers", '{"name":"x","image":"busybox","args":["/bin/sh"],"volumes":[{"source":"/usr","destination":"/"}]}', 400, '/proc, /sys, /dev'),
        ("POST", "/v1/containers", '{"name":"x","image":"busybox","args":["/bin/sh"],"volumes":[{"source":"/usr","destination":"/a"},{"source":"/etc","destination":"/a"}]}', 400, 'already the destination'),
        ("POST", "/v1/containers", '{"name":"x","image":"busybox","args":["/bin/sh"],"volumes":[{"source":"/usr","destination":"/a","readonly":"yes"}]}', 400, '"readonly" must be true or false'),
        ("POST", "/v1/containers", '{"name":"x","image":"busybox","args":["/bin/sh"],"volumes":[{"source":"/usr","destination":"/a","options":"rbind"}]}', 400, 'must be an object with'),
        ("POST", "/v1/containers", '{"name":"x","image":"busybox","args":["/bin/sh"],"volumes":"/usr:/usr"}', 400, 'must be an array'),
        ("POST", "/v1/containers", '{"name":"x","image":"busybox","args":["/bin/sh"],"volumes":[{"source":"/nonexistent-fm","destination":"/a"}]}', 404, "volume /nonexistent-fm of x: No such file or directory on hostA"),
        ("POST", "/v1/migrations", '{"container":"x"}', 400, "to"),
        ("POST", "/v1/migrations", '{"container":"x","to":"hostB","strategy":"teleport"}', 400, "unknown strategy"),
        ("POST", "/v1/migrations", '{"container":"x; reboot","to":"hostB"}', 400, "container"),
        ("POST", "/v1/migrations", '{"container":"x","to":"hostB","health_cmd":"true"}', 400, "health_cmd"),
        ("POST", "/v1/hosts", '{"name":"h","address":"nocolon"}', 400, "expected HOST:PORT"),
        ("POST", "/v1/hosts", '{"name":"h","address":"10.255.255.1:1"}', 502, "cannot reach"),
        ("GET", "/v1/migrations/nosuch", None, 404, "no migration"),
        ("GET", "/v1/containers/nosuch", None, 404, "no container"),
        ("GET", "/v1/images/nosuch", None, 404, "no image"),
        ("GET", "/v1/images/sha256:../../../etc/passwd/blob", None, 404, ""),
        ("POST", "/v1/agent/migrations/..%2f..%2fx/abort", "{}", 404, "no such endpoint"),
        ("POST", "/v1/agent/migrations/..x/abort", "{}", 400, "invalid migration id"),
        ("POST", "/v1/agent/migrations/m1/explode", "{}", 404, "unknown migration operation"),
        ("DELETE", "/v1/info", None, 405, "not allowed"),
        ("GET", "/nothing/here", None, 404, "no such endpoint"),
    ]
    for method, path, body, status, text in bad:
        c = __import__("conftest").UnixHTTPConnection(a.sock)
        c.request(method, path, body=body)
        r = c.getresponse()
        data = json.loads(r.read() or b"{}")
        c.close()
        assert r.status == status, (method, path, r.status, data)
        assert text in data.get("error", {}).get("message", ""), (path, data)
    # oversized body
    c = __import__("conftest").UnixHTTPConnection(a.sock)
    c.request("POST", "/v1/containers", body="x" * (2 << 20))
    assert c.getresponse().status == 413
    c.close()
    # garbage on the TCP port peers use
    for junk in (os.urandom(4096), b"GET / HTTP/1.1\r\n" + b"A" * 100000 + b"\r\n\r\n", b"\x00" * 10, b""):
        raw_tcp(a.addr, cluster.a.netns, junk)
    # a local-only endpoint is refused to peers
    reply = raw_tcp(a.addr, cluster.a.netns, authed(cluster,
                    b'POST /v1/images HTTP/1.1\r\nHost: x\r\nContent-Length: 31\r\n\r\n{"name":"x","path":"/etc/shad"}'))
    assert b" 403 " in reply.split(b"\r\n")[0], reply[:200]
    # routes that start things are the CLI's: peers are refused
    for req in (b'POST /v1/migrations HTTP/1.1\r\nHost: x\r\nContent-Length: 31\r\n\r\n{"container":"c","to":"hostB"}  ',
                b'POST /v1/containers HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}',
                b'POST /v1/cordon HTTP/1.1\r\nHost: x\r\nContent-Length: 17\r\n\r\n{"cordoned":true}'):
        reply = raw_tcp(a.addr, cluster.a.netns, authed(cluster, req))
        assert b" 403 " in reply.split(b"\r\n")[0], (req[:30], reply[:200])
    # still alive and answering
    assert a.proc.poll() is None
    assert a.api("GET", "/v1/info")[0] == 200


def test_peers_need_the_cluster_secret(cluster):
    a = cluster.start().a
    reply = raw_tcp(a.addr, cluster.a.netns, b"GET /v1/info HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b" 401 " in reply.split(b"\r\n")[0], reply[:200]
    reply = raw_tcp(a.addr, cluster.a.netns,
                    b"GET /v1/info HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrongwrongwrongwrong\r\n\r\n")
    assert b" 401 " in reply.split(b"\r\n")[0], reply[:200]
    secret = open(os.path.join(cluster.work, "secret")).read().strip()
    reply = raw_tcp(a.addr, cluster.a.netns,
                    b"GET /v1/info HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + secret.encode() + b"\r\n\r\n")
    assert b" 200 " in reply.split(b"\r\n")[0], reply[:200]
    # a daemon with another secret cannot be added as a peer
    other = os.path.join(cluster.work, "other-secret")
    with open(other, "w") as f:
        f.write("x" * 40)
    os.chmod(other, 0o600)
    cluster.b.stop()
    cluster.b.start(extra=["--secret-file", other])
    p = a.cli("host", "add", "hostB2", cluster.b.addr, check=False)
    assert p.returncode == 1 and "cluster secret" in p.stderr, p.stderr
    # and a secret file others can read is refused at start
    os.chmod(other, 0o644)
    cluster.b.stop()
    with __import__("pytest").raises(RuntimeError, match="readable by others"):
        cluster.b.start(extra=["--secret-file", other])


def test_cli_errors_are_clear(cluster):
    a = cluster.start().a
    p = a.cli("migration", "show", "nosuch", check=False)
    assert p.returncode == 1 and "no migration nosuch" in p.stderr
    p = a.cli("migrate", "x", check=False)
    assert p.returncode == 2 and "--to" in p.stderr
    p = subprocess.run([CLI, "-s", "/nonexistent.sock", "host", "list"], capture_output=True, text=True)
    assert p.returncode == 1 and "is fleximigrated running?" in p.stderr
    for cmd in (["--help"], ["migrate", "--help"], ["host", "--help"], ["container", "--help"],
                ["image", "--help"], ["migration", "--help"], ["run", "--help"]):
        p = subprocess.run([CLI, *cmd], capture_output=True, text=True)
        assert p.returncode == 0 and "Usage:" in p.stdout, cmd


def test_json_log_lines(cluster):
    logf = os.path.join(cluster.work, "a.jsonl")
    a = cluster.start(a_extra=["--log-json", logf]).a
    a.cli("run", "c", "--image", "busybox", "--", "/bin/sleep", "1000")
    p = a.cli("migrate", "c", "--to", "hostB", "--detach")
    mid = p.stdout.strip()
    wait_for(lambda: migration(a, mid)["finished"], 60, "migration to finish")
    lines = [json.loads(l) for l in open(logf)]
    mine = [l for l in lines if l.get("migration") == mid]
    assert mine, lines[:3]
    for l in mine:
        assert set(("ts", "host", "level", "component", "message")) <= set(l), l
        assert l["host"] == "hostA"
    assert any("Final State: COMPLETED" in l["message"] for l in mine)
