#!/bin/sh
# Provisioning of a backend: `app` behind the VIP (direct server return).
set -eu
: "${LAB_NAME:?}" "${LAB_VIP_IPV4:?}" "${LAB_VIP_IPV6:?}" "${LAB_VIP_PORT:?}" "${LAB_SERVICES_IPV4:?}"
LAB_MODE="${LAB_MODE:-vagrant}"
log() { echo "[$LAB_NAME/backend] $*"; }

# No packages beyond common.sh yet: `app` is a binary built by the project.
# TODO(lead): dsr-l2 needs the VIP on lo with ARP for it suppressed; ipip needs the decap program.
log "would set: VIP $LAB_VIP_IPV4/32 and $LAB_VIP_IPV6/128 on lo, arp_ignore=1, arp_announce=2"
log "would start: app on port $LAB_VIP_PORT, Redis and PostgreSQL at $LAB_SERVICES_IPV4"
