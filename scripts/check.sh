#!/bin/sh
# `make check`: every test, ending with one summary line "N passed, N failed".
#   1. build with -Werror, run the unit tests
#   2. build with AddressSanitizer + UndefinedBehaviorSanitizer, run the unit tests
#   3. end-to-end tests (pytest, Debian's /usr/bin/python3): namespace hosts, real
#      daemons, runc, CRIU, injected faults
#   4. in a VM with Debian's stock kernel (soft-dirty: our hosts lack it): the
#      harness's smoke test, and PRE_COPY, HYBRID and auto-converge for real
#      (tests/vm; QEMU TCG, about two minutes)
# Prerequisites missing (root, CRIU) fail loudly; nothing is skipped.
set -u
cd "$(dirname "$0")/.."
passed=0; failed=0
log() { printf '\n==== %s\n' "$*"; }

# count "Ok: N" / "Fail: N" from meson test's summary
meson_counts() {
    ok=$(sed -n 's/^Ok: *\([0-9]*\)/\1/p' "$1" | tail -n1)
    ko=$(awk '/^(Fail|Timeout|Unexpected Pass): *[0-9]+/ { s += $2 } END { print s + 0 }' "$1")
    passed=$((passed + ${ok:-0})); failed=$((failed + ${ko:-0}))
    [ -n "$ok" ] || failed=$((failed + 1))
}

[ "$(id -u)" = 0 ] || { echo "check: must run as root (namespaces, runc, CRIU)"; echo "0 passed, 1 failed"; exit 1; }

log "build (-Werror)"
[ -f build/build.ninja ] || meson setup build --werror
if ninja -C build; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "BUILD FAILED"; echo "$passed passed, $failed failed"; exit 1; fi

log "unit tests"
meson test -C build --print-errorlogs 2>&1 | tee build/unit.log
meson_counts build/unit.log

log "unit tests under AddressSanitizer + UndefinedBehaviorSanitizer"
if [ ! -f build-asan/build.ninja ]; then
    meson setup build-asan --werror -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug >/dev/null
fi
if ninja -C build-asan >/dev/null; then
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        meson test -C build-asan --print-errorlogs 2>&1 | tee build-asan/unit.log
    meson_counts build-asan/unit.log
else
    echo "ASAN BUILD FAILED"; failed=$((failed + 1))
fi

log "end-to-end tests"
/usr/bin/python3 -m pytest -v -p no:cacheprovider tests/e2e 2>&1 | tee build/e2e.log
line=$(grep -E '^=+ .*(passed|failed|error).* in [0-9.]+s' build/e2e.log | tail -n1)
p=$(echo "$line" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+'); f=$(echo "$line" | grep -oE '[0-9]+ (failed|errors?)' | awk '{ s += $1 } END { print s + 0 }')
[ -n "$line" ] || f=1
passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))

# An emulated guest hangs now and then (runc stuck in a soft lockup under TCG,
# NOTES.md): such a hang is retried once, loudly; any other failure fails.
vm_test() {
    _cg=hybrid
    [ "$1" = monitor-v2 ] && _cg=v2   # the unified hierarchy alone, as Debian mounts it
    tests/vm/run --timeout 480 --cgroup $_cg "tests/vm/$1.sh" > "build/vm-$1.log" 2>&1 && return 0
    grep -q -e 'the guest did not finish within' -e 'the guest hung:' "build/vm-$1.log" || return 1
    echo "tests/vm/$1.sh: the guest hung (log: build/vm-$1.hung.log); running it once more"
    mv "build/vm-$1.log" "build/vm-$1.hung.log"
    tests/vm/run --timeout 480 --cgroup $_cg "tests/vm/$1.sh" > "build/vm-$1.log" 2>&1
}
for t in smoke precopy monitor-v2; do
    log "in a VM: tests/vm/$t.sh"
    if vm_test "$t"; then
        passed=$((passed + 1)); tail -n 3 "build/vm-$t.log"
    else
        failed=$((failed + 1)); tail -n 60 "build/vm-$t.log"
    fi
done

echo
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
