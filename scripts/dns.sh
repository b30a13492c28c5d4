#!/bin/sh
# An authoritative DNS server for the DNS Manager's tests and demo: Knot DNS
# or BIND 9 from Debian, serving zone mig.test (web.mig.test A 10.77.0.10,
# TTL 60) and accepting RFC 2136 updates signed with a fresh TSIG key
# (hmac-sha256, name mig-key), no systemd.
#
#   dns.sh up knot|bind DIR [ADDR] [PORT]   start it (state, logs, key in DIR)
#   dns.sh down DIR                         stop it
#
# DIR/key holds the key as the DNS Manager reads it (ALGORITHM:NAME:SECRET,
# mode 0600).  ADDR defaults to 127.0.0.1, PORT to 53.  Run it inside a
# namespace (nsenter --net=...) to give a host or the client its own server.
set -eu
cmd=${1:?up or down}
case "$cmd" in
down)
    D=${2:?DIR}
    for f in "$D/run/knot.pid" "$D/named.pid"; do
        [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
    done
    i=0
    while { [ -f "$D/run/knot.pid" ] && kill -0 "$(cat "$D/run/knot.pid")" 2>/dev/null; } ||
          { [ -f "$D/named.pid" ] && kill -0 "$(cat "$D/named.pid")" 2>/dev/null; }; do
        [ $i -lt 50 ] || break
        sleep 0.1; i=$((i + 1))
    done
    exit 0 ;;
up) ;;
*) echo "usage: dns.sh up knot|bind DIR [ADDR] [PORT] | down DIR" >&2; exit 2 ;;
esac
KIND=${2:?knot or bind}
D=${3:?DIR}
ADDR=${4:-127.0.0.1}
PORT=${5:-53}
mkdir -p "$D"
chmod 700 "$D"
zone() {
    cat <<Z
\$ORIGIN mig.test.
\$TTL 60
@    SOA ns1 hostmaster 1 3600 600 86400 5
@    NS  ns1
ns1  A   127.0.0.1
web  A   10.77.0.10
Z
}
case "$KIND" in
knot)
    command -v knotd >/dev/null || { echo "dns.sh: Knot is missing: apt-get install knot knot-dnsutils" >&2; exit 1; }
    mkdir -p "$D/run" "$D/db" "$D/zones"
    SECRET=$(keymgr -t mig-key hmac-sha256 | awk '/secret:/{print $2}')
    cat > "$D/knot.conf" <<C
server:
    rundir: "$D/run"
    pidfile: "$D/run/knot.pid"
    listen: $ADDR@$PORT
log:
  - target: "$D/knot.log"
    any: info
database:
    storage: "$D/db"
key:
  - id: mig-key
    algorithm: hmac-sha256
    secret: $SECRET
acl:
  - id: upd
    key: mig-key
    action: update
template:
  - id: default
    storage: "$D/zones"
    file: "%s.zone"
    zonefile-sync: -1
    zonefile-load: difference-no-serial
    journal-content: all
zone:
  - domain: mig.test
    acl: upd
C
    zone > "$D/zones/mig.test.zone"
    knotc -c "$D/knot.conf" conf-check >/dev/null
    knotd -c "$D/knot.conf" -d ;;
bind)
    command -v named >/dev/null || { echo "dns.sh: BIND is missing: apt-get install bind9 bind9-dnsutils" >&2; exit 1; }
    tsig-keygen -a hmac-sha256 mig-key > "$D/key.conf"
    SECRET=$(awk -F'"' '/secret/{print $2}' "$D/key.conf")
    case "$ADDR" in *:*) L="listen-on port 0 { none; }; listen-on-v6 port $PORT { $ADDR; };" ;;
                    *) L="listen-on port $PORT { $ADDR; }; listen-on-v6 { none; };" ;; esac
    cat > "$D/named.conf" <<C
include "$D/key.conf";
options {
    directory "$D";
    pid-file "$D/named.pid";
    $L
    recursion no;
    dnssec-validation no;
};
controls { };
zone "mig.test" { type primary; file "$D/mig.test.zone"; allow-update { key mig-key; }; };
C
    zone > "$D/mig.test.zone"
    named-checkconf "$D/named.conf"
    named -c "$D/named.conf" -u root -n 1 -L "$D/named.log" ;;
*) echo "dns.sh: knot or bind, not $KIND" >&2; exit 2 ;;
esac
umask 077
echo "hmac-sha256:mig-key:$SECRET" > "$D/key"
i=0
until dig +short +time=1 +tries=1 @"$ADDR" -p "$PORT" web.mig.test A 2>/dev/null | grep -q .; do
    [ $i -lt 100 ] || { echo "dns.sh: $KIND does not answer on $ADDR port $PORT" >&2; exit 1; }
    sleep 0.05; i=$((i + 1))
done
echo "$KIND up on $ADDR port $PORT: zone mig.test, key $D/key"
