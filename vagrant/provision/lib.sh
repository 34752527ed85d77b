#!/bin/sh
# Helpers sourced by the role scripts (balancer.sh, backend.sh, services.sh, client.sh).
# Not run on its own. Variables, beyond those of common.sh:
#   LAB_START     1: start the daemons; 0: only check what is needed. Default 1 on a VM;
#                 in netns mode `cargo xtask lab` sets 1 (a bare run, as in tests, only checks).
#   LAB_DIR       where this host keeps logs, data and pid files (LAB_DIR/hosts/NAME);
#                 default /var/lib/lab on a VM, the lab's own directory in netns mode.
#   LAB_BIN_DIR   folder holding lbd, lbctl and app (default /opt/lab/bin on a VM, where
#                 common.sh puts what the Vagrantfile uploaded).
#   LAB_TOKEN_FILE  bearer token shared by the balancers' APIs and the backends (default
#                 /etc/lab/token on a VM: the Vagrantfile makes one on the host and uploads it).
#   LAB_PIN_DIR   bpffs folder for lbd's pins (default /sys/fs/bpf/lbd on a VM).
#   LAB_XDP_MODE  lbd's [dataplane] xdp_mode on balancers: auto (default), driver or generic.
#   LAB_WAIT_FACTOR  multiplies every wait bound: default 10 on a VM (it may run under software
#                 emulation, ~20 times slower), 1 in a namespace.

LAB_MODE="${LAB_MODE:-vagrant}"
if [ "$LAB_MODE" = vagrant ]; then
    LAB_START="${LAB_START:-1}"
    LAB_DIR="${LAB_DIR:-/var/lib/lab}"
    LAB_BIN_DIR="${LAB_BIN_DIR:-/opt/lab/bin}"
    LAB_TOKEN_FILE="${LAB_TOKEN_FILE:-/etc/lab/token}"
    LAB_PIN_DIR="${LAB_PIN_DIR:-/sys/fs/bpf/lbd}"
    LAB_WAIT_FACTOR="${LAB_WAIT_FACTOR:-10}"
else
    LAB_START="${LAB_START:-0}"
    : "${LAB_DIR:?netns mode: the lab sets LAB_DIR}"
fi
HOST_DIR="$LAB_DIR/hosts/$LAB_NAME"

log() { echo "[$LAB_NAME/${LAB_ROLE:-lab}] $*"; }
die() { echo "[$LAB_NAME/${LAB_ROLE:-lab}] error: $*" >&2; exit 1; }

# Installs Debian packages (vagrant) or fails naming the missing ones (netns).
packages() {
    missing=""
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    [ "$LAB_MODE" = netns ] && die "missing packages:$missing (apt-get install$missing)"
    log "installing$missing"
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
}

# Whether the daemon NAME (pid file HOST_DIR/NAME.pid) is alive.
running() {
    [ -f "$HOST_DIR/$1.pid" ] && kill -0 "$(cat "$HOST_DIR/$1.pid")" 2>/dev/null
}

# start NAME CMD...: runs CMD in the background in its own session, output to HOST_DIR/NAME.log,
# pid in HOST_DIR/NAME.pid. Nothing is started when it already runs (re-provisioning).
start() {
    name="$1"; shift
    if running "$name"; then
        log "$name already runs (pid $(cat "$HOST_DIR/$name.pid"))"
        return 0
    fi
    # No inherited stdout: `ip netns exec` (and vagrant) wait for it to close.
    setsid "$@" >"$HOST_DIR/$name.log" 2>&1 </dev/null &
    echo $! >"$HOST_DIR/$name.pid"
    log "started $name (pid $!, log $HOST_DIR/$name.log)"
}

# wait_until WHAT SECONDS CMD...: polls CMD every 0.2 s, at most SECONDS (times LAB_WAIT_FACTOR); fails naming WHAT and
# showing the end of the log of daemon $WAIT_LOG if set.
wait_until() {
    what="$1"; tries=$(( $2 * ${LAB_WAIT_FACTOR:-1} * 5 )); shift 2
    while [ "$tries" -gt 0 ]; do
        if "$@" >/dev/null 2>&1; then return 0; fi
        tries=$((tries - 1))
        sleep 0.2
    done
    [ -n "${WAIT_LOG:-}" ] && tail -n 20 "$HOST_DIR/$WAIT_LOG.log" >&2
    die "$what: not ready in time"
}

# need_bin NAME: path of a project binary, or a clear error.
need_bin() {
    [ -x "$LAB_BIN_DIR/$1" ] || die "$LAB_BIN_DIR/$1 is missing (cargo build --release -p lbd -p lbctl -p app --bins)"
    echo "$LAB_BIN_DIR/$1"
}

# The interface holding LAB_IPV4 (eth0 in a namespace, the private network's NIC on a VM).
lab_iface() {
    ip -o -4 addr show | awk -v ip="$LAB_IPV4" '{ split($4, a, "/"); if (a[1] == ip) print $2 }' | head -n 1
}

# Prepares HOST_DIR; call once, only when starting daemons.
host_dir() {
    mkdir -p "$HOST_DIR"
}

# Default routes through the BGP lab's router (LAB_GATEWAY_IPV4/6, empty elsewhere): the
# client sits behind it, and the backends answer the client through it.
gateway_routes() {
    [ -n "${LAB_GATEWAY_IPV4:-}" ] || return 0
    ip route replace default via "$LAB_GATEWAY_IPV4"
    ip -6 route replace default via "$LAB_GATEWAY_IPV6"
    log "default routes via $LAB_GATEWAY_IPV4 and $LAB_GATEWAY_IPV6"
}
