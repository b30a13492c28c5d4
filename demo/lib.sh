# Shared by demo/demo.sh and demo/fabric.sh (sourced, with TOP, BIN and W set).
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

demo_require() {
    [ "$(id -u)" = 0 ] || { echo "demo: run as root (make $1)"; exit 1; }
    [ -x "$BIN/fleximigrated" ] || { echo "demo: build first (make $1 builds)"; exit 1; }
}

# Stops the daemons of hosts a and b and removes their containers and mounts.
demo_stop_hosts() {
    for h in a b; do
        [ -f "$W/$h.pid" ] && kill "$(cat "$W/$h.pid")" 2>/dev/null || true
    done
    sleep 0.5 # their shutdown
    for h in a b; do
        for c in $(runc --root "$W/host$h/runc" list -q 2>/dev/null); do
            runc --root "$W/host$h/runc" delete -f "$c" >/dev/null 2>&1 || true
        done
        awk -v p="$W/host$h/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" || true; done
    done
}

# Waits until the daemons of hosts a and b answer on their sockets.
demo_wait_daemons() {
    for s in a b; do
        i=0; until "$BIN/fleximigrate" -s "$W/$s.sock" host info >/dev/null 2>&1; do
            i=$((i + 1)); [ $i -lt 200 ] || { cat "$W/$s.log"; exit 1; }; sleep 0.05
        done
    done
}

# A fresh cluster secret in $W/secret.
demo_secret() {
    head -c 32 /dev/urandom | base64 | tr -d '=\n' > "$W/secret"
    chmod 600 "$W/secret"
}
