#!/bin/sh
# Run by build.sh (mmdebstrap's customize hook) on the box's root file system, $1:
# what a Vagrant box needs beyond its packages, and nothing that wastes an emulated CPU.
set -eu
root="$1" mirror="$2" security="$3" suite="$4" pubkey="$5"

# vagrant: Vagrant's insecure key (replaced by a key of its own at the first `vagrant up`).
chroot "$root" useradd -m -s /bin/bash -U vagrant
install -d -m 0700 "$root/home/vagrant/.ssh"
install -m 0600 "$pubkey" "$root/home/vagrant/.ssh/authorized_keys"
chroot "$root" chown -R vagrant:vagrant /home/vagrant/.ssh

# Passwordless sudo (Vagrant provisions through it), no password of its own.
echo 'vagrant ALL=(ALL) NOPASSWD:ALL' >"$root/etc/sudoers.d/vagrant"
chmod 0440 "$root/etc/sudoers.d/vagrant"

cat >"$root/etc/fstab" <<FSTAB
LABEL=root / ext4 errors=remount-ro 0 1
FSTAB
echo lab >"$root/etc/hostname"
# eth0 is Vagrant's management NIC (DHCP); Vagrant writes the private networks' stanzas itself.
cat >"$root/etc/network/interfaces" <<IFACES
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback

allow-hotplug eth0
iface eth0 inet dhcp
IFACES
cat >"$root/etc/apt/sources.list" <<SOURCES
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security $suite-security main
SOURCES

# Every VM made from the box gets host keys of its own at first boot.
rm -f "$root"/etc/ssh/ssh_host_*
cat >"$root/etc/systemd/system/ssh-hostkeys.service" <<UNIT
[Unit]
Description=SSH host keys of this machine
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
# ed25519 only: an RSA key takes most of a minute under emulation (sshd skips missing keys).
ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key

[Install]
WantedBy=multi-user.target
UNIT
chroot "$root" systemctl enable ssh-hostkeys.service ssh.service

# The lab starts Redis and PostgreSQL itself (provision/services.sh); periodic jobs only cost
# CPU, which is scarce under emulation.
for unit in redis-server.service postgresql.service apt-daily.timer apt-daily-upgrade.timer \
    man-db.timer e2scrub_all.timer fstrim.timer dpkg-db-backup.timer; do
    chroot "$root" systemctl disable "$unit" >/dev/null 2>&1 || true
done
# Boot without waiting for a network that Vagrant configures later.
chroot "$root" systemctl mask systemd-networkd-wait-online.service >/dev/null 2>&1 || true
