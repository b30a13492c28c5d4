#!/bin/sh
# FlexiMigrate set-up: everything `make demo`, `make check` and `make vm-check` need
# on a Debian 12 host, installed idempotently.  A second run changes nothing and
# takes seconds.
#
#   1. Debian packages (build tools, libraries, runc, iptables, iproute2, busybox,
#      QEMU and xz for the tests in a VM, tests/vm…; podman and gnuplot for
#      bench/run; GSL for the Decision Engine's forecasts; prometheus for the
#      promtool that checks our metrics exposition in a test — its server is
#      not started; Open vSwitch for the Network Manager's fabric
#      (scripts/fabric.sh starts its own, no service) and os-ken, the seed's
#      SDN controller, whose parser checks our OpenFlow encoder)
#   2. a working CRIU >= 4.2 at $FM_CRIU_PREFIX/bin/criu: the system's criu when it
#      passes `criu check` and can dump a process holding a TCP socket, otherwise
#      CRIU built here from Debian's unstable suite's source (its orig tarball,
#      checked against the suite's signed index; the system's apt sources and dpkg
#      database are left untouched) against this system's libraries, ~1 minute on
#      2 cores.  Built here, it dumps and restores faster than the suite's binary
#      run through that suite's own glibc (1 GiB lazy dump 111 -> 97 ms, restore
#      55 -> 47 ms, median of 6 moves each)
#   3. fs.pipe-max-size = 4 MiB (CRIU lazy pages want 4 MiB pipes); the conntrack
#      hash at most 16384 buckets (every CRIU dump walks all of it twice: 12 ms
#      per walk at 262144 buckets, 0.7 ms at 16384)
#
# Environment: FM_CRIU_PREFIX (default /opt/fleximigrate/criu), FM_CRIU_SUITE (sid).
set -eu

PREFIX=${FM_CRIU_PREFIX:-/opt/fleximigrate/criu}
SUITE=${FM_CRIU_SUITE:-sid}
WORKDIR=$PREFIX.apt
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
PIPE_MAX=4194304
CT_BUCKETS=16384

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and sets a sysctl)"
command -v apt-get >/dev/null || die "needs a Debian system (apt-get not found)"

# ---------------------------------------------------------------- 1. packages
PKGS="build-essential meson ninja-build pkg-config git
libsqlite3-dev libmicrohttpd-dev libjansson-dev libxxhash-dev libzstd-dev
nettle-dev libcmocka-dev libarchive-dev libnftables-dev libgsl-dev libldns-dev libmnl-dev
runc iptables nftables iproute2 busybox-static socat iperf3 procps
python3-pytest kmod qemu-system-x86 xz-utils
podman gnuplot-nox
redis-server redis-tools nginx wrk
prometheus openvswitch-switch python3-os-ken knot knot-dnsutils bind9 bind9-dnsutils
protobuf-c-compiler libprotobuf-c-dev protobuf-compiler libprotobuf-dev libcap-dev
libnl-3-dev libnet1-dev libbsd-dev libgnutls28-dev uuid-dev"

missing=""
for p in $PKGS; do
    s=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
    case "$s" in ii*) ;; *) missing="$missing $p" ;; esac
done
if [ -n "$missing" ]; then
    say "installing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    # redis-server and nginx are for the benchmark's containers: their packages
    # must not start system services (policy-rc.d: 101 = action forbidden)
    own_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\n# scripts/setup.sh: no service starts while it installs\nexit 101\n' \
            > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && own_policy=1
    fi
    apt-get -q update >/dev/null || die "apt-get update failed"
    # shellcheck disable=SC2086
    rc=0
    apt-get -q install -y --no-install-recommends $missing >/dev/null || rc=$?
    [ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d
    [ "$rc" = 0 ] || die "apt-get install failed for:$missing"
else
    say "Debian packages: all present"
fi

# ---------------------------------------------------------------- 2. CRIU
# criu_works CRIU: `criu check` passes and it can dump a process that holds a TCP
# socket (CRIU 4.1 cannot on kernels >= 6.16; 3.17 not at all on >= 6.13).
criu_works() {
    "$1" check >/dev/null 2>&1 || return 1
    d=$(mktemp -d /tmp/fm-criu-probe.XXXXXX)
    setsid busybox nc -l -p 0 </dev/null >/dev/null 2>&1 &
    pid=$!
    # wait until the listening socket exists (nc has bound it)
    i=0
    while [ $i -lt 100 ] && ! ls -l /proc/$pid/fd 2>/dev/null | grep -q socket; do
        i=$((i + 1)); sleep 0.02
    done
    ok=1
    "$1" dump -t "$pid" -D "$d" -o dump.log --leave-running >/dev/null 2>&1 && ok=0
    kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
    [ $ok = 0 ] || sed -n '/Error/p' "$d/dump.log" 2>/dev/null | grep -v rlimit | tail -3 >&2
    rm -rf "$d"
    return $ok
}

# apt_suite ARGS...: apt-get with Debian $SUITE's source index as its only source,
# in $WORKDIR (the system's sources, lists and dpkg database untouched)
apt_suite() {
    apt-get -q -o Dir::State::Lists="$WORKDIR/lists" \
        -o Dir::Etc::sourcelist="$WORKDIR/$SUITE-src.list" \
        -o Dir::Etc::sourceparts=/dev/null \
        -o Dir::Cache="$WORKDIR/cache" \
        -o Dir::State::status=/dev/null \
        -o Acquire::Languages=none \
        -o APT::Get::List-Cleanup=false \
        -o APT::Sandbox::User=root "$@"
}

# build_criu: CRIU from Debian $SUITE's source into $PREFIX.new/bin/criu; sets ORIG
# to the name and SHA-256 of the orig tarball it was built from
build_criu() {
    # the mirror comes from this machine's own apt configuration
    MIRROR=""
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        MIRROR=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' "$f")
        [ -n "$MIRROR" ] && break
    done
    if [ -z "$MIRROR" ] && [ -r /etc/apt/sources.list ]; then
        MIRROR=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):/) { print $i; exit } }' /etc/apt/sources.list)
    fi
    [ -n "$MIRROR" ] || die "cannot find a Debian mirror in /etc/apt"

    rm -rf "$WORKDIR"
    mkdir -p "$WORKDIR/lists/partial" "$WORKDIR/cache/archives/partial" "$WORKDIR/src"
    echo "deb-src [signed-by=$KEYRING] $MIRROR $SUITE main" > "$WORKDIR/$SUITE-src.list"
    apt_suite update >/dev/null || die "cannot read Debian $SUITE's sources from the mirror"
    # only the upstream tarball (Debian's packaging is not needed to build the
    # program), fetched by apt's helper, which checks its SHA-256 from the index
    line=$(cd "$WORKDIR/src" && apt_suite source --print-uris criu 2>/dev/null |
           awk -F"'" '$2 ~ /\.orig\.tar\.[a-z0-9]+$/ { print $2 " " $3; exit }')
    [ -n "$line" ] || die "no CRIU source in Debian $SUITE"
    # shellcheck disable=SC2086
    set -- $line
    uri=$1 name=$2 hash=$4
    case "$name" in criu_*.orig.tar.*) ;; *) die "unexpected CRIU source name: $name" ;; esac
    case "$hash" in SHA256:*) ;; *) die "no SHA-256 for $name in Debian $SUITE's index" ;; esac
    /usr/lib/apt/apt-helper -o APT::Sandbox::User=root download-file "$uri" "$WORKDIR/src/$name" "$hash" >/dev/null \
        || die "downloading $name failed (or its SHA-256 did not match)"
    tar -xf "$WORKDIR/src/$name" -C "$WORKDIR/src" || die "cannot unpack $name"
    dir=$(find "$WORKDIR/src" -mindepth 1 -maxdepth 1 -type d -name 'criu-*' | head -n1)
    [ -n "$dir" ] || die "$name holds no criu-* directory"
    say "CRIU: building $name ($(nproc) jobs; its log: $WORKDIR/build.log)"
    if ! make -C "$dir" -j"$(nproc)" criu >"$WORKDIR/build.log" 2>&1; then
        tail -n 20 "$WORKDIR/build.log" >&2
        die "building CRIU from $name failed"
    fi
    rm -rf "$PREFIX.new"
    mkdir -p "$PREFIX.new/bin"
    install -m 0755 "$dir/criu/criu" "$PREFIX.new/bin/criu"
    ORIG="$name $hash"
    rm -rf "$WORKDIR/src"
}

WRAPPER=$PREFIX/bin/criu
if [ -x "$WRAPPER" ] && [ -f "$PREFIX/.verified" ] && { [ -f "$PREFIX/.system" ] || [ -f "$PREFIX/.source" ]; }; then
    # the system's CRIU linked by an earlier run, or one built here
    say "CRIU: $("$WRAPPER" --version | head -n1) at $WRAPPER"
elif SYS=$(command -v criu) && criu_works "$SYS"; then
    rm -rf "$PREFIX"
    mkdir -p "$PREFIX/bin"
    ln -sf "$SYS" "$WRAPPER"
    touch "$PREFIX/.system" "$PREFIX/.verified"
    say "CRIU: using the system's $SYS"
else
    # (an earlier set-up's install, Debian $SUITE's binary with its own glibc, is
    # replaced)
    say "CRIU: building CRIU from Debian $SUITE's source into $PREFIX"
    build_criu
    criu_works "$PREFIX.new/bin/criu" || die "the CRIU built from $ORIG cannot dump a process with a TCP socket"
    echo "$ORIG" > "$PREFIX.new/.source"
    touch "$PREFIX.new/.verified"
    rm -rf "$PREFIX"
    mv "$PREFIX.new" "$PREFIX"
    say "CRIU: $("$WRAPPER" --version | head -n1) built from $ORIG at $WRAPPER"
fi

# ---------------------------------------------------------------- 3. sysctl
cur=$(cat /proc/sys/fs/pipe-max-size)
if [ "$cur" -lt $PIPE_MAX ]; then
    echo $PIPE_MAX > /proc/sys/fs/pipe-max-size || die "cannot raise fs.pipe-max-size"
    say "fs.pipe-max-size: $cur -> $PIPE_MAX"
fi
# CRIU 4.2 dumps a network namespace's conntrack entries by walking the whole
# (host-wide) conntrack hash, twice (its "expectations" request asks for the
# same table), inside the freeze.  The kernel sizes the hash by memory; a test
# machine with a handful of connections needs far fewer buckets.
ctb=/proc/sys/net/netfilter/nf_conntrack_buckets
if [ -w $ctb ] && [ "$(cat $ctb)" -gt $CT_BUCKETS ]; then
    cur=$(cat $ctb)
    echo $CT_BUCKETS > $ctb || die "cannot set net.netfilter.nf_conntrack_buckets"
    say "net.netfilter.nf_conntrack_buckets: $cur -> $CT_BUCKETS"
fi
# CRIU's network locking needs the nf_tables module on recent CRIU
modprobe -q nf_tables 2>/dev/null || true
say "ready"
