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
#      CRIU from Debian's unstable suite unpacked into a private prefix (the system's
#      apt sources and dpkg database are left untouched), its binary pointed at the
#      prefix's own loader and libraries with patchelf: a restore starts CRIU in the
#      freeze, and a shell wrapper around it cost ~4 ms more per start
#   3. fs.pipe-max-size = 4 MiB (CRIU lazy pages want 4 MiB pipes); the conntrack
#      hash at most 16384 buckets (every CRIU dump walks all of it twice: 12 ms
#      per walk at 262144 buckets, 0.7 ms at 16384)
#
# Environment: FM_CRIU_PREFIX (default /opt/fleximigrate/criu), FM_CRIU_SUITE (sid).
set -eu

PREFIX=${FM_CRIU_PREFIX:-/opt/fleximigrate/criu}
SUITE=${FM_CRIU_SUITE:-sid}
WORKDIR=$PREFIX.apt
ARCHLIB=usr/lib/x86_64-linux-gnu
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
runc iptables nftables iproute2 busybox-static socat iperf3 procps patchelf
python3-pytest kmod qemu-system-x86 xz-utils
podman gnuplot-nox
redis-server redis-tools nginx wrk
prometheus openvswitch-switch python3-os-ken knot knot-dnsutils bind9 bind9-dnsutils"

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

# point_at_prefix BINARY: BINARY runs with the prefix's loader and libraries
# (DT_RPATH, which, unlike DT_RUNPATH, also serves its libraries' own needs)
point_at_prefix() {
    cp -p "$1" "$1.new"
    patchelf --set-interpreter "$PREFIX/$ARCHLIB/ld-linux-x86-64.so.2" \
        --force-rpath --set-rpath "$PREFIX/$ARCHLIB" "$1.new" || die "patchelf $1 failed"
    mv "$1.new" "$1"
}

# libraries_inside: every library the prefix's criu loads is the prefix's own
libraries_inside() {
    if LD_TRACE_LOADED_OBJECTS=1 "$PREFIX/usr/sbin/criu" \
            | grep -v -e "$PREFIX" -e 'linux-vdso' | grep .; then
        die "CRIU libraries resolved outside $PREFIX (see above)"
    fi
}

WRAPPER=$PREFIX/bin/criu
if [ -f "$PREFIX/.verified" ] && [ -f "$PREFIX/usr/sbin/criu" ] && [ ! -L "$WRAPPER" ]; then
    # an install of an earlier set-up: a shell script ran the loader
    say "CRIU: pointing $PREFIX/usr/sbin/criu at its own loader (no shell wrapper)"
    point_at_prefix "$PREFIX/usr/sbin/criu"
    libraries_inside
    ln -sfn ../usr/sbin/criu "$WRAPPER"
    criu_works "$WRAPPER" || die "the installed CRIU cannot dump a process with a TCP socket"
fi
if [ -x "$WRAPPER" ] && [ -f "$PREFIX/.verified" ]; then
    say "CRIU: $("$WRAPPER" --version | head -n1) at $WRAPPER"
elif SYS=$(command -v criu) && criu_works "$SYS"; then
    mkdir -p "$PREFIX/bin"
    ln -sf "$SYS" "$WRAPPER"
    touch "$PREFIX/.verified"
    say "CRIU: using the system's $SYS"
else
    say "CRIU: installing CRIU from Debian $SUITE into $PREFIX"
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

    mkdir -p "$WORKDIR/lists/partial" "$WORKDIR/cache/archives/partial" "$WORKDIR/debs"
    echo "deb [signed-by=$KEYRING] $MIRROR $SUITE main" > "$WORKDIR/$SUITE.list"
    set -- \
        -o Dir::State::Lists="$WORKDIR/lists" \
        -o Dir::Etc::sourcelist="$WORKDIR/$SUITE.list" \
        -o Dir::Etc::sourceparts=/dev/null \
        -o Dir::Cache="$WORKDIR/cache" \
        -o Dir::State::status=/dev/null \
        -o Acquire::Languages=none \
        -o APT::Get::List-Cleanup=false \
        -o APT::Sandbox::User=root
    apt-get -q "$@" update >/dev/null || die "cannot read Debian $SUITE from the mirror"
    # criu and the whole run-time closure of its Depends from the same suite, so the
    # prefix never falls back to bookworm's older libraries
    CLOSURE=$(apt-cache "$@" depends --recurse --no-recommends --no-suggests \
            --no-conflicts --no-breaks --no-replaces --no-enhances --no-pre-depends criu \
            | grep -v '^ ' | grep -v '^<' | sort -u)
    [ -n "$CLOSURE" ] || die "criu not found in Debian $SUITE"
    (cd "$WORKDIR/debs" && rm -f ./*.deb && apt-get -q "$@" download $CLOSURE >/dev/null) \
        || die "downloading criu from $SUITE failed"
    rm -rf "$PREFIX.new"
    mkdir -p "$PREFIX.new/bin"
    for deb in "$WORKDIR"/debs/*.deb; do dpkg -x "$deb" "$PREFIX.new"; done
    # CRIU from Debian $SUITE runs with its own glibc (bookworm's is too old):
    # its loader and libraries are the prefix's, once the prefix is in place
    point_at_prefix "$PREFIX.new/usr/sbin/criu"
    ln -s ../usr/sbin/criu "$PREFIX.new/bin/criu"
    rm -rf "$PREFIX"
    mv "$PREFIX.new" "$PREFIX"
    libraries_inside
    criu_works "$WRAPPER" || die "the installed CRIU cannot dump a process with a TCP socket"
    touch "$PREFIX/.verified"
    say "CRIU: $("$WRAPPER" --version | head -n1) installed at $WRAPPER"
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
