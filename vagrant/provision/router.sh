#!/bin/sh
# Provisioning of the BGP lab's router: BIRD 2 with one BGP session per balancer and address
# family, the VIP's routes installed with one next hop per balancer (ECMP, hashed on layer 4),
# forwarding between the segment (balancers, backends) and the edge (the client).
set -eu
: "${LAB_NAME:?}" "${LAB_IPV4:?}" "${LAB_BALANCERS:?}" "${LAB_BALANCERS_V6:?}"
: "${LAB_BGP_ASN:?the router runs in the BGP lab only}" "${LAB_ROUTER_ASN:?}" "${LAB_BGP_HOLD_S:?}"
: "${LAB_BGP_KEEPALIVE_S:?}" "${LAB_VIP_IPV4:?}" "${LAB_VIP_IPV6:?}"
LAB_ROLE=router
# On a VM vagrant runs a copy of this script from /tmp: take lib.sh from the synced folder.
lib="$(dirname "$0")/lib.sh"; [ -f "$lib" ] || lib=/vagrant/provision/lib.sh
# shellcheck source=lib.sh
. "$lib"

packages bird2 iproute2 procps
if [ "$LAB_START" != 1 ]; then
    log "checked only (LAB_START=$LAB_START): BIRD peering with $LAB_BALANCERS / $LAB_BALANCERS_V6"
    exit 0
fi
host_dir

if [ "$LAB_MODE" = vagrant ]; then
    # common.sh set up the first NIC; the edge one got its IPv4 address from Vagrant.
    edge_if="$(ip -o -4 addr show | awk -v ip="$LAB_EDGE_IPV4" '{ split($4, a, "/"); if (a[1] == ip) print $2 }')"
    [ -n "$edge_if" ] || die "no interface holds $LAB_EDGE_IPV4"
    ip -o -6 addr show dev "$edge_if" | grep -q " $LAB_EDGE_IPV6/" ||
        ip -6 addr add "$LAB_EDGE_IPV6/${LAB_EDGE_NET6#*/}" dev "$edge_if" nodad
fi

# Forward, and spread flows over the balancers by their 5-tuple (not only addresses).
sysctl -q -w net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
    net.ipv4.fib_multipath_hash_policy=1 net.ipv6.fib_multipath_hash_policy=1

bfd=""
if [ "${LAB_BGP_BFD_MS:-0}" -gt 0 ]; then
    bfd="protocol bfd { interface \"*\" { interval ${LAB_BGP_BFD_MS} ms; multiplier 3; }; }"
fi
conf="$HOST_DIR/bird.conf"
{
    echo "# Written by vagrant/provision/router.sh for $LAB_NAME."
    echo "log stderr all;"
    echo "router id $LAB_IPV4;"
    echo "protocol device { }"
    # merge paths: equal BGP routes from several balancers become one multipath kernel route.
    echo "protocol kernel k4 { ipv4 { import none; export all; }; merge paths yes; }"
    echo "protocol kernel k6 { ipv6 { import none; export all; }; merge paths yes; }"
    echo "$bfd"
    echo "template bgp balancer {"
    echo "  local as $LAB_ROUTER_ASN; hold time $LAB_BGP_HOLD_S; keepalive time $LAB_BGP_KEEPALIVE_S;"
    echo "  connect delay time 1; connect retry time 1; error wait time 1, 5;"
    [ -n "$bfd" ] && echo "  bfd on;"
    echo "}"
    # Only the VIP's host routes are accepted from a balancer; nothing is sent back.
    for b in $LAB_BALANCERS; do
        echo "protocol bgp lb_$(echo "$b" | tr '.:' '__') from balancer { neighbor $b as $LAB_BGP_ASN;"
        echo "  ipv4 { import filter { if net = $LAB_VIP_IPV4/32 then accept; reject; }; export none; }; }"
    done
    for b in $LAB_BALANCERS_V6; do
        echo "protocol bgp lb_$(echo "$b" | tr '.:' '__') from balancer { neighbor $b as $LAB_BGP_ASN;"
        echo "  ipv6 { import filter { if net = $LAB_VIP_IPV6/128 then accept; reject; }; export none; }; }"
    done
} >"$conf"
bird -p -c "$conf" || die "BIRD rejects $conf"
start bird bird -f -c "$conf" -s "$HOST_DIR/bird.ctl" -P "$HOST_DIR/bird-daemon.pid"
WAIT_LOG=bird wait_until "BIRD control socket" 20 birdc -s "$HOST_DIR/bird.ctl" show status
log "BIRD up: AS $LAB_ROUTER_ASN peering with $LAB_BALANCERS $LAB_BALANCERS_V6 (AS $LAB_BGP_ASN)"
