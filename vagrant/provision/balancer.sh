#!/bin/sh
# Provisioning of a balancer: lbd (XDP data plane, API on LAB_IPV4:9100) for the VIP, on IPv4
# and IPv6: one lbd VIP per family (LAB_VIP_NAME and LAB_VIP_NAME_V6), as with IPVS or Katran.
# The backends register themselves with both (POST /v1/vips/NAME/backends), so in the VRRP lab
# they start empty; the BGP lab declares them (every balancer must agree on the set).
set -eu
: "${LAB_NAME:?}" "${LAB_PRIORITY:?a balancer needs a VRRP priority}" "${LAB_VIP_IPV4:?}" "${LAB_VIP_IPV6:?}"
: "${LAB_VIP_PORT:?}" "${LAB_BACKENDS:?}" "${LAB_VIP_NAME:?}" "${LAB_VIP_NAME_V6:?}" "${LAB_IPV4:?}"
LAB_ROLE=balancer
# On a VM vagrant runs a copy of this script from /tmp: take lib.sh where common.sh put it.
lib="$(dirname "$0")/lib.sh"; [ -f "$lib" ] || lib=/opt/lab/provision/lib.sh
# shellcheck source=lib.sh
. "$lib"

packages bpftool iproute2
[ "${LAB_HA:-vrrp}" = bgp ] && packages bird2
if [ "$LAB_START" != 1 ]; then
    log "checked only (LAB_START=$LAB_START): lbd for VIP $LAB_VIP_IPV4 and [$LAB_VIP_IPV6] port $LAB_VIP_PORT, priority $LAB_PRIORITY, backends $LAB_BACKENDS"
    exit 0
fi
host_dir
lbd="$(need_bin lbd)"
iface="$(lab_iface)"
[ -n "$iface" ] || die "no interface holds $LAB_IPV4"

if [ ! -s "$LAB_TOKEN_FILE" ]; then
    mkdir -p "$(dirname "$LAB_TOKEN_FILE")"
    (umask 077; od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$LAB_TOKEN_FILE")
    log "new API token in $LAB_TOKEN_FILE"
fi

# The VIPs are lbd's to move: its [vrrp] section below runs one virtual router per family and
# makes the higher-priority balancer master of both (it adds the VIPs to $iface and announces
# them: gratuitous ARP, unsolicited neighbour advertisements, so the segment sends both
# families' VIP traffic here); the other takes over when the master dies. Remove VIPs an
# earlier, killed run may have left.
ip addr del "$LAB_VIP_IPV4/32" dev "$iface" 2>/dev/null || true
ip -6 addr del "$LAB_VIP_IPV6/128" dev "$iface" 2>/dev/null || true

# VRRP moves the VIPs between the pair; in the BGP lab every balancer announces them to the
# router instead.
backends4=""
backends6=""
if [ "${LAB_HA:-vrrp}" = bgp ]; then
    # Every balancer must hold the same backend set before it takes flows (docs/bgp.md, "why
    # the tables agree"): the set is declared here, identical on every balancer, and lbd
    # announces only once each declared backend has had a first health verdict. The apps
    # still register (a heartbeat, and their own drain), but no longer decide the set.
    for b in $LAB_BACKENDS; do
        backends4="$backends4
[[vips.backends]]
address = \"$b\""
    done
    for b in ${LAB_BACKENDS_V6:-}; do
        backends6="$backends6
[[vips.backends]]
address = \"$b\""
    done
    # An administrative link down flushes the interface's IPv6 addresses (IPv4 ones stay)
    # unless keep_addr_on_down: when the link came back, the IPv6 session's source address
    # would be gone and the router would never relearn this balancer's IPv6 next hop.
    sysctl -q -w "net.ipv6.conf.$iface.keep_addr_on_down=1"
    bfd=""
    if [ "${LAB_BGP_BFD_MS:-0}" -gt 0 ]; then
        bfd="[bgp.bfd]
interval_ms = $LAB_BGP_BFD_MS
multiplier = 3"
    fi
    ha="[bgp]
local_as = $LAB_BGP_ASN
router_id = \"$LAB_IPV4\"
hold_time_s = $LAB_BGP_HOLD_S
keepalive_s = $LAB_BGP_KEEPALIVE_S
connect_retry_s = 1
drain_s = ${LAB_BGP_DRAIN_S:-2}
$bfd

[[bgp.peers]]
address = \"$LAB_ROUTER_IPV4\"
as = $LAB_ROUTER_ASN
source = \"$LAB_IPV4\"

[[bgp.peers]]
address = \"$LAB_ROUTER_IPV6\"
as = $LAB_ROUTER_ASN
source = \"$LAB_IPV6\""
else
    ha="[vrrp]
interface = \"$iface\"
virtual_router_id = 51
priority = $LAB_PRIORITY
advert_interval_cs = 100
preempt = true
addresses = [\"$LAB_VIP_IPV4/32\", \"$LAB_VIP_IPV6/128\"]
track_dataplane = true"
fi

cat >"$HOST_DIR/lbd.toml" <<CONF
# Written by vagrant/provision/balancer.sh for $LAB_NAME.
[dataplane]
interfaces = ["$iface"]
xdp_mode = "${LAB_XDP_MODE:-auto}"
pin_dir = "$LAB_PIN_DIR"

[api]
socket = "$HOST_DIR/lbd.sock"
listen = "$LAB_IPV4:9100"
token_file = "$LAB_TOKEN_FILE"
state_file = "$HOST_DIR/lbd-state.json"

[health]
kind = "http"
path = "/healthz"
interval_ms = 1000
timeout_ms = 500
rise = 2
fall = 2

[[vips]]
name = "$LAB_VIP_NAME"
address = "$LAB_VIP_IPV4"
port = $LAB_VIP_PORT
protocol = "${LAB_VIP_PROTOCOL:-tcp}"
# VRRP lab: no static backends, every backend registers itself. BGP lab: declared (above).$backends4

[[vips]]
name = "$LAB_VIP_NAME_V6"
address = "$LAB_VIP_IPV6"
port = $LAB_VIP_PORT
protocol = "${LAB_VIP_PROTOCOL:-tcp}"$backends6

$ha
CONF
# The lab's Prometheus (services.sh) scrapes /metrics with a read-only token of its own.
ptoken="$(dirname "$LAB_TOKEN_FILE")/prometheus-token"
if [ -s "$ptoken" ]; then
    cat >>"$HOST_DIR/lbd.toml" <<CONF

[[api.clients]]
name = "prometheus"
scope = "read-only"
token_file = "$ptoken"
CONF
fi
"$lbd" --check-config "$HOST_DIR/lbd.toml" >/dev/null || die "lbd rejects $HOST_DIR/lbd.toml"

# A killed lbd leaves its socket behind: the wait below must see the new lbd's, not that one.
running lbd || rm -f "$HOST_DIR/lbd.sock"
LBD_LOG="${LBD_LOG:-info}" start lbd "$lbd" --config "$HOST_DIR/lbd.toml"
WAIT_LOG=lbd wait_until "lbd API socket" 30 test -S "$HOST_DIR/lbd.sock"
log "lbd up: API $HOST_DIR/lbd.sock and http://$LAB_IPV4:9100, VIPs $LAB_VIP_IPV4 and [$LAB_VIP_IPV6] port $LAB_VIP_PORT"
