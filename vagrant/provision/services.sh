#!/bin/sh
# Provisioning of the services host: Redis and PostgreSQL shared by the backends, listening on
# the lab address only, reachable from the lab segment without a password.
set -eu
: "${LAB_NAME:?}" "${LAB_IPV4:?}" "${LAB_SERVICES:?a services node lists its services}"
LAB_ROLE=services
# On a VM vagrant runs a copy of this script from /tmp: take lib.sh where common.sh put it.
lib="$(dirname "$0")/lib.sh"; [ -f "$lib" ] || lib=/opt/lab/provision/lib.sh
# shellcheck source=lib.sh
. "$lib"

PG_BIN=/usr/lib/postgresql/15/bin

redis() {
    packages redis-server redis-tools
    [ "$LAB_START" = 1 ] || { log "checked only: redis-server on $LAB_IPV4:6379"; return 0; }
    mkdir -p "$HOST_DIR/redis"
    # Protected mode refuses clients from other hosts when no password is set: the lab has none.
    # Jobs, orders and idempotency keys live in Redis: every write is in the append-only file
    # before Redis answers it (fsync always), so a Redis that is killed and restarted has
    # every job and order it accepted (docs/queue.md, "Durability").
    start redis redis-server --bind "$LAB_IPV4" --port 6379 --protected-mode no \
        --dir "$HOST_DIR/redis" --save "" --appendonly yes --appendfsync always --daemonize no
    WAIT_LOG=redis wait_until "redis on $LAB_IPV4:6379" 20 redis-cli -h "$LAB_IPV4" ping
    log "redis up on $LAB_IPV4:6379"
}

postgres() {
    packages postgresql
    [ "$LAB_START" = 1 ] || { log "checked only: postgres on $LAB_IPV4:5432, database app"; return 0; }
    pg="$HOST_DIR/pg"
    # initdb and postgres refuse root: everything runs as the postgres user on a folder it owns.
    mkdir -p "$pg/sock"
    chown -R postgres:postgres "$pg"
    if [ ! -f "$pg/data/PG_VERSION" ]; then
        runuser -u postgres -- "$PG_BIN/initdb" -D "$pg/data" -U postgres --auth=trust \
            >"$pg/initdb.log" 2>&1 || { tail -n 20 "$pg/initdb.log" >&2; die "initdb failed"; }
        # samenet: any address of a subnet the server is on, i.e. the lab segment.
        echo "host all all samenet trust" >>"$pg/data/pg_hba.conf"
        echo "host all all samehost trust" >>"$pg/data/pg_hba.conf"
    fi
    touch "$HOST_DIR/postgres.log"; chown postgres "$HOST_DIR/postgres.log"
    start postgres runuser -u postgres -- "$PG_BIN/postgres" -D "$pg/data" \
        -c listen_addresses="$LAB_IPV4" -c port=5432 -c unix_socket_directories="$pg/sock"
    WAIT_LOG=postgres wait_until "postgres on $LAB_IPV4:5432" 60 \
        "$PG_BIN/pg_isready" -q -h "$LAB_IPV4" -p 5432
    psql="$PG_BIN/psql -q -h $pg/sock -U postgres -v ON_ERROR_STOP=1"
    if ! $psql -tAc "select 1 from pg_roles where rolname = 'app'" | grep -q 1; then
        $psql -c "create role app login"
    fi
    if ! $psql -tAc "select 1 from pg_database where datname = 'app'" | grep -q 1; then
        $psql -c "create database app owner app"
    fi
    log "postgres up on $LAB_IPV4:5432 (database app, user app, trust from the segment)"
}

[ "$LAB_START" = 1 ] && host_dir
for service in $LAB_SERVICES; do
    case "$service" in
        redis) redis ;;
        postgres) postgres ;;
        *) die "unknown service $service" ;;
    esac
done
