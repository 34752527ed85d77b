#!/bin/sh
# Provisioning shared by every lab host; runs before the role's own script (ROLE.sh).
#
# Inputs are environment variables (LAB_NAME, LAB_ROLE, LAB_IPV4, LAB_IPV6, LAB_IPV6_PREFIX,
# LAB_MTU, ...), set by the Vagrantfile from topology.json and, for the namespace lab, by
# tests::netns::Lab::provision_env. LAB_MODE says where we run:
#   vagrant  a Debian VM: install packages, put IPv6 and the MTU on the lab interface;
#   netns    a network namespace on the build machine: the Rust lab has configured the
#            interface and the machine's packages are used, so only check they are there.
set -eu

: "${LAB_NAME:?set by the Vagrantfile or the namespace lab}"
: "${LAB_IPV4:?}" "${LAB_IPV6:?}" "${LAB_IPV6_PREFIX:?}" "${LAB_MTU:?}"
LAB_MODE="${LAB_MODE:-vagrant}"

log() { echo "[$LAB_NAME/common] $*"; }

# Installs Debian packages (vagrant) or fails naming the missing ones (netns).
packages() {
    missing=""
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    if [ "$LAB_MODE" = netns ]; then
        echo "[$LAB_NAME/common] missing packages:$missing (apt-get install$missing)" >&2
        exit 1
    fi
    log "installing$missing"
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
}

packages iproute2 ethtool procps curl tcpdump

if [ "$LAB_MODE" = vagrant ]; then
    # What the Vagrantfile's file provisioners uploaded (these scripts, the role's binaries, the
    # API token) goes where the role scripts read it (see lib.sh), owned by root.
    upload="${LAB_UPLOAD_DIR:-/home/vagrant/lab-upload}"
    if [ -d "$upload" ]; then
        rm -rf /opt/lab/provision
        install -d -m 0755 /opt/lab /opt/lab/bin
        cp -r "$upload/provision" /opt/lab/provision
        for bin in "$upload"/bin/*; do
            case "$bin" in
                *.gz) gunzip -c "$bin" >"/opt/lab/bin/$(basename "$bin" .gz)"
                      chmod 0755 "/opt/lab/bin/$(basename "$bin" .gz)" ;;
                *) if [ -f "$bin" ]; then install -m 0755 "$bin" /opt/lab/bin/; fi ;;
            esac
        done
        if [ -f "$upload/token" ]; then
            install -d -m 0700 /etc/lab
            install -m 0600 "$upload/token" /etc/lab/token
        fi
        rm -rf "$upload"
        log "uploads installed: /opt/lab/provision, /opt/lab/bin: [$(ls /opt/lab/bin | tr '\n' ' ')]$([ -f /etc/lab/token ] && echo ', /etc/lab/token')"
    fi
    # The interface Vagrant gave the private-network address to.
    iface="$(ip -o -4 addr show | awk -v ip="$LAB_IPV4" '{ split($4, a, "/"); if (a[1] == ip) print $2 }')"
    [ -n "$iface" ] || { echo "no interface holds $LAB_IPV4" >&2; exit 1; }
    ip link set "$iface" mtu "$LAB_MTU"
    if ! ip -o -6 addr show dev "$iface" | grep -q " $LAB_IPV6/"; then
        ip -6 addr add "$LAB_IPV6/$LAB_IPV6_PREFIX" dev "$iface" nodad
    fi
    # veth and some virtual NICs hand over packets with partial checksums that XDP_TX cannot
    # complete (see the platform notes); harmless elsewhere.
    ethtool -K "$iface" tx off >/dev/null 2>&1 || log "ethtool -K $iface tx off not supported"
    log "lab interface $iface: $LAB_IPV4, $LAB_IPV6/$LAB_IPV6_PREFIX, mtu $LAB_MTU"
else
    log "netns mode: interface configured by the lab"
fi
