# Helpers for in-guest tests (sourced by scripts that tests/vm/run runs inside the
# VM; dash).  They set up what tests/e2e/conftest.py sets up on a host: two
# namespace hosts, a fleximigrated in each, the CLI pointed at either.
#
#   . "$FM_ROOT/tests/vm/lib.sh"
#   vm_hosts_up none                 # scripts/hosts.sh up none vm (FM_NET=1)
#   vm_daemon_start hostA vm-a 10.77.1.1
#   fm hostA host add hostB 10.77.1.2:7070
#
# Everything lives under $VM_WORK (/tmp/fm-vm); on a failing exit the daemons'
# logs are printed.  The guest powers off after the script, so teardown is only
# what a readable failure needs.

VM_WORK=${VM_WORK:-/tmp/fm-vm}
VM_FAILED=1
BIN=$FM_ROOT/build/src
FM_NET=${FM_NET:-1}
export FM_NET
mkdir -p "$VM_WORK"

# guest uptime in seconds (monotonic, 0.01 s resolution)
vm_now() { cut -d' ' -f1 /proc/uptime; }
# vm_since T: seconds since vm_now returned T
vm_since() { awk -v a="$1" -v b="$(vm_now)" 'BEGIN { printf "%.2f", b - a }'; }
vm_step() { printf '\n== [%s s] %s\n' "$(vm_now)" "$*"; }
vm_fail() { printf 'FAIL: %s\n' "$*"; exit 1; }
vm_pass() { VM_FAILED=0; printf 'PASS: %s\n' "$*"; }

# vm_wait_for SECONDS WHAT CMD...: run CMD every 0.1 s until it succeeds (a quiet
# CMD: what it prints is printed on every try)
vm_wait_for() {
    _t=$1 _what=$2; shift 2
    _end=$(awk -v n="$(vm_now)" -v t="$_t" 'BEGIN { print n + t }')
    until "$@"; do
        awk -v n="$(vm_now)" -v e="$_end" 'BEGIN { exit !(n > e) }' \
            && vm_fail "timed out after $_t s waiting for $_what"
        sleep 0.1
    done
}

# vm_hosts_up RATE: namespace hosts vm-a (10.77.$FM_NET.1), vm-b (.2), client vm-c (.3)
vm_hosts_up() {
    "$FM_ROOT/scripts/hosts.sh" up "${1:-none}" vm || vm_fail "scripts/hosts.sh up failed"
}

# vm_daemon_start NAME NETNS IP [EXTRA...]: a fleximigrated in NETNS, started the way
# tests/e2e/conftest.py starts it, and wait until its API answers
vm_daemon_start() {
    _n=$1 _ns=$2 _ip=$3; shift 3
    [ -f "$VM_WORK/secret" ] || {
        head -c 32 /dev/urandom | base64 | tr -d '=\n' > "$VM_WORK/secret"
        chmod 600 "$VM_WORK/secret"
    }
    nsenter --net="/run/netns/$_ns" "$BIN/fleximigrated" --name "$_n" \
        --listen "$_ip:7070" --socket "$VM_WORK/$_n.sock" --state-dir "$VM_WORK/$_n" \
        --data-timeout 3000 --secret-file "$VM_WORK/secret" --bridge fmbr \
        --criu "$FM_CRIU" "$@" >>"$VM_WORK/$_n.log" 2>&1 &
    echo $! > "$VM_WORK/$_n.pid"
    vm_wait_for 60 "daemon $_n to answer" vm_daemon_ready "$_n"
}
vm_daemon_ready() {
    kill -0 "$(cat "$VM_WORK/$1.pid")" 2>/dev/null \
        || { tail -n 30 "$VM_WORK/$1.log"; vm_fail "daemon $1 exited"; }
    fm "$1" host info >/dev/null 2>&1
}

# fm HOST ARGS...: the CLI against HOST's daemon, killed after $FM_TIMEOUT seconds
# (default 300) so that a hang fails the test with the daemons' logs
fm() { _h=$1; shift; timeout "${FM_TIMEOUT:-300}" "$BIN/fleximigrate" -s "$VM_WORK/$_h.sock" "$@"; }

# vm_container_dir HOST NAME: the container's bundle on HOST (rootfs/ inside)
vm_container_dir() { echo "$VM_WORK/$1/containers/$2"; }

# vm_memload HOST NAME [FIELD]: fm-memload's status line (tests/workload/memload.c),
# or one field of it by name: iterations errors full_scans max_gap_ms gap_sum_ms
# hot_passes size_mib hot_mib.  Fails while there is none.  vm_memload_at_least
# HOST NAME FIELD N: quietly, whether FIELD >= N.
vm_memload() {
    awk -v k="${3:-}" 'BEGIN { split("iterations errors full_scans max_gap_ms gap_sum_ms hot_passes size_mib hot_mib", n) }
        NF != 8 { exit 1 }
        { if (k == "") print; else for (i = 1; i <= 8; i++) if (n[i] == k) print $i; ok = 1 }
        END { exit !ok }' "$(vm_container_dir "$1" "$2")/rootfs/tmp/memload.status" 2>/dev/null
}

vm_memload_at_least() {
    _v=$(vm_memload "$1" "$2" "$3") && [ "$_v" -ge "$4" ] 2>/dev/null
}

# vm_json_num KEY < JSON: the first numeric value of "KEY" (no jq in the guest)
vm_json_num() { grep -o "\"$1\": *[0-9.]*" | head -n1 | sed 's/.*: *//'; }
# vm_json_str KEY < JSON: the first string value of "KEY"
vm_json_str() { grep -o "\"$1\": *\"[^\"]*\"" | head -n1 | sed 's/.*: *"//; s/"$//'; }

vm_on_exit() {
    rc=$?
    if [ "$VM_FAILED" = 1 ] && [ "$rc" = 0 ]; then
        echo "FAIL: the script ended without vm_pass"
        rc=1
    fi
    if [ "$rc" != 0 ]; then
        printf '\n----- processes -----\n'
        ps | grep -v ' \['   # without kernel threads
        for f in "$VM_WORK"/*.log; do
            [ -f "$f" ] || continue
            printf '\n----- last lines of %s -----\n' "$f"
            tail -n 40 "$f"
        done
        # CRIU's own logs (the daemons quote only their last errors): around the first
        # error, or the end of a log without one (a step that hung)
        find "$VM_WORK" -name '*.log' -path '*/work*/*' 2>/dev/null | while read -r f; do
            if grep -q 'Error' "$f"; then
                printf '\n----- %s, before its first error -----\n' "$f"
                grep -v RLIMIT_NOFILE "$f" | grep -m1 -B 25 -A 5 'Error'
            else
                printf '\n----- %s, last lines -----\n' "$f"
                tail -n 25 "$f"
            fi
        done
    fi
    for f in "$VM_WORK"/*.pid; do
        [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null
    done
    exit "$rc"
}
trap vm_on_exit EXIT
