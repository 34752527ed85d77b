#!/bin/sh
# Provisioning of a backend: `app` behind the VIP (direct server return): the VIP on lo with ARP
# for it suppressed, app listening on the VIP's port (IPv4 and IPv6), registered with every
# balancer's lbd for both VIPs: the IPv4 one by its IPv4 address, the IPv6 one by its IPv6 address.
set -eu
: "${LAB_NAME:?}" "${LAB_IPV4:?}" "${LAB_IPV6:?}" "${LAB_VIP_IPV4:?}" "${LAB_VIP_IPV6:?}" "${LAB_VIP_PORT:?}"
: "${LAB_VIP_NAME:?}" "${LAB_VIP_NAME_V6:?}" "${LAB_SERVICES_IPV4:?}" "${LAB_BALANCERS:?}"
LAB_ROLE=backend
# On a VM vagrant runs a copy of this script from /tmp: take lib.sh where common.sh put it.
lib="$(dirname "$0")/lib.sh"; [ -f "$lib" ] || lib=/opt/lab/provision/lib.sh
# shellcheck source=lib.sh
. "$lib"

packages iproute2 procps curl
if [ "$LAB_START" != 1 ]; then
    log "checked only (LAB_START=$LAB_START): app on port $LAB_VIP_PORT, registering with $LAB_BALANCERS"
    exit 0
fi
host_dir
app="$(need_bin app)"
[ -s "$LAB_TOKEN_FILE" ] || die "no token in $LAB_TOKEN_FILE (provision the balancers first)"

# DSR: packets arrive addressed to the VIP; the host owns it on lo but never answers ARP for it,
# so only the balancer is seen as the VIP on the segment. (IPv6 needs no sysctl: the kernel
# answers neighbour solicitations only for addresses of the interface they arrive on.)
for conf in all default "$(lab_iface)"; do
    sysctl -q -w "net.ipv4.conf.$conf.arp_ignore=1" "net.ipv4.conf.$conf.arp_announce=2"
done
ip -o -4 addr show dev lo | grep -q " $LAB_VIP_IPV4/" || ip addr add "$LAB_VIP_IPV4/32" dev lo
ip -o -6 addr show dev lo | grep -q " $LAB_VIP_IPV6/" || ip -6 addr add "$LAB_VIP_IPV6/128" dev lo nodad

gateway_routes

planes=""
for b in $LAB_BALANCERS; do planes="$planes${planes:+,}\"http://$b:9100\""; done

APP_INSTANCE_ID="$LAB_NAME" \
APP_LISTEN="[::]:$LAB_VIP_PORT" \
APP_DATABASE__URL="postgres://app@$LAB_SERVICES_IPV4:5432/app" \
APP_REDIS__URL="redis://$LAB_SERVICES_IPV4:6379/" \
APP_REGISTRATION__CONTROL_PLANES="[$planes]" \
APP_REGISTRATION__VIP="$LAB_VIP_NAME" \
APP_REGISTRATION__ADDRESS="$LAB_IPV4" \
APP_REGISTRATION__EXTRA_VIPS="[{ vip = \"$LAB_VIP_NAME_V6\", address = \"$LAB_IPV6\" }]" \
APP_REGISTRATION__TOKEN_FILE="$LAB_TOKEN_FILE" \
APP_HTTP__ADMIN_TOKEN_FILE="$LAB_TOKEN_FILE" \
APP_REGISTRATION__REFRESH_MS=10000 \
APP_LOG="${APP_LOG:-info}" \
    start app "$app" serve
WAIT_LOG=app wait_until "app on $LAB_IPV4:$LAB_VIP_PORT" 60 \
    curl -sf --max-time 1 "http://$LAB_IPV4:$LAB_VIP_PORT/healthz"
# [::] serves IPv4 too unless net.ipv6.bindv6only is set: check the IPv6 side as well.
WAIT_LOG=app wait_until "app on [$LAB_IPV6]:$LAB_VIP_PORT" 10 \
    curl -sf --max-time 1 "http://[$LAB_IPV6]:$LAB_VIP_PORT/healthz"
log "app up on port $LAB_VIP_PORT, registering with [$planes] as $LAB_IPV4 ($LAB_VIP_NAME) and $LAB_IPV6 ($LAB_VIP_NAME_V6)"
