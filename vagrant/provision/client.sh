#!/bin/sh
# Provisioning of the client host: load generators aimed at the VIP.
set -eu
: "${LAB_NAME:?}" "${LAB_VIP_IPV4:?}" "${LAB_VIP_IPV6:?}" "${LAB_VIP_PORT:?}"
LAB_ROLE=client
# On a VM vagrant runs a copy of this script from /tmp: take lib.sh where common.sh put it.
lib="$(dirname "$0")/lib.sh"; [ -f "$lib" ] || lib=/opt/lab/provision/lib.sh
# shellcheck source=lib.sh
. "$lib"

packages wrk curl
if [ "$LAB_START" = 1 ]; then
    gateway_routes
fi
log "nothing to start; load goes to http://$LAB_VIP_IPV4:$LAB_VIP_PORT/ and http://[$LAB_VIP_IPV6]:$LAB_VIP_PORT/"
