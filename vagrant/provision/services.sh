#!/bin/sh
# Provisioning of the services host: Redis and PostgreSQL shared by the backends, listening on
# the lab address only, reachable from the lab segment without a password; and Prometheus
# scraping every lbd and app (namespace lab).
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

# Prometheus on $LAB_IPV4:9090 with the rules of prometheus/ (docs/prometheus.md), scraping every
# lbd (a read-only token of its own: the balancers add it as a client when they find it) and
# every app, each second so alerts follow the lab within seconds. It runs as the `prometheus`
# user. In the namespace lab only: the VMs do not carry the repository's rules.
prometheus_server() {
    if [ "$LAB_MODE" != netns ]; then
        log "prometheus: the namespace lab runs it (cargo xtask lab); skipped on a VM"
        return 0
    fi
    # Not through `packages`: the VM box does not carry it (cargo xtask setup installs it here).
    command -v prometheus >/dev/null || die "missing packages: prometheus (apt-get install prometheus)"
    [ "$LAB_START" = 1 ] || { log "checked only: prometheus on $LAB_IPV4:9090"; return 0; }
    : "${LAB_BALANCERS:?}" "${LAB_BACKENDS:?}" "${LAB_VIP_PORT:?}" "${LAB_TOKEN_FILE:?}"
    rules="$(cd "$(dirname "$0")/../../prometheus/rules" && pwd)" \
        || die "prometheus: no rules folder next to the provisioning scripts"
    dir="$HOST_DIR/prometheus"
    mkdir -p "$dir/rules" "$dir/data"
    cp "$rules"/*.yml "$dir/rules/"
    token="$(dirname "$LAB_TOKEN_FILE")/prometheus-token"
    if [ ! -s "$token" ]; then
        mkdir -p "$(dirname "$token")"
        (umask 077; od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$token")
    fi
    lbds=""; for b in $LAB_BALANCERS; do lbds="$lbds${lbds:+, }'$b:9100'"; done
    apps=""; for b in $LAB_BACKENDS; do apps="$apps${apps:+, }'$b:$LAB_VIP_PORT'"; done
    cat >"$dir/prometheus.yml" <<CONF
# Written by vagrant/provision/services.sh for $LAB_NAME.
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $dir/rules/*.yml
scrape_configs:
  - job_name: lbd
    authorization:
      credentials_file: $dir/token
    static_configs:
      - targets: [$lbds]
  - job_name: app
    static_configs:
      - targets: [$apps]
  - job_name: prometheus
    static_configs:
      - targets: ['$LAB_IPV4:9090']
CONF
    cp "$token" "$dir/token"
    chown -R prometheus:prometheus "$dir"
    chmod 600 "$dir/token"
    promtool check config "$dir/prometheus.yml" >"$dir/check.log" 2>&1 \
        || { cat "$dir/check.log" >&2; die "promtool rejects $dir/prometheus.yml"; }
    start prometheus runuser -u prometheus -- prometheus --config.file="$dir/prometheus.yml" \
        --storage.tsdb.path="$dir/data" --storage.tsdb.retention.time=6h \
        --web.listen-address="$LAB_IPV4:9090"
    WAIT_LOG=prometheus wait_until "prometheus on $LAB_IPV4:9090" 30 \
        curl -sf --max-time 1 "http://$LAB_IPV4:9090/-/ready"
    log "prometheus up on http://$LAB_IPV4:9090 (lbd: $lbds; app: $apps)"
}

[ "$LAB_START" = 1 ] && host_dir
for service in $LAB_SERVICES; do
    case "$service" in
        redis) redis ;;
        postgres) postgres ;;
        prometheus) prometheus_server ;;
        *) die "unknown service $service" ;;
    esac
done
