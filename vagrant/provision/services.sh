#!/bin/sh
# Provisioning of the services host: Redis and PostgreSQL shared by the backends.
set -eu
: "${LAB_NAME:?}" "${LAB_IPV4:?}" "${LAB_SERVICES:?a services node lists its services}"
LAB_MODE="${LAB_MODE:-vagrant}"
log() { echo "[$LAB_NAME/services] $*"; }

packages() {
    missing=""
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    if [ "$LAB_MODE" = netns ]; then
        echo "[$LAB_NAME/services] missing packages:$missing (apt-get install$missing)" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
}

for service in $LAB_SERVICES; do
    case "$service" in
        redis)
            packages redis-server
            # TODO(lead): start redis-server bound to the lab address.
            log "would start: redis-server --bind $LAB_IPV4 --port 6379"
            ;;
        postgres)
            packages postgresql
            # TODO(lead): initdb as the postgres user and start it on the lab address.
            log "would start: postgres -h $LAB_IPV4 -p 5432 (as the postgres user)"
            ;;
        *)
            echo "[$LAB_NAME/services] unknown service $service" >&2
            exit 1
            ;;
    esac
done
