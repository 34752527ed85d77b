#!/bin/sh
# Provisioning of the client host: load generators aimed at the VIP.
set -eu
: "${LAB_NAME:?}" "${LAB_VIP_IPV4:?}" "${LAB_VIP_IPV6:?}" "${LAB_VIP_PORT:?}"
LAB_MODE="${LAB_MODE:-vagrant}"
log() { echo "[$LAB_NAME/client] $*"; }

packages() {
    missing=""
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    if [ "$LAB_MODE" = netns ]; then
        echo "[$LAB_NAME/client] missing packages:$missing (apt-get install$missing)" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
}

packages wrk curl
log "nothing to start; load goes to http://$LAB_VIP_IPV4:$LAB_VIP_PORT/ and http://[$LAB_VIP_IPV6]:$LAB_VIP_PORT/"
