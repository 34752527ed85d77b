#!/bin/sh
# Provisioning of a balancer: lbd (XDP data plane + VRRP) for the VIP.
set -eu
: "${LAB_NAME:?}" "${LAB_PRIORITY:?a balancer needs a VRRP priority}" "${LAB_VIP_IPV4:?}" "${LAB_VIP_IPV6:?}"
: "${LAB_VIP_PORT:?}" "${LAB_BACKENDS:?}"
LAB_MODE="${LAB_MODE:-vagrant}"
log() { echo "[$LAB_NAME/balancer] $*"; }

packages() {
    missing=""
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    if [ "$LAB_MODE" = netns ]; then
        echo "[$LAB_NAME/balancer] missing packages:$missing (apt-get install$missing)" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
}

packages bpftool
# TODO(lead): install and start lbd here.
log "would start: lbd for VIP $LAB_VIP_IPV4 / $LAB_VIP_IPV6 port $LAB_VIP_PORT, VRRP priority $LAB_PRIORITY, backends $LAB_BACKENDS"
